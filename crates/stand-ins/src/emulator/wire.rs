//! The REST wire format: request fields read, response and error JSON written as
//! Google's Dialogflow API writes them.
//!
//! Google's REST endpoints encode enums by name, unless the request carries the system
//! parameter `$alt=json;enum-encoding=int` (the official Rust clients send it), in which
//! case they are numbers. Both are served.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// How enums are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnumEncoding {
    Names,
    Numbers,
}

impl EnumEncoding {
    /// From the raw query string: `$alt=json;enum-encoding=int`, percent-encoded or not.
    pub fn from_query(query: &str) -> Self {
        let decoded: String = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "$alt")
            .map(|(_, v)| v.into_owned())
            .collect();
        if decoded
            .split(';')
            .any(|part| part.trim() == "enum-encoding=int")
        {
            EnumEncoding::Numbers
        } else {
            EnumEncoding::Names
        }
    }

    pub fn write(self, name: &str, number: i32) -> Value {
        match self {
            EnumEncoding::Names => json!(name),
            EnumEncoding::Numbers => json!(number),
        }
    }
}

/// ES `Intent.Message.Platform` numbers, as in the v2 proto.
pub fn platform_number(name: &str) -> Option<i32> {
    Some(match name {
        "PLATFORM_UNSPECIFIED" => 0,
        "FACEBOOK" => 1,
        "SLACK" => 2,
        "TELEGRAM" => 3,
        "KIK" => 4,
        "SKYPE" => 5,
        "LINE" => 6,
        "VIBER" => 7,
        "ACTIONS_ON_GOOGLE" => 8,
        "GOOGLE_HANGOUTS" => 11,
        _ => return None,
    })
}

/// CX `Match.MatchType` values used here.
pub const MATCH_INTENT: (&str, i32) = ("INTENT", 1);
pub const MATCH_NO_MATCH: (&str, i32) = ("NO_MATCH", 4);
pub const MATCH_EVENT: (&str, i32) = ("EVENT", 6);
/// CX `ResponseMessage.ResponseType.HANDLER_PROMPT`.
pub const HANDLER_PROMPT: (&str, i32) = ("HANDLER_PROMPT", 3);

/// Google's error JSON.
#[derive(Debug, Clone)]
pub struct GoogleError {
    pub code: u16,
    pub status: String,
    pub message: String,
}

impl GoogleError {
    pub fn new(code: u16, status: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            status: status.to_owned(),
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", message)
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            json!({"error": {"code": self.code, "message": self.message, "status": self.status}});
        (status, Json(body)).into_response()
    }
}

/// The longest text a detectIntent takes, the emulator's own and not the bridge's:
/// "Text length must not exceed 256 characters" (CX v3 `TextInput.text`,
/// <https://cloud.google.com/dialogflow/cx/docs/reference/rest/v3/QueryInput#textinput>;
/// ES v2 `TextInput.text`, "256 characters for virtual agent interactions",
/// <https://cloud.google.com/dialogflow/es/docs/reference/rest/v2/QueryInput#textinput>).
/// Longer is refused as Google refuses it, 400 `INVALID_ARGUMENT`.
pub const TEXT_INPUT_CHARS: usize = 256;

/// What a detectIntent request asks, read from either API's JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Text(String),
    Event(String),
}

/// Reads the query input: CX `queryInput.text.text` / `queryInput.event.event`,
/// ES `queryInput.text.text` / `queryInput.event.name`.
pub fn read_query(body: &Value) -> Result<(Query, Option<String>), GoogleError> {
    let input = body
        .get("queryInput")
        .and_then(Value::as_object)
        .ok_or_else(|| GoogleError::invalid_argument("Query input not set."))?;
    let language = |inner: Option<&Value>| {
        inner
            .and_then(|v| v.get("languageCode"))
            .or_else(|| input.get("languageCode"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(text) = input.get("text") {
        let value = text.get("text").and_then(Value::as_str).unwrap_or_default();
        if value.trim().is_empty() {
            return Err(GoogleError::invalid_argument("Input text not set."));
        }
        if value.chars().count() > TEXT_INPUT_CHARS {
            return Err(GoogleError::invalid_argument(format!(
                "Input text exceeds {TEXT_INPUT_CHARS} characters."
            )));
        }
        return Ok((Query::Text(value.to_owned()), language(Some(text))));
    }
    if let Some(event) = input.get("event") {
        let name = event
            .get("event")
            .or_else(|| event.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| GoogleError::invalid_argument("Event name not set."))?;
        return Ok((Query::Event(name.to_owned()), language(Some(event))));
    }
    Err(GoogleError::invalid_argument(
        "Query input not set: expected text or event.",
    ))
}

/// A proto3 JSON Duration, `"43200s"` or `"1.5s"`; at most a day, as CX allows a
/// session.
pub fn read_duration(value: &Value) -> Option<std::time::Duration> {
    let seconds: f64 = value.as_str()?.strip_suffix('s')?.parse().ok()?;
    let duration = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    (!duration.is_zero()).then(|| duration.min(std::time::Duration::from_secs(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_encoding_follows_the_system_parameter() {
        assert_eq!(
            EnumEncoding::from_query("$alt=json;enum-encoding=int"),
            EnumEncoding::Numbers
        );
        assert_eq!(
            EnumEncoding::from_query("%24alt=json%3Benum-encoding%3Dint"),
            EnumEncoding::Numbers
        );
        assert_eq!(EnumEncoding::from_query(""), EnumEncoding::Names);
        assert_eq!(
            EnumEncoding::Numbers.write("SLACK", platform_number("SLACK").unwrap()),
            json!(2)
        );
        assert_eq!(EnumEncoding::Names.write("SLACK", 2), json!("SLACK"));
    }

    #[test]
    fn reads_cx_and_es_queries() {
        let cx = json!({"queryInput": {"text": {"text": "hi"}, "languageCode": "en"}});
        assert_eq!(
            read_query(&cx).unwrap(),
            (Query::Text("hi".into()), Some("en".into()))
        );
        let es = json!({"queryInput": {"event": {"name": "WELCOME", "languageCode": "de"}}});
        assert_eq!(
            read_query(&es).unwrap(),
            (Query::Event("WELCOME".into()), Some("de".into()))
        );
        let longest = json!({"queryInput": {"text": {"text": "é".repeat(TEXT_INPUT_CHARS)}}});
        assert!(read_query(&longest).is_ok());
        let too_long = json!({"queryInput": {"text": {"text": "é".repeat(TEXT_INPUT_CHARS + 1)}}});
        let refused = read_query(&too_long).unwrap_err();
        assert_eq!(
            (refused.code, refused.status.as_str()),
            (400, "INVALID_ARGUMENT")
        );
        let empty = json!({"queryInput": {"text": {"text": " "}}});
        assert_eq!(read_query(&empty).unwrap_err().status, "INVALID_ARGUMENT");
        assert_eq!(
            read_duration(&json!("43200s")),
            Some(std::time::Duration::from_secs(43200))
        );
    }
}
