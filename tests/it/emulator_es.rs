//! The emulator speaks ES v2 as Google does: checked through the official client.

use crate::helpers::{emulator_of, official_client};
use google_cloud_dialogflow_v2::model::intent::message::{Message, Platform};
use google_cloud_dialogflow_v2::model::{DetectIntentRequest, EventInput, QueryInput, TextInput};
use google_cloud_gax::error::rpc::Code;
use serde_json::json;
use stand_ins::emulator::Emulator;
use stand_ins::emulator::SAMPLE_AGENT;

/// The global agent's session the tests talk in.
const SESSION: &str = "projects/demo-project/agent/sessions/s1";

async fn emulator(yaml: &str) -> Emulator {
    emulator_of(yaml).await
}

official_client!(google_cloud_dialogflow_v2);

fn text(session: &str, text: &str) -> DetectIntentRequest {
    DetectIntentRequest::new()
        .set_session(session)
        .set_query_input(
            QueryInput::new().set_text(TextInput::new().set_text(text).set_language_code("en")),
        )
}

#[tokio::test]
async fn platforms_arrive_as_the_typed_enum() {
    let emulator = emulator(SAMPLE_AGENT).await;
    let response = detect(&client(&emulator).await, text(SESSION, "menu"))
        .await
        .unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(result.fulfillment_text, "Here's our menu:");
    let platforms: Vec<Platform> = result
        .fulfillment_messages
        .iter()
        .map(|m| m.platform.clone())
        .collect();
    assert_eq!(
        platforms,
        vec![
            Platform::Unspecified,
            Platform::Unspecified,
            Platform::Slack
        ]
    );
    let Some(Message::Payload(payload)) = &result.fulfillment_messages[1].message else {
        panic!("payload")
    };
    assert_eq!(
        payload["twilio"]["media"],
        json!("https://demo.twilio.com/owl.png")
    );
}

#[tokio::test]
async fn events_and_session_parameters() {
    let emulator = emulator(SAMPLE_AGENT).await;
    let client = client(&emulator).await;
    let event = DetectIntentRequest::new()
        .set_session(SESSION)
        .set_query_input(
            QueryInput::new().set_event(
                EventInput::new()
                    .set_name("twilio_media")
                    .set_language_code("en"),
            ),
        );
    let response = detect(&client, event).await.unwrap();
    assert_eq!(
        response.query_result.unwrap().fulfillment_text,
        "Thanks for the picture! Our chef will have a look."
    );
    detect(&client, text(SESSION, "small")).await.unwrap();
    let response = detect(&client, text(SESSION, "mushroom")).await.unwrap();
    assert_eq!(
        response.query_result.unwrap().fulfillment_text,
        "Got it: one small mushroom pizza. Say 'confirm' to place the order."
    );
}

#[tokio::test]
async fn regional_agents_use_the_locations_path() {
    let emulator =
        emulator(&SAMPLE_AGENT.replace("location: global", "location: europe-west2")).await;
    let client = client(&emulator).await;
    let response = detect(
        &client,
        text(
            "projects/demo-project/locations/europe-west2/agent/sessions/s1",
            "hi",
        ),
    )
    .await
    .unwrap();
    assert!(response
        .query_result
        .unwrap()
        .fulfillment_text
        .starts_with("Hi! I'm Pizzabot"));
    let global = detect(&client, text(SESSION, "hi")).await.unwrap_err();
    assert_eq!(global.status().unwrap().code, Code::NotFound);
}

#[tokio::test]
async fn fallback_and_errors() {
    let emulator = emulator(SAMPLE_AGENT).await;
    let client = client(&emulator).await;
    let response = detect(&client, text(SESSION, "zzz qqq")).await.unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(
        result.intent.unwrap().display_name,
        "Default Fallback Intent"
    );
    assert!(result
        .fulfillment_text
        .starts_with("Sorry, I didn't get that."));
    let empty = detect(&client, text(SESSION, " ")).await.unwrap_err();
    assert_eq!(empty.status().unwrap().code, Code::InvalidArgument);
    let other = detect(&client, text("projects/other/agent/sessions/s1", "hi"))
        .await
        .unwrap_err();
    assert_eq!(other.status().unwrap().code, Code::NotFound);
}

#[tokio::test]
async fn a_reminder_event_carries_its_parameters_in_the_event() {
    let emulator = emulator(SAMPLE_AGENT).await;
    let client = client(&emulator).await;
    let mut parameters = serde_json::Map::new();
    parameters.insert("time".into(), json!("9:00 am"));
    let reminder = DetectIntentRequest::new()
        .set_session(SESSION)
        .set_query_input(
            QueryInput::new().set_event(
                EventInput::new()
                    .set_name("appointment_reminder")
                    .set_parameters(parameters)
                    .set_language_code("en"),
            ),
        );
    let result = detect(&client, reminder)
        .await
        .unwrap()
        .query_result
        .unwrap();
    assert_eq!(result.intent.unwrap().display_name, "appointment.reminder");
    let Some(Message::QuickReplies(quick)) = &result.fulfillment_messages[0].message else {
        panic!("quick replies")
    };
    assert_eq!(
        quick.title,
        "Reminder: your table at Pizzabot is booked for 9:00 am. Reply 1 to confirm, 2 to move it."
    );
    assert_eq!(quick.quick_replies, vec!["Confirm it", "Move it"]);
    let answer = detect(&client, text(SESSION, "Confirm it")).await.unwrap();
    assert_eq!(
        answer.query_result.unwrap().fulfillment_text,
        "Confirmed: see you at 9:00 am!"
    );
}
