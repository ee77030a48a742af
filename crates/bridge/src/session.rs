//! The Dialogflow session a conversation belongs to.
//!
//! One conversation is one sender writing to one of our numbers. Dialogflow asks that
//! session ids not carry personal data, and allows at most 36 characters, so the id is
//! a keyed hash (HMAC-SHA256) of the pair: stable across messages, restarts and
//! instances that share the key, and never the number itself. The key matters: phone
//! numbers are few enough that an unkeyed hash is undone by trying them all (a US area
//! code in under a minute), and the id appears in logs, in Dialogflow's session names
//! and in the helpdesk's events.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The secret that session ids are keyed with (`SESSION_KEY`), the same on every
/// instance so that they all give a conversation the same id.
#[derive(Clone)]
pub struct SessionKey {
    mac: HmacSha256,
    origin: KeyOrigin,
}

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `SESSION_KEY`, a secret of its own.
    Configured,
    /// Derived from `TWILIO_AUTH_TOKEN`, for a deployment that sets no `SESSION_KEY`:
    /// still secret, but anyone with the token can compute the ids, and rotating the token
    /// restarts every conversation.
    DerivedFromAuthToken,
}

impl SessionKey {
    /// The shortest `SESSION_KEY` taken, in bytes: as long as the hash it keys.
    pub const MIN_LEN: usize = 32;

    /// A key of `secret`, which the configuration has checked is at least
    /// [`SessionKey::MIN_LEN`] bytes long.
    pub fn configured(secret: &[u8]) -> Self {
        Self::of(secret, KeyOrigin::Configured)
    }

    /// The key of a deployment without `SESSION_KEY`: an HMAC of a fixed label under the
    /// account's auth token, so that no id is ever keyed with the token itself.
    pub fn derived_from_auth_token(auth_token: &str) -> Self {
        let derived = keyed(auth_token.as_bytes())
            .chain_update(b"twilio-dialogflow/session-key/v1")
            .finalize()
            .into_bytes();
        Self::of(&derived, KeyOrigin::DerivedFromAuthToken)
    }

    fn of(secret: &[u8], origin: KeyOrigin) -> Self {
        Self {
            mac: keyed(secret),
            origin,
        }
    }

    pub fn origin(&self) -> KeyOrigin {
        self.origin
    }
}

/// HMAC accepts keys of any length; the error type only exists for other MACs.
fn keyed(secret: &[u8]) -> HmacSha256 {
    let Ok(mac) = HmacSha256::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({:?}, ***)", self.origin)
    }
}

/// A Dialogflow session id: 36 characters of `[A-Za-z0-9_-]`, kept inline because every
/// remembered message holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 36]);

impl SessionId {
    /// The session of `from` writing to `to` on the account `account_sid`, under `key`.
    pub fn for_conversation(key: &SessionKey, account_sid: &str, from: &str, to: &str) -> Self {
        Self::keyed(
            key,
            &["twilio-dialogflow/session/v2", account_sid, from, to],
        )
    }

    /// The id of `person` alone on the account `account_sid`, under `key`: where what
    /// is kept of them across senders is found again (the outbound requests made to
    /// them), so that erasing them need not know the senders. Never a conversation's
    /// id: the label differs.
    pub fn for_person(key: &SessionKey, account_sid: &str, person: &str) -> Self {
        Self::keyed(key, &["twilio-dialogflow/person/v1", account_sid, person])
    }

    /// The HMAC of `parts` (a label first) under `key`, cut to 36 characters.
    fn keyed(key: &SessionKey, parts: &[&str]) -> Self {
        let mut mac = key.mac.clone();
        // Lengths are hashed too, so that no two different lists hash the same input.
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        // 27 bytes encode to exactly 36 base64url characters.
        let mut id = [0u8; 36];
        let written = URL_SAFE_NO_PAD
            .encode_slice(&mac.finalize().into_bytes()[..27], &mut id)
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
impl SessionKey {
    /// The key of the unit tests: any fixed key of the length taken.
    pub(crate) fn for_tests() -> Self {
        Self::configured(&[7; 32])
    }
}

#[cfg(test)]
impl SessionId {
    /// The conversation of `from` with `to` in the unit tests: all on one account,
    /// under [`SessionKey::for_tests`].
    pub(crate) fn for_tests(from: &str, to: &str) -> Self {
        Self::for_conversation(&SessionKey::for_tests(), "AC1", from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn key(byte: u8) -> SessionKey {
        SessionKey::configured(&[byte; 32])
    }

    /// The id of the bridge before ids were keyed: a plain SHA-256 of the same input,
    /// which anyone could compute for every number.
    fn unkeyed(account_sid: &str, from: &str, to: &str) -> String {
        let mut hash = Sha256::new();
        for part in ["twilio-dialogflow/session/v1", account_sid, from, to] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(&hash.finalize()[..27])
    }

    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn ids_are_stable_short_safe_and_hide_the_number() {
        let id = SessionId::for_conversation(
            &key(1),
            ACCOUNT,
            "whatsapp:+15551234567",
            "whatsapp:+14155238886",
        );
        assert_eq!(
            id,
            SessionId::for_conversation(
                &key(1),
                ACCOUNT,
                "whatsapp:+15551234567",
                "whatsapp:+14155238886"
            )
        );
        assert_eq!(id.as_str().len(), 36);
        assert!(id
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!id.as_str().contains("5551234567"));
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn each_sender_and_number_pair_is_its_own_session() {
        let key = key(1);
        let a = SessionId::for_conversation(&key, "AC1", "+15551234567", "+18005550000");
        assert_ne!(
            a,
            SessionId::for_conversation(&key, "AC1", "+15551234568", "+18005550000")
        );
        assert_ne!(
            a,
            SessionId::for_conversation(&key, "AC1", "+15551234567", "+18005550001")
        );
        assert_ne!(
            a,
            SessionId::for_conversation(&key, "AC2", "+15551234567", "+18005550000")
        );
        // The lengths keep the parts apart.
        assert_ne!(
            SessionId::for_conversation(&key, "AC1", "+1", "+23"),
            SessionId::for_conversation(&key, "AC1", "+12", "+3")
        );
    }

    #[test]
    fn the_same_conversation_under_two_keys_gives_unrelated_ids() {
        let (one, other) = (key(1), key(2));
        let mut differing_bits = 0;
        let mut compared_bits = 0;
        for n in 0..200 {
            let from = format!("+1555123{n:04}");
            let a = SessionId::for_conversation(&one, ACCOUNT, &from, "+18005550000");
            let b = SessionId::for_conversation(&other, ACCOUNT, &from, "+18005550000");
            assert_ne!(a, b);
            let (a, b) = (
                URL_SAFE_NO_PAD.decode(a.as_str()).unwrap(),
                URL_SAFE_NO_PAD.decode(b.as_str()).unwrap(),
            );
            differing_bits += a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x ^ y).count_ones())
                .sum::<u32>();
            compared_bits += 8 * a.len() as u32;
        }
        // Unrelated hashes differ in about half their bits.
        let share = f64::from(differing_bits) / f64::from(compared_bits);
        assert!((0.45..0.55).contains(&share), "{share}");
    }

    #[test]
    fn no_id_is_the_unkeyed_hash_anyone_could_compute() {
        for key in [
            key(1),
            SessionKey::derived_from_auth_token("test-auth-token"),
            // Even a key that is the empty string, were one ever taken.
            SessionKey::configured(b""),
        ] {
            for from in ["+15551234567", "whatsapp:+15551234567", ""] {
                let id = SessionId::for_conversation(&key, ACCOUNT, from, "+18005550000");
                assert_ne!(id.as_str(), unkeyed(ACCOUNT, from, "+18005550000"));
            }
        }
    }

    #[test]
    fn a_persons_id_is_keyed_and_no_conversations() {
        let person = SessionId::for_person(&key(1), ACCOUNT, "+15551234567");
        assert_eq!(
            person,
            SessionId::for_person(&key(1), ACCOUNT, "+15551234567")
        );
        assert_ne!(
            person,
            SessionId::for_person(&key(2), ACCOUNT, "+15551234567")
        );
        assert_ne!(
            person,
            SessionId::for_person(&key(1), "AC2", "+15551234567")
        );
        assert_ne!(
            person,
            SessionId::for_conversation(&key(1), ACCOUNT, "+15551234567", "")
        );
        assert_eq!(SessionId::parse(person.as_str()), Some(person));
    }

    #[test]
    fn a_derived_key_is_not_the_auth_token_itself() {
        let derived = SessionKey::derived_from_auth_token("test-auth-token");
        let direct = SessionKey::configured(b"test-auth-token");
        assert_eq!(derived.origin(), KeyOrigin::DerivedFromAuthToken);
        assert_ne!(
            SessionId::for_conversation(&derived, ACCOUNT, "+1", "+2"),
            SessionId::for_conversation(&direct, ACCOUNT, "+1", "+2")
        );
        assert!(!format!("{derived:?}").contains("test-auth-token"));
    }
}
