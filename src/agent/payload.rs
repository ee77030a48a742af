//! The Twilio rich-reply payload that agents put in custom payloads.
//!
//! The Node sample defined it: `{"body": "...", "media": "https://..."}` in a CX custom
//! payload, and the same object under a `twilio` key in an ES payload. `media` may also
//! be a list of URLs. Both spellings are accepted from both agent types, because agents
//! get ported between CX and ES with their payloads unchanged.

use crate::reply::ReplyMessage;
use serde_json::{Map, Value};

/// The message a custom payload asks for, or `None` when the payload is meant for
/// something else (another integration's rich content).
pub fn reply_from_payload(payload: &Map<String, Value>) -> Option<ReplyMessage> {
    let object = match payload.get("twilio") {
        Some(Value::Object(inner)) => inner,
        _ => payload,
    };
    let body = match object.get("body") {
        Some(Value::String(body)) => body.clone(),
        _ => String::new(),
    };
    let media = match object.get("media") {
        Some(Value::String(url)) => vec![url.clone()],
        Some(Value::Array(urls)) => urls
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let message = ReplyMessage { body, media };
    (!message.is_empty()).then_some(message)
}

/// Text variants of one message: Dialogflow returns one at run time, but an agent may
/// send several lines; they stay together in one message.
pub fn reply_from_text(lines: &[String]) -> Option<ReplyMessage> {
    let message = ReplyMessage::text(lines.join("\n"));
    (!message.is_empty()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn reads_cx_and_es_spellings() {
        let cx = object(json!({"body": "Menu", "media": "https://x/menu.jpg"}));
        let es = object(json!({"twilio": {"body": "Menu", "media": ["https://x/menu.jpg"]}}));
        let want = ReplyMessage {
            body: "Menu".into(),
            media: vec!["https://x/menu.jpg".into()],
        };
        assert_eq!(reply_from_payload(&cx), Some(want.clone()));
        assert_eq!(reply_from_payload(&es), Some(want));
    }

    #[test]
    fn ignores_payloads_for_other_integrations() {
        assert_eq!(
            reply_from_payload(&object(json!({"richContent": [[{"type": "chips"}]]}))),
            None
        );
        assert_eq!(
            reply_from_payload(&object(json!({"body": 3, "media": {"url": "x"}}))),
            None
        );
    }

    #[test]
    fn joins_text_lines() {
        assert_eq!(
            reply_from_text(&["a".into(), "b".into()]),
            Some(ReplyMessage::text("a\nb"))
        );
        assert_eq!(reply_from_text(&[]), None);
    }
}
