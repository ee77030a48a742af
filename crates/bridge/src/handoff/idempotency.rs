//! `Idempotency-Key` on the human side's sends (`POST /handoff/{conversation}/messages`),
//! as Stripe and the IETF draft (draft-ietf-httpapi-idempotency-key-header) have it: a
//! helpdesk that retries a call whose answer it lost sends the message once. The same
//! key in the same conversation within [`KEPT_FOR`] answers what the first call
//! answered; with a different message it is refused (422). Keys are remembered per
//! conversation, in the state store, under a hash: the key itself is never stored.
//!
//! The key and the hashes are shared with `POST /outbound` ([`crate::outbound`]), whose
//! keys are remembered bridge-wide ([`IdempotencyKey::digest`]).

use crate::reply::ReplyMessage;
use crate::session::SessionId;
use crate::state::Slot;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long a key is remembered: a day, as Stripe does.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// Stripe's limit: more is not a key.
const MAX_KEY_CHARS: usize = 255;

/// The sends made with a key, by conversation and key.
pub const SENT_ONCE: Slot<SentOnce> = Slot::new("sent_once", KEPT_FOR);

/// A key as the helpdesk sent it: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Option<Self> {
        let fits = (1..=MAX_KEY_CHARS).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        fits.then(|| Self(value.to_owned()))
    }

    /// The key alone, hashed: where a bridge-wide request made with it is remembered.
    pub fn digest(&self) -> String {
        digest_of(&[self.0.as_str()])
    }

    /// Where the send made with this key in `session` is remembered.
    pub fn record_id(&self, session: &SessionId) -> String {
        format!("{session}:{}", hex(self.0.as_bytes()))
    }
}

/// What a send with a key did: enough to answer the same again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentOnce {
    /// A hash of the message, to tell a retry from a key used again for another.
    pub request: String,
    /// How many messages Twilio accepted.
    pub sent: usize,
    /// Why it stopped there, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl crate::state::Record for SentOnce {
    const KIND: &'static str = "sent_once";
}

/// The hash of what the human side asked to send: its text and media, each with its
/// length, so that no two messages share one.
pub fn request_of(message: &ReplyMessage) -> String {
    let mut parts = Vec::with_capacity(1 + message.media.len());
    parts.push(message.body.as_str());
    parts.extend(message.media.iter().map(String::as_str));
    digest_of(&parts)
}

/// A hash of `parts`, each with its length, so that no two lists share one.
pub fn digest_of(parts: &[&str]) -> String {
    let mut joined = Vec::new();
    for part in parts {
        joined.extend_from_slice(&(part.len() as u64).to_be_bytes());
        joined.extend_from_slice(part.as_bytes());
    }
    hex(&joined)
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_characters() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_some());
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_none());
        assert!(IdempotencyKey::parse("clé").is_none());
        assert!(IdempotencyKey::parse("a\nb").is_none());
    }

    #[test]
    fn another_message_or_conversation_is_another_request() {
        let text = |body: &str| ReplyMessage {
            body: body.into(),
            ..ReplyMessage::default()
        };
        assert_eq!(request_of(&text("hi")), request_of(&text("hi")));
        assert_ne!(request_of(&text("hi")), request_of(&text("hi!")));
        let with_media = ReplyMessage {
            media: vec!["https://x/1.jpg".into()],
            ..text("hi")
        };
        assert_ne!(request_of(&text("hi")), request_of(&with_media));
        let key = IdempotencyKey::parse("k1").unwrap();
        let one = SessionId::for_tests("+1", "+2");
        let other = SessionId::for_tests("+3", "+2");
        assert_ne!(key.record_id(&one), key.record_id(&other));
        assert!(!key.record_id(&one).contains("k1"), "the key is hashed");
    }
}
