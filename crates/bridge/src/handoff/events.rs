//! The events posted to the hand-over destination. Each is a JSON object with at least
//! `type`, `conversation` (the id the human side uses in `/handoff/{conversation}/…`)
//! and `timestamp`; README shows one of each.

use super::{EndReason, Line};
use crate::session::SessionId;
use crate::twilio::webhook::IncomingMessage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// What an event says happened: its `type`, as the human side reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "handoff.started")]
    HandoffStarted,
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "handoff.ended")]
    HandoffEnded,
    /// The person was erased on request (`POST /privacy/erase`): the human side
    /// forgets what it keeps under the conversation.
    #[serde(rename = "person.erased")]
    PersonErased,
}

impl EventKind {
    /// The event's `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HandoffStarted => "handoff.started",
            EventKind::MessageReceived => "message.received",
            EventKind::HandoffEnded => "handoff.ended",
            EventKind::PersonErased => "person.erased",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, with the id it keeps across retries (`webhook-id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    pub body: Value,
}

impl Event {
    fn new(
        kind: EventKind,
        session: &SessionId,
        unique: &str,
        mut fields: Map<String, Value>,
    ) -> Self {
        let mut hash = Sha256::new();
        for part in [kind.as_str(), session.as_str(), unique] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let id: String = hash
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut body = Map::new();
        body.insert("type".into(), json!(kind.as_str()));
        body.insert("conversation".into(), json!(session.as_str()));
        body.insert(
            "timestamp".into(),
            json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        );
        body.append(&mut fields);
        Self {
            id: format!("msg_{id}"),
            kind,
            body: Value::Object(body),
        }
    }

    /// `handoff.started`: the agent's metadata, the recent turns, and the person's
    /// address only when asked for (`HANDOFF_INCLUDE_ADDRESS`).
    pub fn started(
        session: &SessionId,
        unique: &str,
        channel: &str,
        trigger: &str,
        metadata: Map<String, Value>,
        history: &[Line],
        address: Option<&str>,
    ) -> Self {
        let mut fields = Map::new();
        fields.insert("channel".into(), json!(channel));
        fields.insert("trigger".into(), json!(trigger));
        fields.insert("metadata".into(), Value::Object(metadata));
        fields.insert("history".into(), json!(history));
        if let Some(address) = address {
            fields.insert("address".into(), json!(address));
        }
        Self::new(EventKind::HandoffStarted, session, unique, fields)
    }

    /// `message.received`: what the person wrote, sent or shared.
    pub fn received(session: &SessionId, message: &IncomingMessage) -> Self {
        let mut content = Map::new();
        content.insert("text".into(), json!(message.body));
        content.insert(
            "media".into(),
            json!(message
                .media
                .iter()
                .map(|m| json!({"url": m.url, "content_type": m.content_type}))
                .collect::<Vec<_>>()),
        );
        if let Some(location) = &message.location {
            content.insert(
                "location".into(),
                json!({"latitude": location.latitude, "longitude": location.longitude,
                       "address": location.address, "label": location.label}),
            );
        }
        let mut fields = Map::new();
        fields.insert("channel".into(), json!(message.channel()));
        fields.insert("message".into(), Value::Object(content));
        let unique = message
            .message_sid
            .clone()
            .unwrap_or_else(|| humantime::format_rfc3339_nanos(SystemTime::now()).to_string());
        Self::new(EventKind::MessageReceived, session, &unique, fields)
    }

    /// `handoff.ended`, and why.
    pub fn ended(session: &SessionId, reason: EndReason) -> Self {
        let mut fields = Map::new();
        fields.insert("reason".into(), json!(reason.label()));
        let unique = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        Self::new(EventKind::HandoffEnded, session, &unique, fields)
    }
}

impl Event {
    /// `person.erased`: what the bridge removed of the conversation, by kind. Carries
    /// the conversation's id, never the number.
    pub fn erased(session: &SessionId, removed: &std::collections::BTreeMap<String, u64>) -> Self {
        let mut fields = Map::new();
        fields.insert("removed".into(), json!(removed));
        let unique = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        Self::new(EventKind::PersonErased, session, &unique, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_type_conversation_and_a_stable_id() {
        let session = SessionId::for_tests("+1", "+2");
        let one = Event::started(&session, "SM1", "sms", "agent", Map::new(), &[], None);
        let again = Event::started(&session, "SM1", "sms", "agent", Map::new(), &[], None);
        assert_eq!(one.id, again.id);
        assert!(one.id.starts_with("msg_"));
        assert_eq!(one.body["type"], "handoff.started");
        assert_eq!(one.body["conversation"], session.as_str());
        assert!(one.body.get("address").is_none(), "no address unless asked");
        let other = Event::started(&session, "SM2", "sms", "agent", Map::new(), &[], None);
        assert_ne!(one.id, other.id);
        let ended = Event::ended(&session, EndReason::Expired);
        assert_eq!(ended.body["reason"], "expired");
        assert_eq!(ended.kind, EventKind::HandoffEnded);
    }

    #[test]
    fn an_erasure_names_the_conversation_and_what_went_never_the_number() {
        let session = SessionId::for_tests("+15551230001", "+2");
        let removed = std::collections::BTreeMap::from([("pending_menus".to_owned(), 1)]);
        let erased = Event::erased(&session, &removed);
        assert_eq!(erased.body["type"], "person.erased");
        assert_eq!(erased.body["conversation"], session.as_str());
        assert_eq!(erased.body["removed"]["pending_menus"], 1);
        assert!(!erased.body.to_string().contains("5551230001"));
    }

    #[test]
    fn kinds_are_stored_as_their_wire_type() {
        let session = SessionId::for_tests("+1", "+2");
        let ended = Event::ended(&session, EndReason::Desk);
        let stored = serde_json::to_value(&ended).unwrap();
        assert_eq!(stored["kind"], "handoff.ended");
        let read: Event = serde_json::from_value(stored).unwrap();
        assert_eq!(read, ended);
    }
}
