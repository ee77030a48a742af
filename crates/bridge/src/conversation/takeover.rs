//! Turns another instance left behind (it died, or let them go at shutdown), found
//! by their leases running out and finished here: the replies not yet accepted by
//! Twilio are sent, the agent is asked again only if its answer was never recorded.

use super::{AgentRoute, Conversations, Handled, StoredOutcome, Turn, TurnRecord};
use crate::outbox::Recipient;
use crate::state::{TakenOver, Ticket, TurnWait};
use crate::telemetry::request::{self, Later};
use crate::telemetry::Trace;
use crate::twilio::webhook::{FormParams, IncomingMessage};
use std::sync::Arc;
use std::time::Duration;

impl Conversations {
    /// Finishes a turn another instance left behind when its lease ran out.
    pub async fn resume(self: Arc<Self>, taken: TakenOver) {
        self.metrics.turn_taken_over();
        let TakenOver {
            ticket,
            turn,
            answer,
            sent,
            sending,
        } = taken;
        // Only turns whose replies may go through the API carry their message (see
        // `handle`): for the others, the webhook that waited died with its instance, and
        // there is no other way to the person. A re-delivery is answered afresh.
        let message = turn
            .and_then(|turn| self.state.read::<TurnRecord>(&turn).ok())
            .and_then(|record| {
                if let Some(origin) = record.trace.as_deref().and_then(Trace::from_traceparent) {
                    request::link_to(origin);
                }
                let params = FormParams::from_pairs(record.params);
                let account = self
                    .accounts
                    .iter()
                    .find(|sid| params.get("AccountSid") == Some(sid.as_str()))?
                    .clone();
                let message = IncomingMessage::from_verified(params, &account).ok()?;
                let recipient = Recipient::replying_to(&message, record.status_callback);
                Some((message, recipient))
            });
        let found = message.and_then(|(message, recipient)| {
            let route = Arc::clone(self.routes.find(&message)?);
            let outbox = Arc::clone(route.delivery.outbox()?);
            Some((message, recipient, route, outbox))
        });
        let Some((message, recipient, route, outbox)) = found else {
            // Nothing to send the replies through: the turn is only let go, in order.
            tracing::warn!(
                message_sid = ticket.key.as_ref().map(|k| k.message_sid.as_str()),
                "took over the turn of an instance that died: its replies could only go in that instance's webhook answer, and are lost"
            );
            if self.wait_in_turn(&ticket, None).await.is_none() {
                let _ = ticket.release().await;
                return;
            }
            return ticket.abandon().await;
        };
        let message_sid = recipient.message_sid.clone();
        // One that cannot be read (logged and counted) is asked for again.
        let answer = answer.and_then(|answer| self.state.read::<StoredOutcome>(&answer).ok());
        let Some(answer) = answer else {
            tracing::warn!(%message_sid, "took over the turn of an instance that died before the agent's answer was recorded: asking the agent again");
            let turn = Turn {
                conversations: Arc::clone(&self),
                route,
                ticket,
                recipient,
            };
            return turn.run(message, None).await;
        };
        let mut from = sent;
        if let Some(index) = sending.filter(|index| *index < answer.replies.len()) {
            tracing::error!(
                %message_sid,
                reply = index,
                "took over the turn of an instance that died while sending this reply: it may or may not have reached the person, and is not sent again"
            );
            from = index + 1;
        }
        let _owing = outbox.owe(&message_sid);
        let handled = Handled {
            agent_route: Some(Arc::clone(&route.name)),
            ..Handled::new(ticket.session, answer.outcome, answer.replies)
                .by_api()
                .posting(answer.handoff)
        };
        let wait = self.wait_in_turn(&ticket, Some(&route)).await;
        let turn = Turn {
            conversations: self,
            route,
            ticket,
            recipient,
        };
        match wait {
            Some(()) => turn.deliver(&handled, from).await,
            None => turn.leave().await,
        }
    }

    /// Waits for the turns before a taken-over turn (on `route`, if known) while they
    /// move; past the bound, as a person's turn does, it goes on out of order: what it
    /// owes is sent rather than held behind a stuck turn. `None` when shutting down.
    async fn wait_in_turn(&self, ticket: &Ticket, route: Option<&AgentRoute>) -> Option<()> {
        let agent_timeout = route.map_or(Duration::ZERO, |route| route.agent.timeout());
        let stall = self.waits.turn(agent_timeout);
        if self.wait_or_leave(ticket, stall).await? == TurnWait::Stalled {
            self.metrics.turn_wait_expired("takeover");
            tracing::warn!(
                session = %ticket.session,
                "the turns before a taken-over turn did not move within their bound (one is stuck): it goes on now, out of order"
            );
        }
        Some(())
    }

    /// While the state is shared: takes over, every `every`, the turns whose instance
    /// stopped renewing them or let them go. Stops when the server does.
    pub async fn take_over_expired(self: Arc<Self>, every: Duration) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = self.stopped() => return,
            }
            for taken in self.state.take_over_expired().await {
                // Linked, once its record is read, to the webhook that started it.
                let resumed = Arc::clone(&self).resume(taken);
                tokio::spawn(request::linked(Later::Takeover, None, resumed));
            }
        }
    }
}
