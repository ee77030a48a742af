//! The key that conversation and session ids are keyed with (`SESSION_KEY`).
//!
//! The same key on every instance gives a conversation the same id everywhere. Without
//! it the key is derived from `TWILIO_AUTH_TOKEN`, so a `.env` of the Node sample keeps
//! working and instances with the same settings still agree; [`super::warnings`] says
//! why a key of its own is better.

use super::vars::Reader;
use crate::session::SessionKey;

pub(super) fn read(reader: &mut Reader<'_>, auth_token: Option<&str>) -> Option<SessionKey> {
    match reader.get("SESSION_KEY") {
        Some(_) => reader.parsed_secret("SESSION_KEY", |v| {
            if v.len() < SessionKey::MIN_LEN {
                return Err(format!(
                    "must be at least {} bytes of secret, the same on every instance (e.g. `openssl rand -base64 32`)",
                    SessionKey::MIN_LEN
                ));
            }
            Ok(SessionKey::configured(v.as_bytes()))
        }),
        None => auth_token.map(SessionKey::derived_from_auth_token),
    }
}

/// Why a deployment should set `SESSION_KEY`, when it does not.
pub(super) const DERIVED_WARNING: &str = "SESSION_KEY is not set: conversation ids are keyed with a key derived from TWILIO_AUTH_TOKEN, so whoever holds the token can tell a number from its id, and rotating the token restarts every conversation. Set SESSION_KEY to 32 or more random bytes (from Secret Manager on Cloud Run), the same on every instance";
