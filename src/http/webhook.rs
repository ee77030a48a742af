//! `POST /`: Twilio's incoming-message webhook, from raw request to TwiML.
//!
//! The steps run in the order the data flows and each can stop the request: the form
//! is decoded, its signature checked against the URL Twilio called, the message read,
//! the agent asked, the reply rendered.

use super::public_url::public_url;
use super::rejection::Rejection;
use super::AppState;
use crate::twilio::signature;
use crate::twilio::twiml;
use crate::twilio::webhook::{FormParams, IncomingMessage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn incoming(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    if !is_form(&headers) {
        return Err(Rejection::NotAForm);
    }
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(Rejection::MissingSignature)?;
    let url = public_url(&state.twilio, &headers, &uri).ok_or(Rejection::NoHost)?;
    let params = FormParams::parse(&body);
    let tokens: Vec<&str> = state
        .twilio
        .auth_tokens
        .iter()
        .map(|t| t.expose())
        .collect();
    if !signature::is_valid(&tokens, &url, params.pairs(), signature) {
        return Err(Rejection::BadSignature);
    }
    let message = IncomingMessage::from_verified(params, &state.twilio.account_sid)?;
    let message_sid = message.message_sid.clone().unwrap_or_default();
    let channel = message.channel();
    let handled = state.conversations.handle(message).await;
    tracing::info!(
        message_sid = %message_sid,
        channel,
        session = %handled.session,
        outcome = handled.outcome.label(),
        fallback_reason = match &handled.outcome {
            crate::conversation::Outcome::Fallback(reason) => reason.as_str(),
            _ => "",
        },
        duplicate = handled.duplicate,
        agent_ms = handled.agent_latency.map(|d| d.as_millis() as u64),
        replies = handled.messages.len(),
        "webhook handled"
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, twiml::CONTENT_TYPE)],
        twiml::render(&handled.messages),
    )
        .into_response())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
