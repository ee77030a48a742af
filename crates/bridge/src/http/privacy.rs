//! `POST /privacy/erase`: erase a person (`crate::privacy`). Needs
//! `Authorization: Bearer PRIVACY_TOKEN`, checked before the body is read
//! ([`require_token`]); without `PRIVACY_TOKEN` the route does not exist (404). A
//! refused call removes nothing. The answer says what was removed, by kind; refusals
//! are JSON `{"error": code, "message": one line}` and never repeat the number.

use super::rejection::Rejection;
use super::AppState;
use crate::privacy::request::EraseRequest;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// Runs before the handler (a route layer): a call without the token is refused
/// before its body is read, and nothing is removed.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if super::bearer::carries(request.headers(), state.privacy_token.as_ref()) {
        return next.run(request).await;
    }
    tracing::warn!("a call to /privacy/erase without the right bearer token was refused");
    super::bearer::challenge(error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authorization: Bearer PRIVACY_TOKEN is required",
    ))
}

/// `POST /privacy/erase`: `200 {"removed": {kind: n}, "total", …}`.
pub async fn erase(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(privacy) = &state.privacy else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return Rejection::of_body(rejection, state.limits.body).into_response(),
    };
    let request = match EraseRequest::parse(&body) {
        Ok(request) => request,
        Err(bad) => return error(StatusCode::BAD_REQUEST, bad.code(), &bad.to_string()),
    };
    let erasure = privacy.erase(&request).await;
    let total = erasure.total();
    let message = match total {
        0 => "nothing was kept of this person: nothing was removed",
        _ => "removed everything the bridge kept of this person",
    };
    (
        StatusCode::OK,
        Json(json!({
            "removed": erasure.removed,
            "total": total,
            "conversations": erasure.conversations,
            "conversations_looked_at": erasure.looked_at,
            "opt_out_kept": erasure.opt_out_kept,
            "events": erasure.events,
            "message": message,
        })),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}
