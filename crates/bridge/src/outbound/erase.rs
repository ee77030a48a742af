//! What erasing a person removes of the outbound side: the requests made to them,
//! their messages' statuses, the idempotency keys they were made with, and their queued
//! work. None of these is filed under the person (a request's id is random, a status's
//! is the MessageSid), so each request is indexed when it is taken, under the
//! person's keyed id ([`Contacts::person_id`](super::contacts::Contacts::person_id)):
//! one index per person and account, whatever the sender.
//!
//! A request erased before its send started is marked [`ERASED`] under its own id, so
//! that no instance sends it (`durable.rs` looks before a send starts); the mark names
//! no one.

use super::durable::{Started, Work, SCHEDULE, STARTED, WORK};
use super::record::{
    self, KeyUse, MessageStatus, OutboundRecord, Status, KEPT_FOR, KEYS, MESSAGE_STATUSES, REQUESTS,
};
use crate::session::SessionId;
use crate::state::{Index, Record, Slot, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The requests made to a person, by the person's keyed id: [`Entry`]s.
pub const REQUESTS_OF: Index = Index::new("outbound_of", KEPT_FOR);

/// That a request was erased with its person, by the request's id: it is not sent.
pub(super) const ERASED: Slot<Erased> = Slot::new("outbound_erased", KEPT_FOR);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Erased {}

impl Record for Erased {
    const KIND: &'static str = "outbound_erased";
}

/// One request in a person's index: the sender it was made from (for an erasure of
/// one sender), its id, and the hash of its idempotency key if it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sender: String,
    pub request: String,
    pub key: Option<String>,
}

impl Entry {
    /// As the index holds it: the parts joined by `|`, which none of them holds (a
    /// number, a Messaging Service SID, `ob_` and hex, a hex digest).
    pub fn member(&self) -> String {
        format!(
            "{}|{}|{}",
            self.sender,
            self.request,
            self.key.as_deref().unwrap_or_default()
        )
    }

    pub fn parse(member: &str) -> Option<Self> {
        let mut parts = member.split('|');
        let (sender, request, key) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || request.is_empty() {
            return None;
        }
        Some(Self {
            sender: sender.to_owned(),
            request: request.to_owned(),
            key: (!key.is_empty()).then(|| key.to_owned()),
        })
    }
}

/// Removes the outbound requests indexed under `person` (a person's keyed id) made
/// from a sender `senders` picks, with what hangs on them; counts by kind:
/// `outbound_requests`, `outbound_statuses`, `idempotency_entries`,
/// `queued_outbound`.
pub async fn forget(
    state: &StateStore,
    person: &SessionId,
    senders: impl Fn(&str) -> bool,
) -> BTreeMap<&'static str, u64> {
    let mut removed = BTreeMap::new();
    let mut count = |kind: &'static str| *removed.entry(kind).or_insert(0) += 1;
    for member in state.members(&REQUESTS_OF, person).await {
        let Some(entry) = Entry::parse(&member) else {
            continue;
        };
        if !senders(&entry.sender) {
            continue;
        }
        let id = entry.request.as_str();
        let mut queued = false;
        if let Ok(Some(request)) = state.get::<OutboundRecord>(&REQUESTS, id).await {
            queued = request.status == Status::Queued;
            for sid in &request.message_sids {
                let key = record::message_key(&request.account_sid, sid);
                if let Ok(Some(_)) = state.get::<MessageStatus>(&MESSAGE_STATUSES, &key).await {
                    state.remove(&MESSAGE_STATUSES, &key).await;
                    count("outbound_statuses");
                }
            }
            state.remove(&REQUESTS, id).await;
            count("outbound_requests");
        }
        // Its work is kept in the store only while it is shared.
        queued |= matches!(state.get::<Work>(&WORK, id).await, Ok(Some(_)));
        if queued {
            // Not sent yet, or being sent: no instance starts it now.
            state.set(&ERASED, id, &Erased {}).await;
            state.remove(&WORK, id).await;
            count("queued_outbound");
        }
        state.remove::<Started>(&STARTED, id).await;
        state.unschedule(SCHEDULE, id).await;
        if let Some(key) = &entry.key {
            if let Ok(Some(_)) = state.get::<KeyUse>(&KEYS, key).await {
                state.remove(&KEYS, key).await;
                count("idempotency_entries");
            }
        }
        state.remove_from(&REQUESTS_OF, person, &member).await;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        for entry in [
            Entry {
                sender: "+15557770000".into(),
                request: "ob_0123".into(),
                key: Some("abcdef".into()),
            },
            Entry {
                sender: "MG0123456789abcdef0123456789abcdef".into(),
                request: "ob_4567".into(),
                key: None,
            },
        ] {
            assert_eq!(Entry::parse(&entry.member()), Some(entry));
        }
        assert_eq!(Entry::parse("a|b"), None);
        assert_eq!(Entry::parse("a||c"), None);
        assert_eq!(Entry::parse("a|b|c|d"), None);
    }
}
