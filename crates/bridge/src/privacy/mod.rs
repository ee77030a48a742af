//! Erasing a person on request (GDPR art. 17, CCPA): `POST /privacy/erase` and
//! `twilio-dialogflow erase`. Everything the bridge keeps about the person, in the state
//! store and in this process, is removed; the hand-over destination is told
//! (`person.erased`, by conversation id, never the number); the answer says what was
//! removed, by kind.
//!
//! What is kept of a person is filed under keyed ids (`session.rs`): their
//! conversations' ids, an HMAC of (account, person, sender), and their own id across
//! senders, an HMAC of (account, person), under which their outbound requests are
//! indexed. The number alone finds neither, so the ids are computed for every account
//! and sender the bridge knows ([`senders`]), or for the one sender asked. Then:
//!
//! - the store forgets everything filed under the conversations (`state::forget`):
//!   turns, messages' outcomes and markers, pace, pending menus, hand-over records and
//!   history, last-message times, the hand-over's idempotency keys, their places in
//!   the sweeps and schedules, and this process's outcomes and rate-limit memory;
//! - the outbound requests made to them go with their statuses, idempotency keys and
//!   queued work (`outbound::erase`); a queued one is never sent;
//! - the menus kept to be resent to them (`outbox::forget_sent_menus`).
//!
//! The opt-out is kept: it is the record that they must not be written to, and it is
//! filed under the conversation's keyed id, so the store alone does not reveal the
//! number. It is gone only if they opted back in (START removes it).
//!
//! Erasing twice removes nothing the second time, and says so.
//!
//! With a shared store, another instance's process holds nothing of the person between
//! turns that it would write back: every turn reads the records from the store, and
//! this process's own state, which serves only while the server cannot answer, is never
//! copied to it. A queued outbound request held by another instance is marked erased
//! in the store, and no instance starts a request so marked. A turn in flight at the
//! moment of the erasure finishes and may leave its own outcome behind (it expires with
//! the store's windows); erasing again afterwards removes it.

pub mod request;
pub mod senders;

use crate::handoff::{Event, Handoff, OPTED_OUT};
use crate::session::{SessionId, SessionKey};
use crate::state::StateStore;
use request::EraseRequest;
use senders::Senders;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Erasure at work.
pub struct Privacy {
    state: StateStore,
    key: SessionKey,
    /// The accounts of the configuration.
    accounts: Vec<String>,
    /// The senders of the configuration, as Twilio writes them.
    configured: Vec<String>,
    /// The senders seen.
    pub senders: Senders,
    handoff: Option<Arc<Handoff>>,
}

/// What [`Privacy::new`] needs from the configuration.
pub struct PrivacyParts {
    pub accounts: Vec<String>,
    /// Our numbers (written without `whatsapp:`, both channels) and Messaging Services.
    pub senders: Vec<String>,
    pub session_key: SessionKey,
    pub handoff: Option<Arc<Handoff>>,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// What was removed, by kind.
    pub removed: BTreeMap<String, u64>,
    /// The conversations something was removed from.
    pub conversations: usize,
    /// The conversation ids looked at: every account and sender known, for each of
    /// the person's addresses.
    pub looked_at: usize,
    /// Whether an opt-out was kept.
    pub opt_out_kept: bool,
    /// The `person.erased` events sent to the hand-over destination.
    pub events: usize,
}

impl Erasure {
    pub fn total(&self) -> u64 {
        self.removed.values().sum()
    }
}

impl Privacy {
    pub fn new(state: StateStore, parts: PrivacyParts) -> Self {
        let mut configured = Vec::new();
        for sender in parts.senders {
            if !sender.starts_with("whatsapp:") && sender.starts_with('+') {
                configured.push(format!("whatsapp:{sender}"));
            }
            configured.push(sender);
        }
        Self {
            senders: Senders::new(state.clone()),
            state,
            key: parts.session_key,
            accounts: parts.accounts,
            configured,
            handoff: parts.handoff,
        }
    }

    /// Erases the person of `request`, from its sender or from all.
    pub async fn erase(&self, request: &EraseRequest) -> Erasure {
        let people = request.person_addresses();
        let seen = self.senders.all().await;
        let accounts: BTreeSet<&str> = self
            .accounts
            .iter()
            .map(String::as_str)
            .chain(seen.iter().map(|s| s.account_sid.as_str()))
            .collect();
        let senders: BTreeSet<String> = match &request.sender {
            Some(sender) => sender.addresses().into_iter().collect(),
            None => self
                .configured
                .iter()
                .cloned()
                .chain(seen.iter().map(|s| s.sender.clone()))
                .collect(),
        };
        let mut conversations = HashSet::new();
        for account in &accounts {
            for person in &people {
                for sender in &senders {
                    conversations.insert(SessionId::for_conversation(
                        &self.key, account, person, sender,
                    ));
                }
            }
        }
        let schedules = [crate::handoff::SCHEDULE];
        let forgotten = self
            .state
            .forget(&conversations, &[OPTED_OUT.name()], &schedules)
            .await;
        let mut erasure = Erasure {
            conversations: forgotten.removed.len(),
            looked_at: conversations.len(),
            opt_out_kept: forgotten.kept > 0,
            ..Erasure::default()
        };
        let mut events = Vec::new();
        for (session, kinds) in &forgotten.removed {
            let mut of_conversation = BTreeMap::new();
            for (kind, n) in kinds {
                *of_conversation.entry(public_kind(kind)).or_insert(0) += n;
                *erasure.removed.entry(public_kind(kind)).or_insert(0) += n;
            }
            events.push(Event::erased(session, &of_conversation));
        }
        let from_sender = |sender: &str| senders.contains(sender);
        for account in &accounts {
            for person in &people {
                let person = SessionId::for_person(&self.key, account, person);
                let removed = crate::outbound::erase::forget(&self.state, &person, |sender| {
                    request.sender.is_none() || from_sender(sender)
                })
                .await;
                for (kind, n) in removed {
                    *erasure.removed.entry(kind.to_owned()).or_insert(0) += n;
                }
            }
        }
        let menus = crate::outbox::forget_sent_menus(&self.state, &people, |sender| {
            request.sender.is_none() || from_sender(sender)
        })
        .await;
        if menus > 0 {
            erasure.removed.insert("sent_menus".to_owned(), menus);
        }
        if let Some(handoff) = &self.handoff {
            erasure.events = events.len();
            for event in events {
                let handoff = Arc::clone(handoff);
                // Delivered with its retries, after the answer: the erasure is done
                // whether the destination is up or not (a drop is logged and counted).
                tokio::spawn(async move { handoff.destination.deliver(&event).await });
            }
        }
        tracing::info!(
            removed = erasure.total(),
            conversations = erasure.conversations,
            looked_at = erasure.looked_at,
            opt_out_kept = erasure.opt_out_kept,
            events = erasure.events,
            "a person was erased on request"
        );
        erasure
    }
}

/// The kinds the answer and the events name, from the store's.
fn public_kind(kind: &str) -> String {
    match kind {
        "turns" | "turn_claim" => "turns",
        "rate" | "rate_cell" => "rate_limit_counters",
        "message" => "message_outcomes",
        "message_seen" => "message_markers",
        "sweep" => "sweep_entries",
        "schedule" => "handoff_schedule_entries",
        "menu" => "pending_menus",
        "handoff" => "handoff_records",
        "last_heard" => "last_message_times",
        "sent_once" => "idempotency_entries",
        "outbound_of" => "outbound_index",
        other => other,
    }
    .to_owned()
}
