//! The bearer tokens of the endpoints that are not Twilio's (the hand-over API,
//! `/outbound`, `/privacy/erase`, `/metrics`): one comparison and one challenge, so
//! that every token is held to the same rules.

use crate::config::Secret;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// Whether `headers` carry `Authorization: Bearer` with `token`, compared in constant
/// time; never when there is no token (the endpoint is off).
pub fn carries(headers: &HeaderMap, token: Option<&Secret>) -> bool {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    token.is_some_and(|token| crate::handoff::token_matches(token.expose(), authorization))
}

/// `refusal` (a `401`) with the challenge RFC 6750 asks for.
pub fn challenge(mut refusal: Response) -> Response {
    refusal
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refusal
}
