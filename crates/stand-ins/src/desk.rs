//! `twilio-dialogflow desk`: a terminal helpdesk, to try hand-over without one.
//!
//! It receives the bridge's hand-over events on its own port (`HANDOFF_URL` points
//! there), checks their Standard Webhooks signature with `HANDOFF_SECRET`, and prints
//! them; what is typed goes back to the person through the bridge's `/handoff/…` API
//! with `HANDOFF_TOKEN`. Any real helpdesk does the same two things.

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Receives signed hand-over events on `listener`; each verified one is passed to
/// `events`, others are refused with `401`.
pub fn receive(
    listener: TcpListener,
    secret: &str,
    events: mpsc::UnboundedSender<Value>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let verifier = standardwebhooks::Webhook::new(secret)
        .map_err(|e| anyhow::anyhow!("HANDOFF_SECRET cannot verify: {e}"))?;
    let app = Router::new().fallback(post(event)).with_state(Arc::new((
        verifier,
        events,
        Default::default(),
    )));
    Ok(hardened_http::spawn_with_default_limits(
        listener,
        app,
        std::future::pending(),
    ))
}

type Receiver = Arc<(
    standardwebhooks::Webhook,
    mpsc::UnboundedSender<Value>,
    std::sync::Mutex<std::collections::VecDeque<String>>,
)>;

/// Ids of the events seen lately: a retry of one already taken is not shown again.
const REMEMBERED_IDS: usize = 1000;

async fn event(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (verifier, events, seen) = &*receiver;
    if let Err(error) = verifier.verify(&body, &headers) {
        tracing::warn!(error = %error, "a hand-over event was refused: its signature does not check with HANDOFF_SECRET");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get(standardwebhooks::HEADER_WEBHOOK_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    {
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&id) {
            return StatusCode::NO_CONTENT;
        }
        if seen.len() >= REMEMBERED_IDS {
            seen.pop_front();
        }
        seen.push_back(id);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(value) => {
            let _ = events.send(value);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The bridge's hand-over API, as a helpdesk calls it.
#[derive(Clone)]
pub struct HumanSide {
    client: reqwest::Client,
    bridge_url: String,
    token: String,
}

impl HumanSide {
    pub fn new(bridge_url: &str, token: &str) -> anyhow::Result<Self> {
        let client = crate::http_client(Duration::from_secs(70))?;
        Ok(Self {
            client,
            bridge_url: bridge_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Writes `text` (and `media`) to the person of `conversation`.
    pub async fn say(
        &self,
        conversation: &str,
        text: &str,
        media: &[String],
    ) -> anyhow::Result<Value> {
        self.post(
            &format!("handoff/{conversation}/messages"),
            &json!({"text": text, "media": media}),
        )
        .await
    }

    /// Gives `conversation` back to the agent.
    pub async fn end(&self, conversation: &str) -> anyhow::Result<Value> {
        self.post(&format!("handoff/{conversation}/end"), &json!({}))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.bridge_url);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = answer["error"].as_str().unwrap_or("no reason given");
            bail!("the bridge answered HTTP {}: {why}", status.as_u16());
        }
        Ok(answer)
    }
}

/// How the desk prints an event.
pub fn show(event: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let conversation = short(&text(&event["conversation"]));
    match event["type"].as_str().unwrap_or_default() {
        "handoff.started" => {
            let mut lines = vec![format!(
                "── {conversation}: hand-over started ({}, {}), metadata {}",
                text(&event["channel"]),
                text(&event["trigger"]),
                event["metadata"]
            )];
            if let Some(address) = event["address"].as_str() {
                lines.push(format!("   address: {address}"));
            }
            for line in event["history"].as_array().into_iter().flatten() {
                lines.push(format!(
                    "   {}: {}",
                    text(&line["from"]),
                    text(&line["text"])
                ));
            }
            lines.join("\n")
        }
        "message.received" => {
            let message = &event["message"];
            let mut shown = format!("[{conversation}] person: {}", text(&message["text"]));
            for media in message["media"].as_array().into_iter().flatten() {
                shown.push_str(&format!(" [media] {}", text(&media["url"])));
            }
            if message["location"].is_object() {
                shown.push_str(&format!(
                    " [location] {},{}",
                    message["location"]["latitude"], message["location"]["longitude"]
                ));
            }
            shown
        }
        "handoff.ended" => format!(
            "── {conversation}: hand-over ended ({})",
            text(&event["reason"])
        ),
        "person.erased" => format!(
            "── {conversation}: the person was erased; forget what you keep of them ({})",
            event["removed"]
        ),
        other => format!("[{conversation}] {other}: {event}"),
    }
}

/// The first characters of a conversation id: enough to tell them apart on screen.
fn short(conversation: &str) -> String {
    conversation.chars().take(8).collect()
}

pub const USAGE: &str = "Type to answer the current conversation; /media URL [text]; /end gives it back to the agent; /to ID switches (a prefix will do); /help; /quit.";

/// Runs the desk: listens on `listener` for events, answers through `human`.
pub async fn run(listener: TcpListener, secret: &str, human: HumanSide) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let address = listener.local_addr()?;
    let (sender, mut events) = mpsc::unbounded_channel();
    let _server = receive(listener, secret, sender)?;
    println!("Helpdesk listening on http://{address}/ (set HANDOFF_URL to it). {USAGE}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut known: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                if let Some(conversation) = event["conversation"].as_str() {
                    if event["type"] == "handoff.started" {
                        current = Some(conversation.to_owned());
                    }
                    if !known.iter().any(|c| c == conversation) {
                        known.push(conversation.to_owned());
                    }
                }
                println!("{}", show(&event));
            }
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
                let outcome = match (word, current.as_deref()) {
                    ("/quit", _) => break,
                    ("/help", _) => Ok(USAGE.to_owned()),
                    ("/to", _) => match known.iter().find(|c| c.starts_with(rest.trim())) {
                        Some(conversation) if !rest.trim().is_empty() => {
                            current = Some(conversation.clone());
                            Ok(format!("now answering {}", short(conversation)))
                        }
                        _ => Ok(format!("! no conversation starts with {:?}", rest.trim())),
                    },
                    (_, None) => Ok("! no conversation yet: wait for a hand-over".to_owned()),
                    ("/end", Some(conversation)) => human.end(conversation).await.map(|_| "given back to the agent".to_owned()),
                    ("/media", Some(conversation)) => {
                        let (url, text) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                        human.say(conversation, text, &[url.to_owned()]).await.map(|_| "sent".to_owned())
                    }
                    (_, Some(conversation)) => human.say(conversation, line, &[]).await.map(|_| "sent".to_owned()),
                };
                match outcome {
                    Ok(said) => println!("  ({said})"),
                    Err(error) => println!("! {error:#}"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_as_a_desk_shows_them() {
        let started = json!({"type": "handoff.started", "conversation": "abcdefghijkl", "channel": "sms",
            "trigger": "keyword", "metadata": {}, "history": [{"from": "person", "text": "help"}]});
        assert_eq!(
            show(&started),
            "── abcdefgh: hand-over started (sms, keyword), metadata {}\n   person: help"
        );
        let received = json!({"type": "message.received", "conversation": "abcdefghijkl",
            "message": {"text": "hi", "media": [{"url": "https://m/1"}]}});
        assert_eq!(show(&received), "[abcdefgh] person: hi [media] https://m/1");
        let erased = json!({"type": "person.erased", "conversation": "abcdefghijkl",
            "removed": {"turns": 1}});
        assert_eq!(
            show(&erased),
            r#"── abcdefgh: the person was erased; forget what you keep of them ({"turns":1})"#
        );
    }
}
