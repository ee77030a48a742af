//! What the bridge remembers of an outbound request: its record (kind, how far it got,
//! the Message SIDs, why it stopped), each message's status as Twilio's callbacks
//! report it, and the idempotency keys. All in the state store, so that any instance
//! answers `GET /outbound/{id}` and a key used at one instance is known at the others.

use crate::state::Slot;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long an outbound request's record and its messages' statuses are kept: long
/// enough for a delivery report that comes days later (Twilio retries for up to 72 h
/// on some carriers).
pub const KEPT_FOR: Duration = Duration::from_secs(3 * 24 * 3600);

/// The requests, by id.
pub const REQUESTS: Slot<OutboundRecord> = Slot::new("outbound", KEPT_FOR);

/// What Twilio's status callbacks said of each message, by (AccountSid, MessageSid).
pub const MESSAGE_STATUSES: Slot<MessageStatus> = Slot::new("outbound_status", KEPT_FOR);

/// The requests made with a key, by the key's hash, for a day (as Stripe keeps them).
pub const KEYS: Slot<KeyUse> = Slot::new("outbound_key", crate::handoff::idempotency::KEPT_FOR);

/// Where an outbound request stands, as `GET /outbound/{id}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Undelivered,
    Refused,
}

impl Status {
    /// The status of a message in Twilio's callback (`MessageStatus`), when it is one
    /// the answer reports; `queued`, `sending`, `accepted` and the like change nothing.
    pub fn of_callback(status: &str) -> Option<Self> {
        match status {
            "sent" => Some(Status::Sent),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            "failed" => Some(Status::Failed),
            "undelivered" => Some(Status::Undelivered),
            _ => None,
        }
    }

    /// How far a message got: a request is as far as its least advanced message.
    fn progress(self) -> u8 {
        match self {
            Status::Queued => 0,
            Status::Sent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            // Final, whatever the others did: reported first.
            Status::Failed | Status::Undelivered | Status::Refused => 4,
        }
    }
}

/// The record of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRecord {
    /// `event`, `text` or `template`.
    pub kind: String,
    /// queued, sent (Twilio took the messages), failed (it took none), or refused.
    pub status: Status,
    /// The account that sent, whose callbacks report on the messages.
    pub account_sid: String,
    #[serde(default)]
    pub message_sids: Vec<String>,
    #[serde(default)]
    pub error_code: Option<u32>,
    /// Why it was refused or failed: one of the refusals' codes, or a line.
    #[serde(default)]
    pub reason: Option<String>,
}

impl crate::state::Record for OutboundRecord {
    const KIND: &'static str = "outbound";
}

/// A message's status, as a callback reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStatus {
    pub status: Status,
    #[serde(default)]
    pub error_code: Option<u32>,
}

impl crate::state::Record for MessageStatus {
    const KIND: &'static str = "outbound_status";
}

/// A request made with an idempotency key: which one, and what it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUse {
    pub id: String,
    pub fingerprint: String,
}

impl crate::state::Record for KeyUse {
    const KIND: &'static str = "outbound_key";
}

/// Where the status of `message_sid`, sent by `account_sid`, is kept: only the sending
/// account's signed callback reaches it.
pub fn message_key(account_sid: &str, message_sid: &str) -> String {
    format!("{account_sid}:{message_sid}")
}

/// The request's status as a whole: its own, until Twilio took its messages; then the
/// least advanced of its messages (one that failed first), with its error code.
pub fn overall(
    record: &OutboundRecord,
    reported: &[Option<MessageStatus>],
) -> (Status, Option<u32>) {
    if record.status != Status::Sent || reported.is_empty() {
        return (record.status, record.error_code);
    }
    let statuses = reported.iter().map(|message| {
        message.unwrap_or(MessageStatus {
            status: Status::Sent,
            error_code: None,
        })
    });
    let failed = statuses
        .clone()
        .find(|message| message.status.progress() == 4);
    let least = statuses.min_by_key(|message| message.status.progress());
    match failed.or(least) {
        Some(message) => (message.status, message.error_code.or(record.error_code)),
        None => (record.status, record.error_code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(sids: usize) -> OutboundRecord {
        OutboundRecord {
            kind: "text".into(),
            status: Status::Sent,
            account_sid: "AC1".into(),
            message_sids: (0..sids).map(|i| format!("SM{i}")).collect(),
            error_code: None,
            reason: None,
        }
    }

    fn reported(status: Status, error_code: Option<u32>) -> Option<MessageStatus> {
        Some(MessageStatus { status, error_code })
    }

    #[test]
    fn a_request_is_as_far_as_its_least_advanced_message() {
        let record = sent(2);
        assert_eq!(overall(&record, &[None, None]), (Status::Sent, None));
        assert_eq!(
            overall(
                &record,
                &[
                    reported(Status::Read, None),
                    reported(Status::Delivered, None)
                ]
            ),
            (Status::Delivered, None)
        );
        assert_eq!(
            overall(&record, &[reported(Status::Read, None), None]),
            (Status::Sent, None)
        );
        assert_eq!(
            overall(
                &record,
                &[
                    reported(Status::Delivered, None),
                    reported(Status::Undelivered, Some(63016))
                ]
            ),
            (Status::Undelivered, Some(63016))
        );
        let refused = OutboundRecord {
            status: Status::Refused,
            ..sent(0)
        };
        assert_eq!(overall(&refused, &[]), (Status::Refused, None));
    }

    #[test]
    fn only_reported_statuses_count() {
        assert_eq!(Status::of_callback("delivered"), Some(Status::Delivered));
        assert_eq!(Status::of_callback("sending"), None);
        assert_eq!(Status::of_callback("queued"), None);
    }
}
