//! What the bridge knows of a person before writing to them first: whether they opted
//! out of a sender (STOP and its synonyms, until START), and when they last wrote (a
//! WhatsApp business may write freely only within 24 hours of that).
//!
//! Both are kept per person and sender, under the conversation's keyed id
//! ([`SessionId::for_conversation`]) with the sender being our number, or the
//! Messaging Service the person wrote through: no key holds a number. An opt-out is
//! the hand-over's own record ([`crate::handoff::OPTED_OUT`]), so that the human side
//! and `/outbound` refuse the same people.

use crate::handoff::{now, OptedOut, OPTED_OUT};
use crate::session::{SessionId, SessionKey};
use crate::state::{Slot, StateStore, Unreadable};
use crate::twilio::webhook::{IncomingMessage, OptOut};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// WhatsApp's customer service window: free-form messages only within this of the
/// person's last message.
pub const WHATSAPP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// When the person last wrote, by conversation: kept a little past the window it
/// decides.
const LAST_HEARD: Slot<LastHeard> = Slot::new("last_heard", Duration::from_secs(25 * 3600));

/// Twilio's default opt-out keywords, as its Advanced Opt-Out lists them: a message
/// that is exactly one of these (case aside) opts the person out of the sender.
const STOP_WORDS: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];

/// Twilio's default opt-in keywords.
const START_WORDS: [&str; 3] = ["START", "UNSTOP", "YES"];

/// When the person last wrote (Unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastHeard {
    at: u64,
}

impl crate::state::Record for LastHeard {
    const KIND: &'static str = "last_heard";
}

/// A person's consent, as a message changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    OptedOut,
    OptedIn,
}

/// What a message says of consent: Twilio's `OptOutType` when it sent one, else the
/// body being one of Twilio's keywords.
pub fn consent_of(message: &IncomingMessage) -> Option<Consent> {
    match message.opt_out {
        Some(OptOut::Stop) => return Some(Consent::OptedOut),
        Some(OptOut::Start) => return Some(Consent::OptedIn),
        Some(OptOut::Help) => return None,
        None => {}
    }
    let word = message.body.trim().to_ascii_uppercase();
    if STOP_WORDS.contains(&word.as_str()) {
        Some(Consent::OptedOut)
    } else if START_WORDS.contains(&word.as_str()) {
        Some(Consent::OptedIn)
    } else {
        None
    }
}

/// The opt-outs and the last-message clock, in the state store.
#[derive(Clone)]
pub struct Contacts {
    state: StateStore,
    key: SessionKey,
}

impl Contacts {
    pub fn new(state: StateStore, key: SessionKey) -> Self {
        Self { state, key }
    }

    /// The id a person (`person`, as Twilio writes it) and a sender (a number, or a
    /// Messaging Service's SID) are known by: for a number, the conversation's own.
    pub fn id(&self, account_sid: &str, person: &str, sender: &str) -> SessionId {
        SessionId::for_conversation(&self.key, account_sid, person, sender)
    }

    /// The id of `person` alone on `account_sid`: what is kept of them across
    /// senders is indexed under it ([`super::erase`]).
    pub fn person_id(&self, account_sid: &str, person: &str) -> SessionId {
        SessionId::for_person(&self.key, account_sid, person)
    }

    /// A message from the person: its time, and STOP or START, remembered for the number
    /// it was written to and for the Messaging Service it came through.
    pub async fn heard(&self, message: &IncomingMessage) {
        let mut ids = vec![self.id(&message.account_sid, &message.from, &message.to)];
        if let Some(service) = message
            .params
            .get("MessagingServiceSid")
            .filter(|sid| !sid.is_empty())
        {
            ids.push(self.id(&message.account_sid, &message.from, service));
        }
        let consent = consent_of(message);
        let heard = LastHeard { at: now() };
        for id in &ids {
            self.state.set(&LAST_HEARD, id, &heard).await;
            match consent {
                Some(Consent::OptedOut) => self.opt_out(id).await,
                Some(Consent::OptedIn) => self.state.remove(&OPTED_OUT, id).await,
                None => {}
            }
        }
    }

    /// Marks the person of `id` as opted out: they sent STOP, or Twilio refused a send
    /// to them with 21610.
    pub async fn opt_out(&self, id: &SessionId) {
        let since = OptedOut { since: now() };
        self.state.set(&OPTED_OUT, id, &since).await;
    }

    pub async fn opted_out(&self, id: &SessionId) -> Result<bool, Unreadable> {
        Ok(self.state.get(&OPTED_OUT, id).await?.is_some())
    }

    /// Whether the person of `id` wrote within WhatsApp's window.
    pub async fn in_window(&self, id: &SessionId) -> Result<bool, Unreadable> {
        let heard = self.state.get(&LAST_HEARD, id).await?;
        Ok(heard.is_some_and(|heard| now().saturating_sub(heard.at) < WHATSAPP_WINDOW.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::webhook::FormParams;

    fn message(body: &str, opt_out: Option<OptOut>) -> IncomingMessage {
        IncomingMessage {
            message_sid: None,
            account_sid: "AC1".into(),
            from: "+15551230001".into(),
            to: "+15557770000".into(),
            body: body.into(),
            media: Vec::new(),
            opt_out,
            tap: None,
            location: None,
            params: FormParams::from_pairs(Vec::new()),
        }
    }

    #[test]
    fn twilio_keywords_change_consent() {
        for word in [
            "stop",
            "STOPALL",
            " Unsubscribe ",
            "cancel",
            "END",
            "quit",
            "revoke",
            "optout",
        ] {
            assert_eq!(
                consent_of(&message(word, None)),
                Some(Consent::OptedOut),
                "{word}"
            );
        }
        for word in ["start", "UNSTOP", "yes"] {
            assert_eq!(
                consent_of(&message(word, None)),
                Some(Consent::OptedIn),
                "{word}"
            );
        }
        assert_eq!(consent_of(&message("please stop", None)), None);
        assert_eq!(
            consent_of(&message("arrêt", Some(OptOut::Stop))),
            Some(Consent::OptedOut)
        );
        assert_eq!(consent_of(&message("help", Some(OptOut::Help))), None);
    }
}
