//! Shared set-up for the black-box tests: a real emulator and a real bridge on free
//! ports, a stand-in for Twilio's Messages API, and a phone that signs webhooks like
//! Twilio.

mod messages;
pub use messages::*;
mod process;
pub use process::*;
mod redis_server;
pub use redis_server::*;
mod otlp;
pub use otlp::*;
mod wait;
pub use wait::*;

use bridge::config::Settings;
use bridge::reply::ReplyMessage;
use bridge::startup::RunningBridge;
use stand_ins::chat::{Outgoing, Phone, PhoneReply};
use stand_ins::emulator::{AgentDefinition, Emulator, RecordedRequest};
use stand_ins::messages_api::MessagesEmulator;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const USER: &str = "+15551230001";
pub const OUR_NUMBER: &str = "+15557770000";

/// A SID of Twilio's shape, `prefix` and 32 hex digits of `n`: `sid("SM", 1)` for a
/// message, `"MG"` a Messaging Service, `"AC"` an account. The bridge refuses any other.
pub fn sid(prefix: &str, n: u128) -> String {
    format!("{prefix}{n:032x}")
}

/// The test phone's conversation (`USER` to `OUR_NUMBER` on `ACCOUNT_SID`), as a
/// bridge whose session key comes from `AUTH_TOKEN` names it.
pub fn test_session() -> bridge::session::SessionId {
    bridge::session::SessionId::for_conversation(
        &bridge::session::SessionKey::derived_from_auth_token(AUTH_TOKEN),
        ACCOUNT_SID,
        USER,
        OUR_NUMBER,
    )
}

/// Where the shared store (default prefix) keeps the test conversation's message
/// `message_sid`: in its conversation's hash slot, tagged with the session.
pub fn stored_message_key(message_sid: &str) -> String {
    format!(
        "twilio-dialogflow:{{{}}}:m:{ACCOUNT_SID}:{message_sid}",
        test_session().as_str()
    )
}

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
    delay_ms: 1500
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

/// The agent's emulator for `agent_yaml` and a Messages API that accepts only
/// `twilio_password`, on free ports, with the settings that point a bridge at them.
async fn emulators(
    agent_yaml: &str,
    twilio_password: &str,
) -> (Emulator, MessagesEmulator, HashMap<String, String>) {
    let (emulator, agent) = start_emulator(agent_yaml).await;
    let twilio = MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ACCOUNT_SID,
        twilio_password,
    )
    .unwrap();
    let vars = stand_ins::demo::local_vars(&agent, &emulator, &twilio, ACCOUNT_SID, AUTH_TOKEN);
    (emulator, twilio, vars)
}

/// Emulator + bridge for `agent_type` (`CX` or `ES`), with `tweak` applied to the
/// bridge's configuration.
pub async fn start(agent_type: &str, tweak: impl FnOnce(&mut HashMap<String, String>)) -> Stack {
    start_with_agent(AGENT, agent_type, tweak).await
}

/// A tweak for [`start`] that sets each of `settings` in the bridge's configuration.
pub fn set<'a>(
    settings: &'a [(&'a str, &'a str)],
) -> impl FnOnce(&mut HashMap<String, String>) + 'a {
    move |vars| {
        for (name, value) in settings {
            vars.insert(name.to_string(), value.to_string());
        }
    }
}

/// [`start`], with the agent file `agent_yaml`.
pub async fn start_with_agent(
    agent_yaml: &str,
    agent_type: &str,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> Stack {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, agent_yaml, agent_type, tweak).await
}

/// [`start_with_agent`], with the bridge serving on `listener`: for a test that must
/// tell another process the bridge's address before the bridge starts.
pub async fn start_on(
    listener: tokio::net::TcpListener,
    agent_yaml: &str,
    agent_type: &str,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> Stack {
    let (emulator, twilio, mut vars) = emulators(agent_yaml, AUTH_TOKEN).await;
    vars.extend(
        [
            ("AGENT_TYPE", agent_type),
            ("SESSION_TTL", "12h"),
            ("AGENT_TIMEOUT", "2s"),
            // The Node sample's behaviour; the asynchronous modes have tests of their own.
            ("REPLY_MODE", "twiml"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    tweak(&mut vars);
    let settings = Settings::from_vars(&vars).expect("test configuration is valid");
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
        self.send(&says(body)).await
    }

    pub async fn send(&self, message: &Outgoing) -> Vec<ReplyMessage> {
        send_from(&self.phone, message).await
    }

    /// The raw answer to the webhook the phone sends for `message`.
    pub async fn post_webhook(&self, message: &Outgoing) -> (u16, String) {
        post_from(&self.phone, &self.bridge.url(), message, &[]).await
    }

    /// Another person, writing to the same number.
    pub fn phone_of(&self, from: &str) -> Phone {
        Phone::new(
            &self.bridge.url(),
            ACCOUNT_SID,
            AUTH_TOKEN,
            from,
            OUR_NUMBER,
        )
        .unwrap()
    }

    /// `user` writing on WhatsApp to the stack's WhatsApp number, as the test account.
    pub fn whatsapp_phone_of(&self, user: &str) -> Phone {
        Phone::new(
            &self.bridge.url(),
            ACCOUNT_SID,
            AUTH_TOKEN,
            &format!("whatsapp:{user}"),
            &format!("whatsapp:{OUR_NUMBER}"),
        )
        .unwrap()
    }

    /// What the phone reads back for the text `body`.
    pub async fn replies_to(&self, body: &str) -> Vec<String> {
        self.say(body).await.into_iter().map(|m| m.body).collect()
    }

    /// The test user's phone, signing as `account_sid` with `auth_token`: a webhook
    /// from another account, or signed with the wrong token.
    pub fn phone_signing_as(&self, account_sid: &str, auth_token: &str) -> Phone {
        Phone::new(
            &self.bridge.url(),
            account_sid,
            auth_token,
            USER,
            OUR_NUMBER,
        )
        .unwrap()
    }

    /// Fails, showing them all, unless the bridge's metrics have the line `line`.
    pub async fn assert_metrics_show(&self, line: &str) {
        let metrics = self.metrics().await;
        assert!(metrics.contains(line), "{metrics}");
    }

    pub fn agent_requests(&self) -> Vec<RecordedRequest> {
        self.emulator.requests()
    }

    /// The bridge's `GET /metrics`.
    pub async fn metrics(&self) -> String {
        metrics_at(&self.bridge.url()).await
    }
}

/// `GET /metrics` of the server at `base_url` (ending in `/`): the text.
pub async fn metrics_at(base_url: &str) -> String {
    reqwest::get(format!("{base_url}metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    send_from(phone, &says(body)).await
}

pub fn texts(messages: &[ReplyMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

pub const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// The webhook `phone` sends for `message`, posted to `url` with `headers` besides the
/// form's and the signature: the raw answer.
pub async fn post_from(
    phone: &Phone,
    url: &str,
    message: &Outgoing,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (params, signature) = phone.webhook(message);
    let mut all = vec![FORM, ("x-twilio-signature", signature.as_str())];
    all.extend_from_slice(headers);
    post(url, &all, params.encode()).await
}

/// A form of `params` posted to `url`, signed with the test account's token as Twilio
/// signs a request it sends to `signed_url`.
pub async fn post_signed(url: &str, signed_url: &str, params: &[(&str, &str)]) -> (u16, String) {
    post_signed_as(url, signed_url, AUTH_TOKEN, pairs(params)).await
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

/// Which of a child's output streams a test reads.
pub enum Output {
    Stdout,
    Stderr,
}

/// The emulators, and a directory whose `.env` points a bridge at them: for tests that
/// run `serve` as a process (its logs, signals, several instances).
pub struct Local {
    pub emulator: Emulator,
    pub twilio: MessagesEmulator,
    pub dir: WorkDir,
}

impl Local {
    /// With JSON logs, a free port, and `settings` added to the `.env`.
    pub async fn start(settings: &[(&str, &str)]) -> Self {
        Self::with_twilio_password(AUTH_TOKEN, settings).await
    }

    /// As [`Local::start`], with a Messages API that accepts only `password`.
    pub async fn with_twilio_password(password: &str, settings: &[(&str, &str)]) -> Self {
        Self::with(AGENT, password, settings).await
    }

    /// As [`Local::start`], with the agent file `agent_yaml`.
    pub async fn with_agent(agent_yaml: &str, settings: &[(&str, &str)]) -> Self {
        Self::with(agent_yaml, AUTH_TOKEN, settings).await
    }

    async fn with(agent_yaml: &str, password: &str, settings: &[(&str, &str)]) -> Self {
        let (emulator, twilio, mut vars) = emulators(agent_yaml, password).await;
        for (name, value) in [("PORT", "0"), ("LOG_FORMAT", "json")]
            .iter()
            .chain(settings)
        {
            vars.insert(name.to_string(), value.to_string());
        }
        let dotenv: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        Self {
            emulator,
            twilio,
            dir: WorkDir::with_dotenv(&dotenv),
        }
    }

    /// `serve` in the directory (after `wrapper`, such as `prlimit --nofile=…`), once it
    /// listens, with a phone that writes to it.
    pub async fn serve(&self, wrapper: &[&str]) -> (Running, Phone) {
        let (serve, port) = self.serve_on_port(wrapper).await;
        (serve, phone_at(port))
    }

    /// [`Local::serve`], with the port it listens on.
    pub async fn serve_on_port(&self, wrapper: &[&str]) -> (Running, u16) {
        let mut command = match wrapper.split_first() {
            None => self.dir.command(&["serve"], &[]),
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command
                    .args(args)
                    .args([BIN, "serve"])
                    .current_dir(&self.dir.0)
                    .env_clear();
                command
            }
        };
        let mut serve = Running::spawn(&mut command, Output::Stderr);
        let port = serve.find_line(listening_port).await;
        (serve, port)
    }
}

/// The test user's phone, writing to a bridge on local `port`.
pub fn phone_at(port: u16) -> Phone {
    Phone::new(
        &format!("http://127.0.0.1:{port}/"),
        ACCOUNT_SID,
        AUTH_TOKEN,
        USER,
        OUR_NUMBER,
    )
    .unwrap()
}

/// An emulator serving the agent file `yaml` as it is, on a free port.
pub async fn emulator_of(yaml: &str) -> Emulator {
    let agent = AgentDefinition::from_yaml_str(yaml).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(agent, listener).await.unwrap()
}

/// `client(&Emulator)` and `detect(&client, request)` for one of Google's official
/// Dialogflow crates (CX v3, ES v2): the same calls, on each crate's own types.
macro_rules! official_client {
    ($krate:ident) => {
        use $krate::client::Sessions;

        async fn client(emulator: &stand_ins::emulator::Emulator) -> Sessions {
            Sessions::builder()
                .with_endpoint(format!("http://{}", emulator.addr()))
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
                .build()
                .await
                .unwrap()
        }

        /// One detectIntent call through the official client.
        async fn detect(
            client: &Sessions,
            request: $krate::model::DetectIntentRequest,
        ) -> $krate::Result<$krate::model::DetectIntentResponse> {
            client.detect_intent().with_request(request).send().await
        }
    };
}
pub(crate) use official_client;
