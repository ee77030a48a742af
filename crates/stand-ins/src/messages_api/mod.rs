//! A local stand-in for Twilio's Messages API, for tests and the demo, as strict as
//! Twilio: it serves the Messages resource (`POST /2010-04-01/Accounts/{Sid}/Messages.json`
//! to send, `GET …/Messages/{Sid}.json` to fetch one, `GET …/Messages.json?To=…` to
//! list) with Basic auth, form fields, Twilio's Message JSON and Twilio's error JSON,
//! refuses what Twilio refuses with Twilio's codes, and records what it was asked to
//! send.
//!
//! It keeps what Twilio keeps of the people it carries messages from (see [`people`]):
//! a send to a person who sent STOP is refused with 21610, and, once told to keep
//! WhatsApp's 24-hour window ([`MessagesEmulator::keep_session_windows`]), a free-form
//! WhatsApp message to a person silent for 24 hours fails with 63016. Each message it
//! takes is reported to its `StatusCallback`, signed as Twilio signs: queued, sent,
//! delivered (and read on WhatsApp), or failed/undelivered with Twilio's error code.
//! Its clock can be moved on ([`MessagesEmulator::advance_clock`]).
//!
//! It can be told to fail the next few requests with a given status, to show what the
//! bridge does when Twilio is down or throttling.
//!
//! It also serves what WhatsApp's rich messages need: the Content API (`POST
//! /v1/Content`, `GET /v1/Content/{Sid}`) with the limits Twilio documents for
//! `twilio/quick-reply` and `twilio/list-picker`, sends by `ContentSid`, and the typing
//! indicator (`POST /v2/Indicators/Typing.json`).
//!
//! Its limits and codes are Twilio's, written from Twilio's documentation in
//! [`limits`] and [`errors`], never the bridge's: the bridge is what it tests.

mod content;
mod dates;
mod errors;
mod limits;
mod messages;
mod people;
mod segments;

pub use people::Inbound;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use errors::TwilioError;
use messages::StoredMessage;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    sent: Vec<StoredMessage>,
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
    people: people::People,
    /// Whether a free-form WhatsApp message needs the person to have written in the
    /// last 24 hours: only where the stand-in is told of every message people send.
    session_windows: bool,
    /// How far the stand-in's clock is ahead of the machine's, in seconds.
    clock_ahead: u64,
}

impl Recorded {
    /// The stand-in's time: seconds since the epoch.
    fn now(&self) -> u64 {
        dates::now() + self.clock_ahead
    }
}

#[derive(Clone)]
struct Shared {
    /// The `username:password` pairs accepted (an account or API key each).
    credentials: Arc<Mutex<Vec<String>>>,
    recorded: Arc<Mutex<Recorded>>,
    changed: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The auth token of `account`: the password it was accepted with.
    fn token_of(&self, account: &str) -> String {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find_map(|pair| pair.strip_prefix(&format!("{account}:")).map(str::to_owned))
            .unwrap_or_default()
    }
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
                post(messages::create).get(messages::list),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Messages/{sid}",
                get(messages::fetch),
            )
            .route("/v1/Content", post(content::create))
            .route("/v1/Content/{sid}", get(content::fetch))
            .route("/v2/Indicators/Typing.json", post(typing))
            .route("/stand-in/Inbound", post(inbound))
            .fallback(errors::unknown_url)
            .method_not_allowed_fallback(errors::wrong_method)
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
        self.lock().sent.iter().map(|m| m.sent.clone()).collect()
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

    /// A person sent `message`: Twilio would have carried it to the webhook; the
    /// stand-in learns from it what Twilio learns (the window, STOP and START).
    pub fn person_wrote(&self, message: &Inbound) {
        let mut recorded = self.lock();
        let now = recorded.now();
        recorded.people.wrote(message, now);
    }

    /// From now on, a free-form WhatsApp message to a person who has not written to
    /// its sender in the last 24 hours fails with 63016, as on Twilio. Off unless
    /// asked: the stand-in only knows who wrote when the phone tells it.
    pub fn keep_session_windows(&self) {
        self.lock().session_windows = true;
    }

    /// Moves the stand-in's clock on by `by`: its windows close, its dates move.
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.lock().clock_ahead += by.as_secs();
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
            let new: Vec<SentMessage> = self
                .lock()
                .sent
                .get(seen..)
                .unwrap_or_default()
                .iter()
                .map(|m| m.sent.clone())
                .collect();
            seen += new.len();
            new.iter().for_each(&mut each);
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.shared.lock()
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
            TwilioError::new(status, code, "Injected failure").into_response()
        }
        Misbehaviour::Refuse { status, code } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            TwilioError::new(status, code, "Injected refusal").into_response()
        }
        Misbehaviour::Throttle { retry_after } => {
            let mut response =
                TwilioError::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
                    .into_response();
            if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        // Only a message can fail later; elsewhere it fails now.
        Misbehaviour::FailLater { code } => {
            TwilioError::new(StatusCode::BAD_REQUEST, code, "Injected refusal").into_response()
        }
        Misbehaviour::Hang => std::future::pending().await,
        // Unwinding out of the connection's task drops the connection unanswered,
        // without the panic hook's message: what a peer that goes away looks like.
        Misbehaviour::Close => {
            std::panic::resume_unwind(Box::new("injected: the connection closes unanswered"))
        }
    }
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

/// The account whose credentials `headers` carry, if they are accepted.
fn account_of(headers: &HeaderMap, credentials: &Mutex<Vec<String>>) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let decoded = BASE64.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    authorized(headers, credentials).then(|| pair.split(':').next().unwrap_or_default().to_owned())
}

/// `POST /stand-in/Inbound` (the stand-in's own, not Twilio's): a person sent a
/// message (`From`, `To`, `Body`, and `MessagingServiceSid` when the sender is in a
/// service), as the terminal phone reports each one it sends. Basic auth as Twilio's.
async fn inbound(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return TwilioError::unauthenticated().into_response();
    }
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let (Some(from), Some(to)) = (form.get("From"), form.get("To")) else {
        return TwilioError::invalid_parameter("From and To are required").into_response();
    };
    let message = Inbound {
        from: from.clone(),
        to: to.clone(),
        messaging_service_sid: form.get("MessagingServiceSid").cloned(),
        body: form.get("Body").cloned().unwrap_or_default(),
    };
    {
        let mut recorded = shared.lock();
        let now = recorded.now();
        recorded.people.wrote(&message, now);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /v2/Indicators/Typing.json`: `messageId` (an SM or MM SID) and `channel`.
async fn typing(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return TwilioError::unauthenticated().into_response();
    }
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let message_id = form.get("messageId").cloned().unwrap_or_default();
    let well_formed = (message_id.starts_with("SM") || message_id.starts_with("MM"))
        && message_id.len() == 34
        && message_id[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !well_formed || form.get("channel").map(String::as_str) != Some("whatsapp") {
        return TwilioError::invalid_parameter("messageId and channel=whatsapp are required")
            .into_response();
    }
    shared.lock().typing.push(message_id);
    shared.changed.notify_waiters();
    Json(json!({"success": true})).into_response()
}
