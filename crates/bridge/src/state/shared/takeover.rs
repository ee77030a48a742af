//! Finding the turns whose lease ran out (their instance died, or stopped renewing)
//! and claiming them, each with a new fencing token, in one script; then reading what
//! the script answered as [`TakenTurn`]s, so that the layer above finishes them.

use super::{limited_of, SharedState, SharedTicket};
use crate::session::SessionId;
use crate::state::{Held, MessageKey, Stored, TakenOver, Ticket};
use std::sync::Arc;

/// At most this many expired turns taken over in one sweep.
const TAKE_AT_MOST: usize = 16;

/// How many values the takeover script answers per turn (`scripts::TAKE_OVER`).
const VALUES_PER_TURN: usize = 8;

/// The kind under which an unreadable takeover answer is counted
/// (`state_records_unreadable_total{kind}`).
const UNREADABLE_KIND: &str = "taken_over";

/// One turn as the takeover script answers it, its eight values named.
#[derive(Debug, PartialEq, Eq)]
struct TakenTurn {
    /// `P:t:{session}:{seq}`, as the store names the turn.
    turn_key: String,
    session: SessionId,
    seq: u64,
    /// The fencing token this instance now holds the turn by.
    token: String,
    /// `P:m:{AccountSid}:{MessageSid}`, or empty for a turn of no message.
    message_key: String,
    /// The message, when the turn had one.
    message: Option<MessageKey>,
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
    #[error("a taken-over turn's key is not a turn of this store")]
    TurnKey,
    #[error("a taken-over turn's key has no readable session")]
    Session,
    #[error("a taken-over turn's key has no readable turn number")]
    Seq,
}

impl TakenTurn {
    /// Reads the script's whole answer: the turns it took, each as read, and an
    /// error for values left over that make no turn.
    fn all(reply: &[String], prefix: &str) -> Vec<Result<TakenTurn, UnreadableTakeover>> {
        let turns = reply.chunks_exact(VALUES_PER_TURN);
        let left_over =
            (!turns.remainder().is_empty()).then_some(Err(UnreadableTakeover::Length(reply.len())));
        turns
            .map(|values| TakenTurn::parse(values, prefix))
            .chain(left_over)
            .collect()
    }

    /// One turn's eight values, in the script's order: turn key, token, message key,
    /// turn, answer, sent, limited, tell. `prefix` is `STATE_PREFIX`.
    fn parse(values: &[String], prefix: &str) -> Result<TakenTurn, UnreadableTakeover> {
        let [turn_key, token, message_key, turn, answer, sent, limited, tell] = values else {
            return Err(UnreadableTakeover::Length(values.len()));
        };
        let (session, seq) = turn_key
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(":t:"))
            .and_then(|rest| rest.rsplit_once(':'))
            .ok_or(UnreadableTakeover::TurnKey)?;
        let session = SessionId::parse(session).ok_or(UnreadableTakeover::Session)?;
        let seq = seq.parse().map_err(|_| UnreadableTakeover::Seq)?;
        let message = message_key
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(":m:"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(account_sid, message_sid)| MessageKey {
                account_sid: account_sid.to_owned(),
                message_sid: message_sid.to_owned(),
            });
        Ok(TakenTurn {
            turn_key: turn_key.clone(),
            session,
            seq,
            token: token.clone(),
            message_key: message_key.clone(),
            message,
            turn: turn.clone(),
            answer: answer.clone(),
            sent: sent.parse().ok(),
            limited: limited.parse().unwrap_or(0),
            tell: tell.parse().unwrap_or(0),
        })
    }
}

impl SharedState {
    pub(in crate::state) async fn take_over_expired(self: &Arc<Self>) -> Vec<TakenOver> {
        let tokens: Vec<String> = (0..TAKE_AT_MOST).map(|_| self.new_token()).collect();
        let taken = self
            .call("take_over", |mut connection| {
                let mut invocation = self.scripts.take_over.prepare_invoke();
                invocation.key(self.key(&["leases"]));
                for token in &tokens {
                    invocation.arg(token);
                }
                invocation.arg(self.lease.as_millis() as u64);
                async move {
                    invocation
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                }
            })
            .await
            .unwrap_or_default();
        TakenTurn::all(&taken, &self.prefix)
            .into_iter()
            .filter_map(|turn| match turn {
                Ok(turn) => Some(self.taken_over(turn)),
                Err(error) => {
                    self.metrics.record_unreadable(UNREADABLE_KIND);
                    tracing::error!(kind = UNREADABLE_KIND, %error, "a turn taken over cannot be read: it is not worked");
                    None
                }
            })
            .collect()
    }

    /// The turn as the layer above finishes it, held by this instance.
    fn taken_over(self: &Arc<Self>, taken: TakenTurn) -> TakenOver {
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
                session: taken.session,
                key: taken.message,
                limited: limited_of(taken.limited, taken.tell),
                held: Held::Shared(Box::new(SharedTicket::new(
                    Arc::clone(self),
                    &taken.session,
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

    const SESSION: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

    fn values(turn_key: &str, message_key: &str, sent: &str) -> Vec<String> {
        [
            turn_key,
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

    fn turn_key() -> String {
        format!("P:t:{SESSION}:12")
    }

    #[test]
    fn names_each_of_the_eight_values() {
        let reply = values(&turn_key(), "P:m:AC1:SM1", "3");
        let turn = TakenTurn::parse(&reply, "P").unwrap();
        assert_eq!(turn.turn_key, turn_key());
        assert_eq!(turn.session.as_str(), SESSION);
        assert_eq!(turn.seq, 12);
        assert_eq!(turn.token, "owner-7");
        assert_eq!(turn.message_key, "P:m:AC1:SM1");
        assert_eq!(
            turn.message,
            Some(MessageKey {
                account_sid: "AC1".into(),
                message_sid: "SM1".into(),
            })
        );
        assert_eq!(turn.turn, r#"{"v":1}"#);
        assert_eq!(turn.answer, "");
        assert_eq!(turn.sent, Some(3));
        assert_eq!((turn.limited, turn.tell), (2, 1));
    }

    #[test]
    fn a_turn_of_no_message_has_no_message_key() {
        let turn = TakenTurn::parse(&values(&turn_key(), "", "0"), "P").unwrap();
        assert_eq!(turn.message, None);
    }

    #[test]
    fn an_unreadable_count_is_none_not_an_error() {
        let turn = TakenTurn::parse(&values(&turn_key(), "", "x"), "P").unwrap();
        assert_eq!(turn.sent, None);
    }

    #[test]
    fn a_key_outside_the_store_or_without_a_number_is_an_error() {
        let parse = |key: &str| TakenTurn::parse(&values(key, "", "0"), "P");
        assert_eq!(
            parse(&format!("Q:t:{SESSION}:12")),
            Err(UnreadableTakeover::TurnKey)
        );
        assert_eq!(parse("P:t:short:12"), Err(UnreadableTakeover::Session));
        assert_eq!(
            parse(&format!("P:t:{SESSION}:twelve")),
            Err(UnreadableTakeover::Seq)
        );
    }

    #[test]
    fn values_that_make_no_whole_turn_are_an_error_after_the_whole_ones() {
        let mut reply = values(&turn_key(), "", "0");
        reply.extend(["P:t:left".to_owned(), "over".to_owned()]);
        let turns = TakenTurn::all(&reply, "P");
        assert_eq!(turns.len(), 2);
        assert!(turns[0].is_ok());
        assert_eq!(turns[1], Err(UnreadableTakeover::Length(10)));
        assert!(TakenTurn::all(&[], "P").is_empty());
    }
}
