//! Where each value lives: the keys, laid out for a Redis or Valkey Cluster's hash slots.
//!
//! A cluster runs a script only when every key it touches is in one hash slot, and the
//! slot of a key is the CRC16 of its *hash tag* (the text between the first `{` and the
//! next `}`) when it has one. So:
//!
//! - **One tag per conversation**, `{SESSION}`: everything one step of a conversation
//!   touches carries it, so each step stays one atomic script in one slot:
//!   - `P:{S}:c`: the conversation, one hash: `next` and `done` turn numbers, and each
//!     open turn n as fields `n:key` (its message's key), `n:turn` (the message),
//!     `n:token` (the fencing token), `n:lease` (when its lease runs out, by the
//!     server's clock), `n:limited`, `n:tell`, `n:answer`, `n:sent`. Turns are fields,
//!     not keys of their own, so that no script builds a key name: every key a script
//!     touches is in its `KEYS`.
//!   - `P:{S}:rate`: the conversation's pace this minute;
//!   - `P:{S}:m:{AccountSid}:{MessageSid}` and its `:seen` marker: the message's
//!     claim and outcome. They carry the conversation's tag (the admission knows the
//!     session) because the admission claims the message and takes its turn in one
//!     script. The session is a keyed hash of (account, sender, our number), which a
//!     MessageSid never changes, so every delivery of one message finds the same key.
//!   - `P:{S}:n:{token}`: a turn of no message (the human side of a hand-over
//!     writing), claimed by its fencing token for its lease, where a message's claim
//!     would be: an admission asked again after its answer was lost finds its turn.
//!   - `P:{id}:r:{slot}`: the features' records, tagged by their id; the records of a
//!     conversation (its id the session) share the conversation's slot, which lets the
//!     admission read them in the same script.
//! - **Global structures in buckets**: what every instance must find without knowing
//!   the conversation (which conversations may hold a lease that runs out, the
//!   sweepers' schedules) is spread over [`BUCKETS`] tagged buckets `{b:N}`, the
//!   bucket chosen from the conversation's (or the scheduled id's) hash. Each sweeper
//!   covers every bucket; what it takes it claims atomically in the bucket's slot, so
//!   two instances never do the same work twice.
//!   - `P:{b:N}:leases`: the conversations that may hold a turn whose lease runs out,
//!     by when to look (the bucket's server clock), with `P:{b:N}:marks`, a generation
//!     per conversation, so that a sweeper drops a conversation only if no admission
//!     marked it since it looked (see `scripts::MARK`, `scripts::SETTLE`);
//!   - `P:{b:N}:due:{index}`: the sweepers' schedules (quiet hand-overs).
//! - `P:{budget}:calls`: the agent calls this hour, one counter: an exact budget
//!   matters more than spreading one `INCR` a webhook, far below one node's capacity.
//! - `P:{pace}:outbound`: the outbound sends this second (`OUTBOUND_PER_SECOND`), one
//!   hash for the bridge: one round trip a send, far below one node's capacity.
//! - The Content API cache, sent menus and idempotency records are records (one key
//!   each, tagged by their own id): single-key commands, spread over every slot.
//!
//! No key holds a phone number: sessions are hashes. `STATE_PREFIX` has no braces
//! (the settings refuse them), so the first `{…}` of every key is the tag meant.

use crate::session::SessionId;
use crate::state::MessageKey;

/// How many buckets the global structures are spread over. Fixed: every instance must
/// agree on it, and sixteen tagged slots land on every master of a cluster of a few
/// shards with near certainty, while a sweep of every bucket stays cheap.
pub(super) const BUCKETS: u32 = 16;

/// The keys under one `STATE_PREFIX`.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
}

impl Layout {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `STATE_PREFIX`, as `check` reports it.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn tagged(&self, tag: &str, rest: &str) -> String {
        format!("{}:{{{tag}}}:{rest}", self.prefix)
    }

    /// The conversation's hash: its turn numbers and open turns.
    pub(super) fn conversation(&self, session: &SessionId) -> String {
        self.tagged(session.as_str(), "c")
    }

    /// The conversation's pace this minute.
    pub(super) fn rate(&self, session: &SessionId) -> String {
        self.tagged(session.as_str(), "rate")
    }

    /// The message's claim and outcome, in its conversation's slot.
    pub(super) fn message(&self, session: &SessionId, key: &MessageKey) -> String {
        let rest = format!("m:{}:{}", key.account_sid, key.message_sid);
        self.tagged(session.as_str(), &rest)
    }

    /// A key in the conversation's slot that no message has: what a turn of no message
    /// names where a message's key would be.
    pub(super) fn no_message(&self, session: &SessionId) -> String {
        self.tagged(session.as_str(), "m:")
    }

    /// The claim of a turn of no message, by its fencing token, in the conversation's
    /// slot: where a message's claim would be, so that an admission asked again (its
    /// answer lost) finds the turn it made rather than making a second one.
    pub(super) fn turn_claim(&self, session: &SessionId, token: &str) -> String {
        self.tagged(session.as_str(), &format!("n:{token}"))
    }

    /// The record `id` of `slot`, in the slot of `id`.
    pub(super) fn record(&self, slot: &str, id: &str) -> String {
        self.tagged(id, &format!("r:{slot}"))
    }

    /// The index `name` of `id`, a set, in the slot of `id`.
    pub(super) fn index(&self, name: &str, id: &str) -> String {
        self.tagged(id, &format!("i:{name}"))
    }

    /// The pattern of `SCAN` that matches every key of this layout with a tag.
    pub(super) fn every_tagged_key(&self) -> String {
        format!("{}:{{*", glob_escaped(&self.prefix))
    }

    /// The pattern of `SCAN` that matches every record of `slot`.
    pub(super) fn every_record(&self, slot: &str) -> String {
        format!(
            "{}:{{*}}:r:{}",
            glob_escaped(&self.prefix),
            glob_escaped(slot)
        )
    }

    /// A key of this layout read back: its tag and what follows `}:`.
    pub(super) fn parts<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?;
        let (tag, rest) = rest.split_once('}')?;
        Some((tag, rest.strip_prefix(':')?))
    }

    /// The agent calls this hour.
    pub(super) fn budget(&self) -> String {
        self.tagged("budget", "calls")
    }

    /// The outbound sends of this second, bridge-wide.
    pub(super) fn pace(&self) -> String {
        self.tagged("pace", "outbound")
    }

    /// The bucket of a conversation or a scheduled id.
    pub(super) fn bucket_of(id: &str) -> u32 {
        // FNV-1a: stable across processes and versions (std's hasher is neither).
        let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        hash % BUCKETS
    }

    /// The conversations of bucket `n` that may hold a lease that runs out, and their
    /// marks' generations.
    pub(super) fn visits(&self, bucket: u32) -> [String; 2] {
        let tag = format!("b:{bucket}");
        [self.tagged(&tag, "leases"), self.tagged(&tag, "marks")]
    }

    /// The schedule `index` of bucket `n`.
    pub(super) fn schedule(&self, index: &str, bucket: u32) -> String {
        self.tagged(&format!("b:{bucket}"), &format!("due:{index}"))
    }

    /// The message a message key names, if it is one of this layout's for `session`.
    pub(super) fn message_of(&self, session: &SessionId, message_key: &str) -> Option<MessageKey> {
        let (account_sid, message_sid) = message_key
            .strip_prefix(&self.tagged(session.as_str(), "m:"))?
            .split_once(':')?;
        Some(MessageKey {
            account_sid: account_sid.to_owned(),
            message_sid: message_sid.to_owned(),
        })
    }
}

/// `text` as a `SCAN` pattern matching itself alone.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The marker that a message was handled, kept for the replay window after its outcome
/// (under `message_key`) is gone; none for a turn without a message. In the message's
/// slot: it shares its key's tag.
pub(super) fn seen_key_of(message_key: &str) -> String {
    match message_key {
        "" => String::new(),
        key => format!("{key}:seen"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

    /// The hash tag a cluster hashes, as the cluster specification defines it.
    fn tag(key: &str) -> &str {
        let Some(open) = key.find('{') else {
            return key;
        };
        match key[open + 1..].find('}') {
            Some(0) | None => key,
            Some(close) => &key[open + 1..open + 1 + close],
        }
    }

    #[test]
    fn everything_a_conversation_step_touches_shares_its_tag() {
        let layout = Layout::new("P");
        let session = SessionId::parse(SESSION).unwrap();
        let message = MessageKey {
            account_sid: "AC1".into(),
            message_sid: "SM1".into(),
        };
        let message_key = layout.message(&session, &message);
        let keys = [
            layout.conversation(&session),
            layout.rate(&session),
            seen_key_of(&message_key),
            message_key,
            layout.turn_claim(&session, "0a1b2c3d4e5f6a7b-12"),
            layout.record("menu", SESSION),
            layout.record("handoff", SESSION),
        ];
        for key in &keys {
            assert_eq!(tag(key), SESSION, "{key}");
        }
    }

    #[test]
    fn a_message_key_reads_back_as_its_message() {
        let layout = Layout::new("P");
        let session = SessionId::parse(SESSION).unwrap();
        let message = MessageKey {
            account_sid: "AC1".into(),
            message_sid: "SM1".into(),
        };
        let key = layout.message(&session, &message);
        assert_eq!(layout.message_of(&session, &key), Some(message));
        assert_eq!(layout.message_of(&session, ""), None);
        assert_eq!(layout.message_of(&session, "Q:{x}:m:AC1:SM1"), None);
    }

    #[test]
    fn keys_read_back_as_their_tag_and_rest_and_patterns_match_only_the_prefix() {
        let layout = Layout::new("P*");
        let session = SessionId::parse(SESSION).unwrap();
        let key = layout.record("menu", SESSION);
        assert_eq!(layout.parts(&key), Some((SESSION, "r:menu")));
        assert_eq!(
            layout.parts(&layout.conversation(&session)),
            Some((SESSION, "c"))
        );
        assert_eq!(layout.parts("Q:{x}:c"), None);
        assert_eq!(layout.every_tagged_key(), "P\\*:{*");
        assert_eq!(layout.every_record("sent_menu"), "P\\*:{*}:r:sent_menu");
        assert_eq!(tag(&layout.index("outbound_of", SESSION)), SESSION);
    }

    #[test]
    fn buckets_are_stable_spread_and_tagged_apart() {
        // Fixed values: every instance, of every version, must pick the same bucket.
        assert_eq!(Layout::bucket_of(""), 0x811c_9dc5 % BUCKETS);
        let mut seen = [0u32; BUCKETS as usize];
        for n in 0..1600 {
            seen[Layout::bucket_of(&format!("session-{n}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 50), "{seen:?}");
        let layout = Layout::new("P");
        let [leases, marks] = layout.visits(3);
        assert_eq!((tag(&leases), tag(&marks)), ("b:3", "b:3"));
        assert_eq!(tag(&layout.schedule("handoffs", 3)), "b:3");
        assert_ne!(tag(&layout.schedule("handoffs", 4)), "b:3");
    }
}
