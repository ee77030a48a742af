//! One turn, worked: it waits for the turns before it in its conversation, asks the
//! agent (or, past a rate limit, does not), and gives the replies to the webhook still
//! waiting or else sends them through the Messages API; at the end of the shutdown
//! grace it leaves its work to the other instances.

use super::{finish, AgentRoute, Conversations, Delivery, Handled, Route, StoredOutcome};
use crate::outbox::{Outbox, Recipient};
use crate::render::Way;
use crate::state::Ticket;
use crate::twilio::webhook::IncomingMessage;
use std::sync::Arc;
use tokio::sync::oneshot;

/// AGENT_TIMEOUT is at most 14 s with `twiml`: with this, still inside Twilio's 15 s.
const TURN_DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(500);

impl Conversations {
    /// One turn: waits for the turns before it, asks the agent, and gives the replies
    /// to the webhook still `waiting`, or else sends them through the API.
    pub(super) async fn run_turn(
        self: Arc<Self>,
        ticket: Ticket,
        route: Arc<AgentRoute>,
        message: IncomingMessage,
        recipient: Recipient,
        waiting: Option<oneshot::Sender<Handled>>,
    ) {
        let owing = route
            .delivery
            .outbox()
            .map(|outbox| outbox.owe(&recipient.message_sid));
        let session = ticket.session;
        let limited = ticket.limited;
        // With replies only in the webhook's answer, the wait for the turns before this
        // one counts against the agent's time: Twilio hangs up after 15 s.
        let deadline = match route.delivery {
            // A little past the agent's own timeout, which ends its call first (and
            // counts it): this bound is for the wait behind the turns before.
            Delivery::Twiml => {
                Some(tokio::time::Instant::now() + route.agent.timeout() + TURN_DEADLINE_MARGIN)
            }
            _ => None,
        };
        // Boxed: a turn in flight holds its work once, not once per layer of futures.
        let work = Box::pin(ticket.keep_alive(async {
            ticket.wait_turn().await;
            let known = self.known(&ticket).await;
            // STOP and the like are Twilio's to answer, limit or not: a "slow down"
            // after STOP would be refused (error 21610). A person writing to a human is
            // not held to the agent's pace.
            let limited = limited
                .filter(|_| message.opt_out.is_none())
                .filter(|_| !known.with_a_person(self.handoff.as_deref()));
            match limited {
                Some(limited) => self.slow_down(session, limited, &recipient.message_sid),
                None => {
                    self.answer(&route, message, session, &recipient, known)
                        .await
                }
            }
        }));
        let work = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, work)
                    .await
                    .unwrap_or_else(|_| {
                        self.fallback(
                            &route,
                            session,
                            crate::agent::retry::FallbackReason::Timeout,
                            None,
                        )
                    }),
                None => work.await,
            }
        };
        let mut handled = tokio::select! {
            handled = work => handled,
            () = self.handed_over() => return self.leave(ticket, &recipient.message_sid).await,
        };
        handled.agent_route = Some(Arc::clone(&route.name));
        // WhatsApp menus and templates travel only through the API: TwiML has no
        // ContentSid. The webhook then answers empty at once.
        let needs_api = route.delivery.outbox().is_some()
            && crate::render::needs_api(&handled.replies, recipient.channel());
        let handled = match waiting {
            Some(webhook) if needs_api => {
                let _ = webhook.send(Handled::queued(session, false));
                handled
            }
            Some(webhook) => {
                let plain = self.in_plain(&handled, &recipient);
                let outcome = plain.clone();
                match webhook.send(plain) {
                    Ok(()) => {
                        if let Some(work) = &handled.handoff {
                            // Recorded as answered and sent first: an instance taking
                            // the turn over then only posts the events.
                            let answered = StoredOutcome::of(&Handled {
                                route: Route::Api,
                                ..handled.clone()
                            });
                            if let Some(answered) = answered {
                                ticket
                                    .record_answer_sent(&answered, handled.replies.len())
                                    .await;
                            }
                            ticket
                                .keep_alive(self.post_events(work, session, &recipient))
                                .await;
                        }
                        return finish(ticket, &outcome).await;
                    }
                    Err(_) => handled,
                }
            }
            None => handled,
        };
        match route.delivery.outbox() {
            // Twiml: the webhook stopped waiting (shutdown); a re-delivery gets this.
            None => finish(ticket, &self.in_plain(&handled, &recipient)).await,
            Some(outbox) => {
                let handled = Handled {
                    replies: Arc::new(self.render(&handled.replies, &recipient, Way::Api)),
                    route: Route::Api,
                    ..handled
                };
                if let Some(outcome) = StoredOutcome::of(&handled) {
                    ticket.record_answer(&outcome).await;
                }
                // Boxed: a turn answered in the webhook, most of them, does not carry
                // the API's request state in its future (each turn in flight is one).
                Box::pin(self.send_through_api(outbox, ticket, &recipient, &handled, 0)).await;
            }
        }
        drop(owing);
    }

    /// `handled` as the webhook's TwiML can carry it.
    fn in_plain(&self, handled: &Handled, recipient: &Recipient) -> Handled {
        Handled {
            replies: Arc::new(self.render(&handled.replies, recipient, Way::Twiml)),
            ..handled.clone()
        }
    }

    /// Sends `handled.replies[from..]` through the API for `ticket`'s turn, then
    /// finishes the turn.
    pub(super) async fn send_through_api(
        &self,
        outbox: &Outbox,
        ticket: Ticket,
        recipient: &Recipient,
        handled: &Handled,
        from: usize,
    ) {
        let delivery =
            ticket.keep_alive(outbox.deliver(&ticket, recipient, &handled.replies, from));
        let report = tokio::select! {
            report = delivery => report,
            () = self.handed_over() => return self.leave(ticket, &recipient.message_sid).await,
        };
        let replies = handled.replies.len().saturating_sub(from);
        self.metrics.replies_sent("api", report.sent);
        let agent_ms = handled.agent_latency.map(|d| d.as_millis() as u64);
        if report.handed_over {
            tracing::warn!(
                message_sid = %recipient.message_sid,
                sent = report.sent,
                "another instance took over this message's turn: it sends the rest of its replies"
            );
            return;
        }
        for (status, code) in &report.failures {
            self.metrics.reply_failed(*status, *code);
        }
        if let Some(work) = &handled.handoff {
            // Retries may outlast the lease: it is renewed meanwhile.
            ticket
                .keep_alive(self.post_events(work, handled.session, recipient))
                .await;
        }
        match report.last_error {
            None => tracing::info!(
                message_sid = %recipient.message_sid,
                route = handled.agent_route.as_deref(),
                session = %handled.session,
                outcome = handled.outcome.label(),
                agent_ms,
                sent = report.sent,
                "replies sent through the Messages API"
            ),
            Some(error) => tracing::warn!(
                message_sid = %recipient.message_sid,
                route = handled.agent_route.as_deref(),
                session = %handled.session,
                outcome = handled.outcome.label(),
                agent_ms,
                sent = report.sent,
                replies,
                error = %error,
                "replies not sent through the Messages API: {} of {replies} failed",
                replies.saturating_sub(report.sent)
            ),
        }
        finish(ticket, handled).await;
    }

    /// At the end of the grace, a turn still at work stops: another instance takes it
    /// over (shared state), or its replies are lost with this process, which is said.
    pub(super) async fn leave(&self, ticket: Ticket, message_sid: &str) {
        if ticket.release().await {
            tracing::warn!(%message_sid, "shutting down: this message's replies are left to the other instances");
        } else {
            tracing::error!(%message_sid, "shutting down: the reply to this message was not sent");
        }
    }

    /// Waits for the turns before `ticket`'s; false if the server handed its work over
    /// meanwhile (shutting down).
    pub(super) async fn wait_or_leave(&self, ticket: &Ticket) -> bool {
        tokio::select! {
            () = ticket.keep_alive(ticket.wait_turn()) => true,
            () = self.handed_over() => false,
        }
    }
}
