//! Hand-over to people: when the agent (or the person) asks for a human, the
//! conversation's messages go to a helpdesk (`HANDOFF_URL`) as signed events, and the
//! helpdesk answers through the bridge's `/handoff/…` API until it ends the hand-over.
//!
//! What a conversation is doing is a record in the state store ([`Record`]), so every
//! instance routes its messages the same way. Events are delivered inside the turn of
//! the message they are about: turns of one conversation run one at a time, in order,
//! across instances, so the events reach the helpdesk in order too.

mod destination;
pub mod events;
pub mod idempotency;

use crate::config::HandoffSettings;
use crate::metrics::Metrics;
use crate::outbox::Recipient;
use crate::session::SessionId;
use crate::state::{Slot, StateStore};
pub use destination::{Delivery, Destination, SetupError};
pub use events::Event;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The event the agent gets before the first message after a hand-over
/// (`HANDOFF_RETURN_EVENT=true`).
pub const RETURN_EVENT: &str = "handoff_ended";

/// The schedule of hand-overs whose TTL may run out.
pub const SCHEDULE: &str = "handoffs";

/// Text kept per line of the recent turns.
const LINE_CHARS: usize = 500;

/// A conversation's hand-over state and its recent turns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// With a person, since when and answered where.
    #[serde(default)]
    pub active: Option<Active>,
    /// The agent gets [`RETURN_EVENT`] before the next message.
    #[serde(default)]
    pub returning: bool,
    /// The last turns, oldest first, for `handoff.started`.
    #[serde(default)]
    pub recent: VecDeque<Line>,
    /// A `handoff.ended` the sweeper made and the destination has not taken yet: it is
    /// posted again, with the same `webhook-id`, until it is taken or refused for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed: Option<Box<Event>>,
}

/// A hand-over in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Active {
    /// Unix seconds.
    pub started_at: u64,
    pub last_activity: u64,
    /// Who the human side's replies go to, and from where.
    pub recipient: StoredRecipient,
    pub channel: String,
    /// The person's messages counted against `HANDOFF_RATE_LIMIT` this minute.
    #[serde(default)]
    pub pace: Pace,
}

/// Messages in one minute (a fixed window, in Unix minutes), and whether the person
/// was told to slow down in it. Kept in the record, which only the conversation's
/// turns (one at a time, across instances) read and write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    pub minute: u64,
    pub count: u32,
    pub told: bool,
}

/// A message past the hand-over's rate limit; `tell`: the first in its minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooFast {
    pub tell: bool,
}

impl Pace {
    /// Counts a message at `now` (Unix seconds) against `limit` a minute.
    pub fn count(&mut self, now: u64, limit: u32) -> Result<(), TooFast> {
        let minute = now / 60;
        if minute != self.minute {
            *self = Pace {
                minute,
                count: 0,
                told: false,
            };
        }
        if self.count < limit {
            self.count += 1;
            return Ok(());
        }
        let tell = !self.told;
        self.told = true;
        Err(TooFast { tell })
    }
}

/// A [`Recipient`] as the record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRecipient {
    pub account_sid: String,
    pub messaging_service_sid: Option<String>,
    pub to: String,
    pub our_number: String,
    pub status_callback: String,
}

impl StoredRecipient {
    pub fn of(recipient: &Recipient) -> Self {
        Self {
            account_sid: recipient.account_sid.clone(),
            messaging_service_sid: recipient.messaging_service_sid.clone(),
            to: recipient.to.clone(),
            our_number: recipient.our_number.clone(),
            status_callback: recipient.status_callback.clone(),
        }
    }

    pub fn recipient(&self, message_sid: &str) -> Recipient {
        Recipient {
            account_sid: self.account_sid.clone(),
            messaging_service_sid: self.messaging_service_sid.clone(),
            to: self.to.clone(),
            our_number: self.our_number.clone(),
            message_sid: message_sid.to_owned(),
            status_callback: self.status_callback.clone(),
        }
    }
}

/// Who said a line of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Person,
    Agent,
    Human,
}

/// One line of the recent turns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub from: Speaker,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// Unix seconds.
    pub at: u64,
}

impl crate::state::Record for Record {
    const KIND: &'static str = "handoff";
}

impl Record {
    /// Adds a line to the recent turns, keeping `keep` at most.
    pub fn remember(&mut self, from: Speaker, text: &str, media: &[String], keep: usize) {
        if keep == 0 || (text.trim().is_empty() && media.is_empty()) {
            return;
        }
        let text = match text.char_indices().nth(LINE_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_owned(),
        };
        self.recent.push_back(Line {
            from,
            text,
            media: media.to_vec(),
            at: now(),
        });
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}

/// A person who sent STOP, since when (Unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptedOut {
    pub since: u64,
}

impl crate::state::Record for OptedOut {
    const KIND: &'static str = "opted_out";
}

/// Opt-outs are remembered for a year, or until START: Twilio's own lasts until START,
/// and past this the human side's send is refused by Twilio (21610) instead.
pub const OPTED_OUT: Slot<OptedOut> = Slot::new("opted_out", Duration::from_secs(365 * 24 * 3600));

/// Why a hand-over ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The human side ended it.
    Desk,
    /// No activity for `HANDOFF_TTL`.
    Expired,
    /// The destination could not be reached.
    Unavailable,
    /// The person opted out (STOP): Twilio delivers nothing more to them.
    OptedOut,
}

impl EndReason {
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Desk => "desk",
            EndReason::Expired => "expired",
            EndReason::Unavailable => "unavailable",
            EndReason::OptedOut => "opted_out",
        }
    }
}

/// Hand-over at work: its settings, its record slot, and the destination.
pub struct Handoff {
    pub settings: HandoffSettings,
    pub destination: Destination,
    pub state: StateStore,
    pub metrics: Arc<Metrics>,
}

impl Handoff {
    pub fn new(
        settings: HandoffSettings,
        state: StateStore,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, destination::SetupError> {
        let destination = Destination::new(&settings, Arc::clone(&metrics))?;
        Ok(Arc::new(Self {
            settings,
            destination,
            state,
            metrics,
        }))
    }

    pub fn slot(&self) -> Slot<Record> {
        // Kept past the hand-over's own TTL, which is checked against its last
        // activity: an expired hand-over is ended (and said) when next seen.
        Slot::new("handoff", self.settings.ttl + Duration::from_secs(3600))
    }

    /// The conversation's record: the default when there is none; an error (logged
    /// and counted) when it cannot be read, so that it is not written over.
    pub async fn record(&self, session: &SessionId) -> Result<Record, crate::state::Unreadable> {
        Ok(self
            .state
            .get(&self.slot(), session)
            .await?
            .unwrap_or_default())
    }

    pub async fn save(&self, session: &SessionId, record: &Record) {
        self.state.set(&self.slot(), session, record).await;
    }

    /// Puts the hand-over of `session` in the schedule of those to look at when its TTL
    /// may have run out. Activity does not move it: when it comes due, the sweeper
    /// looks at the record and either ends the hand-over or schedules it again.
    pub async fn schedule_end(&self, session: &SessionId, active: &Active) {
        let at = active.last_activity + self.settings.ttl.as_secs();
        self.state.schedule(SCHEDULE, session.as_str(), at).await;
    }

    /// Whether the person opted out (STOP) and has not opted back in (START): Twilio
    /// would refuse every message to them (error 21610).
    pub async fn opted_out(&self, session: &SessionId) -> Result<bool, crate::state::Unreadable> {
        Ok(self.state.get(&OPTED_OUT, session).await?.is_some())
    }

    /// Remembers STOP, forgets it at START.
    pub async fn remember_opt_out(&self, session: &SessionId, stop: bool) {
        match stop {
            true => {
                let since = OptedOut { since: now() };
                self.state.set(&OPTED_OUT, session, &since).await;
            }
            false => self.state.remove(&OPTED_OUT, session).await,
        }
    }

    /// Takes `id` out of the schedule of hand-overs to end: their work is done.
    pub async fn unschedule(&self, session: &SessionId) {
        self.state.unschedule(SCHEDULE, session.as_str()).await;
    }

    /// Whether `active` has seen no activity for the TTL.
    pub fn expired(&self, active: &Active) -> bool {
        now().saturating_sub(active.last_activity) >= self.settings.ttl.as_secs()
    }

    /// Whether `text` is one of `HANDOFF_KEYWORDS`.
    pub fn is_keyword(&self, text: &str) -> bool {
        let text = text.trim().to_lowercase();
        !text.is_empty() && self.settings.keywords.contains(&text)
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bearer-token check: the digests are compared, so that the time taken says nothing
/// of the token, not even its length.
pub fn token_matches(expected: &str, authorization: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    let Some((scheme, given)) = authorization.and_then(|h| h.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (given, expected) = (
        Sha256::digest(given.trim().as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_turns_are_bounded_and_cut() {
        let mut record = Record::default();
        for i in 0..5 {
            record.remember(Speaker::Person, &format!("line {i}"), &[], 3);
        }
        record.remember(Speaker::Agent, " ", &[], 3);
        let texts: Vec<&str> = record.recent.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["line 2", "line 3", "line 4"]);
        record.remember(Speaker::Agent, &"é".repeat(600), &[], 3);
        assert_eq!(
            record.recent.back().map(|l| l.text.chars().count()),
            Some(LINE_CHARS + 1)
        );
    }

    #[test]
    fn the_pace_counts_a_minute_and_tells_once() {
        let mut pace = Pace::default();
        let minute = 1_800_000_000 / 60 * 60;
        assert_eq!(pace.count(minute, 2), Ok(()));
        assert_eq!(pace.count(minute + 1, 2), Ok(()));
        assert_eq!(pace.count(minute + 2, 2), Err(TooFast { tell: true }));
        assert_eq!(pace.count(minute + 59, 2), Err(TooFast { tell: false }));
        assert_eq!(pace.count(minute + 60, 2), Ok(()), "a new minute");
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(token_matches("s3cret-token", Some("Bearer s3cret-token")));
        assert!(token_matches("s3cret-token", Some("bearer s3cret-token")));
        assert!(!token_matches("s3cret-token", Some("Bearer s3cret-tokeN")));
        assert!(!token_matches("s3cret-token", Some("Bearer s3cret")));
        assert!(!token_matches("s3cret-token", Some("s3cret-token")));
        assert!(!token_matches("s3cret-token", None));
    }
}
