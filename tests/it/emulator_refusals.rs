//! The Dialogflow emulator refuses as Google does: `google.rpc.Status` JSON
//! (`{"error": {"code", "message", "status"}}`) with the HTTP status of its code, and
//! its limits are its own (the 256-character text input), never the bridge's.

use crate::helpers::{start_emulator, AGENT};
use serde_json::{json, Value};

async fn detect_intent(path: &str, body: Value) -> (u16, Value) {
    let (emulator, _) = start_emulator(AGENT).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", emulator.addr()))
        .json(&body)
        .send()
        .await
        .expect("the emulator answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("Google's error JSON"))
}

const CX: &str =
    "/v3/projects/test-project/locations/global/agents/test-agent/sessions/s1:detectIntent";
const ES: &str = "/v2/projects/test-project/agent/sessions/s1:detectIntent";

fn text(text: &str) -> Value {
    json!({"queryInput": {"text": {"text": text}, "languageCode": "en"}})
}

#[tokio::test]
async fn a_text_over_256_characters_is_refused_as_google_refuses_it() {
    for path in [CX, ES] {
        let (status, _) = detect_intent(path, text(&"a".repeat(256))).await;
        assert_eq!(status, 200, "{path}");
        let (status, body) = detect_intent(path, text(&"a".repeat(257))).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], 400, "{body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn an_unknown_agent_or_method_is_not_found_in_googles_shape() {
    let unknown = CX.replace("test-agent", "other-agent");
    for path in [
        unknown.as_str(),
        "/v3/projects/p/locations/global/agents/a:train",
    ] {
        let (status, body) = detect_intent(path, text("hi")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(
            (&body["error"]["code"], &body["error"]["status"]),
            (&json!(404), &json!("NOT_FOUND")),
            "{body}"
        );
    }
}
