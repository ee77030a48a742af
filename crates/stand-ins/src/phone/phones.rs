//! The phones on the page: each a number on SMS or WhatsApp that sends signed webhooks
//! (`chat::Phone`) and watches the Messages API stand-in for what is sent to it
//! (`chat::ApiInbox`), writing both into the page's log.

use super::log::Log;
use crate::chat::{self, ApiInbox, Outgoing, Phone, PhoneMenu, PhoneReply};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The channel a phone is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Whatsapp,
}

/// Where the phones send and read, and as which account.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The bridge's webhook URL, exactly as configured in Twilio.
    pub webhook_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The business's number the phones write to.
    pub our_number: String,
    /// The Messages API stand-in, where replies sent through the API are read back.
    pub api_url: Option<String>,
}

/// How often a phone looks for messages sent to it through the API.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The phones, their menus, and what the desk said lately.
pub struct Phones {
    wiring: Wiring,
    log: Arc<Log>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    phones: Vec<Arc<Phone>>,
    /// Per phone, the stand-in told of each message it sends (as Twilio knows of each
    /// message it carries: WhatsApp's 24-hour window, STOP and START).
    reporters: HashMap<usize, Arc<ApiInbox>>,
    /// Each message's buttons or list, by the message's key, to tap later.
    menus: HashMap<String, PhoneMenu>,
    /// Texts the desk sent and no phone received yet: a message with one of them is
    /// the human's, not the agent's.
    desk_said: Vec<String>,
    keys: u64,
}

/// Why a phone's request was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error("there is no phone {0}")]
    NoPhone(usize),
    #[error("that message has no choice {0}")]
    NoChoice(usize),
    #[error("{0}")]
    Invalid(&'static str),
}

impl Phones {
    pub fn new(wiring: Wiring, log: Arc<Log>) -> Arc<Self> {
        Arc::new(Self {
            wiring,
            log,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_key(&self) -> String {
        let mut inner = self.lock();
        inner.keys += 1;
        format!("m{}", inner.keys)
    }

    /// Adds a phone on `channel`, numbered after the last one; it starts watching the
    /// Messages API at once, so that a message the business starts reaches it too.
    pub fn add(self: &Arc<Self>, channel: Channel) -> anyhow::Result<usize> {
        let (index, number) = {
            let inner = self.lock();
            let index = inner.phones.len();
            (index, format!("+1555555{:04}", 100 + index))
        };
        let (from, to) = match channel {
            Channel::Sms => (number.clone(), self.wiring.our_number.clone()),
            Channel::Whatsapp => (
                chat::whatsapp(&number),
                chat::whatsapp(&self.wiring.our_number),
            ),
        };
        let phone = Arc::new(Phone::new(
            &self.wiring.webhook_url,
            &self.wiring.account_sid,
            &self.wiring.auth_token,
            &from,
            &to,
        )?);
        // One look-out for what is sent to the phone, one to report what it sends:
        // the look-out lives in its own task.
        let api_inbox = || {
            self.wiring
                .api_url
                .as_deref()
                .map(|url| {
                    ApiInbox::new(
                        url,
                        &self.wiring.account_sid,
                        &self.wiring.auth_token,
                        &from,
                    )
                })
                .transpose()
        };
        let (inbox, reporter) = (api_inbox()?, api_inbox()?);
        {
            let mut inner = self.lock();
            inner.phones.push(phone);
            if let Some(reporter) = reporter {
                inner.reporters.insert(index, Arc::new(reporter));
            }
        }
        self.log.push(json!({
            "kind": "phone", "phone": index, "number": number, "channel": channel,
        }));
        if let Some(inbox) = inbox {
            tokio::spawn(self.clone().watch(index, inbox));
        }
        Ok(index)
    }

    /// Shows each message sent to phone `index` through the API, as it arrives.
    async fn watch(self: Arc<Self>, index: usize, mut inbox: ApiInbox) {
        let mut failing = false;
        loop {
            match inbox.arrivals().await {
                Ok(arrivals) => {
                    failing = false;
                    for arrival in arrivals {
                        let author = self.author_of(&arrival.reply.body);
                        let key = self.next_key();
                        if let Some(menu) = &arrival.menu {
                            self.lock().menus.insert(key.clone(), menu.clone());
                        }
                        self.log.push(json!({
                            "kind": "message", "phone": index, "key": key, "author": author,
                            "body": arrival.reply.body, "media": arrival.reply.media,
                            "status": arrival.status, "choices": arrival.menu.as_ref().map(choices),
                        }));
                    }
                }
                Err(error) if !failing => {
                    failing = true;
                    self.notice(index, &format!("cannot read the Messages API: {error:#}"));
                }
                Err(_) => {}
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// `human` when the desk said `body` lately, else `agent`.
    fn author_of(&self, body: &str) -> &'static str {
        let mut inner = self.lock();
        match inner.desk_said.iter().position(|said| said == body) {
            Some(at) => {
                inner.desk_said.remove(at);
                "human"
            }
            None => "agent",
        }
    }

    /// The desk sent `text`: when it arrives at a phone, it is the human's.
    pub fn desk_said(&self, text: &str) {
        let mut inner = self.lock();
        if inner.desk_said.len() >= 100 {
            inner.desk_said.remove(0);
        }
        inner.desk_said.push(text.to_owned());
    }

    fn notice(&self, index: usize, text: &str) {
        self.log
            .push(json!({"kind": "notice", "phone": index, "text": text}));
    }

    /// The webhook of a tap on choice `choice` (from 0) of message `key`.
    pub fn tap(&self, key: &str, choice: usize) -> Result<(Outgoing, String), PhoneError> {
        let inner = self.lock();
        let menu = inner.menus.get(key).ok_or(PhoneError::NoChoice(choice))?;
        let title = menu
            .items
            .get(choice)
            .map(|item| item.title.clone())
            .ok_or(PhoneError::NoChoice(choice))?;
        let message = menu.tap(choice + 1).ok_or(PhoneError::NoChoice(choice))?;
        Ok((message, title))
    }

    /// Sends `message` from phone `index`, shown as `shown` (what the person sees of
    /// it), and shows what comes back in the webhook's answer.
    pub fn send(
        self: &Arc<Self>,
        index: usize,
        message: Outgoing,
        shown: Value,
    ) -> Result<(), PhoneError> {
        let phone = self
            .lock()
            .phones
            .get(index)
            .cloned()
            .ok_or(PhoneError::NoPhone(index))?;
        let mut event = json!({"kind": "message", "phone": index, "key": self.next_key(),
            "author": "person", "body": message.body, "media": message.media});
        if let (Value::Object(event), Value::Object(shown)) = (&mut event, shown) {
            event.extend(shown);
        }
        self.log.push(event);
        let phones = self.clone();
        tokio::spawn(async move { phones.deliver(index, &phone, &message).await });
        Ok(())
    }

    async fn deliver(&self, index: usize, phone: &Phone, message: &Outgoing) {
        let whatsapp = phone.from.starts_with("whatsapp:");
        let reporter = self.lock().reporters.get(&index).cloned();
        if let Some(reporter) = reporter {
            // Anywhere but the local stand-in there is nobody to tell: no failure.
            let _ = reporter.report(phone, message).await;
        }
        match phone.send(message).await {
            Ok(PhoneReply::Messages(replies)) if replies.is_empty() => {
                // The answer follows through the Messages API, which the phone
                // watches: on WhatsApp, the agent is "typing…" meanwhile.
                if whatsapp && self.wiring.api_url.is_some() {
                    self.log.push(json!({"kind": "typing", "phone": index}));
                }
            }
            Ok(PhoneReply::Messages(replies)) => {
                for reply in replies {
                    let key = self.next_key();
                    self.log.push(json!({
                        "kind": "message", "phone": index, "key": key, "author": "agent",
                        "body": reply.body, "media": reply.media, "status": "delivered",
                    }));
                }
            }
            Ok(PhoneReply::Refused { status, reason }) => {
                self.notice(index, &format!("refused with HTTP {status}: {reason}"))
            }
            Err(error) => self.notice(index, &format!("{error:#}")),
        }
    }
}

/// A menu as the page draws it.
fn choices(menu: &PhoneMenu) -> Value {
    json!({
        "list_button": menu.list_button,
        "items": menu.items.iter().map(|item| json!({
            "title": item.title, "description": item.description,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::MenuItem;

    fn phones() -> Arc<Phones> {
        let wiring = Wiring {
            webhook_url: "http://127.0.0.1:1/".into(),
            account_sid: "AC00000000000000000000000000000000".into(),
            auth_token: "token".into(),
            our_number: "+15555550199".into(),
            api_url: None,
        };
        Phones::new(wiring, Arc::new(Log::default()))
    }

    fn menu(list_button: Option<&str>) -> PhoneMenu {
        PhoneMenu {
            list_button: list_button.map(str::to_owned),
            items: ["Small", "Large"]
                .iter()
                .map(|title| MenuItem {
                    title: (*title).into(),
                    id: title.to_lowercase(),
                    description: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_tap_goes_back_as_twilio_sends_it() {
        let phones = phones();
        phones.lock().menus.insert("m1".into(), menu(None));
        phones.lock().menus.insert("m2".into(), menu(Some("Sizes")));
        let (button, title) = phones.tap("m1", 1).unwrap();
        assert_eq!(title, "Large");
        assert!(button
            .params
            .contains(&("ButtonPayload".into(), "large".into())));
        assert!(button
            .params
            .contains(&("ButtonText".into(), "Large".into())));
        let (item, _) = phones.tap("m2", 0).unwrap();
        assert!(item.params.contains(&("ListId".into(), "small".into())));
        assert_eq!(phones.tap("m1", 2).unwrap_err(), PhoneError::NoChoice(2));
        assert_eq!(phones.tap("m9", 0).unwrap_err(), PhoneError::NoChoice(0));
    }

    #[test]
    fn what_the_desk_said_arrives_as_the_humans_once() {
        let phones = phones();
        phones.desk_said("On its way");
        assert_eq!(phones.author_of("Welcome back"), "agent");
        assert_eq!(phones.author_of("On its way"), "human");
        assert_eq!(phones.author_of("On its way"), "agent");
    }

    #[tokio::test]
    async fn phones_are_numbered_and_shown_on_their_channel() {
        let phones = phones();
        assert_eq!(phones.add(Channel::Sms).unwrap(), 0);
        assert_eq!(phones.add(Channel::Whatsapp).unwrap(), 1);
        let events = phones.log.all();
        assert_eq!(events[1]["number"], "+15555550101");
        assert_eq!(events[1]["channel"], "whatsapp");
        assert_eq!(
            phones.lock().phones[1].from,
            "whatsapp:+15555550101".to_owned()
        );
        let nothing = phones.send(5, Outgoing::default(), json!({}));
        assert_eq!(nothing.unwrap_err(), PhoneError::NoPhone(5));
    }
}
