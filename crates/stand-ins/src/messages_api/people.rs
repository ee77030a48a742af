//! What Twilio knows of the people it carries messages from: when each last wrote to
//! each sender (WhatsApp's 24-hour customer service window) and who sent STOP to whom
//! (SMS opt-outs). Twilio learns both from the messages it carries to a webhook; the
//! stand-in carries none, so it is told of each one by the terminal phone or a test
//! (`POST /stand-in/Inbound`, [`super::MessagesEmulator::person_wrote`]).

use super::limits::{OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, WHATSAPP_SESSION_WINDOW_SECS};
use std::collections::{HashMap, HashSet};

/// A message a person sent to one of the account's senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The person (`+E164` or `whatsapp:+E164`).
    pub from: String,
    /// The sender written to.
    pub to: String,
    /// The Messaging Service the sender belongs to, when it is in one.
    pub messaging_service_sid: Option<String>,
    pub body: String,
}

/// What a message means for the person's subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    OptOut,
    OptIn,
}

/// Twilio acts on a message that is one keyword alone, in any case, spaces around it.
fn keyword(body: &str) -> Option<Keyword> {
    let word = body.trim().to_ascii_uppercase();
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptIn)
    } else {
        None
    }
}

/// The people's last messages and opt-outs, each keyed by (person, sender or
/// Messaging Service).
#[derive(Debug, Default)]
pub(super) struct People {
    last_wrote: HashMap<(String, String), u64>,
    opted_out: HashSet<(String, String)>,
}

impl People {
    /// `message` arrived at `at` (seconds since the epoch).
    pub fn wrote(&mut self, message: &Inbound, at: u64) {
        let senders = std::iter::once(&message.to).chain(&message.messaging_service_sid);
        // Twilio's STOP filtering is for SMS and MMS; on WhatsApp opting out is the
        // business's to handle.
        let keyword = match message.from.starts_with("whatsapp:") {
            true => None,
            false => keyword(&message.body),
        };
        for sender in senders {
            let key = (message.from.clone(), sender.clone());
            match keyword {
                Some(Keyword::OptOut) => {
                    self.opted_out.insert(key.clone());
                }
                Some(Keyword::OptIn) => {
                    self.opted_out.remove(&key);
                }
                None => {}
            }
            self.last_wrote.insert(key, at);
        }
    }

    /// Whether `person` wrote to `sender` (a number or a Messaging Service) within the
    /// 24 hours before `at`.
    pub fn in_session(&self, person: &str, sender: &str, at: u64) -> bool {
        self.last_wrote
            .get(&(person.to_owned(), sender.to_owned()))
            .is_some_and(|wrote| at.saturating_sub(*wrote) < WHATSAPP_SESSION_WINDOW_SECS)
    }

    /// Whether `person` opted out of `sender` and has not opted in again.
    pub fn opted_out(&self, person: &str, sender: &str) -> bool {
        self.opted_out
            .contains(&(person.to_owned(), sender.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(from: &str, to: &str, service: Option<&str>, body: &str) -> Inbound {
        Inbound {
            from: from.into(),
            to: to.into(),
            messaging_service_sid: service.map(str::to_owned),
            body: body.into(),
        }
    }

    #[test]
    fn the_window_lasts_24_hours_from_the_last_message_to_that_sender() {
        let mut people = People::default();
        let (person, sender) = ("whatsapp:+15550001111", "whatsapp:+14155238886");
        assert!(!people.in_session(person, sender, 1_000));
        people.wrote(&inbound(person, sender, None, "hi"), 1_000);
        assert!(people.in_session(person, sender, 1_000));
        assert!(people.in_session(person, sender, 1_000 + 24 * 3600 - 1));
        assert!(!people.in_session(person, sender, 1_000 + 24 * 3600));
        assert!(!people.in_session(person, "whatsapp:+14155230000", 1_000));
        assert!(!people.in_session("whatsapp:+15550002222", sender, 1_000));
        // A new message opens it again.
        people.wrote(&inbound(person, sender, None, "again"), 200_000);
        assert!(people.in_session(person, sender, 200_001));
    }

    #[test]
    fn stop_and_start_per_sender_and_service() {
        let mut people = People::default();
        let (person, ours, service) = ("+15550001111", "+15557770000", "MG0123");
        people.wrote(&inbound(person, ours, Some(service), " stop "), 1);
        assert!(people.opted_out(person, ours));
        assert!(people.opted_out(person, service));
        assert!(!people.opted_out(person, "+15557770001"));
        people.wrote(&inbound(person, ours, Some(service), "please stop"), 2);
        assert!(people.opted_out(person, ours), "not a keyword alone");
        people.wrote(&inbound(person, ours, Some(service), "Start"), 3);
        assert!(!people.opted_out(person, ours));
        assert!(!people.opted_out(person, service));
        for word in [
            "UNSUBSCRIBE",
            "cancel",
            "End",
            "quit",
            "STOPALL",
            "revoke",
            "optout",
        ] {
            people.wrote(&inbound(person, ours, None, word), 4);
            assert!(people.opted_out(person, ours), "{word}");
            people.wrote(&inbound(person, ours, None, "unstop"), 5);
            assert!(!people.opted_out(person, ours));
        }
    }

    #[test]
    fn whatsapp_stop_is_the_businesss_to_handle() {
        let mut people = People::default();
        let (person, ours) = ("whatsapp:+15550001111", "whatsapp:+14155238886");
        people.wrote(&inbound(person, ours, None, "STOP"), 1);
        assert!(!people.opted_out(person, ours));
        assert!(people.in_session(person, ours, 1));
    }
}
