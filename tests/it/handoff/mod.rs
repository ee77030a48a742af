//! Hand-over to people: the agent (or a keyword) hands the conversation to a helpdesk;
//! the person's messages go there as signed events, in order, and never to the agent;
//! the helpdesk answers through the bridge and gives the conversation back.
//!
//! The helpdesk here is a recording HTTP server; signatures are checked with an
//! implementation of the Standard Webhooks signing written in this file (RustCrypto's
//! `hmac`), not with the crate the bridge signs with.

mod conversation;
mod desk_command;
mod destination;
pub(crate) mod expiry;

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use stand_ins::chat::Outgoing;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const TOKEN: &str = "desk-token-0123456789";

pub(crate) const AGENT_WITH_PEOPLE: &str = r#"
project: handoff-project
location: global
agent_id: handoff-agent
language: en
intents:
  - name: hello
    phrases: ["hello"]
    replies: [{ text: "Hello from the agent" }]
  - name: human
    phrases: ["talk to a person"]
    replies:
      - text: "Getting a person"
      - handoff: { queue: billing }
  - name: by.payload
    phrases: ["payload please"]
    replies:
      - text: "Passing you on"
      - payload: { handoff: { queue: sales }, twilio: { handoff: { queue: sales } } }
  - name: back
    events: [handoff_ended]
    replies: [{ text: "Welcome back" }]
fallback:
  replies: [{ text: "Not understood" }]
"#;

/// A helpdesk that records what it receives and answers as told.
#[derive(Clone, Default)]
pub(crate) struct Desk {
    pub(crate) received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Statuses for the next requests, before 200 again; `down` answers 503 always.
    pub(crate) fail_next: Arc<Mutex<Vec<u16>>>,
    pub(crate) down: Arc<Mutex<bool>>,
    pub(crate) attempts: Arc<Mutex<usize>>,
    /// The `webhook-id` of every attempt, refused or not.
    pub(crate) attempt_ids: Arc<Mutex<Vec<String>>>,
}

impl Desk {
    pub(crate) async fn start() -> (Self, String) {
        let desk = Desk::default();
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(desk.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (desk, url)
    }

    /// The events accepted, in order, each checked against its signature.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| {
                assert!(signed_by_secret(headers, body), "a bad signature on {body}");
                serde_json::from_str(body).unwrap()
            })
            .collect()
    }

    /// The events accepted, once there are at least `count` (within 10 s).
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(
            &format!("{count} event(s) at the desk"),
            Duration::from_secs(10),
            || async { ready_if(self.events(), |events| events.len() >= count) },
        )
        .await
    }

    pub(crate) fn kinds(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn record(State(desk): State<Desk>, headers: HeaderMap, body: Bytes) -> StatusCode {
    *desk.attempts.lock().unwrap() += 1;
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    desk.attempt_ids.lock().unwrap().push(id);
    if *desk.down.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let failure = {
        let mut next = desk.fail_next.lock().unwrap();
        (!next.is_empty()).then(|| next.remove(0))
    };
    if let Some(status) = failure {
        return StatusCode::from_u16(status).unwrap();
    }
    let body = String::from_utf8(body.to_vec()).unwrap();
    desk.received.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// The Standard Webhooks check: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")),
/// the key being the base64 after `whsec_`; the timestamp within five minutes.
fn signed_by_secret(headers: &HeaderMap, body: &str) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() <= 300);
    let key = BASE64.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    fresh && !id.is_empty() && signatures.split(' ').any(|s| s == expected)
}

pub(crate) fn with_people(desk_url: &str) -> impl FnOnce(&mut HashMap<String, String>) + '_ {
    move |vars| {
        for (name, value) in [
            ("REPLY_MODE", "api"),
            ("AGENT_TIMEOUT", "5s"),
            ("HANDOFF_URL", desk_url),
            ("HANDOFF_SECRET", SECRET),
            ("HANDOFF_TOKEN", TOKEN),
        ] {
            vars.insert(name.into(), value.into());
        }
    }
}

/// A bridge for `agent_type` on the agent that hands over to people, sending them to
/// the desk at `desk_url`, with `settings` besides.
pub(crate) async fn people_stack(
    agent_type: &str,
    desk_url: &str,
    settings: &[(&str, &str)],
) -> Stack {
    start_with_agent(AGENT_WITH_PEOPLE, agent_type, |vars| {
        with_people(desk_url)(vars);
        set(settings)(vars);
    })
    .await
}

/// Sends `text`; returns the replies sent through the Messages API after those
/// already there (waiting for `count`).
pub(crate) async fn say(stack: &Stack, text: &str, count: usize) -> Vec<String> {
    say_as(stack, &stack.phone, text, count).await
}

pub(crate) async fn say_as(
    stack: &Stack,
    phone: &stand_ins::chat::Phone,
    text: &str,
    count: usize,
) -> Vec<String> {
    let before = stack.twilio.sent().len();
    let (status, _) = post_from(phone, &stack.bridge.url(), &says(text), &[]).await;
    assert_eq!(status, 200);
    let sent = stack.twilio.wait_for(before + count).await;
    sent[before..].iter().map(|m| m.body.clone()).collect()
}

/// The desk writes `body` into `conversation`, with the right token: status and JSON
/// answer.
pub(crate) async fn desk_writes(stack: &Stack, conversation: &str, body: Value) -> (u16, Value) {
    desk_call(stack, &format!("{conversation}/messages"), TOKEN, body).await
}

/// The human side's call: status and JSON answer.
pub(crate) async fn desk_call(stack: &Stack, path: &str, token: &str, body: Value) -> (u16, Value) {
    desk_call_with(stack, path, token, &[], body).await
}

/// [`desk_call`], with `headers` besides the token's.
pub(crate) async fn desk_call_with(
    stack: &Stack,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}handoff/{path}", stack.bridge.url()))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) fn conversation_of(event: &Value) -> String {
    event["conversation"].as_str().unwrap().to_owned()
}

#[test]
fn hand_over_settings_are_checked() {
    let base = |extra: &[(&str, &str)]| {
        let mut vars: HashMap<String, String> = [
            ("AGENT_TYPE", "ES"),
            ("GCP_PROJECT", "p"),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("HANDOFF_URL", "https://desk.example/events"),
            ("HANDOFF_SECRET", SECRET),
            ("HANDOFF_TOKEN", TOKEN),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        bridge::config::Settings::from_vars(&vars).map_err(|e| e.to_string())
    };
    assert!(base(&[]).is_ok());
    assert!(base(&[("HANDOFF_URL", "http://localhost:8090/")]).is_ok());
    for (extra, problem) in [
        (("REPLY_MODE", "twiml"), "needs REPLY_MODE=auto or api"),
        (("HANDOFF_SECRET", "hunter2"), "whsec_"),
        (("HANDOFF_SECRET", "whsec_c2hvcnQ="), "24 to 64 bytes"),
        (("HANDOFF_TOKEN", "short"), "at least 16"),
        (
            ("HANDOFF_URL", "http://desk.example/events"),
            "must be an https:// URL",
        ),
    ] {
        let error = base(&[extra]).unwrap_err();
        assert!(error.contains(problem), "{extra:?}: {error}");
    }
}

/// The checker above, on the Standard Webhooks reference vector: it computes what the
/// specification's reference libraries compute.
#[test]
fn the_signature_checker_agrees_with_the_reference_vector() {
    let key = BASE64.decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        br#"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk.1649367553.{"email":"test@example.com","username":"test_user"}"#,
    );
    assert_eq!(
        BASE64.encode(mac.finalize().into_bytes()),
        "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

/// The value of `series` in `stack`'s metrics.
async fn metric(series: &str, stack: &Stack) -> f64 {
    series_value(&stack.metrics().await, series)
}

const EXPIRED: &str = r#"twilio_dialogflow_handoffs_ended_total{reason="expired"}"#;
