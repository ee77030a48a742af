//! A turn the business starts (`POST /outbound` with an `event`): the agent is asked
//! with the event in the person's own session, and its answer goes out through the
//! Messages API as any turn's does (text, media, menus with their pending menu
//! remembered, hand-over). The turn takes its place in the conversation like the human
//! side's writing: after the person's messages before it, before those after it,
//! whichever instance holds them. It never delays a person's own turn beyond its own
//! place in that order.

use super::handover::{self, Found, TurnAt};
use super::{AgentRoute, Conversations};
use crate::agent::{AgentAnswer, AgentQuery, QueryInput};
use crate::menu::PendingMenu;
use crate::outbox::{Recipient, Sent};
use crate::render::{render, Way};
use crate::reply::fit_to_limits;
use crate::session::SessionId;
use crate::state::{Ticket, TurnWait, Unreadable};
use crate::twilio::webhook::{FormParams, IncomingMessage};
use serde_json::{Map, Value};
use std::sync::Arc;

/// An agent event the business starts for one person.
pub struct BusinessEvent {
    /// The person, and the number of ours that writes to them; `message_sid` is the
    /// outbound request's id, for the logs.
    pub recipient: Recipient,
    pub name: String,
    pub parameters: Map<String, Value>,
}

/// What became of a [`BusinessEvent`].
#[derive(Debug)]
pub enum EventTurn {
    /// The agent answered; this much of it went out.
    Sent(Sent),
    /// The agent had nothing to say: nothing was sent.
    Silent,
    /// The conversation is with a person: the agent was not asked.
    WithPerson,
    /// The agent could not answer (this reason): nothing was sent.
    AgentFailed(&'static str),
    /// The server is stopping, or the store refused a turn: nothing was done.
    Busy,
}

impl Conversations {
    /// The route that answers messages written to `our_number` of `account_sid`, if it
    /// sends through the Messages API (an event's answer can go no other way).
    pub fn route_of_sender(&self, account_sid: &str, our_number: &str) -> Option<Arc<AgentRoute>> {
        let addressed = crate::routes::Addressed {
            to: our_number,
            messaging_service_sid: None,
            account_sid,
        };
        self.routes
            .index
            .find(&addressed)
            .map(|i| Arc::clone(&self.routes.routes[i]))
            .filter(|route| route.delivery.outbox().is_some())
    }

    /// The conversation of `account_sid`, between `person` and `our_number`.
    pub fn session_between(&self, account_sid: &str, person: &str, our_number: &str) -> SessionId {
        SessionId::for_conversation(&self.session_key, account_sid, person, our_number)
    }

    /// Whether `session` is with a person now (a hand-over in progress).
    pub async fn with_a_person(&self, session: &SessionId) -> Result<bool, Unreadable> {
        let Some(handoff) = &self.handoff else {
            return Ok(false);
        };
        let record = handoff.record(session).await?;
        Ok(record
            .active
            .as_ref()
            .is_some_and(|active| !handoff.expired(active)))
    }

    /// Runs `event` on `route` in its conversation's turn, on a task of its own (a
    /// caller that stops waiting leaves nothing half done).
    pub async fn business_event(
        self: &Arc<Self>,
        route: Arc<AgentRoute>,
        event: BusinessEvent,
    ) -> EventTurn {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.business_turn(&route, event).await })
            .await
            .unwrap_or(EventTurn::Busy)
    }

    async fn business_turn(&self, route: &AgentRoute, event: BusinessEvent) -> EventTurn {
        let recipient = &event.recipient;
        let session =
            self.session_between(&recipient.account_sid, &recipient.to, &recipient.our_number);
        let Some(outbox) = route.delivery.outbox().cloned() else {
            return EventTurn::Busy;
        };
        let _owing = outbox.owe(&recipient.message_sid);
        let Some(ticket) = self.state.admit_uncounted(session).await else {
            return EventTurn::Busy;
        };
        let stall = self.waits.turn(route.agent.timeout());
        match self.wait_or_leave(&ticket, stall).await {
            None => {
                let _ = ticket.release().await;
                return EventTurn::Busy;
            }
            Some(TurnWait::Stalled) => {
                self.metrics.turn_wait_expired("outbound");
                tracing::warn!(outbound = %recipient.message_sid, %session, "the turns before this outbound event did not move within their bound (one is stuck): it is asked now, out of order");
            }
            Some(TurnWait::Ready) => {}
        }
        let turn = ticket
            .keep_alive(self.event_in_turn(route, &event, session, &ticket))
            .await;
        ticket.abandon().await;
        turn
    }

    async fn event_in_turn(
        &self,
        route: &AgentRoute,
        event: &BusinessEvent,
        session: SessionId,
        ticket: &Ticket,
    ) -> EventTurn {
        let recipient = &event.recipient;
        let known = self.known(ticket).await;
        // Checked again in the turn: a hand-over may have started since the request.
        if known.with_a_person(self.handoff.as_deref()) {
            return EventTurn::WithPerson;
        }
        let query = AgentQuery {
            session,
            input: QueryInput::Event(event.name.clone()),
            payload: Map::from_iter([("outbound".to_owned(), Value::Bool(true))]),
            parameters: event.parameters.clone(),
            language: None,
        };
        let started = std::time::Instant::now();
        let answer: AgentAnswer = match route.agent.detect_intent(&query).await {
            Ok(answer) => answer,
            Err(error) => {
                self.metrics.agent_failed(started.elapsed(), error.label());
                tracing::warn!(outbound = %recipient.message_sid, %session, error = %error, "the agent could not answer an outbound event: nothing was sent");
                return EventTurn::AgentFailed(error.reason().label());
            }
        };
        self.metrics.agent_answered(started.elapsed());
        // The menu waits for the person's answer, as after any turn: their "2" or tap
        // picks from it.
        let menu_slot = self.menu_slot();
        match PendingMenu::of(&answer.replies) {
            Some(menu) => self.state.set(&menu_slot, &session, &menu).await,
            None if known.menu.is_some() => self.state.remove(&menu_slot, &session).await,
            None => {}
        }
        let work = match (&self.handoff, known.handoff) {
            (Some(handoff), Some(record)) => {
                let message = person_of(recipient);
                let at = TurnAt {
                    route,
                    message: &message,
                    session,
                    recipient,
                };
                let found = Found {
                    record,
                    ended: None,
                    returning: false,
                };
                handover::after_agent(handoff, &self.messages.menu, &at, found, &answer).await
            }
            _ => None,
        };
        let replies = fit_to_limits(answer.replies);
        if replies.is_empty() && work.is_none() {
            return EventTurn::Silent;
        }
        let rendered = render(&replies, recipient.channel(), Way::Api, &self.messages.menu);
        for reason in rendered.as_text {
            self.metrics.menu_as_text(reason);
        }
        let Some(outbox) = route.delivery.outbox() else {
            return EventTurn::Busy;
        };
        let sent = outbox
            .deliver(ticket, recipient, &rendered.replies, 0)
            .await;
        self.metrics.replies_sent("api", sent.sent);
        if let Some(work) = &work {
            self.post_events(work, session, recipient).await;
        }
        EventTurn::Sent(sent)
    }
}

/// The person as the hand-over's steps read a message: who they are and which number
/// of ours they are with; they said nothing (the business spoke first).
fn person_of(recipient: &Recipient) -> IncomingMessage {
    IncomingMessage {
        message_sid: None,
        account_sid: recipient.account_sid.clone(),
        from: recipient.to.clone(),
        to: recipient.our_number.clone(),
        body: String::new(),
        media: Vec::new(),
        opt_out: None,
        tap: None,
        location: None,
        params: FormParams::from_pairs(Vec::new()),
    }
}
