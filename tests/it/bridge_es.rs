//! The bridge with an ES agent, end to end.

use crate::helpers::*;
use bridge::reply::ReplyMessage;
use serde_json::json;
use stand_ins::chat::Outgoing;

#[tokio::test]
async fn answers_text_and_sends_the_es_query() {
    let stack = start("ES", |_| {}).await;
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    let request = &stack.agent_requests()[0];
    assert!(request
        .path
        .starts_with("/v2/projects/test-project/agent/sessions/"));
    assert_eq!(request.body["queryInput"]["text"]["text"], json!("hi"));
    assert_eq!(
        request.body["queryInput"]["text"]["languageCode"],
        json!("en")
    );
    assert_eq!(request.body["queryParams"]["payload"]["From"], json!(USER));
}

#[tokio::test]
async fn sends_default_platform_messages_and_twilio_payloads_only() {
    let stack = start("ES", |_| {}).await;
    assert_eq!(
        stack.say("es menu").await,
        vec![
            ReplyMessage::text("Here is the ES menu"),
            ReplyMessage {
                body: "ES card".into(),
                media: vec!["https://example.com/es.jpg".into()],
                ..ReplyMessage::default()
            },
        ]
    );
}

#[tokio::test]
async fn media_without_text_is_the_media_event() {
    let stack = start("ES", |_| {}).await;
    let replies = stack
        .send(&Outgoing {
            media: vec!["https://api.twilio.com/media/ME2.png".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(texts(&replies), vec!["Nice picture"]);
    let body = &stack.agent_requests()[0].body;
    assert_eq!(body["queryInput"]["event"]["name"], json!("twilio_media"));
    assert_eq!(body["queryInput"]["event"]["languageCode"], json!("en"));
}

#[tokio::test]
async fn keeps_session_parameters_across_turns() {
    let stack = start("ES", |_| {}).await;
    stack.say("small").await;
    assert_eq!(
        stack.replies_to("what did I order").await,
        ["You ordered a small pizza"]
    );
}

#[tokio::test]
async fn a_regional_agent_uses_the_locations_path() {
    let stack = start_with_agent(
        &AGENT.replace("location: global", "location: europe-west2"),
        "ES",
        set(&[("AGENT_LOCATION", "europe-west2")]),
    )
    .await;
    assert_eq!(
        stack.say("hi").await,
        vec![ReplyMessage::text("Hello from the agent")]
    );
    assert!(stack.agent_requests()[0]
        .path
        .starts_with("/v2/projects/test-project/locations/europe-west2/agent/sessions/"));
}

#[tokio::test]
async fn a_failing_es_agent_gets_the_fallback_message() {
    let stack = start("ES", |_| {}).await;
    assert_eq!(
        stack.replies_to("denied").await,
        [bridge::config::DEFAULT_FALLBACK_MESSAGE]
    );
}
