//! Messages the business starts (`POST /outbound`): an appointment reminder the person
//! can answer, an order update, a campaign. A request is read into typed values
//! ([`request`]), refused before anything is sent when it must be (the person opted
//! out, WhatsApp's 24-hour window is closed, the conversation is with a person), and
//! otherwise answered at once with an id while the send goes on: text and templates
//! through the Messages API as they are, an agent event through the conversation's turn
//! ([`crate::conversation::BusinessEvent`]). What became of it is kept ([`record`]) for
//! `GET /outbound/{id}`, updated by Twilio's status callbacks; the person's opt-outs and
//! last message are [`contacts`]'.
//!
//! Logs carry the request's id and the hashed conversation id, never the number.

pub mod contacts;
mod delivery;
mod durable;
pub mod erase;
mod pace;
pub mod record;
pub mod request;

use crate::conversation::Conversations;
use crate::metrics::Metrics;
use crate::session::{SessionId, SessionKey};
use crate::state::{StateStore, Unreadable};
use crate::telemetry::request::{linked, Later};
use crate::telemetry::Trace;
use crate::twilio::webhook::IncomingMessage;
use contacts::Contacts;
use delivery::Send;
use pace::Pace;
use record::{KeyUse, MessageStatus, OutboundRecord, Status, KEYS, MESSAGE_STATUSES, REQUESTS};
use request::{Channel, Content, OutboundRequest, SenderChoice};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// Twilio's error for a send to a person who opted out of the sender.
const OPTED_OUT_ERROR: u32 = 21610;

/// Why a request was refused (409 unless said), before anything was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the person opted out of this sender (STOP): nothing is sent to them until they reply START")]
    OptedOut,
    #[error("the person has not written on WhatsApp in the last 24 hours: send a template")]
    TemplateRequired,
    #[error("the conversation is with a person (hand-over): the agent cannot be asked now")]
    WithAPerson,
    /// 422: the key was used for another request.
    #[error("this idempotency key was used for another request")]
    KeyReused,
    /// 400: no sender named, and none configured.
    #[error(
        "from or messaging_service_sid is required: no TWILIO_MESSAGING_SERVICE_SID is configured"
    )]
    NoSender,
    /// 400: an event's answer needs the number the person answers.
    #[error("an event needs from, the number (or WhatsApp sender) the person answers, so that their answer continues the agent's session")]
    EventNeedsNumber,
    /// 400: no route sends for that sender through the Messages API.
    #[error("no route answers messages to this sender through the Messages API (REPLY_MODE=auto or api)")]
    NoRoute,
    /// 500: a record the bridge needs cannot be read.
    #[error("a stored record cannot be read; nothing was sent")]
    Unreadable,
}

impl Refusal {
    /// The `error` of the JSON answer, and the `reason` of a refused request's status.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::OptedOut => "opted_out",
            Refusal::TemplateRequired => "template_required",
            Refusal::WithAPerson => "with_a_person",
            Refusal::KeyReused => "idempotency_key_reused",
            Refusal::NoSender => "sender_required",
            Refusal::EventNeedsNumber => "number_required",
            Refusal::NoRoute => "no_route",
            Refusal::Unreadable => "unreadable_record",
        }
    }

    /// The field at fault, if one is.
    pub fn field(self) -> Option<&'static str> {
        match self {
            Refusal::KeyReused => Some("idempotency_key"),
            Refusal::NoSender | Refusal::EventNeedsNumber | Refusal::NoRoute => Some("from"),
            _ => None,
        }
    }

    fn of_code(code: &str) -> Option<Self> {
        [
            Refusal::OptedOut,
            Refusal::TemplateRequired,
            Refusal::WithAPerson,
        ]
        .into_iter()
        .find(|refusal| refusal.code() == code)
    }
}

impl From<Unreadable> for Refusal {
    fn from(_: Unreadable) -> Self {
        Refusal::Unreadable
    }
}

/// A request taken: its id, and its status now (`queued`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
}

/// What `GET /outbound/{id}` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: String,
    pub status: Status,
    pub message_sids: Vec<String>,
    pub error_code: Option<u32>,
    pub reason: Option<String>,
}

/// The outbound side at work.
pub struct Outbound {
    conversations: Arc<Conversations>,
    contacts: Contacts,
    state: StateStore,
    metrics: Arc<Metrics>,
    /// The account outbound messages are sent as (`TWILIO_ACCOUNT_SID`).
    account_sid: String,
    /// `TWILIO_MESSAGING_SERVICE_SID`: the sender when a request names none.
    default_service: Option<String>,
    /// With `OUTBOUND_PER_SECOND` set, the line queued requests wait in, in order;
    /// `None`: unlimited, each sent at once.
    line: Option<mpsc::UnboundedSender<(Send, Content)>>,
    /// With shared state, queued work outlives this instance (`durable.rs`).
    durable: bool,
    /// `STATE_LEASE`: how long a held request stays this instance's without renewal.
    lease: std::time::Duration,
    held: durable::Held,
}

/// Where a request's messages come from, resolved.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Origin {
    Number(String),
    Service(String),
}

impl Origin {
    fn id(&self) -> &str {
        match self {
            Origin::Number(number) => number,
            Origin::Service(sid) => sid,
        }
    }
}

/// The settings [`Outbound::new`] needs.
pub struct OutboundParts {
    pub account_sid: String,
    pub default_service: Option<String>,
    pub per_second: Option<NonZeroU32>,
    pub session_key: SessionKey,
    /// `STATE_LEASE`, for the queued work another instance takes over.
    pub lease: std::time::Duration,
}

impl Outbound {
    pub fn new(
        conversations: Arc<Conversations>,
        state: StateStore,
        metrics: Arc<Metrics>,
        parts: OutboundParts,
    ) -> Arc<Self> {
        let pace = parts
            .per_second
            .map(|per_second| Pace::new(per_second, state.clone()));
        Arc::new_cyclic(|this| {
            let line = pace.map(|pace| {
                let (line, waiting) = mpsc::unbounded_channel();
                tokio::spawn(Self::paced(Weak::clone(this), pace, waiting));
                line
            });
            Self {
                conversations,
                contacts: Contacts::new(state.clone(), parts.session_key),
                state: state.clone(),
                metrics,
                account_sid: parts.account_sid,
                default_service: parts.default_service,
                line,
                durable: state.is_shared(),
                lease: parts.lease,
                held: durable::Held::default(),
            }
        })
    }

    /// The line: each queued request in turn, once the pace lets one more go, sent on
    /// a task of its own (a slow send does not hold the next one's place in the
    /// second). Ends with the bridge.
    async fn paced(
        this: Weak<Self>,
        pace: Pace,
        mut waiting: mpsc::UnboundedReceiver<(Send, Content)>,
    ) {
        while let Some((send, content)) = waiting.recv().await {
            // Left to the other instances at shutdown: it takes no place in the second.
            if !this.upgrade().is_some_and(|this| this.holds(&send.id)) {
                continue;
            }
            pace.until_ready().await;
            let Some(this) = this.upgrade() else { return };
            tokio::spawn(this.sending(send, content));
        }
    }

    /// Sends a queued request: at once, or in the line when a pace is set.
    fn queue(self: &Arc<Self>, send: Send, content: Content) {
        let unsent = match &self.line {
            Some(line) => match line.send((send, content)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(unsent)) => unsent,
            },
            None => (send, content),
        };
        tokio::spawn(Arc::clone(self).sending(unsent.0, unsent.1));
    }

    /// The send of `send`, in a trace of its own linked to the call that asked for it.
    fn sending(self: Arc<Self>, send: Send, content: Content) -> impl Future<Output = ()> {
        let origin = send.origin;
        linked(Later::Outbound, origin, self.send(send, content))
    }

    /// A person's message (a webhook): when they wrote, and STOP or START.
    pub async fn heard(&self, message: &IncomingMessage) {
        self.contacts.heard(message).await;
    }

    /// Twilio's status callback for `message_sid` of `account_sid`, an outbound
    /// message: a status a request's answer reports is kept; a message refused as opted
    /// out (21610) marks the person of the callback's `To` and `From`.
    pub async fn reported(
        &self,
        account_sid: &str,
        message_sid: &str,
        status: &str,
        error_code: Option<u32>,
        to_from: Option<(&str, &str)>,
    ) {
        if error_code == Some(OPTED_OUT_ERROR) {
            if let Some((to, from)) = to_from {
                let id = self.contacts.id(account_sid, to, from);
                self.contacts.opt_out(&id).await;
            }
        }
        // `sent` is what the request's own record says already: not written again.
        let Some(status) = Status::of_callback(status).filter(|s| *s != Status::Sent) else {
            return;
        };
        let key = record::message_key(account_sid, message_sid);
        let reported = MessageStatus { status, error_code };
        self.state.set(&MESSAGE_STATUSES, &key, &reported).await;
    }

    /// Takes `request`: refused now (nothing sent), or queued and sent on a task of its
    /// own. Twilio reports on the messages to `status_callback`.
    pub async fn accept(
        self: &Arc<Self>,
        request: OutboundRequest,
        status_callback: String,
    ) -> Result<Accepted, Refusal> {
        let kind = request.content.kind();
        let answer = self.answer(request, status_callback).await;
        let outcome = match &answer {
            Ok((_, true)) => "repeat",
            Ok((_, false)) => "queued",
            Err(refusal) => refusal.code(),
        };
        self.metrics.outbound(kind, outcome);
        answer.map(|(accepted, _)| accepted)
    }

    /// The answer, and whether it is a repeat's.
    async fn answer(
        self: &Arc<Self>,
        request: OutboundRequest,
        status_callback: String,
    ) -> Result<(Accepted, bool), Refusal> {
        let key = request.idempotency_key.as_ref().map(|key| key.digest());
        if let Some(key) = &key {
            if let Some(first) = self.state.get(&KEYS, key).await? {
                return self
                    .repeat(first, &request.fingerprint)
                    .await
                    .map(|a| (a, true));
            }
        }
        let from = self.sender_of(&request)?;
        let person = request.to.twilio();
        let contact = self.contacts.id(&self.account_sid, &person, from.id());
        let route = match (&request.content, &from) {
            (Content::Event { .. }, Origin::Service(_)) => return Err(Refusal::EventNeedsNumber),
            (Content::Event { .. }, Origin::Number(number)) => Some(
                self.conversations
                    .route_of_sender(&self.account_sid, number)
                    .ok_or(Refusal::NoRoute)?,
            ),
            _ => None,
        };
        let refusal = self.refusal(&request, &from, &contact).await?;
        let id = new_id();
        let record = OutboundRecord {
            kind: request.content.kind().to_owned(),
            status: refusal.map_or(Status::Queued, |_| Status::Refused),
            account_sid: self.account_sid.clone(),
            message_sids: Vec::new(),
            error_code: None,
            reason: refusal.map(|r| r.code().to_owned()),
        };
        self.state.set(&REQUESTS, &id, &record).await;
        // Found again when the person is erased, whatever the sender.
        let entry = erase::Entry {
            sender: from.id().to_owned(),
            request: id.clone(),
            key: key.clone(),
        };
        self.state
            .add_to(
                &erase::REQUESTS_OF,
                &self.contacts.person_id(&self.account_sid, &person),
                &entry.member(),
            )
            .await;
        if let Some(key) = &key {
            let used = KeyUse {
                id: id.clone(),
                fingerprint: request.fingerprint.clone(),
            };
            // Two requests with one key at once, at two instances: one is first.
            if let Some(first) = self.state.claim(&KEYS, key, &used).await? {
                return self
                    .repeat(first, &request.fingerprint)
                    .await
                    .map(|a| (a, true));
            }
        }
        if let Some(refusal) = refusal {
            tracing::info!(outbound = %id, kind = request.content.kind(), refused = refusal.code(), "an outbound request was refused");
            return Err(refusal);
        }
        tracing::info!(outbound = %id, kind = request.content.kind(), channel = channel_label(request.to.channel), "an outbound request was queued");
        let send = Send {
            id: id.clone(),
            person,
            from,
            contact,
            route,
            status_callback,
            origin: Trace::current(),
        };
        self.hold(&send, &request.content).await;
        self.queue(send, request.content);
        Ok((Accepted { id }, false))
    }

    /// What the first request made with the key answered; refused if `fingerprint`
    /// says this one asks something else.
    async fn repeat(&self, first: KeyUse, fingerprint: &str) -> Result<Accepted, Refusal> {
        if first.fingerprint != fingerprint {
            return Err(Refusal::KeyReused);
        }
        let record = self.state.get(&REQUESTS, &first.id).await?;
        let refused = record
            .filter(|record| record.status == Status::Refused)
            .and_then(|record| record.reason)
            .and_then(|reason| Refusal::of_code(&reason));
        match refused {
            Some(refusal) => Err(refusal),
            None => Ok(Accepted { id: first.id }),
        }
    }

    fn sender_of(&self, request: &OutboundRequest) -> Result<Origin, Refusal> {
        match &request.sender {
            SenderChoice::Number(number) => Ok(Origin::Number(number.twilio())),
            SenderChoice::Service(sid) => Ok(Origin::Service(sid.clone())),
            SenderChoice::Default => self
                .default_service
                .clone()
                .map(Origin::Service)
                .ok_or(Refusal::NoSender),
        }
    }

    /// Why `request` must not be sent, if it must not: the person opted out; free
    /// text or an event on WhatsApp outside the 24-hour window; an event while the
    /// conversation is with a person.
    async fn refusal(
        &self,
        request: &OutboundRequest,
        from: &Origin,
        contact: &SessionId,
    ) -> Result<Option<Refusal>, Unreadable> {
        if self.contacts.opted_out(contact).await? {
            return Ok(Some(Refusal::OptedOut));
        }
        let free_form = !matches!(request.content, Content::Template { .. });
        if request.to.channel == Channel::WhatsApp
            && free_form
            && !self.contacts.in_window(contact).await?
        {
            return Ok(Some(Refusal::TemplateRequired));
        }
        if let (Content::Event { .. }, Origin::Number(_)) = (&request.content, from) {
            // For a number, the contact's id is the conversation's.
            if self.conversations.with_a_person(contact).await? {
                return Ok(Some(Refusal::WithAPerson));
            }
        }
        Ok(None)
    }

    /// The status of the request `id`, if it is known.
    pub async fn report(&self, id: &str) -> Result<Option<Report>, Unreadable> {
        let Some(record) = self.state.get(&REQUESTS, id).await? else {
            return Ok(None);
        };
        let mut reported = Vec::with_capacity(record.message_sids.len());
        if record.status == Status::Sent {
            for sid in &record.message_sids {
                let key = record::message_key(&record.account_sid, sid);
                // One that cannot be read (logged, counted) says nothing more than sent.
                reported.push(self.state.get(&MESSAGE_STATUSES, &key).await.ok().flatten());
            }
        }
        let (status, error_code) = record::overall(&record, &reported);
        Ok(Some(Report {
            id: id.to_owned(),
            status,
            message_sids: record.message_sids,
            error_code,
            reason: record.reason,
        }))
    }
}

fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "sms",
        Channel::WhatsApp => "whatsapp",
    }
}

/// An id no one can guess or derive from the number: 128 random bits.
fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ob_{hex}")
}
