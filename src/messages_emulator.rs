//! A local stand-in for Twilio's Messages API, for tests and the demo: it accepts
//! `POST /2010-04-01/Accounts/{Sid}/Messages.json` as Twilio does (Basic auth, form
//! fields, Twilio's error JSON) and records what it was asked to send.
//!
//! It can be told to fail the next few requests with a given status, to show what the
//! bridge does when Twilio is down or throttling.

use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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
}

#[derive(Debug, Default)]
struct Recorded {
    sent: Vec<SentMessage>,
    /// How to answer the next requests, before accepting again.
    failures: Vec<Misbehaviour>,
    attempts: usize,
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
            .with_state(shared.clone());
        let task =
            crate::http::server::spawn_with_default_limits(listener, app, std::future::pending());
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
    match failure {
        Some(Misbehaviour::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                20429
            } else {
                20500
            };
            return twilio_error(status, code, "Injected failure");
        }
        Some(Misbehaviour::Throttle { retry_after }) => {
            let mut response =
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Misbehaviour::Hang) => return std::future::pending().await,
        // Unwinding out of the connection's task drops the connection unanswered,
        // without the panic hook's message: what a peer that goes away looks like.
        Some(Misbehaviour::Close) => {
            std::panic::resume_unwind(Box::new("injected: the connection closes unanswered"))
        }
        None => {}
    }
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
    for (name, value) in form_urlencoded::parse(body.as_bytes()).into_owned() {
        match name.as_str() {
            "To" => to = Some(value),
            "From" => from = Some(value),
            "MessagingServiceSid" => service = Some(value),
            "Body" => text = value,
            "MediaUrl" => media.push(value),
            "StatusCallback" => status_callback = Some(value),
            _ => {}
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
        });
        sid
    };
    shared.changed.notify_waiters();
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
