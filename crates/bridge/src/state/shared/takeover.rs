//! Finding the turns whose lease ran out (their instance died, or stopped renewing)
//! and claiming them, each with a new fencing token; then reading what the script
//! answered as [`TakenTurn`]s, so that the layer above finishes them.
//!
//! A sweep covers every bucket (`layout.rs`): it claims the conversations of each
//! bucket due for a visit (`VISIT`, one script in the bucket's slot, so that one
//! sweeper alone visits each), claims each one's expired turns (`TAKE_OVER`, in the
//! conversation's slot), then says when to look again (`SETTLE`). The buckets are
//! swept at once; a sweep with nothing due costs one round trip per bucket.

use super::layout::{Layout, BUCKETS};
use super::{limited_of, SharedState, SharedTicket};
use crate::session::SessionId;
use crate::state::{Held, StoreError, Stored, TakenOver, Ticket};
use redis::{ScriptInvocation, Value};
use std::sync::Arc;
use std::time::Duration;

/// At most this many expired turns taken over in one conversation's visit.
const TAKE_AT_MOST: usize = 16;

/// At most this many conversations of one bucket visited in one sweep.
const VISIT_AT_MOST: usize = 16;

/// How many values the takeover script answers per turn (`scripts::TAKE_OVER`).
const VALUES_PER_TURN: usize = 8;

/// The kind under which an unreadable takeover answer is counted
/// (`state_records_unreadable_total{kind}`).
const UNREADABLE_KIND: &str = "taken_over";

/// One turn as the takeover script answers it, its eight values named.
#[derive(Debug, PartialEq, Eq)]
struct TakenTurn {
    seq: u64,
    /// The fencing token this instance now holds the turn by.
    token: String,
    /// `P:{session}:m:{AccountSid}:{MessageSid}`, or empty for a turn of no message.
    message_key: String,
    /// What the turn's message was, as admitted (empty for none).
    turn: String,
    /// The answer recorded before its messages were sent (empty for none).
    answer: String,
    /// How many of the answer's messages Twilio accepted; `None` when the count is not
    /// a number (the record script cannot have written it).
    sent: Option<usize>,
    /// The limit the turn went past, as the scripts number them (0 for none, also
    /// when the value is not a number, as before any limit was recorded).
    limited: i64,
    /// 1 when the person is to be told of the limit.
    tell: i64,
}

/// Why the takeover script's answer cannot be read. Only the shape is said: the
/// values themselves hold sessions and message ids.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum UnreadableTakeover {
    #[error("the takeover answered {0} values, not {VALUES_PER_TURN} per turn")]
    Length(usize),
    #[error("a taken-over turn has no readable turn number")]
    Seq,
    #[error("the takeover's answer is not of its shape")]
    Shape,
}

impl TakenTurn {
    /// Reads the script's whole answer: the turns it took, each as read, and an
    /// error for values left over that make no turn.
    fn all(reply: &[String]) -> Vec<Result<TakenTurn, UnreadableTakeover>> {
        let turns = reply.chunks_exact(VALUES_PER_TURN);
        let left_over =
            (!turns.remainder().is_empty()).then_some(Err(UnreadableTakeover::Length(reply.len())));
        turns.map(TakenTurn::parse).chain(left_over).collect()
    }

    /// One turn's eight values, in the script's order: seq, token, message key, turn,
    /// answer, sent, limited, tell.
    fn parse(values: &[String]) -> Result<TakenTurn, UnreadableTakeover> {
        let [seq, token, message_key, turn, answer, sent, limited, tell] = values else {
            return Err(UnreadableTakeover::Length(values.len()));
        };
        Ok(TakenTurn {
            seq: seq.parse().map_err(|_| UnreadableTakeover::Seq)?,
            token: token.clone(),
            message_key: message_key.clone(),
            turn: turn.clone(),
            answer: answer.clone(),
            sent: sent.parse().ok(),
            limited: limited.parse().unwrap_or(0),
            tell: tell.parse().unwrap_or(0),
        })
    }
}

/// A conversation a sweep visits: its session and the generation of its bucket's mark.
struct Visit {
    session: String,
    generation: String,
}

impl SharedState {
    /// Marks the conversation `session` in its bucket: a sweeper looks at it within
    /// `within`.
    pub(super) async fn mark(&self, session: &str, within: Duration) -> Result<(), StoreError> {
        let invocation = self.mark_invocation(session, within);
        self.call("mark", |mut connection| async move {
            invocation.invoke_async::<i64>(&mut connection).await
        })
        .await
        .map(drop)
    }

    /// The mark of [`SharedState::mark`], to send alone or beside another script.
    pub(super) fn mark_invocation(&self, session: &str, within: Duration) -> ScriptInvocation<'_> {
        let [visits, marks] = self.layout.visits(Layout::bucket_of(session));
        let mut invocation = self.scripts.mark.prepare_invoke();
        invocation
            .key(&visits)
            .key(&marks)
            .arg(session)
            .arg(within.as_millis() as u64);
        invocation
    }

    pub(in crate::state) async fn take_over_expired(self: &Arc<Self>) -> Vec<TakenOver> {
        let mut sweeps = tokio::task::JoinSet::new();
        for bucket in 0..BUCKETS {
            let state = Arc::clone(self);
            sweeps.spawn(async move { state.sweep(bucket).await });
        }
        let mut taken = Vec::new();
        while let Some(swept) = sweeps.join_next().await {
            taken.extend(swept.unwrap_or_default());
        }
        taken
    }

    /// One bucket's conversations due for a visit, each visited.
    async fn sweep(self: &Arc<Self>, bucket: u32) -> Vec<TakenOver> {
        let [visits, marks] = self.layout.visits(bucket);
        let due = self
            .call("visit", |mut connection| {
                let mut invocation = self.scripts.visit.prepare_invoke();
                invocation
                    .key(&visits)
                    .key(&marks)
                    .arg(VISIT_AT_MOST)
                    .arg(self.lease.as_millis() as u64);
                async move {
                    invocation
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                }
            })
            .await
            .unwrap_or_default();
        let mut taken = Vec::new();
        for pair in due.chunks_exact(2) {
            let visit = Visit {
                session: pair[0].clone(),
                generation: pair[1].clone(),
            };
            taken.extend(self.visit(&visits, &marks, visit).await);
        }
        taken
    }

    /// Takes over the conversation's expired turns, then says when to look again. A
    /// visit that fails is made again a lease later (the claim moved it there).
    async fn visit(self: &Arc<Self>, visits: &str, marks: &str, visit: Visit) -> Vec<TakenOver> {
        let Some(session) = SessionId::parse(&visit.session) else {
            self.metrics.record_unreadable(UNREADABLE_KIND);
            tracing::error!(
                kind = UNREADABLE_KIND,
                "a conversation to visit has no readable session: it is not visited"
            );
            return Vec::new();
        };
        let Ok((soonest, reply)) = self.take_over(&session).await else {
            return Vec::new();
        };
        let _ = self
            .call("settle", |mut connection| {
                let mut invocation = self.scripts.settle.prepare_invoke();
                invocation
                    .key(visits)
                    .key(marks)
                    .arg(&visit.session)
                    .arg(&visit.generation)
                    .arg(soonest);
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        TakenTurn::all(&reply)
            .into_iter()
            .filter_map(|turn| match turn {
                Ok(turn) => Some(self.taken_over(session, turn)),
                Err(error) => {
                    self.metrics.record_unreadable(UNREADABLE_KIND);
                    tracing::error!(kind = UNREADABLE_KIND, %error, "a turn taken over cannot be read: it is not worked");
                    None
                }
            })
            .collect()
    }

    /// The takeover script on one conversation: ms until its first lease runs out (-1
    /// with no turn open), and the turns it took.
    async fn take_over(&self, session: &SessionId) -> Result<(i64, Vec<String>), StoreError> {
        let tokens: Vec<String> = (0..TAKE_AT_MOST).map(|_| self.new_token()).collect();
        let conversation = self.layout.conversation(session);
        let reply = self
            .call("take_over", |mut connection| {
                let mut invocation = self.scripts.take_over.prepare_invoke();
                invocation.key(&conversation);
                for token in &tokens {
                    invocation.arg(token);
                }
                invocation.arg(self.lease.as_millis() as u64);
                async move { invocation.invoke_async::<Value>(&mut connection).await }
            })
            .await?;
        let unreadable = || {
            self.metrics.record_unreadable(UNREADABLE_KIND);
            tracing::error!(kind = UNREADABLE_KIND, error = %UnreadableTakeover::Shape, "a takeover's answer cannot be read");
            StoreError::Corrupt(UnreadableTakeover::Shape.to_string())
        };
        let Value::Array(answer) = reply else {
            return Err(unreadable());
        };
        match answer.as_slice() {
            [Value::Int(soonest), Value::Array(turns)] => {
                let turns = turns
                    .iter()
                    .map(super::text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| unreadable())?;
                Ok((*soonest, turns))
            }
            _ => Err(unreadable()),
        }
    }

    /// The turn as the layer above finishes it, held by this instance.
    fn taken_over(self: &Arc<Self>, session: SessionId, taken: TakenTurn) -> TakenOver {
        let answer = Stored::from_text(taken.answer.as_str().into());
        // The count is the record script's; one it cannot have written is said, and
        // the answer sent from the start (as before any count was recorded).
        let sent = taken.sent.unwrap_or_else(|| {
            self.metrics.record_unreadable("sent");
            tracing::error!("a taken-over turn's count of messages sent cannot be read: its answer is sent from the start");
            0
        });
        TakenOver {
            ticket: Ticket {
                session,
                key: self.layout.message_of(&session, &taken.message_key),
                limited: limited_of(taken.limited, taken.tell),
                held: Held::Shared(Box::new(SharedTicket::new(
                    Arc::clone(self),
                    &session,
                    taken.message_key,
                    taken.seq,
                    taken.token,
                    false,
                ))),
            },
            turn: Stored::from_text(taken.turn.as_str().into()),
            // The message after those accepted was being sent, or about to be.
            sending: answer.is_some().then_some(sent),
            answer,
            sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seq: &str, message_key: &str, sent: &str) -> Vec<String> {
        [
            seq,
            "owner-7",
            message_key,
            r#"{"v":1}"#,
            "",
            sent,
            "2",
            "1",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn names_each_of_the_eight_values() {
        let reply = values("12", "P:{s}:m:AC1:SM1", "3");
        let turn = TakenTurn::parse(&reply).unwrap();
        assert_eq!(turn.seq, 12);
        assert_eq!(turn.token, "owner-7");
        assert_eq!(turn.message_key, "P:{s}:m:AC1:SM1");
        assert_eq!(turn.turn, r#"{"v":1}"#);
        assert_eq!(turn.answer, "");
        assert_eq!(turn.sent, Some(3));
        assert_eq!((turn.limited, turn.tell), (2, 1));
    }

    #[test]
    fn an_unreadable_count_is_none_not_an_error() {
        let turn = TakenTurn::parse(&values("12", "", "x")).unwrap();
        assert_eq!(turn.sent, None);
    }

    #[test]
    fn a_turn_without_a_number_is_an_error() {
        assert_eq!(
            TakenTurn::parse(&values("twelve", "", "0")),
            Err(UnreadableTakeover::Seq)
        );
    }

    #[test]
    fn values_that_make_no_whole_turn_are_an_error_after_the_whole_ones() {
        let mut reply = values("12", "", "0");
        reply.extend(["13".to_owned(), "over".to_owned()]);
        let turns = TakenTurn::all(&reply);
        assert_eq!(turns.len(), 2);
        assert!(turns[0].is_ok());
        assert_eq!(turns[1], Err(UnreadableTakeover::Length(10)));
        assert!(TakenTurn::all(&[]).is_empty());
    }
}
