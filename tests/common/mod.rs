//! Shared set-up for the black-box tests: a real emulator and a real bridge on free
//! ports, and a phone that signs webhooks like Twilio.
#![allow(dead_code)]

use std::collections::HashMap;
use twilio_dialogflow::chat::{Outgoing, Phone, PhoneReply};
use twilio_dialogflow::config::Settings;
use twilio_dialogflow::emulator::{AgentDefinition, Emulator, RecordedRequest};
use twilio_dialogflow::http::RunningBridge;
use twilio_dialogflow::messages_emulator::MessagesEmulator;
use twilio_dialogflow::reply::ReplyMessage;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const USER: &str = "+15551230001";
pub const OUR_NUMBER: &str = "+15557770000";

/// A small agent that exercises every reply the bridge handles.
pub const AGENT: &str = r#"
project: test-project
location: global
agent_id: test-agent
language: en
intents:
  - name: greeting
    phrases: ["hi", "hello"]
    replies:
      - text: "Hello from the agent"
  - name: order.size
    phrases: ["small", "medium", "large"]
    capture: { parameter: size, values: [small, medium, large] }
    replies:
      - text: "A $session.params.size pizza"
  - name: confirm
    phrases: ["what did I order"]
    replies:
      - text: "You ordered a $session.params.size pizza"
  - name: menu
    phrases: ["menu"]
    replies:
      - text: "Here is the menu"
      - payload: { body: "Menu card", media: ["https://example.com/menu.jpg", "https://example.com/drinks.jpg"] }
        channel: TWILIO
      - text: "Only for Facebook"
        channel: FACEBOOK
  - name: es.menu
    phrases: ["es menu"]
    replies:
      - text: "Here is the ES menu"
      - payload: { twilio: { body: "ES card", media: "https://example.com/es.jpg" } }
      - text: "Slack only"
        platform: SLACK
  - name: tricky
    phrases: ["tricky"]
    replies:
      - text: "Fish & <chips> \"quoted\" 🍟"
  - name: long
    phrases: ["long"]
    replies:
      - text: "LONG"
  - name: picture
    events: [twilio_media]
    replies:
      - text: "Nice picture"
  - name: broken
    phrases: ["break"]
    error: { code: 503, status: UNAVAILABLE, message: "backend unavailable" }
  - name: flaky
    phrases: ["flaky"]
    error: { code: 503, status: UNAVAILABLE, message: "try again" }
    fail_first: 2
    replies:
      - text: "Worked after retries"
  - name: busy
    phrases: ["busy"]
    error: { code: 429, status: RESOURCE_EXHAUSTED, message: "quota" }
    fail_first: 1
    replies:
      - text: "Worked after a pause"
  - name: gallery
    phrases: ["gallery"]
    replies:
      - payload: { body: "Twelve pictures", media: [GALLERY] }
  - name: denied
    phrases: ["denied"]
    error: { code: 403, status: PERMISSION_DENIED, message: "no access" }
  - name: slow
    phrases: ["slow"]
    delay_ms: 3000
    replies:
      - text: "Finally"
  - name: a bit slow
    phrases: ["a bit slow"]
    delay_ms: 700
    replies:
      - text: "Slowly but surely"
  - name: glacial
    phrases: ["glacial"]
    delay_ms: 20000
    replies:
      - text: "Sorry for the wait"
      - text: "Here is your answer"
fallback:
  replies:
    - text: "Sorry, what?"
"#;

/// Twelve picture URLs: more than one Twilio message carries.
pub fn gallery() -> Vec<String> {
    (1..=12)
        .map(|i| format!("https://example.com/{i}.jpg"))
        .collect()
}

/// A long reply, made by the test so the agent file stays readable.
pub fn long_reply() -> String {
    "pizza ".repeat(500)
}

pub struct Stack {
    pub emulator: Emulator,
    pub bridge: RunningBridge,
    pub phone: Phone,
    /// Twilio's Messages API, for replies that do not travel in the webhook's answer.
    pub twilio: MessagesEmulator,
}

/// Base configuration for a bridge talking to `emulator`, as an operator would write it.
pub fn vars(
    emulator: &Emulator,
    agent: &AgentDefinition,
    agent_type: &str,
) -> HashMap<String, String> {
    [
        ("AGENT_TYPE", agent_type),
        ("AGENT_ID", agent.agent_id()),
        ("AGENT_LOCATION", agent.location()),
        ("GCP_PROJECT", agent.project()),
        ("LANGUAGE_CODE", "en"),
        ("SESSION_TTL", "12h"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("AGENT_TIMEOUT", "2s"),
        // The Node sample's behaviour; the asynchronous modes have tests of their own.
        ("REPLY_MODE", "twiml"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "DIALOGFLOW_EMULATOR_HOST".to_string(),
        emulator.addr().to_string(),
    )])
    .collect()
}

pub async fn start_emulator(agent_yaml: &str) -> (Emulator, AgentDefinition) {
    let agent_yaml = agent_yaml
        .replace("\"LONG\"", &format!("{:?}", long_reply()))
        .replace("[GALLERY]", &format!("{:?}", gallery()));
    let agent = AgentDefinition::from_yaml_str(&agent_yaml).expect("test agent parses");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::start(agent.clone(), listener)
        .await
        .expect("emulator starts");
    (emulator, agent)
}

/// Emulator + bridge for `agent_type` (`CX` or `ES`), with `tweak` applied to the
/// bridge's configuration.
pub async fn start(agent_type: &str, tweak: impl FnOnce(&mut HashMap<String, String>)) -> Stack {
    let (emulator, agent) = start_emulator(AGENT).await;
    let twilio = MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ACCOUNT_SID,
        AUTH_TOKEN,
    )
    .unwrap();
    let mut vars = vars(&emulator, &agent, agent_type);
    // Never the real Twilio, whatever the test's mode.
    vars.insert("TWILIO_API_BASE_URL".into(), twilio.base_url());
    tweak(&mut vars);
    let settings = Settings::from_vars(&vars).expect("test configuration is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = RunningBridge::start(&settings, listener)
        .await
        .expect("bridge starts");
    let phone = Phone::new(&bridge.url(), ACCOUNT_SID, AUTH_TOKEN, USER, OUR_NUMBER).unwrap();
    Stack {
        emulator,
        bridge,
        phone,
        twilio,
    }
}

impl Stack {
    pub async fn say(&self, body: &str) -> Vec<ReplyMessage> {
        self.send(&Outgoing {
            body: body.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn send(&self, message: &Outgoing) -> Vec<ReplyMessage> {
        send_from(&self.phone, message).await
    }

    pub fn agent_requests(&self) -> Vec<RecordedRequest> {
        self.emulator.requests()
    }
}

/// What `phone` gets back for `message`; the bridge must accept it.
pub async fn send_from(phone: &Phone, message: &Outgoing) -> Vec<ReplyMessage> {
    match phone.send(message).await.expect("bridge reachable") {
        PhoneReply::Messages(messages) => messages,
        PhoneReply::Refused { status, reason } => panic!("refused with {status}: {reason}"),
    }
}

/// What `phone` gets back for the text `body`.
pub async fn ask(phone: &Phone, body: &str) -> Vec<ReplyMessage> {
    send_from(
        phone,
        &Outgoing {
            body: body.into(),
            ..Default::default()
        },
    )
    .await
}

pub fn texts(messages: &[ReplyMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

/// A raw POST to the bridge, for requests no well-behaved phone would send.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
