//! The business writes first: `POST /outbound` with an agent event, text or a template,
//! on SMS and WhatsApp, through the real bridge in front of the emulator and the
//! Messages API stand-in. Refusals (opt-outs, WhatsApp's window, a hand-over, bad
//! tokens and bodies) send nothing; a key sends once, at one instance or two.

use crate::handoff::{people_stack, with_people, Desk};
use crate::helpers::*;
use crate::shared_state::instances_on;
use serde_json::{json, Value};
use stand_ins::messages_api::{Misbehaviour, SentMessage};
use std::time::Duration;

pub(crate) const OUTBOUND_TOKEN: &str = "outbound-token-0123456789";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const TEMPLATE: &str = "HX00000000000000000000000000000abc";

/// An agent with an appointment reminder the person can answer.
const REMINDERS: &str = r#"
project: outbound-project
location: global
agent_id: outbound-agent
language: en
intents:
  - name: reminder
    events: [appointment_reminder]
    replies:
      - text: "Your appointment is on $session.params.day"
      - payload:
          body: "Shall we keep it?"
          choices:
            - { title: Confirm, event: confirm_event }
            - { title: Move it, value: "move my appointment" }
  - name: confirm
    events: [confirm_event]
    replies: [{ text: "Confirmed for $session.params.day" }]
  - name: move
    phrases: ["move my appointment"]
    replies: [{ text: "Moving your $session.params.day appointment" }]
  - name: day
    phrases: ["which day"]
    replies: [{ text: "It is on $session.params.day" }]
  - name: hello
    phrases: ["hello"]
    replies: [{ text: "Hello" }]
fallback:
  replies: [{ text: "Not understood" }]
"#;

/// A bridge answering through the Messages API, with `/outbound` on.
async fn outbound_stack(agent_type: &str, settings: &[(&str, &str)]) -> Stack {
    start_with_agent(REMINDERS, agent_type, |vars| {
        set(&[
            ("REPLY_MODE", "api"),
            ("AGENT_TIMEOUT", "5s"),
            ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
        ])(vars);
        set(settings)(vars);
    })
    .await
}

/// `POST /outbound` at `base_url` with `token` and `body`: status and JSON answer.
pub(crate) async fn post_outbound_at(
    base_url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base_url}outbound"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_outbound(stack: &Stack, body: Value) -> (u16, Value) {
    post_outbound_at(
        &stack.bridge.url(),
        Some(OUTBOUND_TOKEN),
        &[],
        &body.to_string(),
    )
    .await
}

/// `POST /outbound` that must be queued: its id.
async fn queued(stack: &Stack, body: Value) -> String {
    let (status, answer) = post_outbound(stack, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(id.len() >= 32, "an unguessable id: {id}");
    id
}

async fn report_at(base_url: &str, id: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base_url}outbound/{id}"))
        .bearer_auth(OUTBOUND_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The request's report once its status is `status`.
async fn reported_at(base_url: &str, id: &str, status: &str) -> Value {
    eventually(
        &format!("outbound {id} {status}"),
        Duration::from_secs(10),
        || async {
            let (_, report) = report_at(base_url, id).await;
            // The Messages API's own callbacks move a sent message on to delivered
            // (and read): "sent" is reached by them too.
            ready_if(report, |report| {
                report["status"] == status
                    || (status == "sent"
                        && matches!(report["status"].as_str(), Some("delivered" | "read")))
            })
        },
    )
    .await
}

async fn reported(stack: &Stack, id: &str, status: &str) -> Value {
    reported_at(&stack.bridge.url(), id, status).await
}

fn bodies(sent: &[SentMessage]) -> Vec<&str> {
    sent.iter().map(|m| m.body.as_str()).collect()
}

/// The messages sent after the first `before`, once there are `count` of them.
async fn sent_after(stack: &Stack, before: usize, count: usize) -> Vec<SentMessage> {
    let sent = stack.twilio.wait_for(before + count).await;
    assert!(sent.len() >= before + count, "{sent:?}");
    sent[before..].to_vec()
}

fn whatsapp(number: &str) -> String {
    format!("whatsapp:{number}")
}

#[tokio::test]
async fn an_event_is_answered_in_the_persons_own_session_and_their_answer_continues_it() {
    let stack = outbound_stack("CX", &[]).await;
    let id = queued(
        &stack,
        json!({
            "to": USER,
            "from": OUR_NUMBER,
            "event": {"name": "appointment_reminder", "parameters": {"day": "Monday"}}
        }),
    )
    .await;
    let sent = sent_after(&stack, 0, 2).await;
    assert_eq!(sent[0].body, "Your appointment is on Monday");
    assert!(sent[1].body.contains("Shall we keep it?"), "{sent:?}");
    assert!(
        sent[1].body.contains("Move it"),
        "a numbered menu on SMS: {sent:?}"
    );
    assert!(sent
        .iter()
        .all(|m| m.to == USER && m.from.as_deref() == Some(OUR_NUMBER)));
    let report = reported(&stack, &id, "sent").await;
    let sids: Vec<&str> = sent.iter().map(|m| m.sid.as_str()).collect();
    assert_eq!(report["message_sids"], json!(sids));
    assert_eq!(report["error_code"], Value::Null);
    // The agent was asked the event in the conversation a message from the person gets.
    let asked = stack.agent_requests();
    assert!(
        asked[0].path.contains(test_session().as_str()),
        "{:?}",
        asked[0].path
    );
    // The person's "2" picks from the menu the event left, in the same session.
    let (status, _) = stack.post_webhook(&says("2")).await;
    assert_eq!(status, 200);
    let answer = sent_after(&stack, 2, 1).await;
    assert_eq!(bodies(&answer), vec!["Moving your Monday appointment"]);
}

#[tokio::test]
async fn an_event_on_whatsapp_needs_the_window_and_then_continues_the_session() {
    let stack = outbound_stack("CX", &[]).await;
    let person = whatsapp(USER);
    let event = json!({
        "to": person,
        "from": whatsapp(OUR_NUMBER),
        "event": {"name": "appointment_reminder", "parameters": {"day": "Friday"}}
    });
    // Silent on WhatsApp: only a template may start the conversation.
    let (status, answer) = post_outbound(&stack, event.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "template_required");
    assert!(stack.agent_requests().is_empty(), "the agent was not asked");
    let phone = stack.whatsapp_phone_of(USER);
    let (status, _) = post_from(&phone, &stack.bridge.url(), &says("hello"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bodies(&sent_after(&stack, 0, 1).await), vec!["Hello"]);
    let id = queued(&stack, event).await;
    let sent = sent_after(&stack, 1, 2).await;
    assert_eq!(sent[0].body, "Your appointment is on Friday");
    assert_eq!(sent[0].to, person);
    reported(&stack, &id, "sent").await;
    let (status, _) = post_from(&phone, &stack.bridge.url(), &says("which day"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        bodies(&sent_after(&stack, 3, 1).await),
        vec!["It is on Friday"]
    );
}

#[tokio::test]
async fn an_event_reaches_an_es_agent_too() {
    let stack = outbound_stack("ES", &[]).await;
    let id = queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "event": {"name": "confirm_event"}}),
    )
    .await;
    let sent = sent_after(&stack, 0, 1).await;
    assert!(sent[0].body.starts_with("Confirmed for"), "{sent:?}");
    let asked = stack.agent_requests();
    assert_eq!(
        asked[0].body["queryInput"]["event"]["name"],
        "confirm_event"
    );
    reported(&stack, &id, "sent").await;
}

#[tokio::test]
async fn text_and_media_go_as_they_are_on_sms_and_whatsapp() {
    let stack = outbound_stack("CX", &[]).await;
    let id = queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "text": "Your order shipped", "media": ["https://example.com/box.jpg"]}),
    )
    .await;
    let sent = sent_after(&stack, 0, 1).await;
    assert_eq!(sent[0].body, "Your order shipped");
    assert_eq!(sent[0].media, vec!["https://example.com/box.jpg"]);
    assert_eq!(
        sent[0].status_callback.as_deref(),
        Some(format!("{}status?outbound=1", stack.bridge.url()).as_str())
    );
    let report = reported(&stack, &id, "sent").await;
    assert_eq!(report["message_sids"], json!([sent[0].sid]));
    assert!(stack.agent_requests().is_empty(), "text is not the agent's");
    // WhatsApp: free text only within 24 hours of the person's last message.
    let text =
        json!({"to": whatsapp(USER), "from": whatsapp(OUR_NUMBER), "text": "Your order shipped"});
    let (status, answer) = post_outbound(&stack, text.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "template_required");
    assert!(answer["message"].as_str().unwrap().contains("template"));
    assert_eq!(stack.twilio.sent().len(), 1, "nothing more sent");
    let phone = stack.whatsapp_phone_of(USER);
    post_from(&phone, &stack.bridge.url(), &says("hello"), &[]).await;
    sent_after(&stack, 1, 1).await;
    let id = queued(&stack, text).await;
    let sent = sent_after(&stack, 2, 1).await;
    assert_eq!(sent[0].to, whatsapp(USER));
    assert_eq!(sent[0].from.as_deref(), Some(whatsapp(OUR_NUMBER).as_str()));
    reported(&stack, &id, "sent").await;
    stack
        .assert_metrics_show(
            "outbound_requests_total{kind=\"text\",outcome=\"template_required\"} 1",
        )
        .await;
    stack
        .assert_metrics_show("outbound_requests_total{kind=\"text\",outcome=\"queued\"} 2")
        .await;
}

#[tokio::test]
async fn a_template_goes_by_its_content_sid_on_sms_and_on_a_silent_whatsapp() {
    let stack = outbound_stack("CX", &[]).await;
    stack
        .twilio
        .register_template(TEMPLATE, "Hello {{1}}, your table is ready");
    let template = |to: String, from: String| {
        json!({
            "to": to,
            "from": from,
            "template": {"content_sid": TEMPLATE, "variables": {"1": "Ada"}}
        })
    };
    queued(&stack, template(USER.into(), OUR_NUMBER.into())).await;
    // WhatsApp, with no message from the person: a template may start it.
    let id = queued(&stack, template(whatsapp(USER), whatsapp(OUR_NUMBER))).await;
    let sent = sent_after(&stack, 0, 2).await;
    for message in &sent {
        assert_eq!(message.content_sid.as_deref(), Some(TEMPLATE));
        assert_eq!(message.content_variables.as_deref(), Some(r#"{"1":"Ada"}"#));
    }
    assert_eq!(sent[1].to, whatsapp(USER));
    reported(&stack, &id, "sent").await;
}

#[tokio::test]
async fn a_messaging_service_sends_when_named_or_configured() {
    let stack = outbound_stack("CX", &[]).await;
    let (status, answer) = post_outbound(&stack, json!({"to": USER, "text": "no sender"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "from");
    queued(
        &stack,
        json!({"to": USER, "messaging_service_sid": SERVICE, "text": "from the service"}),
    )
    .await;
    let sent = sent_after(&stack, 0, 1).await;
    assert_eq!(sent[0].messaging_service_sid.as_deref(), Some(SERVICE));
    assert_eq!(sent[0].from, None);
    // An event's answer is continued at a number: a service alone cannot say which.
    let (status, answer) = post_outbound(
        &stack,
        json!({"to": USER, "messaging_service_sid": SERVICE, "event": {"name": "confirm_event"}}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "from");

    let configured = outbound_stack("CX", &[("TWILIO_MESSAGING_SERVICE_SID", SERVICE)]).await;
    queued(&configured, json!({"to": USER, "text": "by default"})).await;
    let sent = sent_after(&configured, 0, 1).await;
    assert_eq!(sent[0].messaging_service_sid.as_deref(), Some(SERVICE));
}

#[tokio::test]
async fn stop_and_its_synonyms_refuse_outbound_until_start() {
    let stack = outbound_stack("CX", &[]).await;
    let text = json!({"to": USER, "from": OUR_NUMBER, "text": "Sale today"});
    let (status, _) = stack
        .post_webhook(&with("STOP", &[("OptOutType", "STOP")]))
        .await;
    assert_eq!(status, 200);
    let (status, answer) = post_outbound(&stack, text.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "opted_out");
    let event = json!({"to": USER, "from": OUR_NUMBER, "event": {"name": "confirm_event"}});
    assert_eq!(post_outbound(&stack, event).await.0, 409);
    stack
        .post_webhook(&with("START", &[("OptOutType", "START")]))
        .await;
    let id = queued(&stack, text.clone()).await;
    reported(&stack, &id, "sent").await;
    // A synonym with no OptOutType (Twilio's own keyword list) opts out as well; the
    // opt-out is per sender: another number of ours may still write.
    stack.post_webhook(&says("Unsubscribe")).await;
    assert_eq!(post_outbound(&stack, text).await.0, 409);
    queued(
        &stack,
        json!({"to": USER, "from": "+15557770001", "text": "From another number"}),
    )
    .await;
    // The agent heard "Unsubscribe" (Twilio gave no OptOutType) and answered it.
    let mut sent: Vec<String> = stack
        .twilio
        .wait_for(3)
        .await
        .iter()
        .map(|m| m.body.clone())
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec!["From another number", "Not understood", "Sale today"]
    );
}

#[tokio::test]
async fn twilios_21610_marks_the_person_as_opted_out() {
    let stack = outbound_stack("CX", &[]).await;
    stack.twilio.misbehave_next(&[Misbehaviour::Refuse {
        status: 400,
        code: 21610,
    }]);
    let text = json!({"to": USER, "from": OUR_NUMBER, "text": "Sale today"});
    let id = queued(&stack, text.clone()).await;
    let report = reported(&stack, &id, "failed").await;
    assert_eq!(report["error_code"], 21610);
    assert_eq!(report["reason"], "opted_out");
    let (status, answer) = post_outbound(&stack, text).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "opted_out");
    assert!(stack.twilio.sent().is_empty());
}

/// Twilio's status callback for `sid` at `path`, signed with the account's token.
async fn callback(stack: &Stack, path: &str, sid: &str, status: &str) -> u16 {
    let url = format!("{}{path}", stack.bridge.url());
    let params = [
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("MessageStatus", status),
    ];
    post_signed(&url, &url, &params).await.0
}

#[tokio::test]
async fn status_callbacks_say_delivered_read_or_undelivered() {
    let stack = outbound_stack("CX", &[]).await;
    // Taken, then reported undelivered by the stand-in's own signed callback.
    stack
        .twilio
        .misbehave_next(&[Misbehaviour::FailLater { code: 30007 }]);
    let id = queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "text": "filtered"}),
    )
    .await;
    let report = reported(&stack, &id, "undelivered").await;
    assert_eq!(report["error_code"], 30007);
    // Delivered: the stand-in's own callbacks (queued, sent, delivered on SMS),
    // signed with the account's token as Twilio's.
    let id = queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "text": "hello"}),
    )
    .await;
    let report = reported(&stack, &id, "delivered").await;
    let sid = report["message_sids"][0].as_str().unwrap().to_owned();
    // A callback without the outbound mark is a reply's: it changes no request.
    assert_eq!(callback(&stack, "status", &sid, "read").await, 200);
    assert_eq!(
        report_at(&stack.bridge.url(), &id).await.1["status"],
        "delivered"
    );
    // Read: Twilio's callback, with the mark.
    assert_eq!(
        callback(&stack, "status?outbound=1", &sid, "read").await,
        200
    );
    reported(&stack, &id, "read").await;
}

#[tokio::test]
async fn an_event_is_refused_while_a_person_has_the_conversation() {
    let (desk, desk_url) = Desk::start().await;
    let stack = people_stack("CX", &desk_url, &[("OUTBOUND_TOKEN", OUTBOUND_TOKEN)]).await;
    crate::handoff::say(&stack, "talk to a person", 1).await;
    desk.wait_for(1).await;
    let (status, answer) = post_outbound(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "event": {"name": "back"}}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "with_a_person");
    // Text is the business's own words: it may still go.
    queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "text": "Your order shipped"}),
    )
    .await;
    let sent = stack.twilio.wait_for(2).await;
    assert_eq!(
        bodies(&sent),
        vec!["Getting a person", "Your order shipped"]
    );
}

#[tokio::test]
async fn an_events_answer_may_hand_the_conversation_to_a_person() {
    const ESCALATING: &str = r#"
project: outbound-project
location: global
agent_id: outbound-agent
language: en
intents:
  - name: overdue
    events: [overdue_invoice]
    replies:
      - text: "Your invoice is overdue: a person will write to you here"
      - handoff: { queue: billing }
fallback:
  replies: [{ text: "Not understood" }]
"#;
    let (desk, desk_url) = Desk::start().await;
    let stack = start_with_agent(ESCALATING, "CX", |vars| {
        with_people(&desk_url)(vars);
        set(&[("OUTBOUND_TOKEN", OUTBOUND_TOKEN)])(vars);
    })
    .await;
    let id = queued(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "event": {"name": "overdue_invoice"}}),
    )
    .await;
    let sent = sent_after(&stack, 0, 1).await;
    assert_eq!(
        sent[0].body,
        "Your invoice is overdue: a person will write to you here"
    );
    reported(&stack, &id, "sent").await;
    desk.wait_for(1).await;
    assert_eq!(desk.kinds(), vec!["handoff.started"]);
    // The person's answer goes to the person, not to the agent.
    let (status, _) = stack.post_webhook(&says("I paid it yesterday")).await;
    assert_eq!(status, 200);
    desk.wait_for(2).await;
    assert_eq!(desk.kinds(), vec!["handoff.started", "message.received"]);
    assert_eq!(
        stack.agent_requests().len(),
        1,
        "only the event reached the agent"
    );
}

#[tokio::test]
async fn the_outbound_pace_holds_outbound_sends_only() {
    // Twenty notices at one a second take nineteen seconds to go: far longer than the
    // person's answer may take (AGENT_TIMEOUT is 5 s), however slow the machine.
    const NOTICES: usize = 20;
    let stack = outbound_stack("CX", &[("OUTBOUND_PER_SECOND", "1")]).await;
    let other = "+15551230002";
    for n in 1..=NOTICES {
        queued(
            &stack,
            json!({"to": other, "from": OUR_NUMBER, "text": format!("Notice {n}")}),
        )
        .await;
    }
    // A person who writes meanwhile is answered as the agent answers, not after the
    // queue of outbound sends.
    let (status, _) = stack.post_webhook(&says("hello")).await;
    assert_eq!(status, 200);
    let mut count = 1;
    let order = loop {
        let sent = stack.twilio.wait_for(count).await;
        let order: Vec<String> = bodies(&sent).into_iter().map(str::to_owned).collect();
        if order.iter().any(|b| b == "Hello") {
            break order;
        }
        assert!(sent.len() >= count, "no answer to the person: {order:?}");
        count = sent.len() + 1;
    };
    let hello = order.iter().position(|b| b == "Hello").unwrap();
    let notices: Vec<&String> = order.iter().filter(|b| *b != "Hello").collect();
    assert!(hello < NOTICES, "the answer waited for the line: {order:?}");
    // The notices go in the order they were queued, each once.
    let expected: Vec<String> = (1..=notices.len()).map(|n| format!("Notice {n}")).collect();
    assert_eq!(notices, expected.iter().collect::<Vec<_>>(), "{order:?}");
}

#[tokio::test]
async fn the_token_is_required_and_without_one_set_there_is_no_endpoint() {
    let stack = outbound_stack("CX", &[]).await;
    let body = json!({"to": USER, "from": OUR_NUMBER, "text": "hi"}).to_string();
    let url = stack.bridge.url();
    for token in [None, Some("outbound-token-wrong-0000"), Some("")] {
        let (status, answer) = post_outbound_at(&url, token, &[], &body).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert_eq!(answer["error"], "unauthorized");
    }
    let response = reqwest::Client::new()
        .get(format!("{url}outbound/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(stack.twilio.sent().is_empty(), "nothing sent");
    let (status, answer) = report_at(&url, "ob_unknown").await;
    assert_eq!((status, &answer["error"]), (404, &json!("not_found")));

    let off = start("CX", set(&[("REPLY_MODE", "api")])).await;
    let (status, _) = post_outbound_at(&off.bridge.url(), Some(OUTBOUND_TOKEN), &[], &body).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_bad_body_is_refused_naming_its_field() {
    let stack = outbound_stack("CX", &[]).await;
    let url = stack.bridge.url();
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("not json", 400, None),
        (r#"{"from": "+15557770000", "text": "hi"}"#, 400, Some("to")),
        (r#"{"to": "5551230001", "text": "hi"}"#, 422, Some("to")),
        (
            r#"{"to": "+15551230001", "from": "+1", "text": "hi"}"#,
            422,
            Some("from"),
        ),
        (
            r#"{"to": "+15551230001", "from": "whatsapp:+15557770000", "text": "hi"}"#,
            400,
            Some("from"),
        ),
        (
            r#"{"to": "+15551230001", "messaging_service_sid": "MG12", "text": "hi"}"#,
            400,
            Some("messaging_service_sid"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000"}"#,
            400,
            Some("event"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "event": {"name": "bad name"}}"#,
            400,
            Some("event"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "text": ""}"#,
            400,
            Some("text"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "text": "hi", "media": "x"}"#,
            400,
            Some("media"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "template": {"content_sid": "HX1"}}"#,
            400,
            Some("template"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "text": "hi", "template": {"content_sid": "HX00000000000000000000000000000abc"}}"#,
            400,
            Some("template"),
        ),
        (
            r#"{"to": "+15551230001", "from": "+15557770000", "text": "hi", "idempotency_key": 7}"#,
            400,
            Some("idempotency_key"),
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) = post_outbound_at(&url, Some(OUTBOUND_TOKEN), &[], body).await;
        assert_eq!(got, *status, "{body}: {answer}");
        assert_eq!(answer["field"].as_str(), *field, "{body}: {answer}");
        assert!(
            answer["error"].is_string() && answer["message"].is_string(),
            "{answer}"
        );
    }
    assert!(stack.twilio.sent().is_empty(), "nothing sent");
    assert_eq!(stack.twilio.attempts(), 0);
}

#[tokio::test]
async fn the_same_key_sends_once_and_answers_the_same() {
    let stack = outbound_stack("CX", &[]).await;
    let body = json!({"to": USER, "from": OUR_NUMBER, "text": "Once", "idempotency_key": "row-1"});
    let first = queued(&stack, body.clone()).await;
    let again = queued(&stack, body).await;
    assert_eq!(first, again);
    // The header works as the field does.
    let url = stack.bridge.url();
    let header_body = json!({"to": USER, "from": OUR_NUMBER, "text": "Once"}).to_string();
    let (status, by_header) = post_outbound_at(
        &url,
        Some(OUTBOUND_TOKEN),
        &[("Idempotency-Key", "row-1")],
        &header_body,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(by_header["id"], json!(first));
    // Another request with the key is refused.
    let (status, answer) = post_outbound(
        &stack,
        json!({"to": USER, "from": OUR_NUMBER, "text": "Something else", "idempotency_key": "row-1"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "idempotency_key");
    reported(&stack, &first, "sent").await;
    assert_eq!(bodies(&stack.twilio.sent()), vec!["Once"]);
    // A refusal is answered again as it was.
    stack
        .post_webhook(&with("STOP", &[("OptOutType", "STOP")]))
        .await;
    let refused =
        json!({"to": USER, "from": OUR_NUMBER, "text": "Sale", "idempotency_key": "row-2"});
    assert_eq!(post_outbound(&stack, refused.clone()).await.0, 409);
    stack
        .post_webhook(&with("START", &[("OptOutType", "START")]))
        .await;
    let (status, answer) = post_outbound(&stack, refused).await;
    assert_eq!((status, &answer["error"]), (409, &json!("opted_out")));
    stack
        .assert_metrics_show("outbound_requests_total{kind=\"text\",outcome=\"repeat\"} 2")
        .await;
}

#[tokio::test]
async fn the_same_key_at_two_instances_sharing_redis_sends_once() {
    let redis = RedisServer::start().await;
    let (local, instances) =
        instances_on(&redis.url(), "api", &[("OUTBOUND_TOKEN", OUTBOUND_TOKEN)]).await;
    let [a, b] = &instances[..] else { panic!() };
    let body = json!({"to": USER, "from": OUR_NUMBER, "text": "Once across", "idempotency_key": "campaign-7:row-1"})
        .to_string();
    // At the same time, at both: one of them is first, the other answers its id.
    let (first, second) = tokio::join!(
        post_outbound_at(&a.phone.url, Some(OUTBOUND_TOKEN), &[], &body),
        post_outbound_at(&b.phone.url, Some(OUTBOUND_TOKEN), &[], &body),
    );
    assert_eq!((first.0, second.0), (202, 202), "{first:?} {second:?}");
    assert_eq!(first.1["id"], second.1["id"]);
    let id = first.1["id"].as_str().unwrap().to_owned();
    // Either instance tells its status: the record is shared.
    reported_at(&b.phone.url, &id, "sent").await;
    reported_at(&a.phone.url, &id, "sent").await;
    let again = post_outbound_at(&b.phone.url, Some(OUTBOUND_TOKEN), &[], &body).await;
    assert_eq!(again.1["id"], json!(id));
    assert_eq!(bodies(&local.twilio.sent()), vec!["Once across"]);
}

/// `check --offline` with `extra` besides an agent's settings: its report.
fn check_report(extra: &[(&str, &str)]) -> String {
    let dir = WorkDir::with_dotenv("");
    let mut env = vec![
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", "test-agent"),
        ("GCP_PROJECT", "test-project"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("DIALOGFLOW_EMULATOR_HOST", "127.0.0.1:9"),
    ];
    env.extend_from_slice(extra);
    let output = dir.command(&["check", "--offline"], &env).output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{out}");
    out
}

#[test]
fn check_says_whether_the_endpoint_is_on_and_never_shows_its_token() {
    let off = check_report(&[]);
    assert!(off.contains("POST /outbound is off"), "{off}");
    let on = check_report(&[
        ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
        ("OUTBOUND_PER_SECOND", "20"),
    ]);
    assert!(on.contains("POST /outbound is on"), "{on}");
    assert!(on.contains("20 a second"), "{on}");
    assert!(!on.contains(OUTBOUND_TOKEN), "{on}");
}

#[tokio::test]
async fn the_outbound_pace_holds_across_instances_sharing_redis() {
    let redis = RedisServer::start().await;
    let settings = [
        ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
        ("OUTBOUND_PER_SECOND", "1"),
    ];
    let (local, instances) = instances_on(&redis.url(), "api", &settings).await;
    let started = std::time::Instant::now();
    for n in 1..=6 {
        let at = &instances[n % 2].phone.url;
        let body = json!({"to": USER, "from": OUR_NUMBER, "text": format!("Notice {n}")});
        let (status, answer) =
            post_outbound_at(at, Some(OUTBOUND_TOKEN), &[], &body.to_string()).await;
        assert_eq!(status, 202, "{answer}");
    }
    let sent = local.twilio.wait_for(6).await;
    // One a second for the bridge: six sends take six of the store's seconds, so more
    // than four went by between the first and the last (a slow machine only adds to
    // it). Each instance at its own pace would have sent its three within two.
    let took = started.elapsed();
    assert!(took > Duration::from_secs(4), "six sent within {took:?}");
    let mut order = bodies(&sent);
    order.sort_unstable();
    let expected: Vec<String> = (1..=6).map(|n| format!("Notice {n}")).collect();
    assert_eq!(
        order,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

/// "Notice 1" to "Notice `count`" queued at the bridge at `url`: their ids.
async fn notices_queued_at(url: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 1..=count {
        let body = json!({"to": USER, "from": OUR_NUMBER, "text": format!("Notice {n}")});
        let (status, answer) =
            post_outbound_at(url, Some(OUTBOUND_TOKEN), &[], &body.to_string()).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn queued_requests_of_an_instance_killed_are_sent_by_the_other_once() {
    let redis = RedisServer::start().await;
    let settings = [
        ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
        ("OUTBOUND_PER_SECOND", "1"),
        ("STATE_LEASE", "2s"),
    ];
    let (local, mut instances) = instances_on(&redis.url(), "api", &settings).await;
    let ids = notices_queued_at(&instances[0].phone.url, 5).await;
    // The first instance is sending, the others wait in its line (one a second): no
    // SIGTERM, no drain, as an instance out of memory dies.
    local.twilio.wait_for(1).await;
    drop(instances.remove(0));
    let other = &instances[0].phone.url;
    let mut reports = Vec::new();
    for id in &ids {
        let report = eventually(&format!("{id} done"), Duration::from_secs(30), || async {
            let (_, report) = report_at(other, id).await;
            ready_if(report, |report| {
                matches!(
                    report["status"].as_str(),
                    Some("sent" | "delivered" | "read" | "failed")
                )
            })
        })
        .await;
        reports.push(report);
    }
    quiet_window(Duration::from_millis(1500)).await;
    let sent = local.twilio.sent();
    let mut interrupted = 0;
    for (n, report) in (1..=5).zip(&reports) {
        let notice = format!("Notice {n}");
        let taken: Vec<&SentMessage> = sent.iter().filter(|m| m.body == notice).collect();
        assert!(taken.len() <= 1, "{notice} sent twice: {sent:?}");
        if report["status"] == "failed" {
            // Only a send the killed instance had started (one a second: one at most)
            // is not sent again: it may or may not have gone out.
            assert!(
                report["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("interrupted"),
                "{report}"
            );
            interrupted += 1;
        } else {
            assert_eq!(taken.len(), 1, "{notice}: {report}");
            assert_eq!(report["message_sids"], json!([taken[0].sid]), "{report}");
        }
    }
    assert!(interrupted <= 1, "{reports:?}");
}

#[tokio::test]
async fn at_sigterm_queued_requests_are_left_to_the_other_instance_at_once() {
    let redis = RedisServer::start().await;
    // A lease far longer than the test waits: the hand-over must not wait for it.
    let settings = [
        ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
        ("OUTBOUND_PER_SECOND", "1"),
        ("STATE_LEASE", "30s"),
        ("SHUTDOWN_GRACE", "1s"),
    ];
    let (local, mut instances) = instances_on(&redis.url(), "api", &settings).await;
    let ids = notices_queued_at(&instances[0].phone.url, 4).await;
    local.twilio.wait_for(1).await;
    let mut a = instances.remove(0);
    a.serve.signal("TERM");
    a.serve
        .find_line(|line| {
            line.contains("queued outbound requests not yet sent are left to the other instances")
                .then_some(())
        })
        .await;
    let other = &instances[0].phone.url;
    for id in &ids {
        reported_at(other, id, "sent").await;
    }
    local.twilio.wait_for(4).await;
    quiet_window(Duration::from_millis(1500)).await;
    let sent = local.twilio.sent();
    let mut order = bodies(&sent);
    order.sort_unstable();
    assert_eq!(
        order,
        ["Notice 1", "Notice 2", "Notice 3", "Notice 4"],
        "{sent:?}"
    );
}
