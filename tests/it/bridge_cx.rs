//! The bridge with a CX agent, end to end: signed webhooks in, TwiML out, the emulator
//! behind it.

use crate::helpers::*;
use bridge::config::DEFAULT_FALLBACK_MESSAGE;
use bridge::reply::ReplyMessage;
use serde_json::json;
use stand_ins::chat::Outgoing;

#[tokio::test]
async fn answers_text_with_the_agents_reply() {
    let stack = start("CX", |_| {}).await;
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
}

#[tokio::test]
async fn sends_the_query_dialogflow_expects() {
    let stack = start("CX", |_| {}).await;
    stack.say("hi").await;
    let requests = stack.agent_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let (prefix, rest) = request.path.split_once("/sessions/").unwrap();
    assert_eq!(
        prefix,
        "/v3/projects/test-project/locations/global/agents/test-agent"
    );
    let session = rest.strip_suffix(":detectIntent").unwrap();
    assert_eq!(session.len(), 36);
    assert!(
        !request.path.contains("5551230001"),
        "the phone number never reaches the session id"
    );
    let body = &request.body;
    assert_eq!(body["queryInput"]["text"]["text"], json!("hi"));
    assert_eq!(body["queryInput"]["languageCode"], json!("en"));
    assert_eq!(body["queryParams"]["channel"], json!("TWILIO"));
    assert_eq!(body["queryParams"]["sessionTtl"], json!("43200s"));
    assert_eq!(body["queryParams"]["payload"]["From"], json!(USER));
    assert_eq!(body["queryParams"]["payload"]["To"], json!(OUR_NUMBER));
    assert_eq!(
        body["queryParams"]["payload"]["AccountSid"],
        json!(ACCOUNT_SID)
    );
}

#[tokio::test]
async fn keeps_one_session_per_conversation() {
    let stack = start("CX", |_| {}).await;
    assert_eq!(stack.replies_to("large").await, ["A large pizza"]);
    assert_eq!(
        stack.replies_to("what did I order").await,
        ["You ordered a large pizza"]
    );
    // Another sender is another session, with nothing ordered.
    let mut other = stack.phone.clone();
    other.from = "whatsapp:+15559990000".into();
    assert_eq!(
        texts(&ask(&other, "what did I order").await),
        vec!["You ordered a  pizza"]
    );
    let paths: Vec<String> = stack.agent_requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[0], paths[1]);
    assert_ne!(paths[1], paths[2]);
}

#[tokio::test]
async fn sends_twilio_channel_payloads_as_media_and_skips_other_channels() {
    let stack = start("CX", |_| {}).await;
    let replies = stack.say("menu").await;
    assert_eq!(
        replies,
        vec![
            ReplyMessage::text("Here is the menu"),
            ReplyMessage {
                body: "Menu card".into(),
                media: vec![
                    "https://example.com/menu.jpg".into(),
                    "https://example.com/drinks.jpg".into()
                ],
                ..ReplyMessage::default()
            },
        ]
    );
}

#[tokio::test]
async fn media_without_text_is_sent_as_the_media_event() {
    let stack = start("CX", |_| {}).await;
    let replies = stack
        .send(&Outgoing {
            media: vec!["https://api.twilio.com/media/ME1.jpg".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(texts(&replies), vec!["Nice picture"]);
    let body = &stack.agent_requests()[0].body;
    assert_eq!(body["queryInput"]["event"]["event"], json!("twilio_media"));
    assert!(body["queryInput"].get("text").is_none());
    assert_eq!(
        body["queryParams"]["payload"]["MediaUrl0"],
        json!("https://api.twilio.com/media/ME1.jpg")
    );
    assert_eq!(body["queryParams"]["payload"]["NumMedia"], json!("1"));
}

#[tokio::test]
async fn an_empty_message_asks_nothing_and_answers_nothing() {
    let stack = start("CX", |_| {}).await;
    let (status, body) = stack
        .post_webhook(&Outgoing {
            body: "   ".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#);
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn escapes_whatever_the_agent_says() {
    let stack = start("CX", |_| {}).await;
    assert_eq!(
        stack.replies_to("tricky").await,
        ["Fish & <chips> \"quoted\" 🍟"]
    );
}

#[tokio::test]
async fn splits_long_replies_without_losing_a_character() {
    let stack = start("CX", |_| {}).await;
    let replies = stack.say("long").await;
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|m| m.body.chars().count() <= 1600));
    assert_eq!(
        replies.iter().map(|m| m.body.as_str()).collect::<String>(),
        long_reply()
    );
}

#[tokio::test]
async fn a_failing_agent_gets_the_fallback_message_and_twilio_gets_200() {
    let stack = start("CX", |_| {}).await;
    assert_eq!(stack.replies_to("denied").await, [DEFAULT_FALLBACK_MESSAGE]);
    // PERMISSION_DENIED is not transient: asked once.
    assert_eq!(stack.agent_requests().len(), 1);
}

#[tokio::test]
async fn the_fallback_message_is_configurable() {
    let stack = start(
        "CX",
        set(&[("FALLBACK_MESSAGE", "We'll text you back shortly.")]),
    )
    .await;
    assert_eq!(
        stack.replies_to("break").await,
        ["We'll text you back shortly."]
    );
    // UNAVAILABLE is retried until the time budget runs out.
    assert!(stack.agent_requests().len() >= 2);
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_deadline() {
    let stack = start("CX", |_| {}).await;
    assert_eq!(stack.replies_to("flaky").await, ["Worked after retries"]);
    assert_eq!(stack.agent_requests().len(), 3);
}

#[tokio::test]
async fn a_slow_agent_is_abandoned_at_the_deadline() {
    let stack = start("CX", set(&[("AGENT_TIMEOUT", "500ms")])).await;
    let started = std::time::Instant::now();
    assert_eq!(stack.replies_to("slow").await, [DEFAULT_FALLBACK_MESSAGE]);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "answered before the agent"
    );
}

#[tokio::test]
async fn an_unknown_agent_gets_the_fallback_message() {
    let stack = start("CX", set(&[("AGENT_ID", "no-such-agent")])).await;
    assert_eq!(stack.replies_to("hi").await, [DEFAULT_FALLBACK_MESSAGE]);
}

#[tokio::test]
async fn an_unreachable_agent_gets_the_fallback_message() {
    let stack = start(
        "CX",
        set(&[
            ("DIALOGFLOW_EMULATOR_HOST", "127.0.0.1:9"),
            ("AGENT_TIMEOUT", "1s"),
        ]),
    )
    .await;
    assert_eq!(stack.replies_to("hi").await, [DEFAULT_FALLBACK_MESSAGE]);
}

#[tokio::test]
async fn a_redelivered_message_is_answered_once() {
    let stack = start("CX", |_| {}).await;
    let message = Outgoing {
        body: "large".into(),
        message_sid: Some("SM00000000000000000000000000000001".into()),
        ..Default::default()
    };
    let first = stack.send(&message).await;
    let again = stack.send(&message).await;
    assert_eq!(first, again);
    assert_eq!(stack.agent_requests().len(), 1);
}

#[tokio::test]
async fn a_redelivery_while_the_first_is_in_flight_waits_for_it() {
    let stack = start("CX", set(&[("AGENT_TIMEOUT", "10s")])).await;
    let message = Outgoing {
        body: "slow".into(),
        message_sid: Some("SM00000000000000000000000000000002".into()),
        ..Default::default()
    };
    let (first, second) = tokio::join!(stack.send(&message), stack.send(&message));
    assert_eq!(texts(&first), vec!["Finally"]);
    assert_eq!(first, second);
    assert_eq!(stack.agent_requests().len(), 1);
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let (reply, _) = shut_down_while_the_agent_thinks("8s").await;
    assert_eq!(
        reply,
        stand_ins::chat::PhoneReply::Messages(vec![ReplyMessage::text("Finally")])
    );
}

#[tokio::test]
async fn at_the_end_of_the_grace_a_waiting_webhook_gets_the_fallback() {
    // With no Messages API to fall back on, answering something beats being killed.
    let (reply, took) = shut_down_while_the_agent_thinks("1s").await;
    assert_eq!(
        reply,
        stand_ins::chat::PhoneReply::Messages(vec![ReplyMessage::text(DEFAULT_FALLBACK_MESSAGE)])
    );
    assert!(took < std::time::Duration::from_millis(2500), "{took:?}");
}

/// Asks the 3 s agent something, shuts the bridge down (`SHUTDOWN_GRACE=grace`) once the
/// agent has the question, and returns the reply and how long the shutdown took.
async fn shut_down_while_the_agent_thinks(
    grace: &str,
) -> (stand_ins::chat::PhoneReply, std::time::Duration) {
    let stack = start("CX", |vars| {
        vars.insert("AGENT_TIMEOUT".into(), "10s".into());
        vars.insert("SHUTDOWN_GRACE".into(), grace.into());
    })
    .await;
    let phone = stack.phone.clone();
    let in_flight = tokio::spawn(async move {
        phone
            .send(&Outgoing {
                body: "slow".into(),
                ..Default::default()
            })
            .await
    });
    // Shut down once the agent has the question, as SIGTERM would arrive mid-request.
    agent_asked(&stack.emulator, 1).await;
    let stopping = std::time::Instant::now();
    stack.bridge.shutdown().await.unwrap();
    let took = stopping.elapsed();
    (in_flight.await.unwrap().unwrap(), took)
}

#[tokio::test]
async fn resource_exhausted_is_retried_after_a_pause() {
    let stack = start("CX", set(&[("AGENT_TIMEOUT", "5s")])).await;
    assert_eq!(stack.replies_to("busy").await, ["Worked after a pause"]);
    assert_eq!(stack.agent_requests().len(), 2);
}

#[tokio::test]
async fn more_than_ten_media_are_spread_over_messages() {
    let stack = start("CX", |_| {}).await;
    let messages = stack.say("gallery").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].body, "Twelve pictures");
    assert_eq!(messages[0].media, gallery()[..10].to_vec());
    assert_eq!(messages[1].media, gallery()[10..].to_vec());
}

#[tokio::test]
async fn a_whatsapp_sender_is_answered_and_its_number_stays_out_of_the_session() {
    let stack = start("CX", |_| {}).await;
    let mut whatsapp = stack.phone.clone();
    whatsapp.from = "whatsapp:+15551230002".into();
    whatsapp.to = "whatsapp:+14155238886".into();
    assert_eq!(
        texts(&ask(&whatsapp, "hi").await),
        vec!["Hello from the agent"]
    );
    let request = &stack.agent_requests()[0];
    assert!(!request.path.contains("5551230002"), "{}", request.path);
    let payload = &request.body["queryParams"]["payload"];
    assert_eq!(payload["From"], json!("whatsapp:+15551230002"));
    assert_eq!(payload["WaId"], json!("15551230002"));
    assert_eq!(payload["ProfileName"], json!("Terminal Phone"));
}
