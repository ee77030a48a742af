//! Hand-over to people: the agent (or a keyword) hands the conversation to a helpdesk;
//! the person's messages go there as signed events, in order, and never to the agent;
//! the helpdesk answers through the bridge and gives the conversation back.
//!
//! The helpdesk here is a recording HTTP server; signatures are checked with an
//! implementation of the Standard Webhooks signing written in this file (RustCrypto's
//! `hmac`), not with the crate the bridge signs with.

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

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "desk-token-0123456789";

const AGENT_WITH_PEOPLE: &str = r#"
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
struct Desk {
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Statuses for the next requests, before 200 again; `down` answers 503 always.
    fail_next: Arc<Mutex<Vec<u16>>>,
    down: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<usize>>,
    /// The `webhook-id` of every attempt, refused or not.
    attempt_ids: Arc<Mutex<Vec<String>>>,
}

impl Desk {
    async fn start() -> (Self, String) {
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
    fn events(&self) -> Vec<Value> {
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
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(
            &format!("{count} event(s) at the desk"),
            Duration::from_secs(10),
            || async { ready_if(self.events(), |events| events.len() >= count) },
        )
        .await
    }

    fn kinds(&self) -> Vec<String> {
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

fn with_people(desk_url: &str) -> impl FnOnce(&mut HashMap<String, String>) + '_ {
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

/// Sends `text`; returns the replies sent through the Messages API after those
/// already there (waiting for `count`).
async fn say(stack: &Stack, text: &str, count: usize) -> Vec<String> {
    say_as(stack, &stack.phone, text, count).await
}

async fn say_as(
    stack: &Stack,
    phone: &stand_ins::chat::Phone,
    text: &str,
    count: usize,
) -> Vec<String> {
    let before = stack.twilio.sent().len();
    let message = Outgoing {
        body: text.into(),
        ..Default::default()
    };
    let (status, _) = post_from(phone, &stack.bridge.url(), &message, &[]).await;
    assert_eq!(status, 200);
    let sent = stack.twilio.wait_for(before + count).await;
    sent[before..].iter().map(|m| m.body.clone()).collect()
}

/// The human side's call: status and JSON answer.
async fn desk_call(stack: &Stack, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}handoff/{path}", stack.bridge.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn conversation_of(event: &Value) -> String {
    event["conversation"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_agent_hands_over_and_the_person_talks_to_the_desk_and_back() {
    for (agent_type, trigger) in [("CX", "live_agent_handoff"), ("ES", "payload")] {
        let (desk, url) = Desk::start().await;
        let stack = start_with_agent(AGENT_WITH_PEOPLE, agent_type, with_people(&url)).await;
        assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
        // The agent's own reply in the hand-over's turn is still sent.
        assert_eq!(
            say(&stack, "talk to a person", 1).await,
            vec!["Getting a person"]
        );
        let started = desk.wait_for(1).await.remove(0);
        assert_eq!(started["type"], "handoff.started", "{agent_type}");
        assert_eq!(started["trigger"], trigger);
        assert_eq!(started["channel"], "sms");
        assert_eq!(started["metadata"], json!({"queue": "billing"}));
        let history: Vec<(String, String)> = started["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["from"].as_str().unwrap().into(),
                    l["text"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            history,
            vec![
                ("person".into(), "hello".into()),
                ("agent".into(), "Hello from the agent".into()),
                ("person".into(), "talk to a person".into()),
                ("agent".into(), "Getting a person".into()),
            ]
        );
        assert!(started.get("address").is_none(), "no address unless asked");
        let conversation = conversation_of(&started);
        assert!(!conversation.contains("555"), "the id is not the number");
        // While with a person, messages go to the desk, in order, never to the agent.
        let asked = stack.agent_requests().len();
        say(&stack, "my order is late", 0).await;
        let picture = Outgoing {
            media: vec!["https://example.com/receipt.jpg".into()],
            ..Default::default()
        };
        post_from(&stack.phone, &stack.bridge.url(), &picture, &[]).await;
        let events = desk.wait_for(3).await;
        assert_eq!(events[1]["type"], "message.received");
        assert_eq!(events[1]["message"]["text"], "my order is late");
        assert_eq!(
            events[2]["message"]["media"][0]["url"],
            "https://example.com/receipt.jpg"
        );
        assert!(events.iter().all(|e| conversation_of(e) == conversation));
        assert_eq!(
            stack.agent_requests().len(),
            asked,
            "the agent was not asked"
        );
        // The desk answers: a wrong token sends nothing.
        let sent_before = stack.twilio.sent().len();
        let (status, _) = desk_call(
            &stack,
            &format!("{conversation}/messages"),
            "not-the-token-at-all",
            json!({"text": "Sorry!"}),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _) = desk_call(&stack, &format!("{conversation}/end"), "", json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(stack.twilio.sent().len(), sent_before);
        for text in ["Sorry!", "It leaves the oven now."] {
            let (status, answer) = desk_call(
                &stack,
                &format!("{conversation}/messages"),
                TOKEN,
                json!({"text": text}),
            )
            .await;
            assert_eq!((status, answer), (200, json!({"sent": 1})));
        }
        let sent = stack.twilio.wait_for(sent_before + 2).await;
        let bodies: Vec<&str> = sent[sent_before..]
            .iter()
            .map(|m| m.body.as_str())
            .collect();
        assert_eq!(bodies, vec!["Sorry!", "It leaves the oven now."]);
        assert_eq!(sent[sent_before].to, USER);
        // The desk gives the conversation back.
        let (status, _) = desk_call(&stack, &format!("{conversation}/end"), TOKEN, json!({})).await;
        assert_eq!(status, 200);
        let events = desk.wait_for(4).await;
        assert_eq!(events[3]["type"], "handoff.ended");
        assert_eq!(events[3]["reason"], "desk");
        let (status, _) = desk_call(
            &stack,
            &format!("{conversation}/messages"),
            TOKEN,
            json!({"text": "late"}),
        )
        .await;
        assert_eq!(status, 404, "no hand-over any more");
        assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
        let metrics = stack.metrics().await;
        for line in [
            format!(r#"twilio_dialogflow_handoffs_started_total{{trigger="{trigger}"}} 1"#),
            r#"twilio_dialogflow_handoffs_ended_total{reason="desk"} 1"#.to_owned(),
            r#"twilio_dialogflow_handoff_events_total{result="delivered"} 4"#.to_owned(),
        ] {
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    }
}

#[tokio::test]
async fn a_payload_or_a_keyword_starts_a_hand_over_too() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", |vars| {
        with_people(&url)(vars);
        vars.insert("HANDOFF_KEYWORDS".into(), "agent, Human".into());
        vars.insert("HANDOFF_INCLUDE_ADDRESS".into(), "true".into());
    })
    .await;
    assert_eq!(
        say(&stack, "payload please", 1).await,
        vec!["Passing you on"]
    );
    let started = desk.wait_for(1).await.remove(0);
    assert_eq!(
        (started["trigger"].as_str(), &started["metadata"]),
        (Some("payload"), &json!({"queue": "sales"}))
    );
    assert_eq!(started["address"], USER, "HANDOFF_INCLUDE_ADDRESS=true");
    // Another person writes a keyword: no agent, the started message, and the desk.
    let other = stack.phone_of("+15550009999");
    let asked = stack.agent_requests().len();
    let told = say_as(&stack, &other, " HUMAN ", 1).await;
    assert_eq!(told, vec!["One moment: a person will answer you here."]);
    assert_eq!(stack.agent_requests().len(), asked);
    let events = desk.wait_for(2).await;
    assert_eq!(events[1]["trigger"], "keyword");
    assert_ne!(conversation_of(&events[1]), conversation_of(&events[0]));
}

#[tokio::test]
async fn a_destination_failing_for_a_while_gets_every_event_once_in_order() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", with_people(&url)).await;
    desk.fail_next.lock().unwrap().extend([500, 502]);
    say(&stack, "talk to a person", 1).await;
    say(&stack, "one", 0).await;
    say(&stack, "two", 0).await;
    let events = desk.wait_for(3).await;
    assert_eq!(
        desk.kinds(),
        vec!["handoff.started", "message.received", "message.received"]
    );
    assert_eq!(events[1]["message"]["text"], "one");
    assert_eq!(events[2]["message"]["text"], "two");
    // Each retry of an event carries the same id: a desk can drop repeats.
    assert_eq!(*desk.attempts.lock().unwrap(), 5);
    let ids = desk.attempt_ids.lock().unwrap().clone();
    let delivered: Vec<String> = desk
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, _)| headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids[..3],
        [
            delivered[0].clone(),
            delivered[0].clone(),
            delivered[0].clone()
        ]
    );
    assert_eq!(ids[3..], delivered[1..]);
    assert_ne!(delivered[1], delivered[2]);
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(r#"twilio_dialogflow_handoff_events_total{result="retried"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_destination_down_past_the_retry_time_gives_the_conversation_back() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", |vars| {
        with_people(&url)(vars);
        vars.insert("HANDOFF_RETRY_FOR".into(), "1s".into());
    })
    .await;
    *desk.down.lock().unwrap() = true;
    let told = say(&stack, "talk to a person", 2).await;
    assert_eq!(
        told,
        vec![
            "Getting a person",
            "Sorry, no one can take over right now. You're back with the assistant."
        ]
    );
    // Back with the agent, and never a 5xx to Twilio.
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
    let metrics = stack.metrics().await;
    for line in [
        "twilio_dialogflow_handoffs_failed_total 1",
        r#"twilio_dialogflow_handoffs_ended_total{reason="unavailable"} 1"#,
        r#"twilio_dialogflow_handoff_events_total{result="dropped"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_quiet_hand_over_ends_by_itself_and_the_agent_says_welcome_back() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "ES", |vars| {
        with_people(&url)(vars);
        vars.insert("HANDOFF_TTL".into(), "1s".into());
        vars.insert("HANDOFF_RETURN_EVENT".into(), "true".into());
    })
    .await;
    say(&stack, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    // Nobody writes: the helpdesk is told all the same.
    let events = desk.wait_for(2).await;
    assert_eq!(
        (events[1]["type"].as_str(), events[1]["reason"].as_str()),
        (Some("handoff.ended"), Some("expired")),
        "{events:?}"
    );
    let (status, _) = desk_call(
        &stack,
        &format!("{conversation}/messages"),
        TOKEN,
        json!({"text": "still there?"}),
    )
    .await;
    assert_eq!(status, 404, "the hand-over is over");
    // The agent hears of it first, then the message.
    assert_eq!(
        say(&stack, "hello", 2).await,
        vec!["Welcome back", "Hello from the agent"]
    );
}

#[tokio::test]
async fn a_hand_over_holds_across_instances() {
    let redis = RedisServer::start().await;
    let (desk, url) = Desk::start().await;
    let shared = |vars: &mut HashMap<String, String>| {
        with_people(&url)(vars);
        vars.insert("STATE_URL".into(), redis.url());
    };
    let one = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    let other = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    say(&one, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    // The other instance sends the person's message to the desk, not to its agent.
    say_as(&other, &other.phone, "are you there?", 0).await;
    let events = desk.wait_for(2).await;
    assert_eq!(events[1]["message"]["text"], "are you there?");
    assert!(other.agent_requests().is_empty());
    // The desk may answer through either instance.
    let (status, _) = desk_call(
        &other,
        &format!("{conversation}/messages"),
        TOKEN,
        json!({"text": "Yes!"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(other.twilio.wait_for(1).await[0].body, "Yes!");
    let (status, _) = desk_call(&one, &format!("{conversation}/end"), TOKEN, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        say_as(&other, &other.phone, "hello", 1).await,
        vec!["Hello from the agent"]
    );
}

#[tokio::test]
async fn the_terminal_desk_checks_signatures_and_answers_through_the_bridge() {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let desk_url = format!("http://{}/", listener.local_addr().unwrap());
    let _desk = stand_ins::desk::receive(listener, SECRET, sender).unwrap();
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", with_people(&desk_url)).await;
    say(&stack, "talk to a person", 1).await;
    let started = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        stand_ins::desk::show(&started).contains("hand-over started (sms, live_agent_handoff)"),
        "{started}"
    );
    // A forged event is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let forged = reqwest::Client::new()
        .post(&desk_url)
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", now)
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"type":"handoff.started"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let human = stand_ins::desk::HumanSide::new(&stack.bridge.url(), TOKEN).unwrap();
    let conversation = conversation_of(&started);
    human.say(&conversation, "Hi, I'm Sam", &[]).await.unwrap();
    assert_eq!(stack.twilio.wait_for(2).await[1].body, "Hi, I'm Sam");
    human.end(&conversation).await.unwrap();
    assert!(human.end(&conversation).await.is_err(), "ended already");
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

#[tokio::test]
async fn in_auto_mode_with_locations_and_past_the_rate_limit_everything_reaches_the_desk() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", |vars| {
        with_people(&url)(vars);
        vars.insert("REPLY_MODE".into(), "auto".into());
        vars.insert("RATE_LIMIT_PER_CONVERSATION".into(), "3".into());
    })
    .await;
    // auto: the agent's reply travels in the webhook's answer, the events follow.
    let reply = stack.say("talk to a person").await;
    assert_eq!(texts(&reply), vec!["Getting a person"]);
    desk.wait_for(1).await;
    for text in ["one", "two", "three", "four"] {
        let reply = stack.say(text).await;
        assert!(
            reply.is_empty(),
            "nothing from the agent or the limit: {reply:?}"
        );
    }
    let place = Outgoing {
        params: vec![
            ("Latitude".into(), "52.37".into()),
            ("Longitude".into(), "4.89".into()),
        ],
        ..Default::default()
    };
    assert!(stack.send(&place).await.is_empty());
    let events = desk.wait_for(6).await;
    let said: Vec<&str> = events[1..5]
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(said, vec!["one", "two", "three", "four"]);
    assert_eq!(events[5]["message"]["location"]["latitude"], 52.37);
    assert!(
        stack.twilio.sent().is_empty(),
        "no \"slow down\" to someone talking to a person"
    );
}

#[tokio::test]
async fn a_desk_that_goes_away_mid_hand_over_gives_the_conversation_back() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", |vars| {
        with_people(&url)(vars);
        vars.insert("HANDOFF_RETRY_FOR".into(), "1s".into());
        vars.insert("HANDOFF_RETURN_EVENT".into(), "true".into());
    })
    .await;
    say(&stack, "talk to a person", 1).await;
    desk.wait_for(1).await;
    *desk.down.lock().unwrap() = true;
    let told = say(&stack, "hello?", 1).await;
    assert_eq!(
        told,
        vec!["Sorry, no one can take over right now. You're back with the assistant."]
    );
    assert_eq!(
        say(&stack, "hello", 2).await,
        vec!["Welcome back", "Hello from the agent"]
    );
}

#[tokio::test]
async fn a_hand_over_expires_after_the_ttl_and_the_person_is_back_with_the_agent() {
    let (desk, url) = Desk::start().await;
    // Hand-overs keep time in whole seconds: a TTL of 1 s could run out between the
    // two messages below, 2 s cannot.
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", |vars| {
        with_people(&url)(vars);
        vars.insert("HANDOFF_TTL".into(), "2s".into());
    })
    .await;
    say(&stack, "talk to a person", 1).await;
    say(&stack, "still there?", 0).await;
    desk.wait_for(2).await;
    // Quiet for the TTL, the hand-over ends: the sweep (every 500 ms) tells the desk.
    // Waiting for that, not for a guess at how long it takes, the person then writes
    // to the agent.
    let events = desk.wait_for(3).await;
    assert_eq!(
        (events[2]["type"].as_str(), events[2]["reason"].as_str()),
        (Some("handoff.ended"), Some("expired"))
    );
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
}

#[tokio::test]
async fn the_human_side_sends_media_and_long_text_within_twilios_limits() {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(AGENT_WITH_PEOPLE, "CX", with_people(&url)).await;
    say(&stack, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    let long = "word ".repeat(700);
    let (status, answer) = desk_call(
        &stack,
        &format!("{conversation}/messages"),
        TOKEN,
        json!({"text": long, "media": ["https://example.com/receipt.jpg"]}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"sent": 3})));
    let sent = stack.twilio.wait_for(4).await;
    assert!(sent[1..].iter().all(|m| m.body.chars().count() <= 1600));
    let whole: String = sent[1..].iter().map(|m| m.body.as_str()).collect();
    assert_eq!(whole, long);
    assert_eq!(
        sent[3].media,
        vec!["https://example.com/receipt.jpg".to_string()]
    );
    for (body, problem) in [
        (json!({"text": ""}), "nothing to send"),
        (json!({"text": "x", "media": ["ftp://x"]}), "http(s) URLs"),
        (json!({"text": "x".repeat(16_001)}), "at most 16000"),
        (json!({"txt": "typo"}), "must be JSON"),
    ] {
        let (status, answer) =
            desk_call(&stack, &format!("{conversation}/messages"), TOKEN, body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(problem),
            "{answer}"
        );
    }
    let (status, _) = desk_call(
        &stack,
        "not-a-conversation/messages",
        TOKEN,
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}

/// The value of `series` in `stack`'s metrics.
async fn metric(series: &str, stack: &Stack) -> f64 {
    series_value(&stack.metrics().await, series)
}

const EXPIRED: &str = r#"twilio_dialogflow_handoffs_ended_total{reason="expired"}"#;

/// How many times each of two instances has looked for hand-overs due to end (each
/// sweep asks the store once).
async fn sweeps(one: &Stack, other: &Stack) -> (f64, f64) {
    const DUE: &str = r#"twilio_dialogflow_state_calls_total{op="due"}"#;
    (metric(DUE, one).await, metric(DUE, other).await)
}

#[tokio::test]
async fn with_two_instances_a_quiet_hand_over_is_ended_once() {
    let redis = RedisServer::start().await;
    let (desk, url) = Desk::start().await;
    let shared = |vars: &mut HashMap<String, String>| {
        with_people(&url)(vars);
        vars.insert("STATE_URL".into(), redis.url());
        vars.insert("HANDOFF_TTL".into(), "1s".into());
    };
    let one = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    let other = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    say(&one, "talk to a person", 1).await;
    // Quiet for the TTL (1 s, on a clock of whole seconds), it is ended by the sweep of
    // one instance or the other (each every 500 ms).
    desk.wait_for(2).await;
    assert_eq!(desk.kinds(), vec!["handoff.started", "handoff.ended"]);
    // Once: each instance has since looked at the schedule again (two calls, so one
    // whole sweep began after the end), and neither found it due a second time.
    let before = sweeps(&one, &other).await;
    eventually(
        "a sweep of each instance",
        Duration::from_secs(10),
        || async {
            ready_if(sweeps(&one, &other).await, |now| {
                now.0 >= before.0 + 2.0 && now.1 >= before.1 + 2.0
            })
        },
    )
    .await;
    assert_eq!(
        metric(EXPIRED, &one).await + metric(EXPIRED, &other).await,
        1.0
    );
    assert_eq!(desk.kinds(), vec!["handoff.started", "handoff.ended"]);
}

#[tokio::test]
async fn the_desk_command_shows_events_and_answers_through_the_bridge() {
    // Each needs the other's address: the bridge's port is taken first, the desk takes
    // one of its own (port 0) and says which, and the bridge then starts, told it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = format!("http://{}/", listener.local_addr().unwrap());
    let dir = WorkDir::with_dotenv(&format!("HANDOFF_TOKEN={TOKEN}\nHANDOFF_SECRET={SECRET}\n"));
    let mut command = dir.command(&["desk", "--listen", "0", "--bridge", &bridge], &[]);
    command.stdin(std::process::Stdio::piped());
    let mut desk = Running::spawn(&mut command, Output::Stdout);
    let desk_url = desk
        .find_line(|l| {
            let rest = l.split_once("Helpdesk listening on ")?.1;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .await;
    let stack = start_on(listener, AGENT_WITH_PEOPLE, "CX", with_people(&desk_url)).await;
    assert_eq!(stack.bridge.url(), bridge);
    say(&stack, "talk to a person", 1).await;
    desk.find_line(|l| {
        l.contains("hand-over started (sms, live_agent_handoff)")
            .then_some(())
    })
    .await;
    desk.find_line(|l| l.contains("person: talk to a person").then_some(()))
        .await;
    say(&stack, "my order is late", 0).await;
    desk.find_line(|l| l.contains("] person: my order is late").then_some(()))
        .await;
    desk.write_line("Hi, Sam from the shop here");
    desk.find_line(|l| l.contains("(sent)").then_some(())).await;
    assert_eq!(
        stack.twilio.wait_for(2).await[1].body,
        "Hi, Sam from the shop here"
    );
    desk.write_line("/end");
    desk.find_line(|l| l.contains("given back to the agent").then_some(()))
        .await;
    desk.find_line(|l| l.contains("hand-over ended (desk)").then_some(()))
        .await;
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
}
