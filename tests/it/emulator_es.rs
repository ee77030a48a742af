//! The emulator speaks ES v2 as Google does: checked through the official client.

use google_cloud_dialogflow_v2::client::Sessions;
use google_cloud_dialogflow_v2::model::intent::message::{Message, Platform};
use google_cloud_dialogflow_v2::model::{DetectIntentRequest, EventInput, QueryInput, TextInput};
use google_cloud_gax::error::rpc::Code;
use serde_json::json;
use stand_ins::emulator::SAMPLE_AGENT;
use stand_ins::emulator::{AgentDefinition, Emulator};

async fn emulator(yaml: &str) -> Emulator {
    let agent = AgentDefinition::from_yaml_str(yaml).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(agent, listener).await.unwrap()
}

async fn client(emulator: &Emulator) -> Sessions {
    Sessions::builder()
        .with_endpoint(format!("http://{}", emulator.addr()))
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .unwrap()
}

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
    let response = client(&emulator)
        .await
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", "menu"))
        .send()
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
        .set_session("projects/demo-project/agent/sessions/s1")
        .set_query_input(
            QueryInput::new().set_event(
                EventInput::new()
                    .set_name("twilio_media")
                    .set_language_code("en"),
            ),
        );
    let response = client
        .detect_intent()
        .with_request(event)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.query_result.unwrap().fulfillment_text,
        "Thanks for the picture! Our chef will have a look."
    );
    client
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", "small"))
        .send()
        .await
        .unwrap();
    let response = client
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", "mushroom"))
        .send()
        .await
        .unwrap();
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
    let response = client
        .detect_intent()
        .with_request(text(
            "projects/demo-project/locations/europe-west2/agent/sessions/s1",
            "hi",
        ))
        .send()
        .await
        .unwrap();
    assert!(response
        .query_result
        .unwrap()
        .fulfillment_text
        .starts_with("Hi! I'm Pizzabot"));
    let global = client
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", "hi"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(global.status().unwrap().code, Code::NotFound);
}

#[tokio::test]
async fn fallback_and_errors() {
    let emulator = emulator(SAMPLE_AGENT).await;
    let client = client(&emulator).await;
    let response = client
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", "zzz qqq"))
        .send()
        .await
        .unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(
        result.intent.unwrap().display_name,
        "Default Fallback Intent"
    );
    assert!(result
        .fulfillment_text
        .starts_with("Sorry, I didn't get that."));
    let empty = client
        .detect_intent()
        .with_request(text("projects/demo-project/agent/sessions/s1", " "))
        .send()
        .await
        .unwrap_err();
    assert_eq!(empty.status().unwrap().code, Code::InvalidArgument);
    let other = client
        .detect_intent()
        .with_request(text("projects/other/agent/sessions/s1", "hi"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(other.status().unwrap().code, Code::NotFound);
}
