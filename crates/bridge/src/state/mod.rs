//! What must hold across instances: the messages already answered (by `AccountSid` and
//! `MessageSid`), the order of each conversation's turns, the replies still owed, and
//! small per-conversation records for features.
//!
//! Two stores keep it: in this process (the default; one instance), or a Redis/Valkey
//! server shared by every instance (`STATE_URL`). Both give the same guarantees within
//! their reach. Every call to the shared store is bounded by `STATE_TIMEOUT`; when it
//! fails, the message is handled with this process's state instead, and the failure is
//! logged and counted: a person is never left without an answer because Redis is down.
//!
//! A turn is one message's work in its conversation. Admitting a message claims its id
//! (a repeat gets the first delivery's outcome) and gives it the next place in its
//! conversation; the turn then waits for the turn before it to finish, and holds a
//! lease while it works. An instance that dies without a word leaves its turns to the
//! others once their leases run out ([`StateStore::take_over_expired`]). The stored
//! values (a turn's message, an outcome, the records of features) are the layer
//! above's typed [`Record`]s, versioned ([`record`]): the store itself does not read
//! them, and one that cannot be read is an error, logged and counted, never an empty
//! value.

mod forget;
mod local;
pub mod record;
mod shared;

use crate::config::StateSettings;
use crate::metrics::Metrics;
use crate::rate_limit::{Limited, RateLimits};
use crate::session::SessionId;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

pub use forget::{Forgotten, Index};
pub use local::LocalState;
pub use record::{Record, Stored, Unreadable, Unwritable};
pub use shared::{
    AuthReport, CertificateNames, OpenError, SharedState, StoreMode, StoreReport, Tls,
};

/// How long a handled message's outcome is kept, for a re-delivery to share it:
/// Twilio's re-deliveries come within minutes.
pub const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);
/// How long a handled message is known as handled: a captured webhook replayed within
/// this is not a new message.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long handled messages are remembered (`REPEAT_WINDOW`, `REPLAY_WINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembering {
    /// A re-delivery within this gets the first delivery's answer.
    pub outcome: Duration,
    /// A replay within this (and past `outcome`) is answered with nothing, and the agent
    /// is not asked.
    pub replay: Duration,
}

impl Default for Remembering {
    fn default() -> Self {
        Self {
            outcome: REMEMBER_FOR,
            replay: REPLAY_WINDOW,
        }
    }
}

/// A message as Twilio names it: its id within its account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub account_sid: String,
    pub message_sid: String,
}

impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account_sid, self.message_sid)
    }
}

/// A stored value as the store holds it: JSON text, `""` for nothing (the Lua
/// scripts' convention). Only [`Stored`] crosses into the layer above.
pub type Json = Arc<str>;

/// Why the shared store could not be used for one call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the shared store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the shared store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the shared store holds something this bridge cannot read: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// For metrics: a fixed set of labels.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Redis(_) => "error",
            StoreError::Corrupt(_) => "corrupt",
        }
    }
}

/// The result of admitting a message.
pub enum Admission {
    /// The first delivery: its turn, to be worked and finished.
    First(Ticket),
    /// A re-delivery: the first delivery's outcome, now or once it is known.
    Repeat(Repeat),
}

/// A re-delivery's view of the first delivery.
pub enum Repeat {
    Local(crate::ledger::Repeat<Json>),
    /// A message handled longer ago than its outcome is kept, but within the replay
    /// window: a replay, answered with nothing.
    Replayed,
    Shared {
        state: Arc<SharedState>,
        /// The message's conversation: its key is in the conversation's slot.
        session: SessionId,
        key: MessageKey,
    },
}

impl Repeat {
    /// The first delivery's outcome once known; `None` if it gave up without one. The
    /// caller bounds the wait.
    pub async fn outcome(self) -> Option<Stored> {
        let text = match self {
            Repeat::Local(repeat) => repeat.outcome().await,
            Repeat::Replayed => None,
            Repeat::Shared {
                state,
                session,
                key,
            } => state.wait_outcome(&session, &key).await,
        }?;
        Stored::from_text(text)
    }
}

/// One message's turn in its conversation: where it stands, and the right to work it.
pub struct Ticket {
    pub session: SessionId,
    /// The message, when Twilio gave it an id (it always does).
    pub key: Option<MessageKey>,
    /// Past a rate limit: the agent is not to be asked.
    pub limited: Option<Limited>,
    held: Held,
}

enum Held {
    Local(local::LocalTicket),
    Shared(Box<shared::SharedTicket>),
}

/// A turn another instance left behind, taken over by this one.
pub struct TakenOver {
    pub ticket: Ticket,
    /// What the turn's message was, as admitted (none for turns whose replies could
    /// only go in the webhook's answer).
    pub turn: Option<Stored>,
    /// The answer, if the instance that died had recorded it.
    pub answer: Option<Stored>,
    /// How many of the answer's messages Twilio had accepted.
    pub sent: usize,
    /// The message being sent when the instance died, if its outcome is unknown.
    pub sending: Option<usize>,
}

/// How a wait for the turns before ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnWait {
    /// The turns before are finished.
    Ready,
    /// The conversation did not move (no turn before finished) for the whole bound:
    /// the turn ahead is stuck past anything its own timeouts allow.
    Stalled,
}

impl Ticket {
    /// Resolves once the turns before this one in the conversation are finished, or
    /// once none of them has finished for `stall`: each turn that finishes starts the
    /// bound again, so that a long queue of turns that move is waited for, and one that
    /// is stuck is not.
    pub async fn wait_turn(&self, stall: Duration) -> TurnWait {
        match &self.held {
            Held::Local(ticket) => ticket.wait_turn(stall).await,
            Held::Shared(ticket) => ticket.wait_turn(stall).await,
        }
    }

    /// Keeps the lease of a shared turn alive while `work` runs; tells whether another
    /// instance took the turn over meanwhile (then its work is no longer this one's).
    ///
    /// `work` is boxed once, here, before any future holds it: passed down by value
    /// through the layers below, a large future would be stored again at each (every
    /// turn in flight holds one). Not an `async fn` for that reason: one would keep
    /// `work` inline, as its argument, beside the box.
    pub fn keep_alive<'a, T: 'a>(
        &'a self,
        work: impl std::future::Future<Output = T> + 'a,
    ) -> impl std::future::Future<Output = T> + 'a {
        let work = Box::pin(work);
        async move {
            match &self.held {
                Held::Local(_) => work.await,
                // The renewals' state is boxed too: only shared turns hold it.
                Held::Shared(ticket) => Box::pin(ticket.keep_alive(work)).await,
            }
        }
    }

    /// The record of `slot` as it was when the turn became ready (call after
    /// [`Ticket::wait_turn`]), as stored: [`StateStore::read_in_turn`] reads it.
    async fn stored(&self, slot: &'static str) -> Option<Stored> {
        let text = match &self.held {
            Held::Local(ticket) => ticket.read(slot),
            Held::Shared(ticket) => ticket.read(slot, &self.session).await,
        }?;
        Stored::from_text(text)
    }

    /// Whether this instance still holds the turn.
    pub fn is_held(&self) -> bool {
        match &self.held {
            Held::Local(_) => true,
            Held::Shared(ticket) => ticket.is_held(),
        }
    }

    /// Records the answer before its messages are sent through the API, so that an
    /// instance taking over sends what is left of it instead of asking the agent again.
    pub async fn record_answer(&self, answer: &Stored) {
        self.record_answer_sent(answer, 0).await;
    }

    /// Records the answer with its first `sent` messages already accepted (they went
    /// in the webhook's answer), in one round trip.
    pub async fn record_answer_sent(&self, answer: &Stored, sent: usize) {
        if let Held::Shared(ticket) = &self.held {
            ticket.record_answer(answer.text(), sent).await;
        }
    }

    /// Records that Twilio accepted the answer's messages before `sent`, and that
    /// message `sent` is being sent.
    pub async fn record_sent(&self, sent: usize) {
        if let Held::Shared(ticket) = &self.held {
            ticket.record_sent(sent).await;
        }
    }

    /// The turn is done: a repeat of the message gets `outcome`, and the next turn of
    /// the conversation may go.
    pub async fn finish(self, outcome: &Stored) {
        let outcome = Arc::clone(outcome.text());
        match self.held {
            Held::Local(ticket) => ticket.finish(outcome),
            Held::Shared(ticket) => ticket.finish(Some(outcome)).await,
        }
    }

    /// The turn is done with no outcome to remember: a re-delivery of the message is
    /// handled afresh.
    pub async fn abandon(self) {
        match self.held {
            Held::Local(ticket) => drop(ticket),
            Held::Shared(ticket) => ticket.finish(None).await,
        }
    }

    /// At shutdown: leaves a shared turn to the other instances at once, rather than when
    /// its lease runs out. Returns whether another instance can take it (false for a turn
    /// of this process's own store, which ends with the process).
    pub async fn release(self) -> bool {
        match self.held {
            Held::Local(_) => false,
            Held::Shared(ticket) => ticket.release().await,
        }
    }
}

/// A typed per-conversation [`Record`] with a time to live, e.g. a pending menu or a
/// hand-over: `const MENU: Slot<PendingMenu> = Slot::new("menu", Duration::from_secs(3600));`
#[derive(Debug)]
pub struct Slot<T> {
    name: &'static str,
    ttl: Duration,
    kind: PhantomData<fn() -> T>,
}

impl<T> Slot<T> {
    /// Records of `name` live for `ttl` after they were last set.
    pub const fn new(name: &'static str, ttl: Duration) -> Self {
        Self {
            name,
            ttl,
            kind: PhantomData,
        }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// The state store: this process's, or one shared through Redis with a fallback to this
/// process's for the calls it cannot answer.
#[derive(Clone)]
pub struct StateStore {
    kept: Kept,
    /// Counts the records that cannot be read.
    metrics: Arc<Metrics>,
}

/// Where the state is kept.
#[derive(Clone)]
enum Kept {
    Local(Arc<LocalState>),
    Shared(Arc<SharedState>),
}

impl StateStore {
    /// The store `settings` describe. A shared store that cannot be reached now is not
    /// an error: its connection manager keeps trying, and this process's state serves
    /// meanwhile.
    pub async fn open(
        settings: &StateSettings,
        limits: RateLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, shared::OpenError> {
        let kept = match &settings.url {
            None => Kept::Local(Arc::new(LocalState::new(limits, settings.remembering))),
            Some(_) => {
                Kept::Shared(SharedState::open(settings, limits, Arc::clone(&metrics)).await?)
            }
        };
        Ok(StateStore { kept, metrics })
    }

    /// This process's state alone (one instance; tests).
    pub fn local(limits: RateLimits, metrics: Arc<Metrics>) -> Self {
        StateStore {
            kept: Kept::Local(Arc::new(LocalState::new(limits, Remembering::default()))),
            metrics,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.kept, Kept::Shared(_))
    }

    /// `stored` read as a `T`. One that cannot be read is logged (its kind and fault,
    /// never its content) and counted, and is an error for the caller to go on without.
    pub fn read<T: Record>(&self, stored: &Stored) -> Result<T, Unreadable> {
        stored.read().map_err(|error| self.unreadable(error))
    }

    /// Logs and counts a record that cannot be read.
    fn unreadable(&self, error: Unreadable) -> Unreadable {
        self.metrics.record_unreadable(error.kind());
        tracing::error!(kind = error.kind(), %error, "a stored record cannot be read: it is left as it is, and not used");
        error
    }

    /// The record of `slot` for `ticket`'s conversation, as it was when the turn became
    /// ready (call after [`Ticket::wait_turn`]).
    pub async fn read_in_turn<T: Record>(
        &self,
        ticket: &Ticket,
        slot: &Slot<T>,
    ) -> Result<Option<T>, Unreadable> {
        match ticket.stored(slot.name).await {
            Some(stored) => self.read(&stored).map(Some),
            None => Ok(None),
        }
    }

    /// Claims `key` (if any) and gives the message the next turn of `session`;
    /// `turn` is what another instance needs to work the turn if this one cannot.
    ///
    /// The records of `reads` (slot names) are read when the turn is ready, with the
    /// round trips the turn makes anyway: [`StateStore::read_in_turn`] then costs nothing more.
    pub async fn admit(
        &self,
        key: Option<MessageKey>,
        session: SessionId,
        turn: Option<&Stored>,
        reads: &[&'static str],
    ) -> Admission {
        match &self.kept {
            Kept::Local(local) => local.admit(key, session, true),
            Kept::Shared(shared) => {
                let turn = turn.map_or_else(|| Json::from(""), |turn| Arc::clone(turn.text()));
                shared.admit(key, session, turn, true, reads).await
            }
        }
    }

    /// A turn of `session` for work that is not a person's message (the human side of
    /// a hand-over writing): in order with the messages, outside the rate limits.
    pub async fn admit_uncounted(&self, session: SessionId) -> Option<Ticket> {
        let admission = match &self.kept {
            Kept::Local(local) => local.admit(None, session, false),
            Kept::Shared(shared) => {
                shared
                    .admit(None, session, Json::from(""), false, &[])
                    .await
            }
        };
        match admission {
            Admission::First(ticket) => Some(ticket),
            // Without a MessageSid there is nothing to repeat.
            Admission::Repeat(_) => None,
        }
    }

    /// The turns whose instance stopped renewing their lease, taken over by this one.
    pub async fn take_over_expired(&self) -> Vec<TakenOver> {
        match &self.kept {
            Kept::Local(_) => Vec::new(),
            Kept::Shared(shared) => shared.take_over_expired().await,
        }
    }

    /// The record `id` (a conversation's session, or another key) in `slot`: `None`
    /// if none is set (or it expired); an error, logged and counted, if it cannot be
    /// read.
    pub async fn get<T: Record>(
        &self,
        slot: &Slot<T>,
        id: &(impl AsRef<str> + ?Sized),
    ) -> Result<Option<T>, Unreadable> {
        let id = id.as_ref();
        let text = match &self.kept {
            Kept::Local(local) => local.records.get(slot.name, id),
            Kept::Shared(shared) => shared.get_record(slot.name, id).await,
        };
        match text.and_then(Stored::from_text) {
            Some(stored) => self.read(&stored).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the record `id` in `slot`, for the slot's time to live.
    pub async fn set<T: Record>(&self, slot: &Slot<T>, id: &(impl AsRef<str> + ?Sized), value: &T) {
        let id = id.as_ref();
        let json = match Stored::of(value) {
            Ok(stored) => Arc::clone(stored.text()),
            Err(error) => {
                tracing::error!(%error, "a record was not written");
                return;
            }
        };
        match &self.kept {
            Kept::Local(local) => local.records.set(slot.name, id, json, slot.ttl),
            Kept::Shared(shared) => shared.set_record(slot.name, id, json, slot.ttl).await,
        }
    }

    /// Sets the record `id` in `slot` to `value` unless one is there, across instances:
    /// `None` when this call set it, else the record that was there (an error, logged
    /// and counted, if it cannot be read).
    pub async fn claim<T: Record>(
        &self,
        slot: &Slot<T>,
        id: &(impl AsRef<str> + ?Sized),
        value: &T,
    ) -> Result<Option<T>, Unreadable> {
        let id = id.as_ref();
        let json = match Stored::of(value) {
            Ok(stored) => Arc::clone(stored.text()),
            Err(error) => {
                tracing::error!(%error, "a record was not written");
                return Ok(None);
            }
        };
        let there = match &self.kept {
            Kept::Local(local) => local.records.claim(slot.name, id, json, slot.ttl),
            Kept::Shared(shared) => shared.claim_record(slot.name, id, json, slot.ttl).await,
        };
        match there.and_then(Stored::from_text) {
            Some(stored) => self.read(&stored).map(Some),
            None => Ok(None),
        }
    }

    /// Puts `id` in the schedule `index`, due at `at` (Unix seconds); moves it if it is
    /// there already.
    pub async fn schedule(&self, index: &'static str, id: &str, at: u64) {
        match &self.kept {
            Kept::Local(local) => local.schedules.schedule(index, id, at),
            Kept::Shared(shared) => shared.schedule(index, id, at).await,
        }
    }

    /// Claims, and returns, up to `limit` ids of the schedule `index` due at `now`;
    /// with a shared store, each id goes to one instance only. A claim is a lease: the
    /// id is due again at `now + lease` (seconds) unless its work re-schedules it or
    /// [`StateStore::unschedule`]s it, so that work a crash or a failure cut short is
    /// done later, not lost.
    pub async fn claim_due(
        &self,
        index: &'static str,
        now: u64,
        limit: usize,
        lease: u64,
    ) -> Vec<String> {
        match &self.kept {
            Kept::Local(local) => local.schedules.claim_due(index, now, limit, lease),
            Kept::Shared(shared) => shared.claim_due(index, now, limit, lease).await,
        }
    }

    /// Counts one outbound send against `per_second` for the whole bridge, when the
    /// state is shared: `Some(None)` when it may go now, `Some(Some(wait))` to ask
    /// again after `wait`; `None` when there is no shared store or it failed (logged
    /// and counted), and the caller keeps this process's own pace.
    pub async fn pace(&self, per_second: std::num::NonZeroU32) -> Option<Option<Duration>> {
        match &self.kept {
            Kept::Local(_) => None,
            Kept::Shared(shared) => shared.pace(per_second).await.ok(),
        }
    }

    /// Takes `id` out of the schedule `index`: its work is done.
    pub async fn unschedule(&self, index: &'static str, id: &str) {
        match &self.kept {
            Kept::Local(local) => local.schedules.unschedule(index, id),
            Kept::Shared(shared) => shared.unschedule(index, id).await,
        }
    }

    /// Removes the record `id` in `slot`.
    pub async fn remove<T>(&self, slot: &Slot<T>, id: &(impl AsRef<str> + ?Sized)) {
        let id = id.as_ref();
        match &self.kept {
            Kept::Local(local) => local.records.remove(slot.name, id),
            Kept::Shared(shared) => shared.remove_record(slot.name, id).await,
        }
    }
}
