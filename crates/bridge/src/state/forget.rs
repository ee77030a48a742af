//! Forgetting conversations, for erasing a person (`crate::privacy`): everything the
//! store keeps under their conversation ids, in this process and in the shared store;
//! and the indexes that let a person's other records be found again by a keyed id.
//!
//! Everything a conversation keeps is filed under its id: in the shared store, every key
//! carrying its tag `{SESSION}` (its turns, pace, messages' claims and markers, records)
//! and the records whose id begins with `SESSION:` (the hand-over's idempotency keys),
//! its place in its bucket's sweep and in the schedules; in this process, the records
//! and indexes by the same ids, the outcomes of its messages, its rate-limit cells.
//! Records of the slots asked to be kept (the opt-outs) stay where they are.

use super::{Json, Kept, StateStore, Stored};
use crate::session::SessionId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// A set of members under an id, each with the time to live of the last one added:
/// what finds records that are not filed under the id itself (the outbound requests
/// made to a person).
#[derive(Debug)]
pub struct Index {
    name: &'static str,
    ttl: Duration,
}

impl Index {
    pub const fn new(name: &'static str, ttl: Duration) -> Self {
        Self { name, ttl }
    }
}

/// What forgetting removed, by conversation and by what it was: a record's slot, an
/// index's name, or one of the store's own (`turns`, `rate`, `message`,
/// `message_seen`, `turn_claim`, `sweep`, `schedule`, `rate_cell`).
#[derive(Debug, Default)]
pub struct Forgotten {
    pub removed: HashMap<SessionId, BTreeMap<String, u64>>,
    /// Records left in place because their slot was to be kept.
    pub kept: u64,
}

impl Forgotten {
    pub(super) fn count(&mut self, session: SessionId, kind: &str) {
        self.add(session, kind, 1);
    }

    pub(super) fn add(&mut self, session: SessionId, kind: &str, n: u64) {
        if n > 0 {
            *self
                .removed
                .entry(session)
                .or_default()
                .entry(kind.to_owned())
                .or_default() += n;
        }
    }

    fn merge(&mut self, other: Forgotten) {
        for (session, kinds) in other.removed {
            for (kind, n) in kinds {
                self.add(session, &kind, n);
            }
        }
        self.kept += other.kept;
    }
}

/// The conversation a record or index id is filed under: the id itself, or its part
/// before a `:` (`SESSION:…`, the hand-over's idempotency keys).
pub(super) fn conversation_of(id: &str) -> Option<SessionId> {
    match (id.get(..36), id.as_bytes().get(36)) {
        (Some(head), None | Some(b':')) => SessionId::parse(head),
        _ => None,
    }
}

impl StateStore {
    /// Adds `member` to the index `id`, which then lives for the index's time to live.
    pub async fn add_to(&self, index: &Index, id: &(impl AsRef<str> + ?Sized), member: &str) {
        let id = id.as_ref();
        match &self.kept {
            Kept::Local(local) => local.indexes.add(index.name, id, member, index.ttl),
            Kept::Shared(shared) => shared.add_to_index(index.name, id, member, index.ttl).await,
        }
    }

    /// The members of the index `id` (none if it expired).
    pub async fn members(&self, index: &Index, id: &(impl AsRef<str> + ?Sized)) -> Vec<String> {
        let id = id.as_ref();
        match &self.kept {
            Kept::Local(local) => local.indexes.members(index.name, id),
            Kept::Shared(shared) => shared.index_members(index.name, id).await,
        }
    }

    /// Takes `member` out of the index `id`.
    pub async fn remove_from(&self, index: &Index, id: &(impl AsRef<str> + ?Sized), member: &str) {
        let id = id.as_ref();
        match &self.kept {
            Kept::Local(local) => local.indexes.remove(index.name, id, member),
            Kept::Shared(shared) => shared.remove_from_index(index.name, id, member).await,
        }
    }

    /// Every record of `slot`, by id: a scan of the whole store, for erasing a person
    /// (records not filed under their conversation, whose content names them).
    pub async fn all<T>(&self, slot: &super::Slot<T>) -> Vec<(String, Stored)> {
        let all = match &self.kept {
            Kept::Local(local) => local.records.all(slot.name),
            Kept::Shared(shared) => shared.all_records(slot.name).await,
        };
        all.into_iter()
            .filter_map(|(id, json): (String, Json)| Stored::from_text(json).map(|s| (id, s)))
            .collect()
    }

    /// Removes everything filed under `conversations` (see the module's comment), but
    /// the records of the slots in `keep`; takes them out of the schedules named in
    /// `schedules` too. In the shared store, and in this process's state.
    pub async fn forget(
        &self,
        conversations: &HashSet<SessionId>,
        keep: &[&str],
        schedules: &[&'static str],
    ) -> Forgotten {
        match &self.kept {
            Kept::Local(local) => local.forget(conversations, keep, schedules),
            Kept::Shared(shared) => {
                let mut forgotten = shared.forget(conversations, keep, schedules).await;
                // What this process kept while the server could not answer.
                forgotten.merge(shared.local_state().forget(conversations, keep, schedules));
                forgotten
            }
        }
    }
}

impl super::LocalState {
    pub(super) fn forget(
        &self,
        conversations: &HashSet<SessionId>,
        keep: &[&str],
        schedules: &[&'static str],
    ) -> Forgotten {
        let mut forgotten = Forgotten::default();
        self.records.forget(conversations, keep, &mut forgotten);
        self.indexes.forget(conversations, &mut forgotten);
        for session in conversations {
            for index in schedules {
                if self.schedules.take_out(index, session.as_str()) {
                    forgotten.count(*session, "schedule");
                }
            }
            let filed = format!("{session}/");
            let outcomes = self.forget_outcomes(|id| id.starts_with(&filed));
            forgotten.add(*session, "message", outcomes as u64);
            if self.forget_rate(session) {
                forgotten.count(*session, "rate_cell");
            }
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::rate_limit::RateLimits;
    use crate::state::{Admission, MessageKey, Slot};
    use std::sync::Arc;

    #[test]
    fn ids_are_filed_under_their_conversation() {
        let session = SessionId::for_tests("+15551230001", "+15557770000");
        assert_eq!(conversation_of(session.as_str()), Some(session));
        assert_eq!(conversation_of(&format!("{session}:6b6579")), Some(session));
        assert_eq!(conversation_of(&format!("{session}x")), None);
        assert_eq!(conversation_of("AC1:SM1"), None);
        assert_eq!(conversation_of(""), None);
    }

    #[tokio::test]
    async fn forgetting_a_conversation_leaves_the_kept_slots_and_the_others() {
        const MENU: Slot<crate::menu::PendingMenu> = Slot::new("menu", Duration::from_secs(60));
        const OPTED: Slot<crate::handoff::OptedOut> =
            Slot::new("opted_out", Duration::from_secs(60));
        const OUTBOUND: Index = Index::new("outbound_of", Duration::from_secs(60));
        let store = StateStore::local(RateLimits::default(), Arc::new(Metrics::new()));
        let person = SessionId::for_tests("+15551230001", "+15557770000");
        let other = SessionId::for_tests("+15551230002", "+15557770000");
        let menu = crate::menu::PendingMenu {
            choices: Vec::new(),
        };
        for session in [person, other] {
            store.set(&MENU, &session, &menu).await;
            store
                .set(&OPTED, &session, &crate::handoff::OptedOut { since: 1 })
                .await;
            store.add_to(&OUTBOUND, &session, "ob_1").await;
            store.schedule("handoffs", session.as_str(), 1).await;
            let key = MessageKey {
                account_sid: "AC1".into(),
                message_sid: format!("SM{}", &session.as_str()[..4]),
            };
            let Admission::First(ticket) = store.admit(Some(key), session, None, &[]).await else {
                panic!("a first delivery")
            };
            ticket.finish(&Stored::of(&menu).unwrap()).await;
        }
        let forgotten = store
            .forget(&HashSet::from([person]), &["opted_out"], &["handoffs"])
            .await;
        let removed = &forgotten.removed[&person];
        for kind in ["menu", "outbound_of", "schedule", "message"] {
            assert_eq!(removed.get(kind), Some(&1), "{kind}: {removed:?}");
        }
        assert!(!removed.contains_key("opted_out"));
        assert_eq!(forgotten.kept, 1);
        assert_eq!(forgotten.removed.len(), 1, "only the person's");
        assert!(store.get(&MENU, &person).await.unwrap().is_none());
        assert!(store.get(&OPTED, &person).await.unwrap().is_some());
        assert!(store.members(&OUTBOUND, &person).await.is_empty());
        assert!(store.get(&MENU, &other).await.unwrap().is_some());
        assert_eq!(store.members(&OUTBOUND, &other).await, vec!["ob_1"]);
        // Again: nothing left to remove.
        let again = store
            .forget(&HashSet::from([person]), &["opted_out"], &["handoffs"])
            .await;
        assert!(again.removed.is_empty(), "{:?}", again.removed);
    }
}
