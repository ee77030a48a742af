//! Twilio's refusals, as Twilio writes them: an HTTP status and the JSON
//! `{"code", "message", "more_info", "status"}` of the REST API's error responses
//! (<https://www.twilio.com/docs/usage/twilios-response#response-formats-exceptions>).
//! Every answer of the stand-in that is not a success is one of these, so that a
//! client reading Twilio's errors reads the stand-in's the same way.
//!
//! The codes and their meaning are those of Twilio's error dictionary
//! (<https://www.twilio.com/docs/api/errors/{code}>); the messages are Twilio's words.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One refusal: what Twilio answers instead of doing what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}, Twilio error {code}: {message}")]
pub struct TwilioError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl TwilioError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 20003: the Basic auth is missing or not an accepted account or API key.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authentication Error - invalid username",
        )
    }

    /// 20404: nothing at `path` (a message or content SID unknown to the account, or
    /// a URL Twilio does not serve).
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    /// 20004: the URL exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
    }

    /// 20001: a parameter of the request is invalid (the Content API's answer to a
    /// content that breaks a limit of its type).
    pub fn invalid_parameter(why: impl Into<String>) -> Self {
        Self::bad_request(20001, why)
    }

    /// 21604: no `To`.
    pub fn to_required() -> Self {
        Self::bad_request(21604, "A 'To' phone number is required.")
    }

    /// 21211: a `To` that is neither an E.164 number nor a channel address.
    pub fn invalid_to(to: &str) -> Self {
        Self::bad_request(
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        )
    }

    /// 21603: neither `From` nor `MessagingServiceSid`.
    pub fn from_required() -> Self {
        Self::bad_request(21603, "A 'From' phone number is required.")
    }

    /// 21617: a `Body` over the limit.
    pub fn body_too_long(limit: usize) -> Self {
        Self::bad_request(
            21617,
            format!("The concatenated message body exceeds the {limit} character limit."),
        )
    }

    /// 21619: nothing to send.
    pub fn nothing_to_send() -> Self {
        Self::bad_request(
            21619,
            "A text message body or media urls must be specified.",
        )
    }

    /// 21623: more `MediaUrl`s than a message carries.
    pub fn too_much_media(limit: usize) -> Self {
        Self::bad_request(
            21623,
            format!("Number of media files exceeds allowed limit of {limit}."),
        )
    }

    /// 21654: `ContentVariables` without a `ContentSid`.
    pub fn content_sid_required() -> Self {
        Self::bad_request(
            21654,
            "A ContentSid must be specified if ContentVariables are provided in the request.",
        )
    }

    /// 21655: a `ContentSid` the account has no content or approved template for.
    pub fn invalid_content_sid() -> Self {
        Self::bad_request(21655, "The ContentSid is Invalid.")
    }

    /// 21656: `ContentVariables` that are not a JSON object of non-empty strings.
    pub fn invalid_content_variables() -> Self {
        Self::bad_request(21656, "The ContentVariables Parameter is invalid.")
    }

    /// 21610: the person sent STOP (or a synonym) to this sender and has not sent
    /// START since.
    pub fn unsubscribed_recipient() -> Self {
        Self::bad_request(21610, "Attempt to send to unsubscribed recipient")
    }

    /// 63021: the channel (WhatsApp) refuses the content, e.g. more than three reply
    /// buttons in a session message.
    pub fn channel_invalid_content(why: &str) -> Self {
        Self::bad_request(63021, format!("Channel invalid content error: {why}"))
    }

    /// The JSON body Twilio answers with.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Axum's answer to a URL the stand-in does not serve, in Twilio's shape.
pub async fn unknown_url(uri: axum::http::Uri) -> TwilioError {
    TwilioError::not_found(uri.path())
}

/// Axum's answer to a served URL asked with another method, in Twilio's shape.
pub async fn wrong_method() -> TwilioError {
    TwilioError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_message_reads_as_twilio_writes_it() {
        let error = TwilioError::not_found("/2010-04-01/Accounts/AC1/Messages/SM1.json");
        assert_eq!(
            error.body(),
            json!({
                "code": 20404,
                "message": "The requested resource /2010-04-01/Accounts/AC1/Messages/SM1.json was not found",
                "more_info": "https://www.twilio.com/docs/errors/20404",
                "status": 404,
            })
        );
    }
}
