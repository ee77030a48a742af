//! `POST /`: Twilio's incoming-message webhook, from raw request to TwiML.
//!
//! The steps run in the order the data flows and each can stop the request: the form
//! is decoded, its signature checked against the URL Twilio called, the message read,
//! the agent asked, the reply rendered.

use super::rejection::Rejection;
use super::AppState;
use crate::conversation::Outcome;
use crate::outbox::Recipient;
use crate::telemetry::request::RequestTrace;
use crate::twilio::signature;
use crate::twilio::twiml;
use crate::twilio::webhook::{check_sid_shapes, FormParams, IncomingMessage, WebhookError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn incoming(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejection> {
    // The caller's trace (Cloud Run's, or a client's `traceparent`), or a new one.
    RequestTrace::webhook(&headers)
        .run(handle(state, uri, headers, body))
        .await
}

async fn handle(
    state: Arc<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejection> {
    let read = read_message(&state, &uri, &headers, body);
    // The request is slices of the connection's read buffer: dropped before the turn,
    // hyper reuses that buffer for its next read instead of making another (8 KiB for
    // each conversation in flight).
    drop((uri, headers));
    let (message, url) = read.inspect_err(|r| state.metrics.webhook(r.label()))?;
    let message_sid = message.message_sid.clone().unwrap_or_default();
    let channel = message.channel();
    let recipient = Recipient::replying_to(&message, status_callback_url(&url));
    // The sender, known to an erasure of every sender (once per process).
    if let Some(privacy) = &state.privacy {
        privacy
            .senders
            .seen(&message.account_sid, &message.to)
            .await;
        if let Some(service) = message.params.get("MessagingServiceSid") {
            privacy.senders.seen(&message.account_sid, service).await;
        }
    }
    // Before the turn: a STOP is known before any outbound request that follows it.
    if let Some(outbound) = &state.outbound {
        outbound.heard(&message).await;
    }
    let handled = state.conversations.handle(message, recipient).await;
    if handled.outcome == Outcome::NoRoute {
        tracing::warn!(
            message_sid = %message_sid,
            channel,
            "no route matches this webhook (its To, MessagingServiceSid and AccountSid) and there is no default route: answered with no reply"
        );
    }
    if let Some(route) = &handled.agent_route {
        state.metrics.routed(route);
    }
    tracing::info!(
        message_sid = %message_sid,
        route = handled.agent_route.as_deref(),
        channel,
        session = %handled.session,
        outcome = handled.outcome.label(),
        fallback_reason = match &handled.outcome {
            Outcome::Fallback(reason) => Some(reason.label()),
            _ => None,
        },
        duplicate = handled.duplicate,
        agent_ms = handled.agent_latency.map(|d| d.as_millis() as u64),
        replies = handled.webhook_replies().len(),
        "webhook handled"
    );
    state.metrics.webhook(handled.outcome.label());
    state
        .metrics
        .replies_sent("webhook", handled.webhook_replies().len());
    if handled.duplicate {
        state.metrics.duplicate();
    }
    Ok(twiml_response(handled.webhook_replies()))
}

/// The message of a webhook, and the URL Twilio signed: every step before the agent,
/// each of which can refuse the request.
fn read_message(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(IncomingMessage, String), Rejection> {
    let _verifying = tracing::info_span!(target: crate::telemetry::SPANS, "verify").entered();
    let body = body.map_err(|r| Rejection::of_body(r, state.limits.body))?;
    let url = state.public_url.of(headers, uri);
    let (params, url) = verified_form(state, url, headers, &body)?;
    // Verified with this account's token: it is ours.
    let account = params.get("AccountSid").unwrap_or_default().to_owned();
    let message = IncomingMessage::from_verified(params, &account)?;
    Ok((message, url))
}

/// `POST /status`: Twilio's status callback for the replies sent through the API.
/// Delivery failures are logged with Twilio's error code; nothing else is kept.
pub async fn status(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Rejection> {
    let body = body.map_err(|r| Rejection::of_body(r, state.limits.body))?;
    // Twilio signs the callback URL the bridge gave it: beside the configured webhook
    // URL when there is one, whatever the proxy in front made of the request.
    let url = match &state.twilio.webhook_url {
        // The callback of an outbound message carries its mark in the query.
        Some(configured) => Ok(match uri.query() {
            Some(query) => format!("{}?{query}", status_callback_url(configured)),
            None => status_callback_url(configured),
        }),
        None => state.public_url.of(&headers, &uri),
    };
    let (params, _) = verified_form(&state, url, &headers, &body)?;
    // Like a webhook, a callback of another account is refused (`verified_form` checked
    // it with the token of the account it names).
    let message_status = params.get("MessageStatus").unwrap_or_default();
    let message_sid = params.get("MessageSid").unwrap_or_default();
    let of_outbound = uri.query() == Some(OUTBOUND_MARK);
    if let (Some(outbound), true) = (&state.outbound, of_outbound) {
        let code = params.get("ErrorCode").and_then(|c| c.trim().parse().ok());
        let account = params.get("AccountSid").unwrap_or_default();
        let to_from = params.get("To").zip(params.get("From"));
        outbound
            .reported(account, message_sid, message_status, code, to_from)
            .await;
    }
    if matches!(message_status, "undelivered" | "failed") {
        let code = params.get("ErrorCode").and_then(|c| c.trim().parse().ok());
        let account = params.get("AccountSid").unwrap_or_default();
        match state.conversations.outbox_of(account) {
            // Twilio waits for this answer: sending the menu again as text does not.
            Some(outbox) => {
                let (account, message_sid) = (account.to_owned(), message_sid.to_owned());
                tokio::spawn(
                    async move { outbox.not_delivered(&account, &message_sid, code).await },
                );
            }
            None => tracing::warn!(
                message_sid,
                twilio_error = code,
                "a reply was not delivered"
            ),
        }
    } else {
        tracing::debug!(message_sid, message_status, "reply status");
    }
    Ok(StatusCode::OK.into_response())
}

/// The form of a request that Twilio signed, and `url`, the URL it signed (or why the
/// request names none of ours); before this, nothing reads the form.
fn verified_form(
    state: &AppState,
    url: Result<String, Rejection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(FormParams, String), Rejection> {
    if !is_form(headers) {
        return Err(Rejection::NotAForm);
    }
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(Rejection::MissingSignature)?;
    let url = url?;
    let params = FormParams::parse(body);
    let settings = headers
        .get("x-twilio-webhooks-signature-settings")
        .and_then(|v| v.to_str().ok());
    let valid = match settings.map(signature::signature_settings) {
        // Signed with a Webhooks configuration SharedKey: only that key counts.
        Some((key, algorithm)) => {
            let algorithm = algorithm
                .and_then(signature::Algorithm::parse)
                .ok_or(Rejection::UnknownAlgorithm)?;
            let name = key.ok_or(Rejection::UnknownSigningKey)?;
            // A key signs its own account's webhooks only: the account the form names
            // chooses among the keys of that name.
            let account = params.get("AccountSid").unwrap_or_default();
            let key = match state.twilio.webhook_key(account, name) {
                Some(key) => key,
                None if state.twilio.has_webhook_key_named(name) => {
                    return Err(Rejection::Webhook(WebhookError::WrongAccount))
                }
                None => return Err(Rejection::UnknownSigningKey),
            };
            signature::is_valid_with(algorithm, key.expose(), &url, params.pairs(), signature)
        }
        None => {
            // The account the form names chooses the token; the signature then proves the
            // form, that name included. An account not ours has no token to check with.
            let tokens: Vec<&str> = state
                .twilio
                .tokens_of(params.get("AccountSid").unwrap_or_default())
                .ok_or(Rejection::Webhook(WebhookError::WrongAccount))?
                .iter()
                .map(|t| t.expose())
                .collect();
            signature::is_valid(&tokens, &url, params.pairs(), signature)
        }
    };
    if !valid {
        return Err(Rejection::BadSignature);
    }
    // After the signature, so an unsigned request learns nothing; before anything reads
    // the form as a message.
    check_sid_shapes(&params)?;
    if state
        .twilio
        .tokens_of(params.get("AccountSid").unwrap_or_default())
        .is_none()
    {
        return Err(Rejection::Webhook(WebhookError::WrongAccount));
    }
    Ok((params, url))
}

fn twiml_response(replies: &[crate::reply::ReplyMessage]) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, twiml::CONTENT_TYPE)],
        twiml::render(replies),
    )
        .into_response()
}

/// The query of an outbound message's status callback: only those callbacks update
/// an outbound request's record, so that the replies' own cost no write.
pub(super) const OUTBOUND_MARK: &str = "outbound=1";

/// The status callback beside the webhook: `https://host/prefix/` gives
/// `https://host/prefix/status`.
pub(super) fn status_callback_url(webhook_url: &str) -> String {
    let without_query = webhook_url.split(['?', '#']).next().unwrap_or(webhook_url);
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    match without_query[scheme_end..].rfind('/') {
        Some(slash) => format!("{}status", &without_query[..scheme_end + slash + 1]),
        None => format!("{without_query}/status"),
    }
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

#[cfg(test)]
mod tests {
    use super::status_callback_url;

    /// A webhook's future is what the HTTP server boxes for each conversation in
    /// flight: every layer that wraps the turn (the trace, the handler) must hold it
    /// once, not again as an argument (it was 17.5 KB when the trace's wrapper was an
    /// `async fn`). Prints its size (`--nocapture`).
    #[tokio::test]
    async fn a_webhooks_future_holds_the_turn_once() {
        let vars: crate::config::Vars = [
            ("AGENT_TYPE", "CX"),
            ("AGENT_ID", "agent"),
            ("GCP_PROJECT", "project"),
            ("DIALOGFLOW_EMULATOR_HOST", "127.0.0.1:9"),
            ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
            ("TWILIO_AUTH_TOKEN", "token"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = crate::config::Settings::from_vars(&vars).unwrap();
        let (state, _clients) = crate::startup::build(&settings).await.unwrap();
        let handler = super::incoming(
            axum::extract::State(state),
            axum::http::Uri::from_static("/"),
            axum::http::HeaderMap::new(),
            Ok(axum::body::Bytes::new()),
        );
        let size = std::mem::size_of_val(&handler);
        println!("a webhook's future: {size} bytes");
        assert!(size <= 6144, "a webhook's future: {size} bytes");
    }

    #[test]
    fn the_status_callback_sits_beside_the_webhook() {
        assert_eq!(
            status_callback_url("https://h.example/"),
            "https://h.example/status"
        );
        assert_eq!(
            status_callback_url("https://h.example/bot/?a=1"),
            "https://h.example/bot/status"
        );
        assert_eq!(
            status_callback_url("https://h.example/twilio"),
            "https://h.example/status"
        );
        assert_eq!(
            status_callback_url("https://h.example"),
            "https://h.example/status"
        );
    }
}
