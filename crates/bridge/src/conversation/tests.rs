//! The turn, the takeover's delivery and the outbox through their seams: a scripted
//! agent ([`Answers`]) and a recording sender ([`Messaging`]), no network.

use super::*;
use crate::agent::retry::FallbackReason;
use crate::agent::{QueryInput, MEDIA_EVENT};
use crate::outbox::{Call, Messaging};
use crate::rate_limit::RateLimits;
use crate::twilio::messages_api::{SendError, Sender};
use crate::twilio::webhook::FormParams;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// An agent that answers from a script, one answer per question, and counts them.
#[derive(Default)]
struct Script {
    answers: Mutex<Vec<Result<AgentAnswer, AgentError>>>,
}

impl Script {
    fn saying(replies: Vec<ReplyMessage>) -> Arc<Self> {
        let answer = AgentAnswer {
            replies,
            ..AgentAnswer::default()
        };
        Arc::new(Script {
            answers: Mutex::new(vec![Ok(answer)]),
        })
    }

    fn failing(error: AgentError) -> Arc<Self> {
        Arc::new(Script {
            answers: Mutex::new(vec![Err(error)]),
        })
    }
}

impl Answers for Script {
    fn detect_intent<'a>(
        &'a self,
        _query: &'a AgentQuery,
    ) -> Pin<Box<dyn Future<Output = Result<AgentAnswer, AgentError>> + Send + 'a>> {
        let next = self.answers.lock().unwrap().pop();
        Box::pin(async move { next.unwrap_or_else(|| Ok(AgentAnswer::default())) })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// What a sender was asked to send: the body, or the content's SID.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
    contents: Mutex<usize>,
}

impl Recorder {
    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Messaging for Recorder {
    fn account_sid(&self) -> &str {
        "AC1"
    }

    fn send<'a>(
        &'a self,
        _to: &'a str,
        _sender: &'a Sender,
        message: &'a ReplyMessage,
        _status_callback: Option<&'a str>,
    ) -> Call<'a, Option<String>> {
        let shown = match &message.template {
            Some(template) => format!("content {}", template.sid),
            None => message.body.clone(),
        };
        self.sent.lock().unwrap().push(shown);
        Box::pin(async { Ok(Some("SMout".to_owned())) })
    }

    fn create_content<'a>(&'a self, _content: &'a serde_json::Value) -> Call<'a, String> {
        *self.contents.lock().unwrap() += 1;
        Box::pin(async { Ok::<_, SendError>("HX1".to_owned()) })
    }

    fn typing<'a>(&'a self, _message_sid: &'a str) -> Call<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

struct Bridge {
    conversations: Arc<Conversations>,
    sender: Arc<Recorder>,
    metrics: Arc<Metrics>,
}

/// Conversations on one route answered by `agent`, replying in the webhook or (with
/// `api`) through the recording sender.
fn bridge(agent: Arc<Script>, api: bool) -> Bridge {
    let metrics = Arc::new(Metrics::new());
    let state = StateStore::local(RateLimits::default(), Arc::clone(&metrics));
    let sender = Arc::new(Recorder::default());
    let apis: HashMap<String, Arc<dyn Messaging>> =
        HashMap::from([("AC1".to_owned(), Arc::clone(&sender) as Arc<dyn Messaging>)]);
    let outbox = Outbox::sending_through(
        apis,
        None,
        MenuFormat::default(),
        state.clone(),
        Arc::clone(&metrics),
    );
    let delivery = match api {
        true => Delivery::Api(outbox),
        false => Delivery::Twiml,
    };
    let route = AgentRoute {
        name: "main".into(),
        agent,
        languages: Default::default(),
        fallback: "Sorry, try again later.".into(),
        delivery,
    };
    let messages = Messages {
        rate_limited: "Slow down".into(),
        opt_out_to_agent: false,
        menu: MenuFormat::default(),
        menu_ttl: Duration::from_secs(60),
        typing_after: None,
    };
    let routes = AgentRoutes::new(vec![(crate::routes::Matcher::default(), route)]);
    let conversations = Conversations::new(
        routes,
        messages,
        state,
        Arc::clone(&metrics),
        Ours {
            accounts: vec!["AC1".into()],
            session_key: SessionKey::for_tests(),
        },
        None,
        crate::conversation::Waits::default(),
    );
    Bridge {
        conversations,
        sender,
        metrics,
    }
}

fn message(from: &str, sid: &str, body: &str) -> IncomingMessage {
    let pairs = [
        ("AccountSid", "AC1"),
        ("MessageSid", sid),
        ("From", from),
        ("To", "+18005550000"),
        ("Body", body),
    ];
    IncomingMessage::from_verified(FormParams::of(&pairs), "AC1").unwrap()
}

async fn handle(bridge: &Bridge, message: IncomingMessage) -> Handled {
    let recipient = Recipient::replying_to(&message, "https://bridge/status".into());
    bridge.conversations.handle(message, recipient).await
}

fn bodies(handled: &Handled) -> Vec<&str> {
    handled.replies.iter().map(|m| m.body.as_str()).collect()
}

/// Waits for the turn's task to have sent `count` messages.
async fn sent(recorder: &Recorder, count: usize) -> Vec<String> {
    for _ in 0..200 {
        if recorder.sent().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    recorder.sent()
}

#[tokio::test]
async fn a_turn_answers_in_the_webhook_with_the_agents_replies() {
    let bridge = bridge(Script::saying(vec![ReplyMessage::text("Hello!")]), false);
    let handled = handle(&bridge, message("+15551234567", "SM1", "hi")).await;
    assert_eq!(handled.outcome, Outcome::Answered);
    assert_eq!(handled.route, Route::Webhook);
    assert_eq!(bodies(&handled), vec!["Hello!"]);
    assert_eq!(handled.agent_route.as_deref(), Some("main"));
    assert!(handled.agent_latency.is_some());
    // A re-delivery gets the same answer, without asking again (the script is empty).
    let again = handle(&bridge, message("+15551234567", "SM1", "hi")).await;
    assert!(again.duplicate);
    assert_eq!(bodies(&again), vec!["Hello!"]);
}

#[tokio::test]
async fn an_agent_failure_is_the_fallback_with_its_reason() {
    let failing = Script::failing(AgentError::Timeout(Duration::from_secs(5)));
    let bridge = bridge(failing, false);
    let handled = handle(&bridge, message("+15551234567", "SM1", "hi")).await;
    assert_eq!(handled.outcome, Outcome::Fallback(FallbackReason::Timeout));
    assert_eq!(bodies(&handled), vec!["Sorry, try again later."]);
    assert!(bridge
        .metrics
        .render()
        .contains(r#"agent_errors_total{status="TIMEOUT"} 1"#));
}

#[tokio::test]
async fn nothing_to_ask_and_twilios_keywords_do_not_reach_the_agent() {
    let bridge = bridge(Script::saying(vec![ReplyMessage::text("no")]), false);
    let empty = handle(&bridge, message("+15551234567", "SM1", "  ")).await;
    assert_eq!(empty.outcome, Outcome::Empty);
    let mut stop = message("+15551234567", "SM2", "STOP");
    stop.opt_out = Some(crate::twilio::webhook::OptOut::Stop);
    let stop = handle(&bridge, stop).await;
    assert_eq!(stop.outcome, Outcome::OptOut);
    assert!(stop.replies.is_empty());
}

#[tokio::test]
async fn a_menu_in_the_webhooks_answer_is_numbered_text_and_is_remembered() {
    let menu = ReplyMessage::menu("Size?", &["Small", "Large"]);
    let bridge = bridge(Script::saying(vec![menu.clone()]), false);
    let handled = handle(&bridge, message("whatsapp:+15551234567", "SM1", "order")).await;
    assert_eq!(
        handled.replies.to_vec(),
        vec![MenuFormat::default().as_text(&menu)]
    );
    assert!(handled.replies[0].choices.is_empty());
    let session = SessionId::for_tests("whatsapp:+15551234567", "+18005550000");
    let slot = bridge.conversations.menu_slot();
    let pending = bridge.conversations.state.get(&slot, &session).await;
    assert_eq!(pending, Ok(PendingMenu::of(&[menu])));
}

#[tokio::test]
async fn through_the_api_a_menu_is_whatsapps_own_on_whatsapp_and_text_elsewhere() {
    let menu = ReplyMessage::menu("Size?", &["Small", "Large"]);
    let whatsapp = bridge(Script::saying(vec![menu.clone()]), true);
    let handled = handle(&whatsapp, message("whatsapp:+15551234567", "SM1", "order")).await;
    assert_eq!(
        (handled.outcome, handled.route),
        (Outcome::Queued, Route::Api)
    );
    assert_eq!(sent(&whatsapp.sender, 1).await, vec!["content HX1"]);
    assert_eq!(*whatsapp.sender.contents.lock().unwrap(), 1);
    let sms = bridge(Script::saying(vec![menu.clone()]), true);
    handle(&sms, message("+15551234567", "SM1", "order")).await;
    let text = MenuFormat::default().as_text(&menu).body;
    assert_eq!(sent(&sms.sender, 1).await, vec![text]);
    assert_eq!(*sms.sender.contents.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_turn_taken_over_sends_only_the_rest_of_its_replies() {
    let bridge = bridge(Script::saying(Vec::new()), true);
    let conversations = &bridge.conversations;
    let message = message("+15551234567", "SM1", "hi");
    let recipient = Recipient::replying_to(&message, "https://bridge/status".into());
    let session = conversations.session_of(&message);
    let ticket = conversations
        .state
        .admit_uncounted(session)
        .await
        .expect("a turn");
    let route = Arc::clone(conversations.routes.find(&message).expect("a route"));
    let replies = vec![
        ReplyMessage::text("one"),
        ReplyMessage::text("two"),
        ReplyMessage::text("three"),
    ];
    let handled = Handled::new(session, Outcome::Answered, replies).by_api();
    let turn = Turn {
        conversations: Arc::clone(conversations),
        route,
        ticket,
        recipient,
    };
    // The first was accepted before the instance that held the turn died.
    turn.deliver(&handled, 1).await;
    assert_eq!(bridge.sender.sent(), vec!["two", "three"]);
}

#[tokio::test]
async fn a_menu_whatsapp_refuses_after_twilio_took_it_goes_again_as_text() {
    let menu = ReplyMessage::menu("Size?", &["Small", "Large"]);
    let bridge = bridge(Script::saying(vec![menu.clone()]), true);
    handle(&bridge, message("whatsapp:+15551234567", "SM1", "order")).await;
    assert_eq!(sent(&bridge.sender, 1).await, vec!["content HX1"]);
    let outbox = bridge.conversations.outbox_of("AC1").expect("an outbox");
    // 63016: outside the 24-hour window; not a refusal of the content: nothing again.
    outbox.not_delivered("AC1", "SMout", Some(63016)).await;
    assert_eq!(bridge.sender.sent().len(), 1);
    // Another account's callback naming the same reply: not its menu.
    outbox.not_delivered("AC2", "SMout", Some(63005)).await;
    assert_eq!(bridge.sender.sent().len(), 1);
    outbox.not_delivered("AC1", "SMout", Some(63005)).await;
    let text = MenuFormat::default().as_text(&menu).body;
    assert_eq!(bridge.sender.sent(), vec!["content HX1".to_owned(), text]);
    // Once: the menu sent by its SID is forgotten.
    outbox.not_delivered("AC1", "SMout", Some(63005)).await;
    assert_eq!(bridge.sender.sent().len(), 2);
}

fn message_of(pairs: &[(&str, &str)]) -> IncomingMessage {
    let mut all = vec![
        ("AccountSid", "AC1"),
        ("From", "+15551234567"),
        ("To", "+18005550000"),
    ];
    all.extend_from_slice(pairs);
    IncomingMessage::from_verified(FormParams::of(&all), "AC1").unwrap()
}

#[test]
fn text_is_asked_as_text_trimmed_and_cut_to_dialogflow_limit() {
    assert_eq!(
        query_input(&message_of(&[("Body", "  hi  ")])),
        Some(QueryInput::Text("hi".into()))
    );
    let long = "é".repeat(300);
    let Some(QueryInput::Text(cut)) = query_input(&message_of(&[("Body", &long)])) else {
        panic!()
    };
    assert_eq!(cut.chars().count(), MAX_QUERY_CHARS);
}

#[test]
fn media_without_words_is_the_media_event_and_nothing_is_nothing() {
    let mms = message_of(&[
        ("Body", ""),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://m/1"),
    ]);
    assert_eq!(
        query_input(&mms),
        Some(QueryInput::Event(MEDIA_EVENT.into()))
    );
    assert_eq!(
        payload_of(&mms).get("MediaUrl0"),
        Some(&Value::String("https://m/1".into()))
    );
    assert_eq!(query_input(&message_of(&[("Body", " ")])), None);
}

/// Hand-over on, to a destination these tests never reach.
fn handoff(state: StateStore, metrics: Arc<Metrics>) -> Arc<crate::handoff::Handoff> {
    let settings = crate::config::HandoffSettings {
        url: "http://127.0.0.1:9/events".into(),
        // `whsec_` and the base64 of 24 bytes.
        secret: crate::config::Secret::new("whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz"),
        token: crate::config::Secret::new("token"),
        keywords: vec!["agent please".into()],
        ttl: Duration::from_secs(600),
        return_event: true,
        include_address: false,
        unavailable_message: "No one can take over".into(),
        started_message: "A person will answer".into(),
        retry_for: Duration::from_secs(1),
        history: 5,
        rate_limit: 100,
    };
    crate::handoff::Handoff::new(settings, state, metrics).expect("hand-over settings")
}

#[tokio::test]
async fn a_keyword_hands_over_and_then_messages_go_to_the_person() {
    use crate::handoff::events::EventKind;
    let bridge = bridge(Script::saying(Vec::new()), true);
    let conversations = &bridge.conversations;
    let handoff = handoff(conversations.state.clone(), Arc::clone(&bridge.metrics));
    let route = Arc::clone(
        conversations
            .routes
            .find(&message("+15551234567", "SM1", "x"))
            .expect("a route"),
    );
    let asking = message("+15551234567", "SM1", "Agent please");
    let recipient = Recipient::replying_to(&asking, "https://bridge/status".into());
    let session = conversations.session_of(&asking);
    let at = handover::TurnAt {
        route: &route,
        message: &asking,
        session,
        recipient: &recipient,
    };
    let record = crate::handoff::Record::default();
    let handover::Before::ToPerson(started) = handover::before_agent(&handoff, &at, record).await
    else {
        panic!("the keyword goes to a person")
    };
    assert_eq!(started.outcome, Outcome::WithPerson);
    assert_eq!(bodies(&started), vec!["A person will answer"]);
    let kinds = |handled: &Handled| -> Vec<EventKind> {
        let work = handled.handoff.as_ref().expect("events to post");
        work.events.iter().map(|e| e.kind).collect()
    };
    assert_eq!(kinds(&started), vec![EventKind::HandoffStarted]);
    // The next message goes to the human side, and the agent is not asked.
    let record = handoff.record(&session).await.expect("a readable record");
    assert!(record.active.is_some());
    let next = message("+15551234567", "SM2", "hello?");
    let at = handover::TurnAt {
        message: &next,
        ..at
    };
    let handover::Before::ToPerson(with_person) =
        handover::before_agent(&handoff, &at, record).await
    else {
        panic!("a message during a hand-over goes to the person")
    };
    assert!(with_person.replies.is_empty());
    assert_eq!(kinds(&with_person), vec![EventKind::MessageReceived]);
}

#[tokio::test]
async fn an_unreadable_hand_over_record_is_left_as_it_is() {
    let bridge = bridge(Script::saying(Vec::new()), true);
    let state = bridge.conversations.state.clone();
    let handoff = handoff(state.clone(), Arc::clone(&bridge.metrics));
    let session = SessionId::for_tests("+15551234567", "+18005550000");
    // A record of a version this bridge does not know, in the store's own slot.
    #[derive(Serialize, Deserialize)]
    struct Newer {
        active: String,
    }
    impl Record for Newer {
        const KIND: &'static str = "handoff";
        const VERSION: u32 = 9;
    }
    let newer = Slot::<Newer>::new("handoff", Duration::from_secs(60));
    let record = Newer {
        active: "elsewhere".into(),
    };
    state.set(&newer, &session, &record).await;
    assert!(handoff.record(&session).await.is_err());
    assert!(bridge
        .metrics
        .render()
        .contains(r#"state_records_unreadable_total{kind="handoff"} 1"#));
    let kept = state.get(&newer, &session).await.expect("still there");
    assert_eq!(kept.map(|r| r.active).as_deref(), Some("elsewhere"));
}

#[tokio::test(start_paused = true)]
async fn a_message_behind_a_stuck_turn_is_answered_out_of_order_after_the_bound() {
    let bridge = bridge(Script::saying(vec![ReplyMessage::text("Hello!")]), true);
    let conversations = &bridge.conversations;
    let message = message("+15551234567", "SM1", "hi");
    // A turn ahead that never finishes, nor lets its conversation move.
    let stuck = conversations
        .state
        .admit_uncounted(conversations.session_of(&message))
        .await
        .expect("a turn");
    let started = tokio::time::Instant::now();
    let handled = handle(&bridge, message).await;
    assert_eq!(handled.outcome, Outcome::Queued);
    let bound = Waits::default().turn(Duration::from_secs(5));
    tokio::time::sleep(bound - Duration::from_secs(2)).await;
    assert!(bridge.sender.sent().is_empty(), "it waits while in bound");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sent(&bridge.sender, 1).await, vec!["Hello!"]);
    assert!(started.elapsed() >= bound);
    let metrics = bridge.metrics.render();
    assert!(
        metrics.contains(r#"twilio_dialogflow_turn_waits_expired_total{waiting="message"} 1"#),
        "{metrics}"
    );
    drop(stuck);
}

/// Each conversation in flight holds its webhook's future and its turn's, and every
/// layer that awaits a future moves it once: what they hold inline is memory per
/// conversation and bytes copied per message. Prints the sizes (`--nocapture`); the
/// bounds catch a large future (the agent's request, the store's round trips) inlined
/// again.
#[tokio::test]
async fn a_webhook_and_its_turn_in_flight_are_small() {
    let bridge = bridge(Script::saying(vec![]), false);
    let message = || message("+15551234567", "SM1", "hi");
    let recipient = Recipient::replying_to(&message(), "https://bridge/status".into());
    let webhook = std::mem::size_of_val(&bridge.conversations.handle(message(), recipient.clone()));
    let session = SessionId::for_tests("+15551234567", "+18005550000");
    let Some(ticket) = bridge.conversations.state.admit_uncounted(session).await else {
        panic!("a turn without a MessageSid is always first");
    };
    let turn = Turn {
        conversations: Arc::clone(&bridge.conversations),
        route: Arc::clone(&bridge.conversations.routes.routes[0]),
        ticket,
        recipient,
    };
    let run = turn.run(message(), None);
    let turn = std::mem::size_of_val(&run);
    println!("the webhook's future: {webhook} bytes; the turn's task: {turn} bytes");
    assert!(webhook <= 6144, "the webhook's future: {webhook} bytes");
    assert!(turn <= 2048, "the turn's future: {turn} bytes");
}
