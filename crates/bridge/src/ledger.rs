//! Remembers which messages have been handled, so that a message Twilio delivers twice
//! is answered once.
//!
//! Twilio may re-deliver a webhook with the same `MessageSid` (after a timeout or a
//! network error on its side). The first delivery claims the id and does the work; a
//! repeat, arriving while the work is still in flight or after it is done, waits for
//! and shares the same outcome. If the first delivery gives up without an outcome, its
//! claim is withdrawn so that a later repeat can try again. Entries are kept for a
//! fixed time and their number is bounded, so memory stays flat.
//!
//! Outcomes are kept for the minutes in which Twilio re-delivers; a captured webhook can
//! be replayed for much longer. [`Seen`] remembers, compactly, every message handled
//! within the replay window, so that a replay found there is not a new message.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A bounded, time-limited record of outcomes by message id.
#[derive(Debug)]
pub struct Ledger<T> {
    inner: Mutex<Inner<T>>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<T> {
    slots: HashMap<Arc<str>, Entry<T>>,
    /// Ids in the order they were claimed, to expire the oldest first.
    claimed: VecDeque<(Instant, Arc<str>)>,
}

#[derive(Debug)]
struct Entry<T> {
    /// Tells this entry's place in `claimed` from an older one for the same id.
    claimed_at: Instant,
    slot: Slot<T>,
}

/// A channel while the work is in flight, for repeats to wait on; then just the
/// outcome, which is all the ledger keeps for most of an entry's life.
#[derive(Debug)]
enum Slot<T> {
    Pending(watch::Receiver<Option<T>>),
    Done(T),
}

/// The result of claiming a message id.
pub enum Claim<T> {
    /// This delivery is the first: do the work and [`Completion::complete`] it.
    First(Completion<T>),
    /// Another delivery has the id; [`Repeat::outcome`] waits for its result.
    Repeat(Repeat<T>),
}

impl<T: Clone + Send + Sync + 'static> Ledger<T> {
    pub fn new(ttl: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                claimed: VecDeque::new(),
            }),
            ttl,
            capacity,
        })
    }

    pub fn claim(self: &Arc<Self>, id: &str) -> Claim<T> {
        self.claim_at(id, Instant::now())
    }

    fn claim_at(self: &Arc<Self>, id: &str, now: Instant) -> Claim<T> {
        let mut inner = self.lock();
        inner.forget_older_than(now, self.ttl);
        if let Some(entry) = inner.slots.get(id) {
            let repeat = match &entry.slot {
                Slot::Pending(receiver) => Repeat::Waiting(receiver.clone()),
                Slot::Done(outcome) => Repeat::Done(outcome.clone()),
            };
            return Claim::Repeat(repeat);
        }
        inner.make_room(self.capacity);
        let (sender, receiver) = watch::channel(None);
        let id: Arc<str> = Arc::from(id);
        inner.slots.insert(
            Arc::clone(&id),
            Entry {
                claimed_at: now,
                slot: Slot::Pending(receiver),
            },
        );
        inner.claimed.push_back((now, Arc::clone(&id)));
        Claim::First(Completion {
            ledger: Arc::clone(self),
            id,
            claimed_at: now,
            sender: Some(sender),
        })
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Forgets the outcomes of the ids `which` picks, and says how many it forgot.
    /// Work in flight keeps its entry: a repeat meanwhile still waits for it.
    pub fn forget_settled(&self, which: impl Fn(&str) -> bool) -> usize {
        let mut inner = self.lock();
        let before = inner.slots.len();
        inner
            .slots
            .retain(|id, entry| matches!(entry.slot, Slot::Pending(_)) || !which(id));
        // Their places in `claimed` go when they come first: a place is only taken
        // for the entry claimed at its time.
        before - inner.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Ledger<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // The map stays consistent whatever a panicking holder did: every change is a
        // single insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn withdraw(&self, id: &str, claimed_at: Instant) {
        self.lock().remove_claim(id, claimed_at);
    }

    fn settle(&self, id: &str, claimed_at: Instant, outcome: T) {
        if let Some(entry) = self.lock().claim_mut(id, claimed_at) {
            entry.slot = Slot::Done(outcome);
        }
    }
}

impl<T> Inner<T> {
    fn forget_older_than(&mut self, now: Instant, ttl: Duration) {
        while self
            .claimed
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= ttl)
        {
            self.forget_oldest();
        }
    }

    fn make_room(&mut self, capacity: usize) {
        while self.claimed.len() >= capacity.max(1) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((claimed_at, id)) = self.claimed.pop_front() {
            self.remove_claim(&id, claimed_at);
        }
    }

    /// The entry of the claim made on `id` at `claimed_at`, if a later claim of the same
    /// id has not taken its place.
    fn claim_mut(&mut self, id: &str, claimed_at: Instant) -> Option<&mut Entry<T>> {
        self.slots
            .get_mut(id)
            .filter(|entry| entry.claimed_at == claimed_at)
    }

    fn remove_claim(&mut self, id: &str, claimed_at: Instant) {
        if self.claim_mut(id, claimed_at).is_some() {
            self.slots.remove(id);
        }
    }
}

/// The first delivery's duty to record an outcome.
pub struct Completion<T> {
    ledger: Arc<Ledger<T>>,
    id: Arc<str>,
    claimed_at: Instant,
    sender: Option<watch::Sender<Option<T>>>,
}

impl<T> Completion<T> {
    /// The message id claimed.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T: Clone> Completion<T> {
    pub fn complete(mut self, outcome: T) {
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(outcome.clone()));
            self.ledger.settle(&self.id, self.claimed_at, outcome);
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        // Dropped without an outcome: let a later delivery try again.
        if self.sender.take().is_some() {
            self.ledger.withdraw(&self.id, self.claimed_at);
        }
    }
}

/// A repeated delivery: the first one's outcome, or a wait for it.
pub enum Repeat<T> {
    Waiting(watch::Receiver<Option<T>>),
    Done(T),
}

impl<T: Clone> Repeat<T> {
    /// The first delivery's outcome, or `None` if it gave up without one.
    pub async fn outcome(self) -> Option<T> {
        match self {
            Repeat::Done(outcome) => Some(outcome),
            Repeat::Waiting(mut receiver) => match receiver.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => None,
            },
        }
    }
}

/// The message ids handled within a window, as 64-bit digests keyed with this process's
/// random key (no one can choose two ids that collide) and the second they were handled:
/// about 40 bytes an entry with the sets' spare room, so 200 000 of them, a day at
/// 2.3 messages a second, take under 8 MiB. Past `capacity`, the oldest are forgotten
/// first: the window is then shorter than asked, never the memory larger.
#[derive(Debug)]
pub struct Seen {
    inner: Mutex<SeenInner>,
    window: Duration,
    capacity: usize,
    digest: RandomState,
    /// Times are kept as seconds since this, to keep an entry small.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct SeenInner {
    digests: HashSet<u64>,
    /// When each digest was handled (seconds since `epoch`), oldest first.
    order: VecDeque<(u32, u64)>,
}

impl Seen {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            window,
            capacity: capacity.max(1),
            digest: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Remembers that the message `id` was handled now.
    pub fn remember(&self, id: &str) {
        self.remember_at(id, Instant::now());
    }

    /// Whether the message `id` was handled within the window.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    fn remember_at(&self, id: &str, now: Instant) {
        let digest = self.digest.hash_one(id);
        let second = self.second(now);
        let mut inner = self.lock();
        self.forget_old(&mut inner, second);
        if inner.digests.insert(digest) {
            inner.order.push_back((second, digest));
        }
        while inner.order.len() > self.capacity {
            if let Some((_, oldest)) = inner.order.pop_front() {
                inner.digests.remove(&oldest);
            }
        }
    }

    fn contains_at(&self, id: &str, now: Instant) -> bool {
        let digest = self.digest.hash_one(id);
        let mut inner = self.lock();
        self.forget_old(&mut inner, self.second(now));
        inner.digests.contains(&digest)
    }

    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn second(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn forget_old(&self, inner: &mut SeenInner, now: u32) {
        let window = u32::try_from(self.window.as_secs()).unwrap_or(u32::MAX);
        while let Some(&(at, digest)) = inner.order.front() {
            if now.saturating_sub(at) < window.max(1) {
                break;
            }
            inner.order.pop_front();
            inner.digests.remove(&digest);
        }
    }

    fn lock(&self) -> MutexGuard<'_, SeenInner> {
        // Each change leaves both halves consistent enough: a digest missing from one
        // is only forgotten early.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_repeat_in_flight_gets_the_first_outcome() {
        let ledger = Ledger::<u32>::new(Duration::from_secs(60), 100);
        let Claim::First(first) = ledger.claim("SM1") else {
            panic!("first claim")
        };
        let Claim::Repeat(repeat) = ledger.claim("SM1") else {
            panic!("repeat claim")
        };
        let waiting = tokio::spawn(repeat.outcome());
        first.complete(7);
        assert_eq!(waiting.await.unwrap(), Some(7));
        let Claim::Repeat(late) = ledger.claim("SM1") else {
            panic!("late repeat")
        };
        // Once done, the entry keeps the outcome alone, not the channel.
        assert!(matches!(late, Repeat::Done(7)));
        assert_eq!(late.outcome().await, Some(7));
    }

    #[tokio::test]
    async fn an_abandoned_claim_can_be_retried() {
        let ledger = Ledger::<u32>::new(Duration::from_secs(60), 100);
        let Claim::First(first) = ledger.claim("SM1") else {
            panic!("first claim")
        };
        let Claim::Repeat(repeat) = ledger.claim("SM1") else {
            panic!("repeat claim")
        };
        drop(first);
        assert_eq!(repeat.outcome().await, None);
        assert!(matches!(ledger.claim("SM1"), Claim::First(_)));
    }

    #[test]
    fn seen_messages_are_remembered_for_the_window_within_the_bound() {
        let seen = Seen::new(Duration::from_secs(24 * 3600), 3);
        let start = Instant::now();
        seen.remember_at("AC1:SM1", start);
        assert!(seen.contains_at("AC1:SM1", start + Duration::from_secs(23 * 3600)));
        assert!(!seen.contains_at("AC2:SM1", start));
        assert!(!seen.contains_at("AC1:SM1", start + Duration::from_secs(24 * 3600 + 1)));
        // Past the bound, the oldest go first.
        for id in ["a", "b", "c", "d"] {
            seen.remember_at(id, start);
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains_at("a", start));
        assert!(seen.contains_at("d", start));
    }

    #[test]
    fn entries_expire_by_age_and_by_count() {
        let ledger = Ledger::<u32>::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        for id in ["a", "b", "c"] {
            let Claim::First(c) = ledger.claim_at(id, start) else {
                panic!()
            };
            c.complete(1);
        }
        // A fourth id pushes out the oldest.
        let Claim::First(d) = ledger.claim_at("d", start) else {
            panic!()
        };
        d.complete(1);
        assert_eq!(ledger.len(), 3);
        assert!(matches!(ledger.claim_at("b", start), Claim::Repeat(_)));
        // After the time limit, everything older is forgotten.
        let later = ledger.claim_at("b", start + Duration::from_secs(61));
        assert!(matches!(later, Claim::First(_)));
        assert_eq!(ledger.len(), 1);
    }
}
