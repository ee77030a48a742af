//! One message's turn, in the order it lives it:
//!
//! 1. **admitted** ([`Turn::admit`]): its id claimed (a re-delivery gets the first
//!    delivery's outcome instead) and its place in the conversation taken; the turn
//!    then runs on its own task, so that it finishes even if Twilio hangs up, while the
//!    webhook waits for it as long as its way of replying allows ([`Webhook`]);
//! 2. **asked** ([`Turn::ask`]): once the turns before it are done, the agent, or past
//!    a rate limit nobody, or during a hand-over the person's human;
//! 3. **decided** ([`Turn::decide`]): which way the replies go, in which form
//!    ([`crate::render`]);
//! 4. **delivered** ([`Turn::deliver`]): in the webhook's answer, or through the
//!    Messages API, recording how far it got, then the hand-over events; the turn is
//!    finished with its outcome, for re-deliveries.
//!
//! At the end of the shutdown grace a turn still at work leaves it to the other
//! instances ([`Turn::leave`]). A turn taken over from a dead instance joins at step 4
//! ([`super::takeover`]).

use super::handover::{self, Before, TurnAt};
use super::query;
use super::{
    finish, AgentRoute, Conversations, Delivery, Handled, HandoffWork, Known, Outcome,
    StoredOutcome, TurnRecord,
};
use crate::agent::retry::FallbackReason;
use crate::agent::{AgentAnswer, AgentQuery, QueryInput};
use crate::menu::PendingMenu;
use crate::outbox::{Outbox, Recipient};
use crate::rate_limit::Limited;
use crate::render::{render, Way};
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::session::SessionId;
use crate::state::{Admission, MessageKey, Repeat, Stored, Ticket, TurnWait};
use crate::telemetry::request::{self, Later};
use crate::telemetry::{Trace, SPANS};
use crate::twilio::webhook::IncomingMessage;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// AGENT_TIMEOUT is at most 14 s with `twiml`: with this, still inside Twilio's 15 s.
const TURN_DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// One message's turn, held: what it answers, on which route, to whom.
pub(super) struct Turn {
    pub(super) conversations: Arc<Conversations>,
    pub(super) route: Arc<AgentRoute>,
    pub(super) ticket: Ticket,
    pub(super) recipient: Recipient,
}

/// The webhook's side of a turn: the answer it waits for, if its way of replying lets
/// it wait. The turn's side is the sender given to [`Turn::run`].
struct Webhook {
    answer: oneshot::Receiver<Handled>,
}

impl Turn {
    // 1. Admitted.

    /// Admits `message` on `route` and answers what the webhook should say now.
    pub(super) async fn admit(
        conversations: &Arc<Conversations>,
        route: &Arc<AgentRoute>,
        message: IncomingMessage,
        recipient: Recipient,
        session: SessionId,
    ) -> Handled {
        let key = message.message_sid.as_ref().map(|sid| MessageKey {
            account_sid: message.account_sid.clone(),
            message_sid: sid.clone(),
        });
        let record = Self::record_of(conversations, route, &message, &recipient);
        let reads = conversations.reads();
        let store = match conversations.state.is_shared() {
            true => "shared",
            false => "local",
        };
        let admission = conversations
            .state
            .admit(key, session, record.as_ref(), &reads)
            .instrument(tracing::info_span!(target: SPANS, "admission", state.store = store))
            .await;
        let ticket = match admission {
            Admission::Repeat(repeat) => {
                return Self::repeat(conversations, route, repeat, session).await
            }
            Admission::First(ticket) => ticket,
        };
        let (answer, answered) = oneshot::channel();
        let waiting = match &route.delivery {
            Delivery::Api(_) => None,
            Delivery::Twiml | Delivery::Auto { .. } => Some(answer),
        };
        let turn = Turn {
            conversations: Arc::clone(conversations),
            route: Arc::clone(route),
            ticket,
            recipient,
        };
        // Replies only through the API: the webhook answers now, and the turn's work
        // is in a trace of its own, linked to the webhook's.
        match waiting {
            None => tokio::spawn(request::linked(
                Later::Reply,
                Trace::current(),
                turn.run(message, None),
            )),
            waiting => tokio::spawn(request::carried(turn.run(message, waiting))),
        };
        Webhook { answer: answered }
            .wait(conversations, route, session)
            .await
    }

    /// What another instance needs to send this turn's replies, should this one die:
    /// only when there is a store to share it and an API to send them through.
    fn record_of(
        conversations: &Conversations,
        route: &AgentRoute,
        message: &IncomingMessage,
        recipient: &Recipient,
    ) -> Option<Stored> {
        if !conversations.state.is_shared() || route.delivery.outbox().is_none() {
            return None;
        }
        let record = TurnRecord {
            params: message.params.pairs().to_vec(),
            status_callback: recipient.status_callback.clone(),
            trace: Trace::current().map(|trace| trace.to_traceparent()),
        };
        Stored::of(&record)
            .inspect_err(|error| tracing::error!(%error, "a turn's message was not recorded: another instance cannot take it over"))
            .ok()
    }

    /// A re-delivery: the first delivery's outcome, never a second agent call or a
    /// second set of messages.
    async fn repeat(
        conversations: &Conversations,
        route: &AgentRoute,
        repeat: Repeat,
        session: SessionId,
    ) -> Handled {
        // Every wait is bounded: with replies only in the webhook's answer, by the
        // first delivery's own deadline (its agent's timeout and a margin, inside
        // Twilio's 15 s), past which that delivery, on whatever instance, has either
        // answered or died with its replies.
        let (wait, bounded) = match &route.delivery {
            Delivery::Twiml => (route.agent.timeout() + TURN_DEADLINE_MARGIN, true),
            Delivery::Api(_) => (Duration::ZERO, false),
            Delivery::Auto { deadline, .. } => (*deadline, false),
        };
        // Like a first delivery, a repeat stops waiting when the server stops: the
        // first delivery's replies then go through the API.
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(wait, repeat.outcome()) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => {
                    if bounded {
                        conversations.metrics.repeat_wait_expired();
                        tracing::warn!(session = %session, "a re-delivery's first delivery did not finish within the webhook's time: answered empty");
                    }
                    None
                }
            },
            _ = conversations.stopped() => None,
        };
        let first =
            outcome.and_then(|stored| conversations.state.read::<StoredOutcome>(&stored).ok());
        match first {
            Some(first) => Handled::repeat_of(session, first),
            None => Handled {
                duplicate: true,
                ..Handled::queued(session)
            },
        }
    }

    /// The turn, on its own task: waits for the turns before it, asks, decides and
    /// delivers; gives the answer to the webhook still `waiting`, if it can.
    pub(super) async fn run(
        self,
        message: IncomingMessage,
        waiting: Option<oneshot::Sender<Handled>>,
    ) {
        let owing = self
            .outbox()
            .map(|outbox| outbox.owe(&self.recipient.message_sid));
        // `keep_alive` boxes the question: a turn waiting for the agent (most of those
        // in flight) holds it once, apart from what decides and delivers.
        let asked = self.ticket.keep_alive(async {
            self.wait_turn().await;
            let known = self.conversations.known(&self.ticket).await;
            self.ask(message, known).await
        });
        let asked = self.within_deadline(asked);
        let handled = tokio::select! {
            handled = asked => handled,
            () = self.conversations.handed_over() => return Box::pin(self.leave()).await,
        };
        // Boxed, as the question is: a turn waiting for the agent (most of those in
        // flight) then holds neither what decides nor what delivers.
        Box::pin(self.decide(handled, waiting)).await;
        drop(owing);
    }

    /// Waits for the turns before this one while they move. A conversation that has
    /// not moved for longer than a turn may honestly take has a turn ahead stuck past
    /// its own timeouts: this one then goes on, out of order. Of the ways out, the one
    /// that loses nothing: the agent still hears the message and the person gets its
    /// answer, where a fallback would drop what they wrote, and waiting on would leave
    /// them unanswered for as long as the stuck turn lasts. (With replies only in the
    /// webhook's answer, [`Turn::within_deadline`] ends the wait long before.)
    async fn wait_turn(&self) {
        let stall = self.conversations.waits.turn(self.route.agent.timeout());
        if self.ticket.wait_turn(stall).await == TurnWait::Stalled {
            self.conversations.metrics.turn_wait_expired("message");
            tracing::warn!(
                message_sid = %self.recipient.message_sid,
                session = %self.ticket.session,
                "the turns before this message did not move within their bound (one is stuck): it is answered now, out of order"
            );
        }
    }

    /// With replies only in the webhook's answer, the wait for the turns before this
    /// one counts against the agent's time: Twilio hangs up after 15 s. A little past
    /// the agent's own timeout, which ends its call first (and counts it): this bound
    /// is for the wait behind the turns before.
    async fn within_deadline(&self, asked: impl std::future::Future<Output = Handled>) -> Handled {
        match self.route.delivery {
            Delivery::Twiml => {
                let deadline =
                    tokio::time::Instant::now() + self.route.agent.timeout() + TURN_DEADLINE_MARGIN;
                tokio::time::timeout_at(deadline, asked)
                    .await
                    .unwrap_or_else(|_| {
                        Handled::fallback(
                            self.ticket.session,
                            &self.route.fallback,
                            FallbackReason::Timeout,
                        )
                    })
            }
            _ => asked.await,
        }
    }

    // 2. Asked.

    /// What the person gets for `message`: nothing (Twilio's keywords, nothing to ask),
    /// "slow down" past a rate limit, the agent's answer (or the fallback), or, during
    /// a hand-over, nothing while the message goes to the human side.
    async fn ask(&self, message: IncomingMessage, known: Known) -> Handled {
        let conversations = &self.conversations;
        let session = self.ticket.session;
        // STOP and the like are Twilio's to answer, limit or not: a "slow down" after
        // STOP would be refused (error 21610). A person writing to a human is not held
        // to the agent's pace.
        let limited = self
            .ticket
            .limited
            .filter(|_| message.opt_out.is_none())
            .filter(|_| !known.with_a_person(conversations.handoff.as_deref()));
        if let Some(limited) = limited {
            return self.slow_down(limited);
        }
        let mut known = known;
        // STOP ends a hand-over (the helpdesk is told), and the human side may not write
        // until START: remembered whether the agent hears of it or not.
        let opted = match (&conversations.handoff, message.opt_out) {
            (Some(handoff), Some(keyword)) => {
                let (record, ended) =
                    handover::on_opt_out(handoff, session, known.handoff.take(), keyword).await;
                known.handoff = record;
                ended
            }
            _ => None,
        };
        let handled = self.ask_known(message, known).await;
        match opted {
            Some(ended) => handled.posting_first(ended),
            None => handled,
        }
    }

    /// [`Turn::ask`], once the limits and the opt-outs are seen to.
    async fn ask_known(&self, message: IncomingMessage, known: Known) -> Handled {
        let conversations = &self.conversations;
        let session = self.ticket.session;
        // Twilio answers these itself, and a reply of ours after STOP would be refused
        // (error 21610): by default the agent does not hear of them.
        if message.opt_out.is_some() && !conversations.messages.opt_out_to_agent {
            return Handled::nothing(session, Outcome::OptOut);
        }
        let at = TurnAt {
            route: &self.route,
            message: &message,
            session,
            recipient: &self.recipient,
        };
        let found = match (&conversations.handoff, known.handoff) {
            (Some(handoff), Some(record)) => {
                match handover::before_agent(handoff, &at, record).await {
                    Before::ToPerson(handled) => return handled,
                    Before::TooFast(limited) => return self.slow_down(limited),
                    Before::Agent(found) => Some((handoff, found)),
                }
            }
            // Hand-over off, or a record that cannot be read: this turn leaves it be.
            _ => None,
        };
        let returning = found.as_ref().is_some_and(|(_, found)| found.returning);
        let pending = known.menu;
        let input = match message.opt_out {
            Some(keyword) => Some(QueryInput::Event(keyword.event().to_owned())),
            None => query::input_of(&message, pending.as_ref(), &conversations.metrics),
        };
        let Some(input) = input else {
            return Handled::nothing(session, Outcome::Empty);
        };
        let started = Instant::now();
        let typing = self.typing(&message);
        let span = tracing::info_span!(
            target: SPANS,
            "agent",
            otel.kind = "client",
            route = %self.route.name,
            agent.kind = self.route.agent.kind(),
            otel.status_code = tracing::field::Empty,
            fallback_reason = tracing::field::Empty,
        );
        let asked = self
            .ask_agent(&message, input, returning)
            .instrument(span.clone())
            .await;
        if let Err(error) = &asked {
            span.record("otel.status_code", "error");
            span.record("fallback_reason", error.reason().label());
        }
        if let Some(typing) = typing {
            typing.abort();
        }
        let elapsed = started.elapsed();
        match asked {
            Ok(answer) => {
                conversations.metrics.agent_answered(elapsed);
                self.remember_menu(&answer, pending.is_some()).await;
                let work = match found {
                    Some((handoff, found)) => {
                        handover::after_agent(
                            handoff,
                            &conversations.messages.menu,
                            &at,
                            found,
                            &answer,
                        )
                        .await
                    }
                    None => None,
                };
                Handled::answered(session, answer.replies, elapsed).posting(work)
            }
            Err(error) => {
                conversations.metrics.agent_failed(elapsed, error.label());
                tracing::warn!(route = %self.route.name, session = %session, error = %error, "the agent could not answer; sending the fallback message");
                let handled = Handled {
                    agent_latency: Some(elapsed),
                    ..Handled::fallback(session, &self.route.fallback, error.reason())
                };
                // A hand-over that expired is over, whatever the agent did.
                let work = match found {
                    Some((handoff, found)) => {
                        handover::after_failure(handoff, session, found).await
                    }
                    None => None,
                };
                handled.posting(work)
            }
        }
    }

    /// Asks the agent `input` for `message`. Back from a person: the agent hears of it
    /// first, and may say welcome back. One call site, so that the turn holds one
    /// request's state, not two.
    async fn ask_agent(
        &self,
        message: &IncomingMessage,
        input: QueryInput,
        returning: bool,
    ) -> Result<AgentAnswer, crate::agent::AgentError> {
        let mut query = AgentQuery {
            session: self.ticket.session,
            input: QueryInput::Text(String::new()),
            payload: query::payload_of(message),
            parameters: serde_json::Map::new(),
            language: message
                .params
                .get("FromCountry")
                .and_then(|country| self.route.languages.get(&country.to_ascii_uppercase()))
                .cloned(),
        };
        let mut inputs = Vec::with_capacity(2);
        if returning {
            inputs.push(QueryInput::Event(crate::handoff::RETURN_EVENT.to_owned()));
        }
        inputs.push(input);
        let mut answer = AgentAnswer::default();
        for input in inputs {
            query.input = input;
            let more = self.route.agent.detect_intent(&query).await?;
            answer.replies.extend(more.replies);
            answer.handoff = more.handoff.or(answer.handoff);
        }
        Ok(answer)
    }

    /// After `typing_after`, WhatsApp shows "typing…" until the reply: the task to
    /// abort when the agent has answered.
    fn typing(&self, message: &IncomingMessage) -> Option<tokio::task::JoinHandle<()>> {
        let after = self.conversations.messages.typing_after?;
        let outbox = Arc::clone(self.outbox()?);
        let message_sid = message.message_sid.clone()?;
        if message.channel() != "whatsapp" {
            return None;
        }
        let account_sid = message.account_sid.clone();
        Some(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            outbox.typing(&account_sid, &message_sid).await;
        }))
    }

    /// The menu of this answer waits for the next message; one left from before
    /// (`was_pending`) is answered or passed by.
    async fn remember_menu(&self, answer: &AgentAnswer, was_pending: bool) {
        let conversations = &self.conversations;
        let (slot, session) = (conversations.menu_slot(), &self.ticket.session);
        match PendingMenu::of(&answer.replies) {
            Some(menu) => conversations.state.set(&slot, session, &menu).await,
            None if was_pending => conversations.state.remove(&slot, session).await,
            None => {}
        }
    }

    /// A message past a rate limit: the agent is not asked; the person is told once.
    fn slow_down(&self, limited: Limited) -> Handled {
        let conversations = &self.conversations;
        let session = self.ticket.session;
        conversations.metrics.rate_limited(limited.scope.label());
        let replies = match limited.tell {
            true => {
                tracing::warn!(
                    message_sid = %self.recipient.message_sid,
                    session = %session,
                    limit = limited.scope.label(),
                    "a conversation went past the rate limit: its messages are not sent to the agent until its pace is back"
                );
                fit_to_limits(vec![ReplyMessage::text(
                    &conversations.messages.rate_limited,
                )])
            }
            false => Vec::new(),
        };
        Handled::new(session, Outcome::RateLimited, replies)
    }

    // 3. Decided.

    /// Which way `handled` goes: to the webhook still `waiting` if it can carry it,
    /// else through the API; with neither, finished as it is for a re-delivery.
    async fn decide(self, handled: Handled, waiting: Option<oneshot::Sender<Handled>>) {
        let handled = Handled {
            agent_route: Some(Arc::clone(&self.route.name)),
            ..handled
        };
        // WhatsApp menus and templates travel only through the API: TwiML has no
        // ContentSid. The webhook then answers empty at once.
        let needs_api = self.outbox().is_some()
            && crate::render::needs_api(&handled.replies, self.recipient.channel());
        let handled = match waiting {
            Some(webhook) if needs_api => {
                let _ = webhook.send(Handled::queued(handled.session));
                handled
            }
            Some(webhook) => {
                let plain = self.rendered(&handled, Way::Twiml);
                match webhook.send(plain.clone()) {
                    Ok(()) => return self.answered_in_webhook(handled, plain).await,
                    // The webhook stopped waiting: the replies take the other way.
                    Err(_) => handled,
                }
            }
            None => handled,
        };
        match self.outbox() {
            // Twiml: the webhook stopped waiting (shutdown); a re-delivery gets this.
            None => {
                let plain = self.rendered(&handled, Way::Twiml);
                finish(self.ticket, &plain).await
            }
            Some(_) => {
                let handled = self.rendered(&handled, Way::Api).by_api();
                if let Some(outcome) = StoredOutcome::of(&handled) {
                    self.ticket.record_answer(&outcome).await;
                }
                // Boxed: a turn answered in the webhook, most of them, does not carry
                // the API's request state in its future (each turn in flight is one).
                Box::pin(self.deliver(&handled, 0)).await;
            }
        }
    }

    /// `handled` with its replies as they go out `way` to the recipient
    /// ([`crate::render`]): what was written out as text counted, what was left out
    /// said.
    fn rendered(&self, handled: &Handled, way: Way) -> Handled {
        let way_label = match way {
            Way::Twiml => "twiml",
            Way::Api => "api",
        };
        let _span = tracing::info_span!(target: SPANS, "render", reply.way = way_label).entered();
        let conversations = &self.conversations;
        let rendered = render(
            &handled.replies,
            self.recipient.channel(),
            way,
            &conversations.messages.menu,
        );
        for reason in rendered.as_text {
            conversations.metrics.menu_as_text(reason);
        }
        if rendered.left_out > 0 {
            tracing::warn!(
                "a content template cannot travel in the webhook's answer and was not sent: templates need REPLY_MODE=auto or api"
            );
        }
        handled.clone().saying(rendered.replies)
    }

    // 4. Delivered.

    /// The webhook took `plain`, the replies as TwiML carries them: the hand-over
    /// events follow, and the turn is finished.
    async fn answered_in_webhook(self, handled: Handled, plain: Handled) {
        if let Some(work) = &handled.handoff {
            // Recorded as answered and sent first: an instance taking the turn over
            // then only posts the events.
            if let Some(answered) = StoredOutcome::of(&handled.clone().by_api()) {
                self.ticket
                    .record_answer_sent(&answered, handled.replies.len())
                    .await;
            }
            self.post_events(work, handled.session).await;
        }
        finish(self.ticket, &plain).await
    }

    /// Sends `handled.replies[from..]` through the API, then posts the hand-over events
    /// and finishes the turn. A turn taken over from another instance joins here.
    pub(super) async fn deliver(self, handled: &Handled, from: usize) {
        let Some(outbox) = self.outbox().cloned() else {
            return finish(self.ticket, handled).await;
        };
        let recipient = &self.recipient;
        let delivery =
            self.ticket
                .keep_alive(outbox.deliver(&self.ticket, recipient, &handled.replies, from));
        let report = tokio::select! {
            report = delivery => report,
            () = self.conversations.handed_over() => return self.leave().await,
        };
        let metrics = &self.conversations.metrics;
        let replies = handled.replies.len().saturating_sub(from);
        metrics.replies_sent("api", report.sent);
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
            metrics.reply_failed(*status, *code);
        }
        if let Some(work) = &handled.handoff {
            self.post_events(work, handled.session).await;
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
        finish(self.ticket, handled).await;
    }

    /// Posts the turn's hand-over events, in order; retries may outlast the lease,
    /// which is renewed meanwhile.
    async fn post_events(&self, work: &HandoffWork, session: SessionId) {
        let posting = self
            .conversations
            .post_events(work, session, &self.recipient);
        self.ticket.keep_alive(posting).await;
    }

    /// At the end of the grace, a turn still at work stops: another instance takes it
    /// over (shared state), or its replies are lost with this process, which is said.
    pub(super) async fn leave(self) {
        let message_sid = self.recipient.message_sid;
        if self.ticket.release().await {
            tracing::warn!(%message_sid, "shutting down: this message's replies are left to the other instances");
        } else {
            tracing::error!(%message_sid, "shutting down: the reply to this message was not sent");
        }
    }

    fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.route.delivery.outbox()
    }
}

impl Webhook {
    /// What the webhook answers now: the turn's answer, or, when it cannot wait for it
    /// (past the deadline of `REPLY_MODE=auto`, or shutting down), empty with the
    /// replies following through the API, or the fallback message.
    async fn wait(
        mut self,
        conversations: &Conversations,
        route: &AgentRoute,
        session: SessionId,
    ) -> Handled {
        let fallback = |reason| Handled::fallback(session, &route.fallback, reason);
        match &route.delivery {
            Delivery::Api(_) => Handled::queued(session),
            Delivery::Twiml => {
                tokio::select! {
                    answer = &mut self.answer => answer.unwrap_or_else(|_| {
                        tracing::error!(session = %session, "answering a message panicked");
                        fallback(FallbackReason::Panic)
                    }),
                    () = conversations.out_of_grace() => fallback(FallbackReason::Shutdown),
                }
            }
            Delivery::Auto { deadline, .. } => {
                // A shutdown cuts the wait short: the replies then go through the API,
                // and the server can stop within Cloud Run's grace period.
                let wait = async {
                    tokio::select! {
                        answer = &mut self.answer => Ok(answer),
                        _ = conversations.stopped() => Err(()),
                    }
                };
                match tokio::time::timeout(*deadline, wait)
                    .await
                    .unwrap_or(Err(()))
                {
                    Ok(Ok(handled)) => handled,
                    Ok(Err(_)) => fallback(FallbackReason::Abandoned),
                    Err(()) => {
                        // Too late for the webhook. Closing first makes the hand-over
                        // exact: either the answer is already here, or the turn's send
                        // fails and the replies go through the API.
                        self.answer.close();
                        self.answer
                            .try_recv()
                            .unwrap_or_else(|_| Handled::queued(session))
                    }
                }
            }
        }
    }
}
