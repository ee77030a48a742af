//! A local stand-in for Twilio's Messages API, for tests and the demo: it accepts
//! `POST /2010-04-01/Accounts/{Sid}/Messages.json` as Twilio does (Basic auth, form
//! fields, Twilio's error JSON) and records what it was asked to send.
//!
//! It can be told to fail the next few requests with a given status, to show what the
//! bridge does when Twilio is down or throttling.
//!
//! It also serves what WhatsApp's rich messages need: the Content API (`POST
//! /v1/Content`, `GET /v1/Content/{Sid}`) with the limits Twilio documents for
//! `twilio/quick-reply` and `twilio/list-picker`, sends by `ContentSid`, and the typing
//! indicator (`POST /v2/Indicators/Typing.json`).

use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One message the bridge asked Twilio to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The `SM…` id Twilio gave it.
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media: Vec<String>,
    pub status_callback: Option<String>,
    /// Sent by `ContentSid`: the content's SID (its body is in `body`).
    pub content_sid: Option<String>,
    pub content_variables: Option<String>,
}

/// One content the bridge created.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedContent {
    pub sid: String,
    pub account_sid: String,
    pub friendly_name: String,
    pub types: serde_json::Value,
}

/// How the stand-in answers a request instead of accepting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// This HTTP status, with Twilio's error JSON.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    Throttle { retry_after: u64 },
    /// No answer, ever.
    Hang,
    /// The connection closes without an answer.
    Close,
    /// Refused with this HTTP status and Twilio error code (e.g. 400 and 63021).
    Refuse { status: u16, code: u32 },
    /// Accepted, then reported `undelivered` with this error code on the message's
    /// status callback, signed as Twilio signs it: how WhatsApp's refusals arrive.
    FailLater { code: u32 },
}

#[derive(Debug, Default)]
struct Recorded {
    sent: Vec<SentMessage>,
    /// How to answer the next requests, before accepting again.
    failures: Vec<Misbehaviour>,
    attempts: usize,
    contents: Vec<CreatedContent>,
    /// How to answer the next Content API creates.
    content_failures: Vec<Misbehaviour>,
    /// The MessageSids the typing indicator was asked for.
    typing: Vec<String>,
    /// Approved templates (`HX…`) known to the account, with their text.
    templates: Vec<(String, String)>,
}

#[derive(Clone)]
struct Shared {
    /// The `username:password` pairs accepted (an account or API key each).
    credentials: Arc<Mutex<Vec<String>>>,
    recorded: Arc<Mutex<Recorded>>,
    changed: Arc<Notify>,
}

/// A running fake Messages API.
pub struct MessagesEmulator {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl MessagesEmulator {
    /// Serves on `listener`, accepting Basic auth `username:password`.
    pub fn start(listener: TcpListener, username: &str, password: &str) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Shared {
            credentials: Arc::new(Mutex::new(vec![format!("{username}:{password}")])),
            recorded: Arc::default(),
            changed: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(create_message).get(list_messages),
            )
            .route("/v1/Content", post(create_content))
            .route("/v1/Content/{sid}", get(fetch_content))
            .route("/v2/Indicators/Typing.json", post(typing))
            .with_state(shared.clone());
        let task = hardened_http::spawn_with_default_limits(listener, app, std::future::pending());
        Ok(Self { addr, shared, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Also accepts Basic auth `username:password` (another account, a sub-account).
    pub fn accept_also(&self, username: &str, password: &str) {
        self.shared
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{username}:{password}"));
    }

    /// The messages accepted so far, in the order they arrived.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.clone()
    }

    /// The contents created so far, in order.
    pub fn contents(&self) -> Vec<CreatedContent> {
        self.lock().contents.clone()
    }

    /// The MessageSids whose senders were shown "typing…".
    pub fn typing(&self) -> Vec<String> {
        self.lock().typing.clone()
    }

    /// A template approved elsewhere, sendable by its `ContentSid`.
    pub fn register_template(&self, sid: &str, body: &str) {
        self.lock()
            .templates
            .push((sid.to_owned(), body.to_owned()));
    }

    /// Answer the next Content API creates in these ways in turn.
    pub fn misbehave_content_next(&self, faults: &[Misbehaviour]) {
        self.lock().content_failures.extend_from_slice(faults);
    }

    /// Requests received, accepted or not.
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// Answer the next requests with these HTTP statuses (e.g. 500, 429) in turn.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.misbehave_next(
            &statuses
                .iter()
                .map(|s| Misbehaviour::Status(*s))
                .collect::<Vec<_>>(),
        );
    }

    /// Answer the next requests in these ways in turn.
    pub fn misbehave_next(&self, faults: &[Misbehaviour]) {
        self.lock().failures.extend_from_slice(faults);
    }

    /// Waits until at least `count` messages were accepted, or a minute has passed, and
    /// returns those accepted: a reply that never comes fails a test instead of hanging it.
    pub async fn wait_for(&self, count: usize) -> Vec<SentMessage> {
        let enough = async {
            loop {
                let notified = self.shared.changed.notified();
                if self.lock().sent.len() >= count {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), enough).await;
        self.sent()
    }

    /// Calls `each` for every message accepted, in order, from now on; never returns.
    pub async fn watch(&self, mut each: impl FnMut(&SentMessage)) {
        let mut seen = self.lock().sent.len();
        loop {
            let notified = self.shared.changed.notified();
            let new: Vec<SentMessage> = self.lock().sent.get(seen..).unwrap_or_default().to_vec();
            seen += new.len();
            new.iter().for_each(&mut each);
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MessagesEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer `fault` asks for, instead of accepting the request.
async fn misbehave(fault: Misbehaviour) -> Response {
    match fault {
        Misbehaviour::Status(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                20429
            } else {
                20500
            };
            twilio_error(status, code, "Injected failure")
        }
        Misbehaviour::Refuse { status, code } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            twilio_error(status, code, "Injected refusal")
        }
        Misbehaviour::Throttle { retry_after } => {
            let mut response =
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        // Only a message can fail later; elsewhere it fails now.
        Misbehaviour::FailLater { code } => {
            twilio_error(StatusCode::BAD_REQUEST, code, "Injected refusal")
        }
        Misbehaviour::Hang => std::future::pending().await,
        // Unwinding out of the connection's task drops the connection unanswered,
        // without the panic hook's message: what a peer that goes away looks like.
        Misbehaviour::Close => {
            std::panic::resume_unwind(Box::new("injected: the connection closes unanswered"))
        }
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

async fn create_message(
    State(shared): State<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let account = account.trim_end_matches(".json").to_owned();
    let failure = {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recorded.attempts += 1;
        (!recorded.failures.is_empty()).then(|| recorded.failures.remove(0))
    };
    shared.changed.notify_waiters();
    let fail_later = match failure {
        Some(Misbehaviour::FailLater { code }) => Some(code),
        Some(fault) => return misbehave(fault).await,
        None => None,
    };
    if !authorized(&headers, &shared.credentials) {
        return twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        );
    }
    let mut to = None;
    let mut from = None;
    let mut service = None;
    let mut text = String::new();
    let mut media = Vec::new();
    let mut status_callback = None;
    let mut content_sid = None;
    let mut content_variables = None;
    for (name, value) in form_urlencoded::parse(body.as_bytes()).into_owned() {
        match name.as_str() {
            "To" => to = Some(value),
            "From" => from = Some(value),
            "MessagingServiceSid" => service = Some(value),
            "Body" => text = value,
            "MediaUrl" => media.push(value),
            "StatusCallback" => status_callback = Some(value),
            "ContentSid" => content_sid = Some(value),
            "ContentVariables" => content_variables = Some(value),
            _ => {}
        }
    }
    if let Some(variables) = &content_variables {
        if content_sid.is_none() {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21654,
                "ContentVariables were given without a ContentSid.",
            );
        }
        let valid = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(variables)
            .is_ok_and(|map| {
                map.values()
                    .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            });
        if !valid {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21656,
                "The ContentVariables Parameter is invalid.",
            );
        }
    }
    if let Some(sid) = &content_sid {
        let (content, template) = {
            let recorded = shared
                .recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (
                recorded
                    .contents
                    .iter()
                    .find(|c| &c.sid == sid && c.account_sid == account)
                    .cloned(),
                recorded
                    .templates
                    .iter()
                    .find(|(known, _)| known == sid)
                    .map(|(_, body)| body.clone()),
            )
        };
        let variables = content_variables.as_deref().unwrap_or("{}");
        match (content, template) {
            (Some(content), _) => {
                // WhatsApp takes at most 3 reply buttons in a session message.
                let buttons = content.types["twilio/quick-reply"]["actions"]
                    .as_array()
                    .map_or(0, Vec::len);
                if buttons > 3 && to.as_deref().is_some_and(|t| t.starts_with("whatsapp:")) {
                    return twilio_error(
                        StatusCode::BAD_REQUEST,
                        63021,
                        "Channel invalid content error: more than 3 quick reply buttons",
                    );
                }
                text = fill_variables(&body_of_content(&content.types), variables);
            }
            (None, Some(body)) => text = fill_variables(&body, variables),
            (None, None) => {
                return twilio_error(StatusCode::BAD_REQUEST, 21655, "The ContentSid is Invalid.")
            }
        }
    }
    let Some(to) = to else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    if from.is_none() && service.is_none() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    if text.is_empty() && media.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21619,
            "A text message body or media urls must be specified.",
        );
    }
    let sid = {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sid = format!("SM{:032x}", recorded.sent.len() + 1);
        recorded.sent.push(SentMessage {
            sid: sid.clone(),
            account_sid: account.clone(),
            to: to.clone(),
            from: from.clone(),
            messaging_service_sid: service.clone(),
            body: text.clone(),
            media,
            status_callback,
            content_sid: content_sid.clone(),
            content_variables,
        });
        sid
    };
    shared.changed.notify_waiters();
    if let (Some(code), Some(callback)) = (fail_later, status_callback_of(&shared, &sid)) {
        let token = token_of(&shared, &account);
        tokio::spawn(report_failure(
            callback,
            token,
            account.clone(),
            sid.clone(),
            code,
        ));
    }
    let answer = json!({
        "sid": sid,
        "account_sid": account,
        "to": to,
        "from": from,
        "messaging_service_sid": service,
        "body": text,
        "status": "queued",
        "num_media": "0",
        "api_version": "2010-04-01",
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// `GET …/Messages.json?To=…`: Twilio's list of messages, newest first, as the terminal
/// phone reads back the replies sent through the API. Only the `To` filter is served.
async fn list_messages(
    State(shared): State<Shared>,
    Path(account): Path<String>,
    Query(filter): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        );
    }
    let account = account.trim_end_matches(".json").to_owned();
    let messages: Vec<serde_json::Value> = shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sent
        .iter()
        .rev()
        .filter(|m| m.account_sid == account)
        .filter(|m| filter.get("To").is_none_or(|to| *to == m.to))
        .map(|m| {
            json!({
                "sid": m.sid,
                "account_sid": m.account_sid,
                "to": m.to,
                "from": m.from,
                "messaging_service_sid": m.messaging_service_sid,
                "body": m.body,
                "num_media": m.media.len().to_string(),
                // Not in Twilio's list: the stand-in says which content a message
                // showed, so that the terminal phone can draw its buttons.
                "content_sid": m.content_sid,
                "status": "delivered",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
            })
        })
        .collect();
    Json(json!({
        "messages": messages,
        "page": 0,
        "page_size": 50,
        "first_page_uri": format!("/2010-04-01/Accounts/{account}/Messages.json?PageSize=50&Page=0"),
        "next_page_uri": null,
        "previous_page_uri": null,
    }))
    .into_response()
}

fn authorized(headers: &HeaderMap, credentials: &Mutex<Vec<String>>) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = BASE64.decode(encoded.trim()) else {
        return false;
    };
    credentials
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|pair| pair.as_bytes() == decoded)
}

/// What a content's message reads as in the message list: its body.
fn body_of_content(types: &serde_json::Value) -> String {
    types
        .as_object()
        .and_then(|types| types.values().find_map(|t| t.get("body")?.as_str()))
        .unwrap_or_default()
        .to_owned()
}

/// Twilio's limits for the content types the bridge creates, checked as the Content
/// API checks them: the problem, if any.
fn content_problem(types: &serde_json::Value) -> Option<String> {
    use bridge::whatsapp::{
        MAX_BODY_CHARS, MAX_BUTTON_TITLE_CHARS, MAX_ID_CHARS, MAX_ITEM_DESCRIPTION_CHARS,
        MAX_ITEM_TITLE_CHARS, MAX_LIST_ITEMS,
    };
    let chars = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
    let types = types.as_object()?;
    if types.is_empty() {
        return Some("types must name at least one content type".into());
    }
    for (kind, content) in types {
        let body = content.get("body");
        if body.is_none_or(|b| chars(b) == 0) || body.is_some_and(|b| chars(b) > MAX_BODY_CHARS) {
            return Some(format!(
                "{kind}: body must be 1 to {MAX_BODY_CHARS} characters"
            ));
        }
        let (entries, most, title, title_max) = match kind.as_str() {
            "twilio/quick-reply" => ("actions", 10, "title", MAX_BUTTON_TITLE_CHARS),
            "twilio/list-picker" => ("items", MAX_LIST_ITEMS, "item", MAX_ITEM_TITLE_CHARS),
            "twilio/text" => continue,
            other => {
                return Some(format!(
                    "content type {other} is not served by the stand-in"
                ))
            }
        };
        let list = content.get(entries).and_then(|e| e.as_array());
        let Some(list) = list.filter(|l| !l.is_empty() && l.len() <= most) else {
            return Some(format!("{kind}: {entries} must be 1 to {most}"));
        };
        for entry in list {
            let t = entry.get(title).map_or(0, chars);
            if t == 0 || t > title_max {
                return Some(format!(
                    "{kind}: {title} must be 1 to {title_max} characters"
                ));
            }
            if entry.get("id").is_some_and(|id| chars(id) > MAX_ID_CHARS) {
                return Some(format!(
                    "{kind}: id must be at most {MAX_ID_CHARS} characters"
                ));
            }
            if entry
                .get("description")
                .is_some_and(|d| chars(d) > MAX_ITEM_DESCRIPTION_CHARS)
            {
                return Some(format!(
                    "{kind}: description must be at most {MAX_ITEM_DESCRIPTION_CHARS} characters"
                ));
            }
        }
        if kind == "twilio/list-picker"
            && content
                .get("button")
                .is_none_or(|b| chars(b) == 0 || chars(b) > 20)
        {
            return Some(format!("{kind}: button must be 1 to 20 characters"));
        }
    }
    None
}

fn content_json(content: &CreatedContent) -> serde_json::Value {
    json!({
        "sid": content.sid,
        "account_sid": content.account_sid,
        "friendly_name": content.friendly_name,
        "language": "en",
        "variables": {},
        "types": content.types,
        "url": format!("https://content.twilio.com/v1/Content/{}", content.sid),
    })
}

/// The account whose credentials `headers` carry, if they are accepted.
fn account_of(headers: &HeaderMap, credentials: &Mutex<Vec<String>>) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let decoded = BASE64.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    authorized(headers, credentials).then(|| pair.split(':').next().unwrap_or_default().to_owned())
}

/// `POST /v1/Content`: creates a content, as the Content API does.
async fn create_content(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let failure = {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (!recorded.content_failures.is_empty()).then(|| recorded.content_failures.remove(0))
    };
    if let Some(fault) = failure {
        return misbehave(fault).await;
    }
    let Some(account) = account_of(&headers, &shared.credentials) else {
        return twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        );
    };
    let request: serde_json::Value = match serde_json::from_str(&body) {
        Ok(value) => value,
        Err(_) => return twilio_error(StatusCode::BAD_REQUEST, 20001, "Invalid JSON"),
    };
    let types = request.get("types").cloned().unwrap_or_default();
    if request
        .get("language")
        .and_then(|l| l.as_str())
        .is_none_or(str::is_empty)
    {
        return twilio_error(StatusCode::BAD_REQUEST, 20001, "language is required");
    }
    if let Some(problem) = content_problem(&types) {
        return twilio_error(StatusCode::BAD_REQUEST, 20001, &problem);
    }
    let content = {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let content = CreatedContent {
            sid: format!("HX{:032x}", recorded.contents.len() + 1),
            account_sid: account,
            friendly_name: request
                .get("friendly_name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned(),
            types,
        };
        recorded.contents.push(content.clone());
        content
    };
    shared.changed.notify_waiters();
    (StatusCode::CREATED, Json(content_json(&content))).into_response()
}

/// `GET /v1/Content/{Sid}`.
async fn fetch_content(
    State(shared): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(account) = account_of(&headers, &shared.credentials) else {
        return twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        );
    };
    let content = shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contents
        .iter()
        .find(|c| c.sid == sid && c.account_sid == account)
        .cloned();
    match content {
        Some(content) => Json(content_json(&content)).into_response(),
        None => twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        ),
    }
}

/// `POST /v2/Indicators/Typing.json`: `messageId` (an SM or MM SID) and `channel`.
async fn typing(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        );
    }
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let message_id = form.get("messageId").cloned().unwrap_or_default();
    let well_formed = (message_id.starts_with("SM") || message_id.starts_with("MM"))
        && message_id.len() == 34
        && message_id[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !well_formed || form.get("channel").map(String::as_str) != Some("whatsapp") {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            20001,
            "messageId and channel=whatsapp are required",
        );
    }
    shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .typing
        .push(message_id);
    shared.changed.notify_waiters();
    Json(json!({"success": true})).into_response()
}

/// `{{1}}`, `{{2}}`… replaced by the send's `ContentVariables`.
fn fill_variables(body: &str, variables: &str) -> String {
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(variables).unwrap_or_default();
    values.iter().fold(body.to_owned(), |body, (name, value)| {
        body.replace(
            &format!("{{{{{name}}}}}"),
            value.as_str().unwrap_or_default(),
        )
    })
}

fn status_callback_of(shared: &Shared, sid: &str) -> Option<String> {
    shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sent
        .iter()
        .find(|m| m.sid == sid)
        .and_then(|m| m.status_callback.clone())
}

/// The auth token of `account`: the password it was accepted with.
fn token_of(shared: &Shared, account: &str) -> String {
    shared
        .credentials
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find_map(|pair| pair.strip_prefix(&format!("{account}:")).map(str::to_owned))
        .unwrap_or_default()
}

/// Posts the status callback Twilio posts when a message it took was not delivered.
async fn report_failure(callback: String, token: String, account: String, sid: String, code: u32) {
    let params: Vec<(String, String)> = vec![
        ("MessageSid".into(), sid.clone()),
        ("SmsSid".into(), sid),
        ("AccountSid".into(), account),
        ("MessageStatus".into(), "undelivered".into()),
        ("SmsStatus".into(), "undelivered".into()),
        ("ErrorCode".into(), code.to_string()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    let signature = bridge::twilio::signature::compute(&token, &callback, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let _ = reqwest::Client::new()
        .post(&callback)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await;
}
