//! The human side of a hand-over: `POST /handoff/{conversation}/messages` writes to the
//! person, `POST /handoff/{conversation}/end` gives the conversation back to the agent.
//! Both need `Authorization: Bearer HANDOFF_TOKEN`, checked before the body is read
//! ([`require_token`]); a refused call sends nothing.

use super::rejection::timed_out;
use super::AppState;
use crate::conversation::HumanSideError;
use crate::handoff::idempotency::IdempotencyKey;
use crate::reply::{ReplyMessage, MAX_MEDIA};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// A retry of a send made with the same key answers the same, and sends nothing.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A call refused because the conversation is busy may come back this much later: a
/// turn at the agent is usually done by then.
const RETRY_AFTER_SECONDS: &str = "5";

/// Ten messages' worth: more is not a chat message.
const MAX_TEXT_CHARS: usize = 10 * crate::reply::MAX_BODY_CHARS;

/// What the human side sends: text, media URLs, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanMessage {
    #[serde(default)]
    text: String,
    #[serde(default)]
    media: Vec<String>,
}

/// Runs before the handlers (a route layer): a call without the token is refused
/// before its body is read.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match unauthorized(&state, request.headers()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

pub async fn messages(
    State(state): State<Arc<AppState>>,
    Path(conversation): Path<String>,
    headers: HeaderMap,
    body: Result<Json<HumanMessage>, JsonRejection>,
) -> Response {
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(value) => match value.ok().and_then(IdempotencyKey::parse) {
            Some(key) => Some(key),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            }
        },
    };
    let message = match body {
        Ok(Json(message)) => message,
        Err(rejection) => {
            // A body cut short by a clock is the client's slowness, not its JSON.
            if let Some(late) = timed_out(&rejection, state.limits.body) {
                return error(late.status(), &late.to_string());
            }
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body must be JSON {{\"text\": \"...\", \"media\": [\"https://...\"]}}: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let bad_media = message
        .media
        .iter()
        .any(|url| !(url.starts_with("https://") || url.starts_with("http://")));
    if bad_media || message.media.len() > MAX_MEDIA {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("media must be http(s) URLs, at most {MAX_MEDIA}"),
        );
    }
    if message.text.chars().count() > MAX_TEXT_CHARS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "text must be at most {MAX_TEXT_CHARS} characters (sent as up to 10 messages)"
            ),
        );
    }
    let reply = ReplyMessage {
        body: message.text,
        media: message.media,
        ..ReplyMessage::default()
    };
    if reply.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to send: no text and no media",
        );
    }
    match state
        .conversations
        .human_says(&conversation, reply, key)
        .await
    {
        Ok(sent) => (StatusCode::OK, Json(json!({"sent": sent}))).into_response(),
        Err(refusal) => refused(refusal),
    }
}

pub async fn end(State(state): State<Arc<AppState>>, Path(conversation): Path<String>) -> Response {
    match state.conversations.human_ends(&conversation).await {
        Ok(()) => (StatusCode::OK, Json(json!({"ended": true}))).into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// `401` unless the request carries the hand-over token; also when hand-over is off.
fn unauthorized(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if super::bearer::carries(headers, state.handoff_token.as_ref()) {
        return None;
    }
    tracing::warn!("a call to the hand-over API without the right bearer token was refused");
    Some(super::bearer::challenge(error(
        StatusCode::UNAUTHORIZED,
        "Authorization: Bearer HANDOFF_TOKEN is required",
    )))
}

fn refused(refusal: HumanSideError) -> Response {
    let status = match &refusal {
        HumanSideError::NotHandedOver => StatusCode::NOT_FOUND,
        HumanSideError::Busy | HumanSideError::TurnHeld => StatusCode::SERVICE_UNAVAILABLE,
        HumanSideError::OptedOut => StatusCode::CONFLICT,
        HumanSideError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        HumanSideError::Send { .. } | HumanSideError::SentBefore { .. } => StatusCode::BAD_GATEWAY,
        HumanSideError::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({"error": refusal.to_string()});
    if let HumanSideError::Send { sent, error } = &refusal {
        body["sent"] = json!(sent);
        body["twilio_error"] = json!(error.code());
        body["hint"] = json!(error.hint());
    }
    if let HumanSideError::SentBefore { sent, .. } = &refusal {
        body["sent"] = json!(sent);
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}
