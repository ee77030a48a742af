//! Admitting a message: claiming its id and giving it the next turn of its
//! conversation in one script, asked again (the same turn) when its answer is lost;
//! clearing an admission the store made unseen; and a re-delivery's wait for the first
//! delivery's outcome.

use super::layout::seen_key_of;
use super::link::{Link, Links};
use super::{limited_of, text, values_of, SharedState, SharedTicket, CONVERSATION_TTL, POLL_EVERY};
use crate::rate_limit::Limited;
use crate::retry::{always, Backoff, RetryPolicy, Verdict};
use crate::session::SessionId;
use crate::state::{Admission, Held, Json, MessageKey, Repeat, StoreError, Ticket, REMEMBER_FOR};
use redis::{ScriptInvocation, Value};
use std::sync::Arc;
use std::time::Duration;

/// An admission whose answer was lost is asked again, with the same token: the script
/// then gives the same turn, and this instance works it. Three attempts at most, the
/// first pause short (a connection that closed is opened again meanwhile), and none
/// started past twice `STATE_TIMEOUT` ([`SharedState::readmit`]).
const READMIT: RetryPolicy = RetryPolicy::new(Backoff::exponential(
    Duration::from_millis(20),
    Duration::from_millis(100),
))
.with_attempt_limit(3);
/// An admission that may have been made unseen is cleared every 200 ms until the store
/// answers, within the lease (`SharedState::clear_lost_admission`).
const CLEAR_EVERY: Backoff = Backoff::constant(Duration::from_millis(200));

impl SharedState {
    pub(in crate::state) async fn admit(
        self: &Arc<Self>,
        key: Option<MessageKey>,
        session: SessionId,
        turn: Json,
        counted: bool,
        reads: &[&'static str],
    ) -> Admission {
        let record_keys: Vec<String> = reads
            .iter()
            .map(|slot| self.layout.record(slot, session.as_str()))
            .collect();
        let message_key = key
            .as_ref()
            .map(|k| self.layout.message(&session, k))
            .unwrap_or_default();
        let conversation = self.layout.conversation(&session);
        let token = self.new_token();
        // The budget is global, and a script runs in one slot: it is counted first.
        let budget = self.count_call(counted).await;
        // The script may have run when its answer is lost (a timeout, a connection that
        // closed after the request, a master that failed before answering): asked again
        // with the same token, it gives the same turn, which this instance then works
        // and finishes as any other. Only when every attempt failed is this process's
        // own state used, and a turn left in the store is cleared once the store
        // answers.
        let call = AdmitCall {
            message_key: &message_key,
            conversation: &conversation,
            session: &session,
            turn: &turn,
            token: &token,
            counted,
            over_budget: budget.is_some_and(|count| count.over),
            record_keys: &record_keys,
        };
        let admitted = self
            .readmit()
            .run(answer_lost, |_| self.run_admit(&call))
            .await;
        // The script may have run, and its turn wait in the store for nobody: an
        // attempt's answer was lost (a retry followed it, or it was the last).
        let unconfirmed = matches!(&admitted, Err(gave_up)
            if gave_up.attempts > 1 || answer_lost(&gave_up.error) == Verdict::Retry);
        // A call the agent is not asked for gives its count back: a repeat, a turn
        // slowed down by its conversation's pace, or one this process answers itself.
        let asks = matches!(&admitted, Ok(Admitted::First { limited: None, .. }));
        if budget.is_some() && !asks {
            tokio::spawn(Arc::clone(self).give_back_call());
        }
        match admitted {
            Ok(Admitted::First {
                seq,
                limited,
                ready,
                records,
            }) => Admission::First(Ticket {
                session,
                key,
                limited,
                held: Held::Shared(Box::new(
                    SharedTicket::new(Arc::clone(self), &session, message_key, seq, token, ready)
                        .reading(reads, record_keys, records),
                )),
            }),
            Ok(Admitted::Repeat(seen)) => match (key, seen.strip_prefix("done:")) {
                (_, Some(outcome)) => {
                    let outcome: Json = outcome.into();
                    Admission::Repeat(Repeat::Local(crate::ledger::Repeat::Done(outcome)))
                }
                (Some(key), None) => Admission::Repeat(Repeat::Shared {
                    state: Arc::clone(self),
                    session,
                    key,
                }),
                (None, None) => self.local.admit(None, session, counted),
            },
            Ok(Admitted::Replayed) => Admission::Repeat(Repeat::Replayed),
            // Counted and logged in `call`: this message is handled as one instance would.
            Err(_) => {
                self.metrics.state_fallback();
                if unconfirmed && !message_key.is_empty() {
                    tokio::spawn(Arc::clone(self).clear_lost_admission(
                        message_key,
                        conversation,
                        session,
                        token,
                    ));
                }
                self.local.admit(key, session, counted)
            }
        }
    }

    /// [`READMIT`] within twice `STATE_TIMEOUT`: after two attempts that timed out, the
    /// message is this process's to handle.
    fn readmit(&self) -> RetryPolicy {
        READMIT.with_time_limit(self.timeout.saturating_mul(2))
    }

    async fn run_admit(&self, call: &AdmitCall<'_>) -> Result<Admitted, StoreError> {
        let AdmitCall {
            message_key,
            conversation,
            session,
            turn,
            token,
            counted,
            over_budget,
            record_keys,
        } = *call;
        // Uncounted turns pass no limits: the script then counts nothing.
        let per_conversation = self
            .limits
            .per_conversation
            .filter(|_| counted)
            .map_or(0, |n| n.get());
        let has_message = !message_key.is_empty();
        // A turn of no message is claimed by its token where a message's claim would
        // be (its seen marker a key never touched): a cluster refuses a script whose
        // keys span slots, and all of them are in its conversation's.
        let (message, seen) = match has_message {
            true => (message_key.to_owned(), seen_key_of(message_key)),
            false => {
                let claim = self.layout.turn_claim(session, token);
                let seen = seen_key_of(&claim);
                (claim, seen)
            }
        };
        let mut admit = self.scripts.admit.prepare_invoke();
        admit
            .key(conversation)
            .key(self.layout.rate(session))
            .key(&message)
            .key(&seen);
        for record in record_keys {
            admit.key(record);
        }
        admit
            .arg(&**turn)
            .arg(token)
            .arg(self.lease.as_millis() as u64)
            // A claim in flight is kept as long as today's outcomes, whatever
            // REPEAT_WINDOW says: it must outlast the turn.
            .arg(REMEMBER_FOR.max(self.remembering().outcome).as_secs())
            .arg(CONVERSATION_TTL.as_secs())
            .arg(per_conversation)
            .arg(u8::from(over_budget))
            .arg(u8::from(has_message));
        // Sent beside the admission, in the same round trip: a sweeper is to look at
        // the conversation once the new turn's lease may have run out. A mark that
        // fails is made again at the turn's next renewal.
        let mark = self.mark_invocation(session.as_str(), self.lease);
        let reply = match self.connection.get().is_some_and(Links::is_cluster) {
            // Two slots: side by side, on the nodes that hold them.
            true => {
                let admitted = self.call("admit", |mut connection| async move {
                    admit.invoke_async::<Vec<Value>>(&mut connection).await
                });
                let marked = self.call("mark", |mut connection| async move {
                    mark.invoke_async::<i64>(&mut connection).await
                });
                tokio::join!(admitted, marked).0
            }
            // One server: one pipeline, one write and one answer to wait for.
            false => {
                self.call("admit", |connection| {
                    admit_and_mark(connection, &admit, &mark)
                })
                .await
            }
        };
        let reply = reply?;
        match reply.as_slice() {
            [Value::Int(0), seen] => Ok(Admitted::Repeat(text(seen)?)),
            [Value::Int(2)] => Ok(Admitted::Replayed),
            [Value::Int(1), Value::Int(seq), Value::Int(limited), Value::Int(tell), Value::Int(ready), records] =>
            {
                Ok(Admitted::First {
                    seq: (*seq).max(0) as u64,
                    limited: limited_of(*limited, *tell),
                    ready: *ready == 1,
                    // A value that cannot be read is read again when asked for: the
                    // turn itself was made, and stands.
                    records: (*ready == 1).then(|| values_of(records).ok()).flatten(),
                })
            }
            other => Err(StoreError::Corrupt(format!("admit answered {other:?}"))),
        }
    }

    /// An admission whose answer never came may still have made a turn in the store,
    /// which would hold up the conversation and, once its lease ran out, be answered a
    /// second time by another instance. This process answered the message itself:
    /// once the store answers again (within the lease), that turn is finished and the
    /// message forgotten there.
    async fn clear_lost_admission(
        self: Arc<Self>,
        message_key: String,
        conversation: String,
        session: SessionId,
        token: String,
    ) {
        let mine = format!("pending:{token}:");
        let clear = || async {
            let seen = self.seen(&message_key).await?;
            let seq = seen.and_then(|v| v.strip_prefix(&mine)?.parse::<u64>().ok());
            // The script never ran, or another delivery owns the message: nothing to do.
            let Some(seq) = seq else { return Ok(()) };
            let ticket = SharedTicket::new(
                Arc::clone(&self),
                &session,
                message_key.clone(),
                seq,
                token.clone(),
                true,
            );
            debug_assert_eq!(ticket.conversation, conversation);
            ticket.try_finish(None).await
        };
        // The store has just failed to answer: give it a pause before the first try.
        let first = CLEAR_EVERY.pause(1);
        tokio::time::sleep(first).await;
        let within_lease =
            RetryPolicy::new(CLEAR_EVERY).with_time_limit(self.lease.saturating_sub(first));
        if within_lease.run(always, |_| clear()).await.is_ok() {
            return;
        }
        tracing::error!(
            "an admission the shared store did not confirm could not be cleared: another instance may answer its message again after STATE_LEASE"
        );
    }

    /// Polls the first delivery's outcome: `None` once it is withdrawn, or when the
    /// store cannot say.
    pub(in crate::state) async fn wait_outcome(
        &self,
        session: &SessionId,
        key: &MessageKey,
    ) -> Option<Json> {
        let message_key = self.layout.message(session, key);
        loop {
            let seen = self.seen(&message_key).await.ok()?;
            match seen?.strip_prefix("done:") {
                Some(outcome) => return Some(outcome.into()),
                None => self.pause().await,
            }
        }
    }

    /// What the store holds for a message: `pending:{token}:{seq}` while its turn is
    /// worked, `done:` and the outcome after; `None` once it is forgotten.
    async fn seen(&self, message_key: &str) -> Result<Option<String>, StoreError> {
        self.command("outcome", redis::cmd("GET").arg(message_key))
            .await
    }

    /// A short wait, cut short when a turn of this process finishes.
    async fn pause(&self) {
        let _ = tokio::time::timeout(POLL_EVERY, self.finished.notified()).await;
    }
}

/// Whether an admission that failed may have run, its answer lost on the way back, so
/// that asking again (with the same token) finds the turn it made: no answer within
/// `STATE_TIMEOUT`, a connection that closed or failed after the request may have been
/// written (a master that failed before answering), or a cluster still moving its
/// slots when the cluster client's own retries ran out. Anything else the server
/// answered, and a script that answers an error made no turn; a request never sent
/// (no connection yet, or one refused: the store is down) made none either, and is
/// not asked again, so that an outage costs no more than the fallback.
fn answer_lost(error: &StoreError) -> Verdict {
    match error {
        // `SharedState::call`'s answer before the first connection was made.
        StoreError::Timeout(waited) if waited.is_zero() => Verdict::Final,
        StoreError::Timeout(_) => Verdict::Retry,
        StoreError::Redis(error) if error.is_connection_refusal() => Verdict::Final,
        StoreError::Redis(error)
            if error.is_io_error()
                || error.is_unrecoverable_error()
                || error.is_cluster_error() =>
        {
            Verdict::Retry
        }
        StoreError::Redis(_) | StoreError::Corrupt(_) => Verdict::Final,
    }
}

/// The agent budget's count after this call, when there is a budget to count.
#[derive(Clone, Copy)]
struct BudgetCount {
    over: bool,
}

impl SharedState {
    /// Counts one agent call against `AGENT_CALLS_PER_HOUR`, for a counted turn when
    /// a budget is set; `None` when nothing was counted (none to count, or the store
    /// did not answer: the admission then goes on, and its own failure decides).
    async fn count_call(&self, counted: bool) -> Option<BudgetCount> {
        let per_hour = self.limits.agent_calls_per_hour.filter(|_| counted)?;
        let budget = self.layout.budget();
        let used = self
            .call("count_call", |mut connection| {
                let invocation = self.scripts.count_call.key(budget);
                async move { invocation.invoke_async::<u64>(&mut connection).await }
            })
            .await
            .ok()?;
        Some(BudgetCount {
            over: used > u64::from(per_hour.get()),
        })
    }

    /// Gives back a count of [`SharedState::count_call`] no agent call used.
    async fn give_back_call(self: Arc<Self>) {
        let _ = self
            .command::<i64>(
                "give_back_call",
                redis::cmd("DECR").arg(self.layout.budget()),
            )
            .await;
    }
}

/// What an admission asks the script.
#[derive(Clone, Copy)]
struct AdmitCall<'a> {
    message_key: &'a str,
    conversation: &'a str,
    session: &'a SessionId,
    turn: &'a Json,
    token: &'a str,
    counted: bool,
    over_budget: bool,
    record_keys: &'a [String],
}

/// What an admission script said.
enum Admitted {
    First {
        seq: u64,
        limited: Option<Limited>,
        ready: bool,
        /// The records asked for, read when the turn was ready.
        records: Option<Vec<Option<Json>>>,
    },
    Repeat(String),
    /// Handled within the replay window, its outcome forgotten.
    Replayed,
}

/// The admission and its mark in one pipeline (one server holds both slots). A script
/// the server does not have yet (its first turn, or after a restart) fails the
/// pipeline's call with `NOSCRIPT`: then each goes out alone, which loads it; both are
/// safe to run twice (the admission gives the same token the same turn). A mark that
/// fails otherwise is left, as when it goes out alone.
async fn admit_and_mark(
    mut connection: Link,
    admit: &ScriptInvocation<'_>,
    mark: &ScriptInvocation<'_>,
) -> redis::RedisResult<Vec<Value>> {
    let answers: Vec<redis::RedisResult<Value>> = redis::pipe()
        .invoke_script(admit)
        .invoke_script(mark)
        .ignore_errors()
        .query_async(&mut connection)
        .await?;
    match answers.into_iter().next() {
        Some(Err(error))
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            let mut beside = connection.clone();
            let (admitted, _) = tokio::join!(
                admit.invoke_async::<Vec<Value>>(&mut connection),
                mark.invoke_async::<i64>(&mut beside)
            );
            admitted
        }
        Some(answer) => Ok(redis::from_redis_value(answer?)?),
        None => Err((
            redis::ErrorKind::UnexpectedReturnType,
            "a pipeline of two answered nothing",
        )
            .into()),
    }
}

#[cfg(test)]
mod tests;
