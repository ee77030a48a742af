//! `POST /outbound` (the business writes first) and `GET /outbound/{id}` (what became
//! of it). Both need `Authorization: Bearer OUTBOUND_TOKEN`, checked before the body is
//! read ([`require_token`]); without `OUTBOUND_TOKEN` the routes do not exist (404).
//! Every refusal is JSON `{"error": code, "message": one line, "field": name}`.

use super::rejection::Rejection;
use super::webhook::{status_callback_url, OUTBOUND_MARK};
use super::AppState;
use crate::outbound::request::{BadRequest, OutboundRequest, Problem};
use crate::outbound::{Refusal, Report};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Runs before the handlers (a route layer): a call without the token is refused
/// before its body is read, and nothing is sent.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if super::bearer::carries(request.headers(), state.outbound_token.as_ref()) {
        return next.run(request).await;
    }
    tracing::warn!("a call to /outbound without the right bearer token was refused");
    state.metrics.outbound("none", "unauthorized");
    super::bearer::challenge(error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authorization: Bearer OUTBOUND_TOKEN is required",
        None,
    ))
}

/// `POST /outbound`: `202 {"id", "status": "queued"}`, or a refusal with nothing sent.
pub async fn create(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The messages sent later link back to this call's trace.
    crate::telemetry::request::RequestTrace::outbound_request(&headers)
        .run(accept(state, uri, &headers, body))
        .await
}

async fn accept(
    state: Arc<AppState>,
    uri: Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(outbound) = &state.outbound else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return Rejection::of_body(rejection, state.limits.body).into_response(),
    };
    let header_key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                Problem::BadField.code(),
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                Some("idempotency_key"),
            )
        }
    };
    let request = match OutboundRequest::parse(&body, header_key) {
        Ok(request) => request,
        Err(bad) => {
            state.metrics.outbound("none", bad.problem.code());
            return bad_request(&bad);
        }
    };
    // Twilio reports on the messages beside the webhook: at the configured URL, or at
    // the host this call came to. With neither, the messages go without a callback.
    let status_callback = state
        .public_url
        .of(headers, &uri)
        .map(|url| format!("{}?{OUTBOUND_MARK}", status_callback_url(&url)))
        .unwrap_or_default();
    // The sender, known to an erasure of every sender (once per process).
    if let (Some(privacy), Some(sender)) = (&state.privacy, sender_of(&request)) {
        privacy
            .senders
            .seen(&state.twilio.account_sid, &sender)
            .await;
    }
    match outbound.accept(request, status_callback).await {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(json!({"id": accepted.id, "status": "queued"})),
        )
            .into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// The sender a request names, as Twilio writes it (none for the default).
fn sender_of(request: &OutboundRequest) -> Option<String> {
    match &request.sender {
        crate::outbound::request::SenderChoice::Number(number) => Some(number.twilio()),
        crate::outbound::request::SenderChoice::Service(sid) => Some(sid.clone()),
        crate::outbound::request::SenderChoice::Default => None,
    }
}

/// `GET /outbound/{id}`: what became of a request.
pub async fn status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(outbound) = &state.outbound else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match outbound.report(&id).await {
        Ok(Some(report)) => (StatusCode::OK, Json(body_of(&report))).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no outbound request has this id (or it is older than three days)",
            None,
        ),
        Err(_) => refused(Refusal::Unreadable),
    }
}

fn body_of(report: &Report) -> serde_json::Value {
    json!({
        "id": report.id,
        "status": report.status,
        "message_sids": report.message_sids,
        "error_code": report.error_code,
        "reason": report.reason,
    })
}

fn bad_request(bad: &BadRequest) -> Response {
    let status = match bad.problem {
        Problem::NotE164 => StatusCode::UNPROCESSABLE_ENTITY,
        Problem::BadJson | Problem::BadField => StatusCode::BAD_REQUEST,
    };
    error(status, bad.problem.code(), &bad.message, bad.field)
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::OptedOut | Refusal::TemplateRequired | Refusal::WithAPerson => {
            StatusCode::CONFLICT
        }
        Refusal::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::NoSender | Refusal::EventNeedsNumber | Refusal::NoRoute => StatusCode::BAD_REQUEST,
        Refusal::Unreadable => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(
        status,
        refusal.code(),
        &refusal.to_string(),
        refusal.field(),
    )
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let mut body = json!({"error": code, "message": message});
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    (status, Json(body)).into_response()
}
