//! The Dialogflow session a conversation belongs to.
//!
//! One conversation is one sender writing to one of our numbers. Dialogflow asks that
//! session ids not carry personal data, and allows at most 36 characters, so the id is
//! a hash of the pair: stable across messages and restarts, and never the number itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// A Dialogflow session id: 36 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// The session of `from` writing to `to` on the account `account_sid`.
    pub fn for_conversation(account_sid: &str, from: &str, to: &str) -> Self {
        let mut hash = Sha256::new();
        // Lengths are hashed too, so that no two different triples hash the same input.
        for part in ["twilio-dialogflow/session/v1", account_sid, from, to] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        // 27 bytes encode to exactly 36 base64url characters.
        Self(URL_SAFE_NO_PAD.encode(&hash.finalize()[..27]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_short_safe_and_hide_the_number() {
        let id =
            SessionId::for_conversation("AC1", "whatsapp:+15551234567", "whatsapp:+14155238886");
        assert_eq!(
            id,
            SessionId::for_conversation("AC1", "whatsapp:+15551234567", "whatsapp:+14155238886")
        );
        assert_eq!(id.as_str().len(), 36);
        assert!(id
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!id.as_str().contains("5551234567"));
    }

    #[test]
    fn each_sender_and_number_pair_is_its_own_session() {
        let a = SessionId::for_conversation("AC1", "+15551234567", "+18005550000");
        assert_ne!(
            a,
            SessionId::for_conversation("AC1", "+15551234568", "+18005550000")
        );
        assert_ne!(
            a,
            SessionId::for_conversation("AC1", "+15551234567", "+18005550001")
        );
        assert_ne!(
            a,
            SessionId::for_conversation("AC2", "+15551234567", "+18005550000")
        );
    }
}
