//! A turn held in the shared store by its fencing token: waiting for the turns before
//! it, keeping its lease, recording its answer and progress, finishing or releasing it.
//! Every script here checks the token, so a turn taken over by another instance is
//! seen as lost, never written over.

use super::layout::seen_key_of;
use super::{values_of, SharedState, CONVERSATION_TTL, POLL_EVERY};
use crate::retry::{always, Backoff, RetryPolicy};
use crate::session::SessionId;
use crate::state::{Json, StoreError, TurnWait};
use redis::{Script, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The end of a turn is tried three times, 100 ms then 200 ms apart.
const REFINISH: RetryPolicy = RetryPolicy::new(Backoff::exponential(
    Duration::from_millis(100),
    Duration::from_millis(200),
))
.with_attempt_limit(3);

/// After those, in the background, at most a second apart, for as long as the lease
/// (the time limit is set per store): a failover of a cluster's master takes seconds,
/// and a turn finished before its lease runs out is never taken over, so its message
/// is not answered twice.
const REFINISH_LATER: RetryPolicy = RetryPolicy::new(Backoff::exponential(
    Duration::from_millis(200),
    Duration::from_secs(1),
));

/// What a script that checks the fencing token answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// This instance holds the turn.
    Yes,
    /// Another instance took it over.
    Lost,
    /// The store no longer has the turn (it lost its data): nobody else can work it, so
    /// this instance goes on.
    Gone,
}

impl Holding {
    fn of(answer: i64) -> Self {
        match answer {
            0 => Holding::Lost,
            -1 => Holding::Gone,
            _ => Holding::Yes,
        }
    }
}

/// A turn held in the shared store, by the fencing token this instance got for it.
pub(in crate::state) struct SharedTicket {
    state: Arc<SharedState>,
    /// The turn, as logs name it: its conversation's key and its number.
    turn: String,
    message: String,
    session: SessionId,
    pub(super) conversation: String,
    seq: u64,
    token: String,
    /// Another instance took the turn over.
    lost: AtomicBool,
    /// When the store last confirmed the lease (ms since `created`); past the lease
    /// without a confirmation, another instance may hold the turn.
    confirmed: AtomicU64,
    created: Instant,
    /// The turns before it were done when it was admitted.
    ready: AtomicBool,
    /// Records read when the turn became ready: their slots, keys, and values.
    reads: Vec<&'static str>,
    record_keys: Vec<String>,
    records: std::sync::Mutex<Option<Vec<Option<Json>>>>,
}

impl SharedTicket {
    pub(super) fn new(
        state: Arc<SharedState>,
        session: &SessionId,
        message: String,
        seq: u64,
        token: String,
        ready: bool,
    ) -> Self {
        let conversation = state.layout.conversation(session);
        Self {
            turn: format!("{conversation}#{seq}"),
            conversation,
            message,
            session: *session,
            seq,
            token,
            lost: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            created: Instant::now(),
            ready: AtomicBool::new(ready),
            reads: Vec::new(),
            record_keys: Vec::new(),
            records: std::sync::Mutex::new(None),
            state,
        }
    }

    /// The records to read when the turn is ready, and those read already.
    pub(super) fn reading(
        mut self,
        reads: &[&'static str],
        record_keys: Vec<String>,
        records: Option<Vec<Option<Json>>>,
    ) -> Self {
        self.reads = reads.to_vec();
        self.record_keys = record_keys;
        self.records = std::sync::Mutex::new(records);
        self
    }

    /// Record `slot` of the conversation as it was when the turn became ready: read
    /// with the admission or the wait, else now.
    pub(in crate::state) async fn read(
        &self,
        slot: &'static str,
        session: &SessionId,
    ) -> Option<Json> {
        let read = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|values| {
                let at = self.reads.iter().position(|r| *r == slot)?;
                Some(values.get(at).cloned().flatten())
            });
        match read {
            Some(value) => value,
            None => self.state.get_record(slot, session.as_str()).await,
        }
    }

    fn confirm(&self) {
        self.confirmed
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// False once another instance took the turn, or once the lease may have run out
    /// unconfirmed (the store could not be reached to renew it).
    pub(in crate::state) fn is_held(&self) -> bool {
        let confirmed = Duration::from_millis(self.confirmed.load(Ordering::Relaxed));
        let unconfirmed = self.created.elapsed().saturating_sub(confirmed);
        // A margin for the clocks: the lease runs on the server's.
        !self.lost.load(Ordering::Relaxed) && unconfirmed < self.state.lease * 5 / 6
    }

    fn note(&self, held: Holding) {
        match held {
            Holding::Yes => self.confirm(),
            Holding::Gone => {
                self.confirm();
                tracing::warn!(turn = %self.turn, "the shared store lost this turn (did it restart empty?): this instance goes on with it");
            }
            Holding::Lost => {
                if !self.lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(turn = %self.turn, "another instance took this turn over: its lease ran out");
                }
            }
        }
    }

    pub(in crate::state) async fn wait_turn(&self, stall: Duration) -> TurnWait {
        if self.ready.load(Ordering::Relaxed) {
            return TurnWait::Ready;
        }
        // From a fiftieth of a second to a third: a long queue does not hammer the store.
        let mut pause = POLL_EVERY;
        let mut moved = None;
        let mut deadline = tokio::time::Instant::now() + stall;
        loop {
            let ready = self
                .state
                .call("wait_turn", |mut connection| {
                    let mut invocation = self.state.scripts.wait_turn.prepare_invoke();
                    invocation.key(&self.conversation);
                    for record in &self.record_keys {
                        invocation.key(record);
                    }
                    invocation.arg(self.seq);
                    async move { invocation.invoke_async::<Value>(&mut connection).await }
                })
                .await;
            let answer = match ready {
                Ok(Value::Array(answer)) => answer,
                // The store cannot say, and a person is not kept waiting for it.
                _ => return TurnWait::Ready,
            };
            match answer.as_slice() {
                [Value::Int(0), Value::Int(done)] => {
                    // A turn before finished: the bound starts again.
                    let now = tokio::time::Instant::now();
                    if moved.replace(*done).is_some_and(|before| before != *done) {
                        deadline = now + stall;
                    }
                    if now >= deadline {
                        return TurnWait::Stalled;
                    }
                    let wait = pause.min(deadline - now);
                    let _ = tokio::time::timeout(wait, self.state.finished.notified()).await;
                    pause = (pause * 2).min(POLL_EVERY * 16);
                }
                [_, records, ..] => {
                    if let Ok(values) = values_of(records) {
                        *self
                            .records
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(values);
                    }
                    return TurnWait::Ready;
                }
                _ => return TurnWait::Ready,
            }
        }
    }

    pub(in crate::state) async fn keep_alive<T>(&self, work: impl Future<Output = T>) -> T {
        let renewals = async {
            let every = self.state.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                if !self.renew().await {
                    return;
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => return done,
            () = renewals => {}
        }
        // The turn was lost: the work still ends (its sends check `is_held`).
        work.await
    }

    /// False once another instance holds the turn; a store that cannot answer is not
    /// taken as a loss (the lease may still be good: `is_held` watches its age).
    async fn renew(&self) -> bool {
        let lease = self.state.lease.as_millis().to_string();
        let renewed = self
            .as_holder("renew", &self.state.scripts.renew, &[&lease])
            .await;
        // The conversation is marked again in its bucket, in case the mark sent with
        // its admission was lost: a sweeper finds the turn should this instance die.
        if matches!(renewed, Ok(1)) {
            let _ = self
                .state
                .mark(self.session.as_str(), self.state.lease)
                .await;
        }
        if let Ok(answer) = renewed {
            self.note(Holding::of(answer));
        }
        !self.lost.load(Ordering::Relaxed)
    }

    async fn record(&self, fields: &[(&str, &str)]) {
        let args: Vec<&str> = fields
            .iter()
            .flat_map(|(name, value)| [*name, *value])
            .collect();
        let recorded = self
            .as_holder("record", &self.state.scripts.record, &args)
            .await;
        if let Ok(answer) = recorded {
            self.note(Holding::of(answer));
        }
    }

    /// Runs one of the scripts that act only for the turn's holder (`scripts::HELD`):
    /// KEYS the conversation, ARGV this turn's token and number then `args`.
    async fn as_holder(
        &self,
        op: &'static str,
        script: &Script,
        args: &[&str],
    ) -> Result<i64, StoreError> {
        self.state
            .call(op, |mut connection| {
                let mut invocation = script.prepare_invoke();
                invocation.key(&self.conversation);
                invocation.arg(&self.token).arg(self.seq);
                for arg in args {
                    invocation.arg(*arg);
                }
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await
    }

    pub(in crate::state) async fn record_answer(&self, answer: &Json, sent: usize) {
        self.record(&[("answer", answer), ("sent", &sent.to_string())])
            .await;
    }

    pub(in crate::state) async fn record_sent(&self, sent: usize) {
        self.record(&[("sent", &sent.to_string())]).await;
    }

    /// Records the outcome (or forgets the message with `None`) and lets the next turn
    /// go. Tried a few times, then in the background for as long as the lease (the
    /// store may be failing over): a turn that stays unfinished is taken over later,
    /// and its message may then be answered twice, which the log says. A late finish
    /// is fenced: once another instance took the turn over, it changes nothing.
    pub(in crate::state) async fn finish(self, outcome: Option<Json>) {
        let finished = REFINISH
            .run(always, |_| self.try_finish(outcome.clone()))
            .await;
        if finished.is_ok() {
            return;
        }
        tracing::warn!(
            turn = %self.turn,
            "the end of this turn could not be recorded in the shared store yet: tried again for STATE_LEASE"
        );
        let later = REFINISH_LATER.with_time_limit(self.state.lease);
        tokio::spawn(async move {
            let finished = later
                .run(always, |_| self.try_finish(outcome.clone()))
                .await;
            match finished {
                Ok(()) => {
                    tracing::info!(turn = %self.turn, "the end of this turn was recorded in the shared store")
                }
                Err(_) => tracing::error!(
                    turn = %self.turn,
                    "the end of this turn could not be recorded in the shared store: another instance will take it over after STATE_LEASE, and may answer its message again"
                ),
            }
        });
    }

    /// One attempt at [`SharedTicket::finish`]: done once the store answered.
    pub(super) async fn try_finish(&self, outcome: Option<Json>) -> Result<(), StoreError> {
        let outcome = outcome.as_deref().unwrap_or_default().to_owned();
        let has_message = !self.message.is_empty();
        // A turn of no message names a key of its conversation's slot no message has.
        let message = match has_message {
            true => self.message.clone(),
            false => self.state.layout.no_message(&self.session),
        };
        let finished = self
            .state
            .call("finish", |mut connection| {
                let mut invocation = self.state.scripts.finish.prepare_invoke();
                invocation
                    .key(&self.conversation)
                    .key(&message)
                    .key(seen_key_of(&message))
                    .arg(&self.token)
                    .arg(self.seq)
                    .arg(&outcome)
                    .arg(self.state.remembering().outcome.as_secs().max(1))
                    .arg(CONVERSATION_TTL.as_secs())
                    .arg(self.state.remembering().replay.as_secs().max(1))
                    .arg(u8::from(has_message));
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if Holding::of(finished?) == Holding::Lost {
            self.note(Holding::Lost);
        }
        self.state.finished.notify_waiters();
        Ok(())
    }

    pub(in crate::state) async fn release(self) -> bool {
        let released = self
            .as_holder("release", &self.state.scripts.release, &[])
            .await;
        if matches!(released, Ok(1)) {
            // Its conversation is looked at now, not when its last visit said.
            let _ = self.state.mark(self.session.as_str(), Duration::ZERO).await;
        }
        // Unreleased, its lease still runs out: another instance takes it later.
        !matches!(released, Ok(0))
    }
}
