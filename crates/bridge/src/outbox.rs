//! Replies sent through Twilio's Messages API, and the replies still owed.
//!
//! The order of a conversation's turns is the state layer's business
//! ([`crate::state`]); this module sends one turn's messages, in order, recording in
//! the turn how far it got, so that an instance taking the turn over after a crash
//! sends only what is left. It also counts the messages whose replies are still owed,
//! so that at shutdown the bridge can wait for them.
//!
//! Each reply goes out in the form [`crate::render`] decides: a menu as WhatsApp
//! buttons or a list where it can ([`crate::whatsapp`]), as numbered text where it
//! cannot; and as numbered text again when the Content API fails or WhatsApp refuses
//! the content, which only sending finds out.

use crate::menu::MenuFormat;
use crate::metrics::Metrics;
use crate::render::{self, Form, Way};
use crate::reply::{ReplyMessage, Template};
use crate::state::{MessageKey, StateStore, Ticket};
use crate::twilio::messages_api::{MessagesApi, SendError, Sender};
use crate::twilio::webhook::IncomingMessage;
use crate::whatsapp::{content_for, forget, Content, Menu};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// A menu sent by `ContentSid`, and what it reads as in text; kept under the reply's
/// (AccountSid, MessageSid) ([`sent_menu_key`]), so that only a status callback of the
/// account that sent it, signed with that account's token, can have it sent again.
#[derive(serde::Serialize, serde::Deserialize)]
struct SentMenu {
    recipient: Recipient,
    text: Vec<ReplyMessage>,
}

impl crate::state::Record for SentMenu {
    const KIND: &'static str = "sent_menu";
}

const SENT_MENUS: crate::state::Slot<SentMenu> =
    crate::state::Slot::new("sent_menu", Duration::from_secs(3600));

/// Erasing a person: removes the sent menus kept to resend to one of `people` (as
/// Twilio writes them) from a sender `senders` picks; how many. They are filed by
/// MessageSid, not by conversation: every one kept (for an hour) is looked at.
pub async fn forget_sent_menus(
    state: &StateStore,
    people: &[String],
    senders: impl Fn(&str) -> bool,
) -> u64 {
    let mut removed = 0;
    for (id, stored) in state.all(&SENT_MENUS).await {
        let Ok(sent) = stored.read::<SentMenu>() else {
            continue;
        };
        let recipient = &sent.recipient;
        let sender = recipient
            .messaging_service_sid
            .as_deref()
            .map_or(senders(&recipient.our_number), |sid| {
                senders(sid) || senders(&recipient.our_number)
            });
        if people.contains(&recipient.to) && sender {
            state.remove(&SENT_MENUS, &id).await;
            removed += 1;
        }
    }
    removed
}

/// Where the menu sent as `message_sid` by `account_sid` is kept. A MessageSid alone
/// would let any account the bridge serves name another's reply in its own signed
/// callback.
fn sent_menu_key(account_sid: &str, message_sid: &str) -> String {
    MessageKey {
        account_sid: account_sid.to_owned(),
        message_sid: message_sid.to_owned(),
    }
    .to_string()
}

/// A boxed future of a [`Messaging`] call.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, SendError>> + Send + 'a>>;

/// What the outbox sends through for one account: Twilio's Messages API and Content
/// API ([`MessagesApi`]), or a test's recorder.
pub trait Messaging: Send + Sync {
    /// The account it sends as.
    fn account_sid(&self) -> &str;
    /// Sends `message` to `to` from `sender`; the message's SID when Twilio says it.
    fn send<'a>(
        &'a self,
        to: &'a str,
        sender: &'a Sender,
        message: &'a ReplyMessage,
        status_callback: Option<&'a str>,
    ) -> Call<'a, Option<String>>;
    /// Creates a Content API content; its `HX…` SID.
    fn create_content<'a>(&'a self, content: &'a serde_json::Value) -> Call<'a, String>;
    /// Shows "typing…" to the WhatsApp sender of `message_sid`.
    fn typing<'a>(&'a self, message_sid: &'a str) -> Call<'a, ()>;
}

impl Messaging for MessagesApi {
    fn account_sid(&self) -> &str {
        MessagesApi::account_sid(self)
    }

    fn send<'a>(
        &'a self,
        to: &'a str,
        sender: &'a Sender,
        message: &'a ReplyMessage,
        status_callback: Option<&'a str>,
    ) -> Call<'a, Option<String>> {
        Box::pin(MessagesApi::send(
            self,
            to,
            sender,
            message,
            status_callback,
        ))
    }

    fn create_content<'a>(&'a self, content: &'a serde_json::Value) -> Call<'a, String> {
        Box::pin(MessagesApi::create_content(self, content))
    }

    fn typing<'a>(&'a self, message_sid: &'a str) -> Call<'a, ()> {
        Box::pin(MessagesApi::typing(self, message_sid))
    }
}

pub struct Outbox {
    /// What each account (and sub-account) sends through.
    apis: HashMap<String, Arc<dyn Messaging>>,
    /// `TWILIO_MESSAGING_SERVICE_SID`, with the account it belongs to.
    messaging_service_sid: Option<(String, String)>,
    /// MessageSids whose replies are still owed, with how many turns owe each.
    owed: Mutex<HashMap<String, usize>>,
    settled: Notify,
    /// How menus read as text, and where WhatsApp contents are remembered.
    menu: MenuFormat,
    state: StateStore,
    metrics: Arc<Metrics>,
}

/// Who gets the replies, and from which number and account.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Recipient {
    pub account_sid: String,
    /// The Messaging Service the message came through, if any: replies go out from it.
    pub messaging_service_sid: Option<String>,
    pub to: String,
    pub our_number: String,
    /// The incoming message the replies answer, for logs.
    pub message_sid: String,
    /// Where Twilio reports whether each reply was delivered.
    pub status_callback: String,
}

impl Recipient {
    /// Where Twilio reports on the replies; none when no URL of ours could be told.
    pub fn callback(&self) -> Option<&str> {
        Some(self.status_callback.as_str()).filter(|url| !url.is_empty())
    }

    /// Where the replies are read.
    pub fn channel(&self) -> crate::render::Channel {
        crate::render::Channel::of_address(&self.to)
    }

    /// The sender of `message`, answered from the number it wrote to; Twilio reports on
    /// the replies to `status_callback`.
    pub fn replying_to(message: &IncomingMessage, status_callback: String) -> Self {
        Self {
            account_sid: message.account_sid.clone(),
            messaging_service_sid: message
                .params
                .get("MessagingServiceSid")
                .filter(|sid| !sid.is_empty())
                .map(str::to_owned),
            to: message.from.clone(),
            our_number: message.to.clone(),
            message_sid: message.message_sid.clone().unwrap_or_default(),
            status_callback,
        }
    }
}

/// How many replies went out, and why the last one that did not failed.
#[derive(Debug, Default)]
pub struct Sent {
    pub sent: usize,
    pub last_error: Option<SendError>,
    /// Twilio's HTTP status and error code of each reply not sent (none: no answer).
    pub failures: Vec<(Option<u16>, Option<u32>)>,
    /// Another instance took the turn over before every reply was sent: it sends the rest.
    pub handed_over: bool,
    /// The SIDs Twilio gave the messages it took, in order.
    pub sids: Vec<String>,
}

/// A reply owed until this is dropped.
pub struct Owing {
    outbox: Arc<Outbox>,
    message_sid: String,
}

impl Drop for Owing {
    fn drop(&mut self) {
        self.outbox.settle(&self.message_sid);
    }
}

impl Outbox {
    /// Sends through `apis`, one per account SID; `messaging_service_sid` (its account,
    /// and its SID) is where that account's replies come from when the message did not
    /// come through a Messaging Service of its own. Menus read as `menu` says; the
    /// WhatsApp contents made for them are remembered in `state`.
    pub fn new(
        apis: HashMap<String, MessagesApi>,
        messaging_service_sid: Option<(String, String)>,
        menu: MenuFormat,
        state: StateStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let apis = apis
            .into_iter()
            .map(|(sid, api)| (sid, Arc::new(api) as Arc<dyn Messaging>))
            .collect();
        Self::sending_through(apis, messaging_service_sid, menu, state, metrics)
    }

    /// An outbox that sends through `apis`, whatever they are (the tests' recorders).
    pub fn sending_through(
        apis: HashMap<String, Arc<dyn Messaging>>,
        messaging_service_sid: Option<(String, String)>,
        menu: MenuFormat,
        state: StateStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            apis,
            messaging_service_sid,
            owed: Mutex::default(),
            settled: Notify::new(),
            menu,
            state,
            metrics,
        })
    }

    /// Whether this outbox sends for `account_sid`.
    pub fn serves(&self, account_sid: &str) -> bool {
        self.apis.contains_key(account_sid)
    }

    /// Shows "typing…" to the WhatsApp sender of `message_sid`. Best effort: a failure
    /// is logged at debug level and changes nothing else.
    pub async fn typing(&self, account_sid: &str, message_sid: &str) {
        let Some(api) = self.apis.get(account_sid) else {
            return;
        };
        match api.typing(message_sid).await {
            Ok(()) => tracing::debug!(%message_sid, "typing indicator shown"),
            Err(error) => {
                tracing::debug!(%message_sid, error = %error, "the typing indicator could not be shown")
            }
        }
    }

    /// Counts `message_sid` as owed a reply until the guard is dropped.
    pub fn owe(self: &Arc<Self>, message_sid: &str) -> Owing {
        *lock(&self.owed).entry(message_sid.to_owned()).or_default() += 1;
        Owing {
            outbox: Arc::clone(self),
            message_sid: message_sid.to_owned(),
        }
    }

    fn settle(&self, message_sid: &str) {
        let mut owed = lock(&self.owed);
        if let Some(count) = owed.get_mut(message_sid) {
            *count -= 1;
            if *count == 0 {
                owed.remove(message_sid);
            }
        }
        if owed.is_empty() {
            self.settled.notify_waiters();
        }
    }

    /// Sends `replies[from..]` in order for `ticket`'s turn, recording after each one
    /// where the turn stands; stops if another instance took the turn over. A failure
    /// is logged and does not stop the rest.
    pub async fn deliver(
        &self,
        ticket: &Ticket,
        recipient: &Recipient,
        replies: &[ReplyMessage],
        from: usize,
    ) -> Sent {
        let sender = self.sender_for(recipient);
        let mut report = Sent::default();
        let Some(api) = self.apis.get(&recipient.account_sid) else {
            // Only verified webhooks of our accounts make turns: this is a bug, said.
            tracing::error!(message_sid = %recipient.message_sid, "no Messages API credentials for this message's account: its replies are not sent");
            return report;
        };
        for (index, message) in replies.iter().enumerate().skip(from) {
            if !ticket.is_held() {
                report.handed_over = true;
                break;
            }
            match self.send_one(&**api, recipient, &sender, message).await {
                Ok(sids) => {
                    report.sent += 1;
                    report.sids.extend(sids);
                }
                Err(error) => {
                    tracing::error!(
                        message_sid = %recipient.message_sid,
                        status = error.status(),
                        twilio_error = error.code(),
                        hint = error.hint(),
                        error = %error,
                        "a reply could not be sent through the Messages API"
                    );
                    report.failures.push((error.status(), error.code()));
                    report.last_error = Some(error);
                }
            }
            if index + 1 < replies.len() {
                ticket.record_sent(index + 1).await;
            }
        }
        report
    }

    /// Where `recipient`'s replies come from: the Messaging Service the message came
    /// through, else the account's configured one, else the number written to.
    fn sender_for(&self, recipient: &Recipient) -> Sender {
        let configured = self
            .messaging_service_sid
            .as_ref()
            .filter(|(account, _)| *account == recipient.account_sid)
            .map(|(_, sid)| sid);
        match recipient.messaging_service_sid.as_ref().or(configured) {
            Some(sid) => Sender::MessagingService(sid.clone()),
            None => Sender::Number(recipient.our_number.clone()),
        }
    }

    /// Sends `messages` to `recipient` now, in order, outside any turn (the human side
    /// of a hand-over, a notice); stops at the first failure. Returns how many went out,
    /// and the failure if there was one.
    pub async fn send_now(
        &self,
        recipient: &Recipient,
        messages: &[ReplyMessage],
    ) -> (usize, Result<(), SendError>) {
        let (sent, _, outcome) = self.send_now_as(recipient, None, messages).await;
        (sent, outcome)
    }

    /// [`Outbox::send_now`], with the SIDs Twilio gave the messages it took.
    /// `sender` chooses where they come from, else the recipient's sender as replies'.
    pub async fn send_now_as(
        &self,
        recipient: &Recipient,
        sender: Option<Sender>,
        messages: &[ReplyMessage],
    ) -> (usize, Vec<String>, Result<(), SendError>) {
        let Some(api) = self.apis.get(&recipient.account_sid) else {
            let missing = SendError::Unknown("no Messages API credentials for this account".into());
            return (0, Vec::new(), Err(missing));
        };
        let sender = sender.unwrap_or_else(|| self.sender_for(recipient));
        let (mut sent, mut sids) = (0, Vec::new());
        for message in messages {
            match self.send_one(&**api, recipient, &sender, message).await {
                Ok(more) => sids.extend(more),
                Err(error) => return (sent, sids, Err(error)),
            }
            sent += 1;
        }
        (sent, sids, Ok(()))
    }

    /// Sends one of the agent's messages in the form [`render::form`] gives it: as it
    /// is, a template, its menu as WhatsApp buttons or a list, or as numbered text.
    /// Returns the SIDs of the messages Twilio took for it.
    async fn send_one(
        &self,
        api: &dyn Messaging,
        recipient: &Recipient,
        sender: &Sender,
        message: &ReplyMessage,
    ) -> Result<Vec<String>, SendError> {
        let callback = recipient.callback();
        let channel = recipient.channel();
        match render::form(message, channel, Way::Api, &self.menu) {
            // Nothing is left out of the API (only of TwiML).
            Form::Message | Form::LeftOut => api
                .send(&recipient.to, sender, message, callback)
                .await
                .map(|sid| sid.into_iter().collect()),
            Form::Template => {
                let sid = api.send(&recipient.to, sender, message, callback).await?;
                self.metrics.rich_sent("template");
                Ok(sid.into_iter().collect())
            }
            Form::Text(reason) => {
                self.send_as_text(api, recipient, sender, message, reason)
                    .await
            }
            Form::Content(menu) => {
                self.send_content(api, recipient, sender, message, &menu)
                    .await
            }
        }
    }

    /// Sends `message`'s menu as the WhatsApp content `menu`; as numbered text when the
    /// Content API cannot make it or WhatsApp refuses it.
    async fn send_content(
        &self,
        api: &dyn Messaging,
        recipient: &Recipient,
        sender: &Sender,
        message: &ReplyMessage,
        menu: &Menu,
    ) -> Result<Vec<String>, SendError> {
        let callback = recipient.callback();
        let sid = match content_for(menu, api, &self.state).await {
            Content::Ready { sid, created } => {
                if created {
                    self.metrics.content_created();
                }
                sid
            }
            Content::Failed(error) => {
                tracing::warn!(
                    message_sid = %recipient.message_sid,
                    status = error.status(),
                    twilio_error = error.code(),
                    hint = error.hint(),
                    error = %error,
                    "the Content API could not make this menu: it is sent as numbered text"
                );
                return self
                    .send_as_text(api, recipient, sender, message, "content_failed")
                    .await;
            }
        };
        // Buttons and lists carry no media: the picture goes first, on its own. If it
        // is refused, the menu still goes.
        let mut sids = Vec::new();
        if !message.media.is_empty() {
            let media = ReplyMessage::media(message.media.clone());
            let sent = api.send(&recipient.to, sender, &media, callback).await;
            if let Ok(Some(sid)) = &sent {
                sids.push(sid.clone());
            }
            if let Err(error) = sent {
                self.metrics.reply_failed(error.status(), error.code());
                tracing::warn!(
                    message_sid = %recipient.message_sid,
                    twilio_error = error.code(),
                    hint = error.hint(),
                    error = %error,
                    "the picture of a menu was not sent; the menu is"
                );
            }
        }
        let content = ReplyMessage {
            template: Some(Template {
                sid,
                variables: Some(menu.variables.clone()),
                // The message's own choices are the pending menu already.
                choices: Vec::new(),
            }),
            ..ReplyMessage::default()
        };
        match api.send(&recipient.to, sender, &content, callback).await {
            Ok(sent) => {
                self.metrics.rich_sent(menu.kind.label());
                if let Some(sid) = sent {
                    self.expect_status(&sid, recipient, message).await;
                    sids.push(sid);
                }
                Ok(sids)
            }
            Err(error) if error.content_refused() => {
                self.metrics.reply_failed(error.status(), error.code());
                tracing::warn!(
                    message_sid = %recipient.message_sid,
                    twilio_error = error.code(),
                    hint = error.hint(),
                    "WhatsApp refused the menu: it is sent again as numbered text"
                );
                // A content deleted or refused is made again next time.
                forget(menu, api, &self.state).await;
                let text_only = ReplyMessage {
                    media: Vec::new(),
                    ..message.clone()
                };
                let text = self
                    .send_as_text(api, recipient, sender, &text_only, "send_failed")
                    .await?;
                sids.extend(text);
                Ok(sids)
            }
            Err(error) => Err(error),
        }
    }

    /// Remembers a menu sent by `ContentSid` as `sid` for an hour: WhatsApp may refuse
    /// it after Twilio took it, which only the status callback says.
    async fn expect_status(&self, sid: &str, recipient: &Recipient, message: &ReplyMessage) {
        let text = ReplyMessage {
            media: Vec::new(),
            ..message.clone()
        };
        let sent = SentMenu {
            recipient: recipient.clone(),
            text: render::menu_as_text(&text, &self.menu),
        };
        let key = sent_menu_key(&recipient.account_sid, sid);
        self.state.set(&SENT_MENUS, &key, &sent).await;
    }

    /// A reply Twilio reported `failed` or `undelivered` with `error_code`, in a callback
    /// of `account_sid` (verified with its token): logged with its hint and counted; a
    /// menu WhatsApp refused goes again, once, as numbered text, if that account sent it.
    pub async fn not_delivered(
        &self,
        account_sid: &str,
        message_sid: &str,
        error_code: Option<u32>,
    ) {
        self.metrics.delivery_failed(error_code);
        tracing::warn!(
            message_sid,
            twilio_error = error_code,
            hint = error_code.and_then(crate::twilio::errors::hint),
            "a reply was not delivered"
        );
        if !error_code.is_some_and(crate::twilio::errors::content_refused) {
            return;
        }
        // One that cannot be read was logged and counted by the store.
        let key = sent_menu_key(account_sid, message_sid);
        let Ok(Some(sent)) = self.state.get(&SENT_MENUS, &key).await else {
            return;
        };
        self.state.remove(&SENT_MENUS, &key).await;
        self.metrics.menu_as_text("status_failed");
        tracing::warn!(
            message_sid,
            "WhatsApp refused a menu after Twilio took it: it is sent again as numbered text"
        );
        if let (_, Err(error)) = self.send_now(&sent.recipient, &sent.text).await {
            tracing::error!(message_sid, error = %error, "the menu could not be sent again as text");
        }
    }

    /// `message` with its menu written out, in as many messages as its length needs.
    async fn send_as_text(
        &self,
        api: &dyn Messaging,
        recipient: &Recipient,
        sender: &Sender,
        message: &ReplyMessage,
        reason: &'static str,
    ) -> Result<Vec<String>, SendError> {
        self.metrics.menu_as_text(reason);
        let mut sids = Vec::new();
        let mut failed = None;
        for piece in render::menu_as_text(message, &self.menu) {
            match api
                .send(&recipient.to, sender, &piece, recipient.callback())
                .await
            {
                Ok(sid) => sids.extend(sid),
                Err(error) => failed = Some(error),
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(sids),
        }
    }

    /// Waits up to `grace` for every owed reply; returns the MessageSids still owed.
    pub async fn drain(&self, grace: Duration) -> Vec<String> {
        let wait = async {
            loop {
                let settled = self.settled.notified();
                if lock(&self.owed).is_empty() {
                    return;
                }
                settled.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        let mut owed: Vec<String> = lock(&self.owed).keys().cloned().collect();
        owed.sort();
        owed
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
