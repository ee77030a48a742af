//! Why a webhook was refused, and the HTTP answer for each reason, in one place.
//!
//! Every refusal is a 4xx with a one-line reason, and happens before the agent is
//! asked anything.

use crate::twilio::webhook::WebhookError;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Rejection {
    #[error("expected Content-Type application/x-www-form-urlencoded")]
    NotAForm,
    #[error("missing X-Twilio-Signature header")]
    MissingSignature,
    #[error("X-Twilio-Signature does not match this request")]
    BadSignature,
    #[error("X-Twilio-Webhooks-Signature-Settings names a key this bridge does not have (TWILIO_WEBHOOK_KEYS)")]
    UnknownSigningKey,
    #[error("X-Twilio-Webhooks-Signature-Settings names an algorithm this bridge does not know")]
    UnknownAlgorithm,
    #[error("cannot tell the URL Twilio called: no Host header")]
    NoHost,
    /// Sent to a host the bridge does not answer for: a webhook signed for another
    /// host of the same account must not verify here.
    #[error("the webhook was sent to a host this bridge does not answer for (TWILIO_WEBHOOK_HOSTS, or the Cloud Run service's own URL)")]
    UnknownHost,
    #[error("the body is over {} KiB, far more than any Twilio webhook", super::MAX_BODY_BYTES / 1024)]
    TooLarge,
    #[error("the body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("the request's headers and body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("cannot read the body: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Webhook(#[from] WebhookError),
}

impl Rejection {
    /// Why the body could not be read: too large, too slow (`body_timeout` ran out
    /// between pieces, or the request's whole deadline passed), or broken.
    pub fn of_body(rejection: BytesRejection, body_timeout: std::time::Duration) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Rejection::TooLarge;
        }
        timed_out(&rejection, body_timeout)
            .unwrap_or_else(|| Rejection::Unreadable(rejection.body_text()))
    }
}

/// The clock that cut a body short, if one did: the silence allowed between its pieces,
/// or the whole request's deadline.
pub fn timed_out(
    error: &(dyn std::error::Error + 'static),
    body_timeout: std::time::Duration,
) -> Option<Rejection> {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return Some(Rejection::BodyTimeout(body_timeout));
        }
        if let Some(hardened_http::RequestTimeout(limit)) = error.downcast_ref() {
            return Some(Rejection::RequestTimeout(*limit));
        }
        source = error.source();
    }
    None
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotAForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::MissingSignature
            | Rejection::BadSignature
            | Rejection::UnknownSigningKey
            | Rejection::UnknownAlgorithm
            | Rejection::UnknownHost => StatusCode::FORBIDDEN,
            Rejection::Webhook(WebhookError::WrongAccount) => StatusCode::FORBIDDEN,
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout(_) | Rejection::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::NoHost
            | Rejection::Unreadable(_)
            | Rejection::Webhook(WebhookError::Missing(_))
            | Rejection::Webhook(WebhookError::MalformedSid(_)) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NotAForm => "not_a_form",
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::UnknownSigningKey => "unknown_signing_key",
            Rejection::UnknownAlgorithm => "unknown_algorithm",
            Rejection::NoHost => "no_host",
            Rejection::UnknownHost => "unknown_host",
            Rejection::TooLarge => "too_large",
            Rejection::BodyTimeout(_) => "body_timeout",
            Rejection::RequestTimeout(_) => "request_timeout",
            Rejection::Unreadable(_) => "unreadable",
            Rejection::Webhook(WebhookError::WrongAccount) => "wrong_account",
            Rejection::Webhook(WebhookError::Missing(_)) => "missing_parameter",
            Rejection::Webhook(WebhookError::MalformedSid(_)) => "malformed_sid",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        tracing::warn!(
            outcome = "rejected",
            reason = self.label(),
            "webhook refused: {self}"
        );
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if matches!(
            self,
            Rejection::BodyTimeout(_) | Rejection::RequestTimeout(_)
        ) {
            // A client that cannot send its body in time does not keep the connection.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
