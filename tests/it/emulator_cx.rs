//! The emulator speaks CX v3 as Google does: checked through the official client.

use crate::helpers::{emulator_of, official_client};
use google_cloud_dialogflow_cx_v3::model::{
    query_input, response_message, DetectIntentRequest, EventInput, QueryInput, QueryParameters,
    TextInput,
};
use google_cloud_gax::error::rpc::Code;
use serde_json::{json, Value};
use stand_ins::emulator::Emulator;
use stand_ins::emulator::SAMPLE_AGENT;

const AGENT: &str = "projects/demo-project/locations/global/agents/pizzabot";

async fn emulator() -> Emulator {
    emulator_of(SAMPLE_AGENT).await
}

official_client!(google_cloud_dialogflow_cx_v3);

fn text_query(session: &str, text: &str, channel: &str) -> DetectIntentRequest {
    DetectIntentRequest::new()
        .set_session(format!("{AGENT}/sessions/{session}"))
        .set_query_input(
            QueryInput::new()
                .set_language_code("en")
                .set_text(TextInput::new().set_text(text)),
        )
        .set_query_params(QueryParameters::new().set_channel(channel))
}

fn texts(messages: &[google_cloud_dialogflow_cx_v3::model::ResponseMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m.message.as_ref()? {
            response_message::Message::Text(t) => Some(t.text.join("")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_text_through_the_official_client() {
    let emulator = emulator().await;
    let response = detect(&client(&emulator).await, text_query("s1", "hi", ""))
        .await
        .unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(
        result.r#match.clone().unwrap().intent.unwrap().display_name,
        "greeting"
    );
    assert_eq!(
        texts(&result.response_messages),
        vec!["Hi! I'm Pizzabot 🍕. Say 'order a pizza' to start, or 'menu' to see what we have."]
    );
    assert_eq!(
        result.response_messages[0].response_type,
        google_cloud_dialogflow_cx_v3::model::response_message::ResponseType::HandlerPrompt,
        "enums arrive as numbers and decode"
    );
    assert_eq!(
        emulator.requests()[0].query,
        "%24alt=json%3Benum-encoding%3Dint"
    );
}

#[tokio::test]
async fn channel_specific_messages_only_for_their_channel() {
    let emulator = emulator().await;
    let client = client(&emulator).await;
    let twilio = detect(&client, text_query("s1", "menu", "TWILIO"))
        .await
        .unwrap();
    let messages = twilio.query_result.unwrap().response_messages;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].channel, "TWILIO");
    let Some(response_message::Message::Payload(payload)) = &messages[1].message else {
        panic!("payload")
    };
    assert_eq!(
        payload.get("media"),
        Some(&json!("https://demo.twilio.com/owl.png"))
    );
    let plain = detect(&client, text_query("s2", "menu", "")).await.unwrap();
    assert_eq!(plain.query_result.unwrap().response_messages.len(), 1);
}

#[tokio::test]
async fn keeps_session_parameters_across_turns() {
    let emulator = emulator().await;
    let client = client(&emulator).await;
    detect(&client, text_query("s1", "large", ""))
        .await
        .unwrap();
    let response = detect(&client, text_query("s1", "pepperoni", ""))
        .await
        .unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(
        texts(&result.response_messages),
        vec!["Got it: one large pepperoni pizza. Say 'confirm' to place the order."]
    );
    let parameters = result.parameters.unwrap();
    assert_eq!(parameters.get("size"), Some(&Value::String("large".into())));
    // Another session knows nothing of it.
    let other = detect(&client, text_query("s2", "confirm", ""))
        .await
        .unwrap();
    assert!(texts(&other.query_result.unwrap().response_messages)[0]
        .starts_with("Order placed: a   pizza"));
}

#[tokio::test]
async fn events_and_session_ttl() {
    let emulator = emulator().await;
    let request = DetectIntentRequest::new()
        .set_session(format!("{AGENT}/environments/draft/sessions/s1"))
        .set_query_input(QueryInput::new().set_language_code("en").set_input(
            query_input::Input::Event(Box::new(EventInput::new().set_event("twilio_media"))),
        ))
        .set_query_params(
            QueryParameters::new().set_session_ttl(google_cloud_wkt::Duration::clamp(600, 0)),
        );
    let response = detect(&client(&emulator).await, request).await.unwrap();
    let result = response.query_result.unwrap();
    assert_eq!(
        texts(&result.response_messages),
        vec!["Thanks for the picture! Our chef will have a look."]
    );
    assert_eq!(
        emulator.requests()[0].body["queryParams"]["sessionTtl"],
        json!("600s")
    );
}

#[tokio::test]
async fn errors_are_googles() {
    let emulator = emulator().await;
    let client = client(&emulator).await;
    let empty = detect(&client, text_query("s1", "", "")).await.unwrap_err();
    assert_eq!(empty.status().unwrap().code, Code::InvalidArgument);
    let wrong_agent = DetectIntentRequest::new()
        .set_session("projects/demo-project/locations/global/agents/other/sessions/s1")
        .set_query_input(
            QueryInput::new()
                .set_language_code("en")
                .set_text(TextInput::new().set_text("hi")),
        );
    let not_found = detect(&client, wrong_agent).await.unwrap_err();
    assert_eq!(not_found.status().unwrap().code, Code::NotFound);
    let unavailable = detect(&client, text_query("s1", "break", ""))
        .await
        .unwrap_err();
    assert_eq!(unavailable.status().unwrap().code, Code::Unavailable);
}

async fn post_json(url: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn plain_json_gets_enum_names() {
    let emulator = emulator().await;
    let url = format!(
        "http://{}/v3/{AGENT}/sessions/s1:detectIntent",
        emulator.addr()
    );
    let response = post_json(
        &url,
        &json!({"queryInput": {"text": {"text": "hello"}, "languageCode": "en"}}),
    )
    .await;
    assert_eq!(
        response["queryResult"]["responseMessages"][0]["responseType"],
        json!("HANDLER_PROMPT")
    );
    assert_eq!(
        response["queryResult"]["match"]["matchType"],
        json!("INTENT")
    );
    let response = post_json(
        &url,
        &json!({"queryInput": {"text": {"text": "zzz qqq"}, "languageCode": "en"}}),
    )
    .await;
    assert_eq!(
        response["queryResult"]["match"]["matchType"],
        json!("NO_MATCH")
    );
    let error = reqwest::Client::new()
        .post(&url)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), 400);
    let error: Value = error.json().await.unwrap();
    assert_eq!(error["error"]["status"], json!("INVALID_ARGUMENT"));
}

#[tokio::test]
async fn a_reminder_event_with_parameters_then_the_persons_answer() {
    let emulator = emulator().await;
    let client = client(&emulator).await;
    let mut parameters = serde_json::Map::new();
    parameters.insert("time".into(), json!("7:30 pm"));
    let reminder = DetectIntentRequest::new()
        .set_session(format!("{AGENT}/sessions/reminded"))
        .set_query_input(QueryInput::new().set_language_code("en").set_input(
            query_input::Input::Event(Box::new(
                EventInput::new().set_event("appointment_reminder"),
            )),
        ))
        .set_query_params(QueryParameters::new().set_parameters(parameters));
    let result = detect(&client, reminder)
        .await
        .unwrap()
        .query_result
        .unwrap();
    assert_eq!(
        result.r#match.clone().unwrap().intent.unwrap().display_name,
        "appointment.reminder"
    );
    let Some(response_message::Message::Payload(payload)) = &result.response_messages[0].message
    else {
        panic!("the reminder's choices are a payload")
    };
    let items = &payload["richContent"][0];
    assert_eq!(
        items[0]["title"],
        json!("Reminder: your table at Pizzabot is booked for 7:30 pm. Reply 1 to confirm, 2 to move it.")
    );
    assert_eq!(
        items[1]["options"],
        json!([{"text": "Confirm it"}, {"text": "Move it"}])
    );
    // The person's answer continues the same session: the time is still known.
    let answer = detect(&client, text_query("reminded", "Confirm it", ""))
        .await
        .unwrap();
    assert_eq!(
        texts(&answer.query_result.unwrap().response_messages),
        vec!["Confirmed: see you at 7:30 pm!"]
    );
    let moved = detect(&client, text_query("reminded", "Move it", ""))
        .await
        .unwrap();
    assert!(texts(&moved.query_result.unwrap().response_messages)[0]
        .starts_with("No problem: what time suits you better?"));
}
