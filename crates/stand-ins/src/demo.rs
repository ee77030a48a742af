//! `twilio-dialogflow demo`: the whole path on one machine, with no phone and no cloud.
//!
//! Starts the Dialogflow emulator with the sample agent, a stand-in for Twilio's
//! Messages API and the bridge, each on a free local port, then plays a conversation
//! through real HTTP and real signatures and prints it as the phone would show it.

use crate::chat::{self, Outgoing, Phone, PhoneReply};
use crate::desk;
use crate::emulator::{AgentDefinition, Emulator, SAMPLE_AGENT};
use crate::messages_api::MessagesEmulator;
use anyhow::Context;
use bridge::config::{Settings, Vars};
use bridge::startup::RunningBridge;
use tokio::net::TcpListener;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const USER: &str = "+15555550100";
const OUR_NUMBER: &str = "+15555550199";

/// One step of the script.
enum Step {
    Say(&'static str),
    /// Said on WhatsApp, where menus are buttons and lists.
    WhatsApp(&'static str),
    /// A tap on WhatsApp's Nth button or list item.
    Tap(usize),
    /// Said while the conversation is with a person: it goes to the helpdesk.
    ToPerson(&'static str),
    /// The helpdesk answers.
    DeskSays(&'static str),
    /// The helpdesk gives the conversation back to the agent.
    DeskEnds,
    Picture(&'static str),
    Forged(&'static str),
    Redelivered(&'static str),
    /// The business sends the agent's appointment reminder (`POST /outbound`) for this
    /// time, by SMS.
    Reminder(&'static str),
}

const SCRIPT: &[(&str, Step)] = &[
    ("A greeting", Step::Say("hi")),
    (
        "A multi-turn order by SMS: the agent's choices as numbered menus, answered with a number or a name",
        Step::Say("I'd like to order a pizza"),
    ),
    ("", Step::Say("2")),
    ("", Step::Say("pepperoni")),
    ("", Step::Say("confirm")),
    (
        "The same order on WhatsApp: the menus are reply buttons and a list, made once in the Content API",
        Step::WhatsApp("order a pizza"),
    ),
    ("", Step::Tap(3)),
    ("", Step::Tap(2)),
    ("", Step::WhatsApp("confirm")),
    (
        "The business speaks first: a reminder (POST /outbound with the agent's appointment_reminder event), answered with a number in the same session",
        Step::Reminder("7:30 pm"),
    ),
    ("", Step::Say("1")),
    (
        "A hand-over: the agent gets a person; the helpdesk (signed events, the /handoff API) takes over, then gives the conversation back",
        Step::Say("talk to a person"),
    ),
    ("", Step::ToPerson("my pizza is late")),
    ("", Step::DeskSays("So sorry! It leaves the oven in 5 minutes.")),
    ("", Step::DeskEnds),
    ("", Step::Say("thanks")),
    (
        "A rich reply: a custom payload with media for the TWILIO channel",
        Step::Say("menu"),
    ),
    (
        "A picture with no words: sent to the agent as the twilio_media event",
        Step::Picture("https://demo.twilio.com/owl.png"),
    ),
    (
        "Something the agent does not know: its fallback",
        Step::Say("what's the weather like?"),
    ),
    (
        "The agent fails (UNAVAILABLE, retried until the deadline): the bridge's FALLBACK_MESSAGE",
        Step::Say("break"),
    ),
    (
        "Twilio re-delivers a message: the agent is asked once, the reply is the same",
        Step::Redelivered("hello"),
    ),
    (
        "A webhook signed with the wrong auth token: refused before the agent sees it",
        Step::Forged("hi"),
    ),
];

/// The configuration of a bridge in front of the local emulators, as an operator would
/// write it: `agent` served by `emulator`, replies through the API to `twilio`, signed
/// with `account_sid`/`auth_token`. The demo and the tests start from it.
pub fn local_vars(
    agent: &AgentDefinition,
    emulator: &Emulator,
    twilio: &MessagesEmulator,
    account_sid: &str,
    auth_token: &str,
) -> Vars {
    [
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", agent.agent_id()),
        ("AGENT_LOCATION", agent.location()),
        ("GCP_PROJECT", agent.project()),
        ("LANGUAGE_CODE", agent.language()),
        ("TWILIO_ACCOUNT_SID", account_sid),
        ("TWILIO_AUTH_TOKEN", auth_token),
        ("DIALOGFLOW_EMULATOR_HOST", &emulator.addr().to_string()),
        ("TWILIO_API_BASE_URL", &twilio.base_url()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The emulator with the sample agent, the Messages API stand-in and a bridge in front
/// of them, each on a free local port, with hand-over events signed for a helpdesk at
/// `desk_url`: what the demo plays, in the terminal or in the browser.
pub struct LocalStack {
    pub agent: AgentDefinition,
    pub emulator: Emulator,
    pub twilio: MessagesEmulator,
    pub bridge: RunningBridge,
    pub auth_token: String,
    /// The helpdesk's Standard Webhooks secret and its token for the hand-over API.
    pub desk_secret: String,
    pub desk_token: String,
    /// The business's own key to `POST /outbound`.
    pub outbound_token: String,
}

impl LocalStack {
    pub async fn start(desk_url: &str) -> anyhow::Result<Self> {
        let agent = AgentDefinition::from_yaml_str(SAMPLE_AGENT)?;
        let auth_token = format!("demo-{:x}", std::process::id());
        let emulator =
            Emulator::start(agent.clone(), TcpListener::bind("127.0.0.1:0").await?).await?;
        let twilio = MessagesEmulator::start(
            TcpListener::bind("127.0.0.1:0").await?,
            ACCOUNT_SID,
            &auth_token,
        )?;
        // The phones tell it who wrote: it holds WhatsApp's window as Twilio does.
        twilio.keep_session_windows();
        let mut vars = local_vars(&agent, &emulator, &twilio, ACCOUNT_SID, &auth_token);
        vars.insert("SESSION_TTL".into(), "30m".into());
        vars.insert("AGENT_TIMEOUT".into(), "3s".into());
        let desk_secret = demo_secret(&auth_token);
        let desk_token = format!("{auth_token}-desk-token");
        for (name, value) in [
            ("HANDOFF_URL", desk_url),
            ("HANDOFF_SECRET", desk_secret.as_str()),
            ("HANDOFF_TOKEN", desk_token.as_str()),
            ("HANDOFF_RETURN_EVENT", "true"),
        ] {
            vars.insert(name.into(), value.into());
        }
        let outbound_token = format!("{auth_token}-outbound-token");
        vars.insert("OUTBOUND_TOKEN".into(), outbound_token.clone());
        let settings =
            Settings::from_vars(&vars).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
        let bridge =
            RunningBridge::start(&settings, TcpListener::bind("127.0.0.1:0").await?).await?;
        Ok(Self {
            agent,
            emulator,
            twilio,
            bridge,
            auth_token,
            desk_secret,
            desk_token,
            outbound_token,
        })
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.bridge.shutdown().await?;
        self.emulator.shutdown().await;
        Ok(())
    }
}

/// `demo --web`: the stack, the helpdesk and the web phone with one SMS phone and one
/// WhatsApp phone, until Ctrl-C; the page's address on a line that starts `open `.
pub async fn run_web(listener: TcpListener) -> anyhow::Result<()> {
    let desk_listener = TcpListener::bind("127.0.0.1:0").await?;
    let desk_url = format!("http://{}/", desk_listener.local_addr()?);
    let stack = LocalStack::start(&desk_url).await?;
    let wiring = crate::phone::Wiring {
        webhook_url: stack.bridge.url(),
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: stack.auth_token.clone(),
        our_number: OUR_NUMBER.to_owned(),
        api_url: Some(stack.twilio.base_url()),
    };
    let desk = crate::phone::DeskWiring {
        listener: desk_listener,
        secret: stack.desk_secret.clone(),
        human: desk::HumanSide::new(&stack.bridge.url(), &stack.desk_token)?,
    };
    let phone = crate::phone::WebPhone::start(listener, wiring, Some(desk))?;
    phone.add_phone(crate::phone::Channel::Sms)?;
    phone.add_phone(crate::phone::Channel::Whatsapp)?;
    println!("twilio-dialogflow demo --web");
    println!(
        "  Dialogflow CX emulator, agent '{}': http://{}",
        stack.agent.agent_id(),
        stack.emulator.addr()
    );
    println!("  bridge (the Twilio webhook):     {}", stack.bridge.url());
    println!(
        "  Messages API stand-in:           {}",
        stack.twilio.base_url()
    );
    println!("  Try 'order a pizza', 'menu', 'talk to a person' or 'break'. Ctrl-C stops.");
    println!("open {}", phone.url());
    tokio::select! {
        served = phone.wait() => served?,
        _ = hardened_http::shutdown_signal() => {}
    }
    stack.shutdown().await
}

pub async fn run(interactive: bool) -> anyhow::Result<()> {
    // A helpdesk on another port: the terminal desk's receiving half.
    let desk_listener = TcpListener::bind("127.0.0.1:0").await?;
    let desk_url = format!("http://{}/", desk_listener.local_addr()?);
    let stack = LocalStack::start(&desk_url).await?;
    let (events_in, events) = tokio::sync::mpsc::unbounded_channel();
    let _desk = desk::receive(desk_listener, &stack.desk_secret, events_in)?;
    let LocalStack {
        agent,
        emulator,
        twilio,
        bridge,
        auth_token,
        desk_token,
        outbound_token,
        ..
    } = stack;
    let phone = Phone::new(&bridge.url(), ACCOUNT_SID, &auth_token, USER, OUR_NUMBER)?;
    let whatsapp_user = chat::whatsapp(USER);
    let mut whatsapp = chat::Session::new(
        Phone::new(
            &bridge.url(),
            ACCOUNT_SID,
            &auth_token,
            &whatsapp_user,
            &chat::whatsapp(OUR_NUMBER),
        )?,
        Some(chat::ApiInbox::new(
            &twilio.base_url(),
            ACCOUNT_SID,
            &auth_token,
            &whatsapp_user,
        )?),
    );

    println!("twilio-dialogflow demo");
    println!(
        "  Dialogflow CX emulator, agent '{}': http://{}",
        agent.agent_id(),
        emulator.addr()
    );
    println!("  bridge (the Twilio webhook):     {}", bridge.url());
    println!(
        "  Texting {OUR_NUMBER} from {USER}; every message is a webhook signed as Twilio signs it."
    );
    let mut desk = Desk {
        events,
        human: desk::HumanSide::new(&bridge.url(), &desk_token)?,
        conversation: None,
        twilio: &twilio,
        business: Business {
            client: crate::http_client(std::time::Duration::from_secs(10))?,
            outbound_url: format!("{}outbound", bridge.url()),
            token: outbound_token,
        },
    };
    for (title, step) in SCRIPT {
        if !title.is_empty() {
            println!("\n# {title}");
        }
        play(&phone, &mut whatsapp, &mut desk, step).await?;
    }
    println!(
        "\nThe agent received {} detectIntent requests (retries included).",
        emulator.requests().len()
    );
    if interactive {
        println!("\nYour turn.");
        let inbox = chat::ApiInbox::new(&twilio.base_url(), ACCOUNT_SID, &auth_token, USER)?;
        let prompt = std::io::IsTerminal::is_terminal(&std::io::stdin());
        chat::Session::new(phone, Some(inbox)).run(prompt).await?;
    } else {
        println!("Try it yourself: twilio-dialogflow demo --interactive");
    }
    bridge.shutdown().await?;
    emulator.shutdown().await;
    Ok(())
}

/// The helpdesk's side of the demo.
struct Desk<'a> {
    events: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    human: desk::HumanSide,
    conversation: Option<String>,
    twilio: &'a MessagesEmulator,
    business: Business,
}

/// The business's side of the demo: its system writing first, through the bridge's
/// `POST /outbound`.
struct Business {
    client: reqwest::Client,
    outbound_url: String,
    token: String,
}

impl Business {
    /// Asks the bridge to send `body`; the id it answers.
    async fn send(&self, body: &serde_json::Value) -> anyhow::Result<String> {
        let response = self
            .client
            .post(&self.outbound_url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.outbound_url))?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        if status.as_u16() != 202 {
            anyhow::bail!("POST /outbound answered HTTP {status}: {answer}");
        }
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .context("POST /outbound answered no id")
    }

    /// The Message SIDs outbound `id` went out as, once it did (10 s at most).
    async fn sent_as(&self, id: &str) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/{id}", self.outbound_url);
        for _ in 0..100 {
            let answer: serde_json::Value = self
                .client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?
                .json()
                .await
                .unwrap_or_default();
            match answer["status"].as_str() {
                Some("queued") | None => {}
                Some(_) => {
                    return Ok(answer["message_sids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|sid| sid.as_str().map(str::to_owned))
                        .collect())
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("outbound {id} was not sent within 10 seconds")
    }
}

impl Desk<'_> {
    /// Prints the next event the helpdesk receives.
    async fn shows(&mut self) -> anyhow::Result<()> {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), self.events.recv())
            .await
            .context("the helpdesk received no event")?
            .context("the helpdesk stopped")?;
        if let Some(conversation) = event["conversation"].as_str() {
            self.conversation = Some(conversation.to_owned());
        }
        for line in desk::show(&event).lines() {
            println!("  desk ▸ {line}");
        }
        Ok(())
    }

    fn conversation(&self) -> anyhow::Result<&str> {
        self.conversation
            .as_deref()
            .context("no hand-over has started")
    }
}

/// A Standard Webhooks secret for this run.
fn demo_secret(seed: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = sha2::Sha256::digest(seed.as_bytes());
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

async fn play(
    phone: &Phone,
    whatsapp: &mut chat::Session,
    desk: &mut Desk<'_>,
    step: &Step,
) -> anyhow::Result<()> {
    let reply = match step {
        Step::ToPerson(text) => {
            println!("> {text}");
            phone
                .send(&Outgoing {
                    body: text.to_string(),
                    ..Default::default()
                })
                .await?;
            println!("  (to the helpdesk, not the agent)");
            return desk.shows().await;
        }
        Step::DeskSays(text) => {
            let before = desk.twilio.sent().len();
            println!("  desk ◂ {text}");
            desk.human.say(desk.conversation()?, text, &[]).await?;
            for message in desk.twilio.wait_for(before + 1).await.iter().skip(before) {
                println!("< {}", message.body);
            }
            return Ok(());
        }
        Step::Reminder(time) => {
            let body = serde_json::json!({
                "to": phone.from,
                "from": phone.to,
                "event": {"name": "appointment_reminder", "parameters": {"time": time}},
            });
            println!("  business ◂ POST /outbound {body}");
            let id = desk.business.send(&body).await?;
            let sids = desk.business.sent_as(&id).await?;
            for message in desk.twilio.sent() {
                if sids.contains(&message.sid) {
                    for line in message.body.lines() {
                        println!("< {line}");
                    }
                }
            }
            println!("  (sent first by the business, through the Messages API)");
            return Ok(());
        }
        Step::DeskEnds => {
            println!("  desk ◂ /end");
            desk.human.end(desk.conversation()?).await?;
            return desk.shows().await;
        }
        Step::WhatsApp(text) => {
            println!("> {text}   (on WhatsApp)");
            let message = Outgoing {
                body: text.to_string(),
                ..Default::default()
            };
            println!("{}", whatsapp.exchange(&message).await?);
            return Ok(());
        }
        Step::Tap(number) => {
            println!("> /tap {number}");
            let shown = match whatsapp.tap(*number) {
                Ok(message) => whatsapp.exchange(&message).await?,
                Err(why) => why,
            };
            println!("{shown}");
            return Ok(());
        }
        Step::Say(text) => {
            println!("> {text}");
            phone
                .send(&Outgoing {
                    body: text.to_string(),
                    ..Default::default()
                })
                .await?
        }
        Step::Picture(url) => {
            println!("> [picture] {url}");
            phone
                .send(&Outgoing {
                    media: vec![url.to_string()],
                    ..Default::default()
                })
                .await?
        }
        Step::Forged(text) => {
            println!("> {text}   (signed with a wrong token)");
            let forger = Phone::new(
                &phone.url,
                &phone.account_sid,
                "not-the-auth-token",
                &phone.from,
                &phone.to,
            )?;
            forger
                .send(&Outgoing {
                    body: text.to_string(),
                    ..Default::default()
                })
                .await?
        }
        Step::Redelivered(text) => {
            let message = Outgoing {
                body: text.to_string(),
                message_sid: Some("SM00000000000000000000000000000de0".into()),
                ..Default::default()
            };
            println!("> {text}");
            let first = phone.send(&message).await?;
            println!("{}", chat::show(&first));
            println!("> {text}   (the same MessageSid, delivered again)");
            phone.send(&message).await.context("re-delivery")?
        }
    };
    println!("{}", chat::show(&reply));
    if let Step::Say("talk to a person") = step {
        desk.shows().await?;
    }
    if let PhoneReply::Messages(messages) = &reply {
        if messages.is_empty() {
            println!("  (the reply follows through the Messages API)");
        }
    }
    Ok(())
}
