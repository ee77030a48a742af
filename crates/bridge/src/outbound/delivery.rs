//! The work of a queued outbound request, on a task of its own, once its place in the
//! pace is taken (`pace.rs`): text and templates sent as they are, an event asked in
//! the person's conversation; then its record says what became of it. A send Twilio refuses with 21610 marks the
//! person as opted out.

use super::record::{OutboundRecord, Status, REQUESTS};
use super::request::Content;
use super::{Origin, Outbound, Refusal, OPTED_OUT_ERROR};
use crate::conversation::{AgentRoute, BusinessEvent, EventTurn};
use crate::outbox::Recipient;
use crate::reply::fit_to_limits;
use crate::session::SessionId;
use crate::telemetry::Trace;
use crate::twilio::messages_api::{SendError, Sender};
use std::sync::Arc;

impl Outbound {
    /// Sends a queued request (its place in the pace taken), and records what became
    /// of it.
    pub(super) async fn send(self: Arc<Self>, send: Send, content: Content) {
        if !self.starting(&send.id).await {
            return;
        }
        let recipient = Recipient {
            account_sid: self.account_sid.clone(),
            messaging_service_sid: match &send.from {
                Origin::Service(sid) => Some(sid.clone()),
                Origin::Number(_) => None,
            },
            to: send.person.clone(),
            our_number: match &send.from {
                Origin::Number(number) => number.clone(),
                Origin::Service(_) => String::new(),
            },
            message_sid: send.id.clone(),
            status_callback: send.status_callback.clone(),
        };
        let kind = content.kind().to_owned();
        let done = match (content, send.route) {
            (
                Content::Event {
                    name, parameters, ..
                },
                Some(route),
            ) => self.event(route, recipient, name, parameters).await,
            (content, _) => self.as_it_is(&recipient, &send.from, &content).await,
        };
        if done.error_code == Some(OPTED_OUT_ERROR) {
            self.contacts.opt_out(&send.contact).await;
        }
        let record = OutboundRecord {
            kind,
            status: done.status,
            account_sid: self.account_sid.clone(),
            message_sids: done.sids,
            error_code: done.error_code,
            reason: done.reason,
        };
        tracing::info!(
            outbound = %send.id,
            status = ?record.status,
            sent = record.message_sids.len(),
            twilio_error = record.error_code,
            "an outbound request was sent"
        );
        self.state.set(&REQUESTS, &send.id, &record).await;
        self.release(&send.id).await;
    }

    /// Text or a template, sent as it is, from the sender the request named.
    async fn as_it_is(&self, recipient: &Recipient, from: &Origin, content: &Content) -> Done {
        let Some(message) = content.message() else {
            return Done::failed(None, "nothing to send");
        };
        let Some(outbox) = self.conversations.outbox_of(&self.account_sid) else {
            return Done::failed(None, "no Messages API for this account");
        };
        let sender = match from {
            Origin::Number(number) => Sender::Number(number.clone()),
            Origin::Service(sid) => Sender::MessagingService(sid.clone()),
        };
        let messages = fit_to_limits(vec![message]);
        let (_, sids, outcome) = outbox.send_now_as(recipient, Some(sender), &messages).await;
        Done::of(sids, outcome.err())
    }

    /// An agent event, in the person's conversation.
    async fn event(
        &self,
        route: Arc<AgentRoute>,
        recipient: Recipient,
        name: String,
        parameters: serde_json::Map<String, serde_json::Value>,
    ) -> Done {
        let event = BusinessEvent {
            recipient,
            name,
            parameters,
        };
        match self.conversations.business_event(route, event).await {
            EventTurn::Sent(sent) => Done::of(sent.sids, sent.last_error),
            EventTurn::Silent => Done::failed(None, "the agent had nothing to say"),
            EventTurn::WithPerson => Done {
                status: Status::Refused,
                sids: Vec::new(),
                error_code: None,
                reason: Some(Refusal::WithAPerson.code().to_owned()),
            },
            EventTurn::AgentFailed(reason) => {
                Done::failed(None, &format!("the agent could not answer: {reason}"))
            }
            EventTurn::Busy => Done::failed(None, "the bridge was stopping: nothing was sent"),
        }
    }
}

/// A queued request, ready to send.
pub(super) struct Send {
    pub(super) id: String,
    /// The person, as Twilio writes them.
    pub(super) person: String,
    pub(super) from: Origin,
    /// The person and sender's id, for opt-outs.
    pub(super) contact: SessionId,
    /// The route whose agent answers an event.
    pub(super) route: Option<Arc<AgentRoute>>,
    pub(super) status_callback: String,
    /// The trace of the call that asked for it, which its send links back to.
    pub(super) origin: Option<Trace>,
}

/// What a send did.
struct Done {
    status: Status,
    sids: Vec<String>,
    error_code: Option<u32>,
    reason: Option<String>,
}

impl Done {
    /// Sent if Twilio took anything, failed if not; with the error that stopped it.
    fn of(sids: Vec<String>, error: Option<SendError>) -> Self {
        let error_code = error.as_ref().and_then(SendError::code);
        let reason = error.as_ref().map(|error| match error.code() {
            Some(OPTED_OUT_ERROR) => Refusal::OptedOut.code().to_owned(),
            _ => error.to_string(),
        });
        Self {
            status: match sids.is_empty() && error.is_some() {
                true => Status::Failed,
                false => Status::Sent,
            },
            sids,
            error_code,
            reason,
        }
    }

    fn failed(error_code: Option<u32>, reason: &str) -> Self {
        Self {
            status: Status::Failed,
            sids: Vec::new(),
            error_code,
            reason: Some(reason.to_owned()),
        }
    }
}
