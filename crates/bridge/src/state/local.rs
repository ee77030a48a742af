//! The state of this process alone: enough for one instance, and what a shared store
//! falls back to for a message when it cannot be reached.

use super::forget::{conversation_of, Forgotten};
use super::{Admission, Held, Json, MessageKey, Remembering, Repeat, Ticket, TurnWait};
use crate::ledger::{Claim, Completion, Ledger, Seen};
use crate::rate_limit::{Limiter, RateLimits};
use crate::session::SessionId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// At most this many remembered message ids, whatever the traffic: minutes of the
/// busiest WhatsApp sender (80 messages/s), hours of an SMS number, for about 16 MiB.
const REMEMBER_AT_MOST: usize = 20_000;
/// At most this many message ids known as handled within the replay window, kept
/// compactly ([`Seen`]: under 8 MiB), a day of 2.3 messages a second.
const SEEN_AT_MOST: usize = 200_000;
/// At most this many conversation records; expired ones go first.
const RECORDS_AT_MOST: usize = 100_000;

pub struct LocalState {
    handled: Arc<Ledger<Json>>,
    /// The messages handled within the replay window, outcomes forgotten or not.
    seen: Seen,
    limiter: Limiter,
    order: Mutex<HashMap<SessionId, Order>>,
    /// Wakes the turns waiting for another turn to finish.
    finished: Notify,
    pub(super) records: Records,
    pub(super) schedules: Schedules,
    pub(super) indexes: Indexes,
}

/// Where a conversation stands: turns up to `done` are finished (and any in
/// `finished_early`, a turn dropped while those before it were still working).
#[derive(Default)]
struct Order {
    next: u64,
    done: u64,
    finished_early: BTreeSet<u64>,
}

impl Default for LocalState {
    fn default() -> Self {
        Self::new(RateLimits::default(), Remembering::default())
    }
}

impl LocalState {
    pub fn new(limits: RateLimits, remembering: Remembering) -> Self {
        Self {
            handled: Ledger::new(remembering.outcome, REMEMBER_AT_MOST),
            seen: Seen::new(remembering.replay, SEEN_AT_MOST),
            limiter: Limiter::new(limits),
            order: Mutex::default(),
            finished: Notify::new(),
            records: Records::default(),
            schedules: Schedules::default(),
            indexes: Indexes::default(),
        }
    }

    pub(super) fn admit(
        self: &Arc<Self>,
        key: Option<MessageKey>,
        session: SessionId,
        counted: bool,
    ) -> Admission {
        let id = key.as_ref().map(MessageKey::to_string);
        // The outcome is filed under the conversation too, so that erasing a person
        // finds it (`forget`); a MessageSid always belongs to one conversation, so a
        // repeat finds it all the same.
        let filed = id.as_deref().map(|id| format!("{session}/{id}"));
        let completion = match id.as_deref().zip(filed.as_deref()) {
            Some((id, filed)) => match self.handled.claim(filed) {
                Claim::Repeat(repeat) => return Admission::Repeat(Repeat::Local(repeat)),
                // Its outcome forgotten, the message is still known: a replay.
                // (Dropping the claim withdraws it.)
                Claim::First(_) if self.seen.contains(id) => {
                    return Admission::Repeat(Repeat::Replayed)
                }
                Claim::First(completion) => Some((completion, id.to_owned())),
            },
            None => None,
        };
        let limited = if counted {
            self.limiter.check(&session)
        } else {
            None
        };
        let seq = {
            let mut order = lock(&self.order);
            let order = order.entry(session).or_default();
            order.next += 1;
            order.next
        };
        Admission::First(Ticket {
            session,
            key,
            limited,
            held: Held::Local(LocalTicket {
                state: Arc::clone(self),
                session,
                seq,
                completion,
            }),
        })
    }

    /// Forgets the outcomes of the messages whose filed id `which` picks.
    pub(super) fn forget_outcomes(&self, which: impl Fn(&str) -> bool) -> usize {
        self.handled.forget_settled(which)
    }

    /// Forgets what the rate limits hold of `session`: whether it was told it was
    /// limited; its cell is dropped with every cell back at full quota.
    pub(super) fn forget_rate(&self, session: &SessionId) -> bool {
        self.limiter.forget(session)
    }

    /// `None` once the turns before `seq` are done; else how far the conversation got.
    fn behind(&self, session: &SessionId, seq: u64) -> Option<u64> {
        lock(&self.order)
            .get(session)
            .filter(|order| order.done + 1 < seq)
            .map(|order| order.done)
    }

    fn finish_turn(&self, session: &SessionId, seq: u64) {
        let mut orders = lock(&self.order);
        if let Some(order) = orders.get_mut(session) {
            if seq == order.done + 1 {
                order.done = seq;
                while order.finished_early.remove(&(order.done + 1)) {
                    order.done += 1;
                }
            } else if seq > order.done {
                order.finished_early.insert(seq);
            }
            if order.done == order.next {
                orders.remove(session);
            }
        }
        drop(orders);
        self.finished.notify_waiters();
    }
}

/// A turn of this process's store. Dropped unfinished (a task that panicked or was
/// cancelled), it lets the conversation go on and a re-delivery try again.
pub(super) struct LocalTicket {
    state: Arc<LocalState>,
    session: SessionId,
    seq: u64,
    /// The duty to record the outcome, and the message's id as [`Seen`] knows it.
    completion: Option<(Completion<Json>, String)>,
}

impl LocalTicket {
    pub(super) async fn wait_turn(&self, stall: Duration) -> TurnWait {
        let mut moved = None;
        let mut deadline = tokio::time::Instant::now() + stall;
        loop {
            let finished = self.state.finished.notified();
            let Some(done) = self.state.behind(&self.session, self.seq) else {
                return TurnWait::Ready;
            };
            // A turn before finished: the bound starts again.
            if moved.replace(done).is_some_and(|before| before != done) {
                deadline = tokio::time::Instant::now() + stall;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return TurnWait::Stalled;
            }
        }
    }

    pub(super) fn read(&self, slot: &'static str) -> Option<Json> {
        self.state.records.get(slot, self.session.as_str())
    }

    pub(super) fn finish(mut self, outcome: Json) {
        if let Some((completion, id)) = self.completion.take() {
            // Known as handled for the replay window, after the outcome is forgotten.
            self.state.seen.remember(&id);
            completion.complete(outcome);
        }
    }
}

impl Drop for LocalTicket {
    fn drop(&mut self) {
        self.state.finish_turn(&self.session, self.seq);
    }
}

/// A record's slot and id.
type RecordKey = (&'static str, Box<str>);

/// Per-conversation records with a time to live (when they expire), bounded in number.
#[derive(Default)]
pub(super) struct Records(Mutex<HashMap<RecordKey, (Instant, Json)>>);

impl Records {
    pub(super) fn get(&self, slot: &'static str, id: &str) -> Option<Json> {
        let mut records = lock(&self.0);
        let key: RecordKey = (slot, id.into());
        match records.get(&key) {
            Some((expires, json)) if *expires > Instant::now() => Some(Arc::clone(json)),
            Some(_) => {
                records.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(super) fn set(&self, slot: &'static str, id: &str, json: Json, ttl: Duration) {
        insert(&mut lock(&self.0), slot, id, json, ttl);
    }

    pub(super) fn remove(&self, slot: &'static str, id: &str) {
        lock(&self.0).remove(&(slot, id.into()));
    }

    /// Removes the records of `conversations` (by [`conversation_of`] their id), but
    /// those of the slots in `keep`, which are counted as kept.
    pub(super) fn forget(
        &self,
        conversations: &HashSet<SessionId>,
        keep: &[&str],
        forgotten: &mut Forgotten,
    ) {
        lock(&self.0).retain(|(slot, id), _| {
            let Some(session) = conversation_of(id).filter(|s| conversations.contains(s)) else {
                return true;
            };
            if keep.contains(slot) {
                forgotten.kept += 1;
                return true;
            }
            forgotten.count(session, slot);
            false
        });
    }

    /// Every live record of `slot`, by id.
    pub(super) fn all(&self, slot: &'static str) -> Vec<(String, Json)> {
        let now = Instant::now();
        lock(&self.0)
            .iter()
            .filter(|((s, _), (expires, _))| *s == slot && *expires > now)
            .map(|((_, id), (_, json))| (id.to_string(), Arc::clone(json)))
            .collect()
    }

    /// Sets the record unless a live one is there; returns the one there.
    pub(super) fn claim(
        &self,
        slot: &'static str,
        id: &str,
        json: Json,
        ttl: Duration,
    ) -> Option<Json> {
        // One lock across the look and the write: of two callers, one sets it.
        let mut records = lock(&self.0);
        let there = records
            .get(&(slot, id.into()))
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, json)| Arc::clone(json));
        if there.is_none() {
            insert(&mut records, slot, id, json, ttl);
        }
        there
    }
}

/// Inserts a record, making room first: the expired go, then the one that expires
/// first.
fn insert(
    records: &mut HashMap<RecordKey, (Instant, Json)>,
    slot: &'static str,
    id: &str,
    json: Json,
    ttl: Duration,
) {
    let now = Instant::now();
    if records.len() >= RECORDS_AT_MOST {
        records.retain(|_, (expires, _)| *expires > now);
    }
    if records.len() >= RECORDS_AT_MOST {
        // Still full of live records: the one that expires first goes.
        if let Some(first) = records
            .iter()
            .min_by_key(|(_, (expires, _))| *expires)
            .map(|(key, _)| key.clone())
        {
            records.remove(&first);
        }
    }
    records.insert((slot, id.into()), (now + ttl, json));
}

/// Ids due at a time, per index: when each must be looked at again.
#[derive(Default)]
pub(super) struct Schedules(Mutex<HashMap<&'static str, Due>>);

/// Ids in the order they come due.
type Due = std::collections::BTreeSet<(u64, Box<str>)>;

impl Schedules {
    pub(super) fn schedule(&self, index: &'static str, id: &str, at: u64) {
        let mut schedules = lock(&self.0);
        let due = schedules.entry(index).or_default();
        due.retain(|(_, known)| &**known != id);
        due.insert((at, id.into()));
    }

    /// Claims, and returns, up to `limit` ids due at `now`: each is due again at
    /// `now + lease` unless re-scheduled or taken out meanwhile.
    pub(super) fn claim_due(
        &self,
        index: &'static str,
        now: u64,
        limit: usize,
        lease: u64,
    ) -> Vec<String> {
        let mut schedules = lock(&self.0);
        let Some(due) = schedules.get_mut(index) else {
            return Vec::new();
        };
        let claimed: Vec<Box<str>> = due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        due.retain(|(at, id)| *at > now || !claimed.contains(id));
        let again = now.saturating_add(lease);
        for id in &claimed {
            due.insert((again, id.clone()));
        }
        claimed.into_iter().map(String::from).collect()
    }

    pub(super) fn unschedule(&self, index: &'static str, id: &str) {
        self.take_out(index, id);
    }

    /// Takes `id` out of `index`; whether it was there.
    pub(super) fn take_out(&self, index: &str, id: &str) -> bool {
        let mut schedules = lock(&self.0);
        let Some(due) = schedules.get_mut(index) else {
            return false;
        };
        let before = due.len();
        due.retain(|(_, known)| &**known != id);
        before != due.len()
    }
}

/// Sets of members by index and id, with a time to live (when they expire), bounded in
/// number as the records are.
#[derive(Default)]
pub(super) struct Indexes(Mutex<HashMap<RecordKey, Members>>);

/// An index's members, and when they expire.
type Members = (Instant, BTreeSet<Box<str>>);

impl Indexes {
    pub(super) fn add(&self, index: &'static str, id: &str, member: &str, ttl: Duration) {
        let mut indexes = lock(&self.0);
        let now = Instant::now();
        if indexes.len() >= RECORDS_AT_MOST {
            indexes.retain(|_, (expires, _)| *expires > now);
        }
        if indexes.len() >= RECORDS_AT_MOST {
            if let Some(first) = indexes
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(key, _)| key.clone())
            {
                indexes.remove(&first);
            }
        }
        let (expires, members) = indexes
            .entry((index, id.into()))
            .or_insert_with(|| (now, BTreeSet::new()));
        if *expires <= now {
            members.clear();
        }
        *expires = now + ttl;
        members.insert(member.into());
    }

    pub(super) fn members(&self, index: &'static str, id: &str) -> Vec<String> {
        lock(&self.0)
            .get(&(index, id.into()))
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, members)| members.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default()
    }

    pub(super) fn remove(&self, index: &'static str, id: &str, member: &str) {
        let mut indexes = lock(&self.0);
        let key: RecordKey = (index, id.into());
        if let Some((_, members)) = indexes.get_mut(&key) {
            members.remove(member);
            if members.is_empty() {
                indexes.remove(&key);
            }
        }
    }

    /// Removes the indexes of `conversations`.
    pub(super) fn forget(&self, conversations: &HashSet<SessionId>, forgotten: &mut Forgotten) {
        lock(&self.0).retain(|(index, id), _| {
            match conversation_of(id).filter(|s| conversations.contains(s)) {
                Some(session) => {
                    forgotten.count(session, index);
                    false
                }
                None => true,
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single insert, remove or counter step: the
    // maps stay consistent whatever a panicking holder did.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sid: &str) -> Option<MessageKey> {
        Some(MessageKey {
            account_sid: "AC1".into(),
            message_sid: sid.into(),
        })
    }

    fn done() -> crate::state::Stored {
        crate::state::Stored::of(&crate::menu::PendingMenu {
            choices: Vec::new(),
        })
        .unwrap()
    }

    fn first(admission: Admission) -> Ticket {
        match admission {
            Admission::First(ticket) => ticket,
            Admission::Repeat(_) => panic!("a repeat"),
        }
    }

    #[tokio::test]
    async fn turns_of_a_conversation_go_in_order_and_others_do_not_wait() {
        let state = Arc::new(LocalState::default());
        let session = SessionId::for_tests("+1", "+2");
        let other = SessionId::for_tests("+3", "+2");
        let one = first(state.admit(key("SM1"), session, true));
        let two = first(state.admit(key("SM2"), session, true));
        let elsewhere = first(state.admit(key("SM3"), other, true));
        assert_eq!(one.wait_turn(LONG).await, TurnWait::Ready);
        assert_eq!(elsewhere.wait_turn(LONG).await, TurnWait::Ready);
        let waiting = tokio::spawn(async move {
            assert_eq!(two.wait_turn(LONG).await, TurnWait::Ready);
            two
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "the second turn waits for the first"
        );
        one.finish(&done()).await;
        let two = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the second turn goes once the first is done")
            .unwrap();
        two.finish(&done()).await;
        assert!(lock(&state.order).get(&other).is_some());
        elsewhere.abandon().await;
        assert!(
            lock(&state.order).is_empty(),
            "idle conversations are forgotten"
        );
    }

    /// Longer than any of these tests runs.
    const LONG: Duration = Duration::from_secs(3600);
    const STALL: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_stuck_turn_ahead_holds_the_next_only_for_the_bound() {
        let state = Arc::new(LocalState::default());
        let session = SessionId::for_tests("+1", "+2");
        let stuck = first(state.admit(key("SM1"), session, true));
        let next = first(state.admit(key("SM2"), session, true));
        let started = tokio::time::Instant::now();
        assert_eq!(next.wait_turn(STALL).await, TurnWait::Stalled);
        assert_eq!(started.elapsed(), STALL);
        // Finished out of order, then the stuck one: the conversation is left as new.
        next.finish(&done()).await;
        assert!(lock(&state.order).get(&session).is_some());
        stuck.finish(&done()).await;
        assert!(lock(&state.order).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_moves_is_waited_for_past_the_bound() {
        let state = Arc::new(LocalState::default());
        let session = SessionId::for_tests("+1", "+2");
        let one = first(state.admit(key("SM1"), session, true));
        let two = first(state.admit(key("SM2"), session, true));
        let three = first(state.admit(key("SM3"), session, true));
        let ahead = tokio::spawn(async move {
            // Each finishes within the bound, both together past it.
            tokio::time::sleep(STALL - Duration::from_secs(1)).await;
            one.finish(&done()).await;
            tokio::time::sleep(STALL - Duration::from_secs(1)).await;
            two.finish(&done()).await;
        });
        let started = tokio::time::Instant::now();
        assert_eq!(three.wait_turn(STALL).await, TurnWait::Ready);
        assert!(started.elapsed() > STALL);
        ahead.await.unwrap();
    }

    #[tokio::test]
    async fn a_repeat_gets_the_outcome_and_an_abandoned_turn_frees_its_id() {
        let state = Arc::new(LocalState::default());
        let session = SessionId::for_tests("+1", "+2");
        let one = first(state.admit(key("SM1"), session, true));
        let Admission::Repeat(repeat) = state.admit(key("SM1"), session, true) else {
            panic!("a repeat")
        };
        one.finish(&done()).await;
        assert_eq!(repeat.outcome().await, Some(done()));
        let two = first(state.admit(key("SM2"), session, true));
        two.abandon().await;
        assert!(matches!(
            state.admit(key("SM2"), session, true),
            Admission::First(_)
        ));
    }

    #[tokio::test]
    async fn a_message_is_known_long_after_its_outcome_is_forgotten() {
        let state = Arc::new(LocalState::default());
        let session = SessionId::for_tests("+1", "+2");
        let sid = |n: usize| key(&format!("SM{n:032x}"));
        first(state.admit(sid(0), session, false))
            .finish(&done())
            .await;
        // More newer messages than the outcomes kept: the first one's is forgotten.
        for n in 1..=REMEMBER_AT_MOST {
            first(state.admit(sid(n), session, false))
                .finish(&done())
                .await;
        }
        assert_eq!(state.handled.len(), REMEMBER_AT_MOST);
        match state.admit(sid(0), session, false) {
            Admission::Repeat(Repeat::Replayed) => {}
            Admission::Repeat(_) => panic!("the outcome was still kept"),
            Admission::First(_) => panic!("a replay was taken as a new message"),
        }
        // A replay is not a new message either: it stays known.
        assert!(matches!(
            state.admit(sid(0), session, false),
            Admission::Repeat(Repeat::Replayed)
        ));
    }

    #[test]
    fn a_claimed_id_is_due_again_after_its_lease_unless_taken_out() {
        let schedules = Schedules::default();
        schedules.schedule("handoffs", "a", 10);
        schedules.schedule("handoffs", "b", 20);
        assert_eq!(schedules.claim_due("handoffs", 15, 100, 30), vec!["a"]);
        assert!(
            schedules.claim_due("handoffs", 16, 100, 30).is_empty(),
            "leased"
        );
        assert_eq!(schedules.claim_due("handoffs", 45, 100, 30), vec!["b", "a"]);
        schedules.unschedule("handoffs", "a");
        assert_eq!(schedules.claim_due("handoffs", 100, 100, 30), vec!["b"]);
    }

    #[test]
    fn records_expire() {
        let records = Records::default();
        let session = SessionId::for_tests("+1", "+2");
        records.set(
            "menu",
            session.as_str(),
            "1".into(),
            Duration::from_secs(60),
        );
        assert_eq!(records.get("menu", session.as_str()).as_deref(), Some("1"));
        assert_eq!(records.get("other", session.as_str()), None);
        records.set("menu", session.as_str(), "2".into(), Duration::ZERO);
        assert_eq!(records.get("menu", session.as_str()), None);
    }

    #[test]
    fn a_claim_is_won_once_until_it_expires() {
        let records = Records::default();
        let minute = Duration::from_secs(60);
        assert_eq!(records.claim("key", "k1", "first".into(), minute), None);
        assert_eq!(
            records
                .claim("key", "k1", "second".into(), minute)
                .as_deref(),
            Some("first")
        );
        assert_eq!(records.get("key", "k1").as_deref(), Some("first"));
        assert_eq!(records.claim("key", "k2", "other".into(), minute), None);
        records.set("key", "k3", "gone".into(), Duration::ZERO);
        assert_eq!(records.claim("key", "k3", "new".into(), minute), None);
        assert_eq!(records.get("key", "k3").as_deref(), Some("new"));
    }
}
