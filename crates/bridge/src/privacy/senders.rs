//! The senders of ours that people wrote to or were written from, by account: what an
//! erasure of "every sender" looks through. A conversation's id is a keyed hash of
//! (account, person, sender), so the person's conversations are found by computing the
//! id for each sender the bridge knows: those of the configuration (the routes' numbers
//! and Messaging Services, `TWILIO_MESSAGING_SERVICE_SID`), and those seen here.
//!
//! A sender is remembered the first time this process sees it (a verified webhook's
//! `To` and `MessagingServiceSid`, an outbound request's sender): one write to the store
//! per sender and process, nothing on a webhook's way after that. The set holds our own
//! numbers, never a person's. What it cannot find: a sender seen only before erasure
//! was on (`PRIVACY_TOKEN` set), by a bridge of an earlier version, or more than
//! [`KEPT_FOR`] ago by every instance.

use crate::state::{Index, StateStore};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// How long the store keeps the set after a sender was last added: past the longest
/// record about a person (an opt-out, a year).
pub const KEPT_FOR: Duration = Duration::from_secs(400 * 24 * 3600);

/// The senders seen, as `account|sender` members, under one id.
const SEEN: Index = Index::new("senders", KEPT_FOR);
const SEEN_ID: &str = "senders";

/// At most this many senders remembered in process: a bridge serves a few numbers; a
/// flood of signed webhooks to new ones does not grow memory past this.
const AT_MOST: usize = 10_000;

/// An account and one of its senders, as Twilio writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SenderOf {
    pub account_sid: String,
    pub sender: String,
}

/// The senders seen by this process, and in the store by every instance.
pub struct Senders {
    state: StateStore,
    known: Mutex<HashSet<SenderOf>>,
}

impl Senders {
    pub fn new(state: StateStore) -> Self {
        Self {
            state,
            known: Mutex::default(),
        }
    }

    /// `sender` of `account_sid` wrote or was written from: remembered in the store the
    /// first time this process sees it.
    pub async fn seen(&self, account_sid: &str, sender: &str) {
        if sender.is_empty() || sender.contains('|') || account_sid.contains('|') {
            return;
        }
        let pair = SenderOf {
            account_sid: account_sid.to_owned(),
            sender: sender.to_owned(),
        };
        let new = {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            known.len() < AT_MOST && known.insert(pair)
        };
        if new {
            let member = format!("{account_sid}|{sender}");
            self.state.add_to(&SEEN, SEEN_ID, &member).await;
        }
    }

    /// Every sender seen, here or by any instance that shares the store.
    pub async fn all(&self) -> Vec<SenderOf> {
        let mut all: HashSet<SenderOf> =
            self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for member in self.state.members(&SEEN, SEEN_ID).await {
            if let Some((account_sid, sender)) = member.split_once('|') {
                all.insert(SenderOf {
                    account_sid: account_sid.to_owned(),
                    sender: sender.to_owned(),
                });
            }
        }
        let mut all: Vec<SenderOf> = all.into_iter().collect();
        all.sort();
        all
    }
}
