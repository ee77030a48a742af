//! The Dialogflow session a conversation belongs to.
//!
//! One conversation is one sender writing to one of our numbers. Dialogflow asks that
//! session ids not carry personal data, and allows at most 36 characters, so the id is
//! a hash of the pair: stable across messages and restarts, and never the number itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// A Dialogflow session id: 36 characters of `[A-Za-z0-9_-]`, kept inline because every
/// remembered message holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 36]);

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
        let mut id = [0u8; 36];
        let written = URL_SAFE_NO_PAD
            .encode_slice(&hash.finalize()[..27], &mut id)
            .unwrap_or_default();
        debug_assert_eq!(written, id.len());
        Self(id)
    }

    /// A session id as [`SessionId::as_str`] wrote it (read back from the state store).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; 36] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // base64url is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
