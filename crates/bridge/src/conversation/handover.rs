//! A conversation handed to a person: before the agent is asked, the message may go to
//! the human side instead; after the agent answers, its hand-over (if any) begins; the
//! events these make are posted after the turn's replies. The turn calls these steps
//! ([`before_agent`], [`after_agent`], [`after_failure`]); they never call back into
//! it. The human side's own writing and ending also take a turn of the conversation,
//! so that all of it happens in one order, whichever instance does it.

use super::{AgentRoute, Conversations, Handled};
use crate::agent::AgentAnswer;
use crate::handoff::events::EventKind;
use crate::handoff::idempotency::{self, IdempotencyKey, SentOnce};
use crate::handoff::{
    now, Active, Delivery, EndReason, Event, Handoff, Line, Record, Speaker, StoredRecipient,
};
use crate::menu::MenuFormat;
use crate::outbox::Recipient;
use crate::rate_limit::{Limited, Scope};
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::session::SessionId;
use crate::state::TurnWait;
use crate::twilio::messages_api::SendError;
use crate::twilio::webhook::{IncomingMessage, OptOut};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::sync::Arc;

/// When a quiet hand-over could not be looked at, how long before it is again.
const RETRY_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);
/// A sweep's claim on a hand-over lasts `HANDOFF_RETRY_FOR` and this: the turn, and
/// the last try's own timeout.
const SWEEP_LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The hand-over events a turn posts after its replies, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoffWork {
    pub events: Vec<Event>,
}

/// The turn a hand-over step works on.
pub(super) struct TurnAt<'a> {
    pub route: &'a AgentRoute,
    pub message: &'a IncomingMessage,
    pub session: SessionId,
    pub recipient: &'a Recipient,
}

/// What the turn found before asking the agent, for [`Conversations::after_agent`].
pub(super) struct Found {
    pub record: Record,
    /// Posted first: an expired hand-over was ended now.
    pub ended: Option<Event>,
    /// The agent gets the return event first.
    pub returning: bool,
}

/// Where a message goes, hand-over wise.
pub(super) enum Before {
    /// To the human side: the agent is not asked.
    ToPerson(Handled),
    /// To the agent; what was found is saved once it has answered.
    Agent(Found),
    /// Past `HANDOFF_RATE_LIMIT`: to nobody; the person is told as the agent's limit
    /// tells them.
    TooFast(Limited),
}

/// Why the human side's call did not go through.
#[derive(Debug, thiserror::Error)]
pub enum HumanSideError {
    #[error("no hand-over is in progress for this conversation")]
    NotHandedOver,
    #[error("the conversation is busy; try again")]
    Busy,
    /// The conversation's turn did not come within the human side's bound.
    #[error("the conversation is still answering an earlier message; nothing was sent: try again")]
    TurnHeld,
    #[error("the person opted out (STOP): nothing can be sent to them until they reply START")]
    OptedOut,
    #[error("this Idempotency-Key was used for another message in this conversation")]
    KeyReused,
    /// A repeat of a call with the same key, whose send had failed part-way.
    #[error("{sent} message(s) sent, then Twilio did not take the next: {error}")]
    SentBefore { sent: usize, error: String },
    #[error("{sent} message(s) sent, then Twilio did not take the next: {error}")]
    Send { sent: usize, error: SendError },
    /// The conversation's hand-over record cannot be read: it is left as it is.
    #[error("the conversation's hand-over record cannot be read")]
    Unreadable(#[from] crate::state::Unreadable),
}

/// Reads the conversation's hand-over record: a message during a hand-over goes to
/// the human side; a keyword starts one; an expired one ends.
pub(super) async fn before_agent(
    handoff: &Handoff,
    turn: &TurnAt<'_>,
    mut record: Record,
) -> Before {
    let TurnAt {
        route,
        message,
        session,
        ..
    } = *turn;
    let keep = handoff.settings.history;
    let mut ended = None;
    if let Some(active) = record.active.as_mut() {
        if !handoff.expired(active) {
            if let Err(too_fast) = active.pace.count(now(), handoff.settings.rate_limit) {
                // Written when it changes what is remembered: the first time told.
                if too_fast.tell {
                    handoff.save(&session, &record).await;
                }
                return Before::TooFast(Limited {
                    scope: Scope::Handoff,
                    tell: too_fast.tell,
                });
            }
            active.last_activity = now();
            record.remember(Speaker::Person, &message.body, &media_of(message), keep);
            handoff.save(&session, &record).await;
            return Before::ToPerson(Handled::with_person(
                session,
                Vec::new(),
                vec![Event::received(&session, message)],
            ));
        }
        record.active = None;
        record.returning = handoff.settings.return_event;
        handoff.metrics.handoff_ended(EndReason::Expired.label());
        tracing::info!(conversation = %session, "a hand-over ended by itself after HANDOFF_TTL without activity: the conversation is back with the agent");
        ended = Some(Event::ended(&session, EndReason::Expired));
    }
    if handoff.is_keyword(&message.body) && route.delivery.outbox().is_some() {
        record.remember(Speaker::Person, &message.body, &media_of(message), keep);
        let started = start(handoff, &mut record, turn, "keyword", Map::new());
        handoff.save(&session, &record).await;
        if let Some(active) = &record.active {
            handoff.schedule_end(&session, active).await;
        }
        let replies = vec![ReplyMessage::text(&handoff.settings.started_message)];
        let events = ended.into_iter().chain(started).collect();
        return Before::ToPerson(Handled::with_person(
            session,
            fit_to_limits(replies),
            events,
        ));
    }
    let returning = std::mem::take(&mut record.returning);
    Before::Agent(Found {
        record,
        ended,
        returning,
    })
}

/// STOP or START (Twilio's `OptOutType`): remembered, so that the human side's sends
/// are refused while the person is opted out; STOP also ends a hand-over in progress,
/// and the helpdesk gets `handoff.ended` (`opted_out`). Returns the record as it now
/// is, and the event to post.
pub(super) async fn on_opt_out(
    handoff: &Handoff,
    session: SessionId,
    record: Option<Record>,
    keyword: OptOut,
) -> (Option<Record>, Option<Event>) {
    match keyword {
        OptOut::Stop => handoff.remember_opt_out(&session, true).await,
        OptOut::Start => handoff.remember_opt_out(&session, false).await,
        OptOut::Help => return (record, None),
    }
    let Some(mut record) = record else {
        return (None, None);
    };
    if keyword != OptOut::Stop || record.active.take().is_none() {
        return (Some(record), None);
    }
    record.returning = handoff.settings.return_event;
    handoff.save(&session, &record).await;
    handoff.metrics.handoff_ended(EndReason::OptedOut.label());
    tracing::info!(conversation = %session, "the person opted out (STOP) during a hand-over: it ended, and the human side's sends are refused until START");
    let ended = Event::ended(&session, EndReason::OptedOut);
    (Some(record), Some(ended))
}

/// Records the turn, and starts the hand-over the agent asked for; its replies are
/// remembered as `menu` writes them.
pub(super) async fn after_agent(
    handoff: &Handoff,
    menu: &MenuFormat,
    turn: &TurnAt<'_>,
    found: Found,
    answer: &AgentAnswer,
) -> Option<HandoffWork> {
    let TurnAt {
        route,
        message,
        session,
        ..
    } = *turn;
    let Found {
        mut record,
        ended,
        returning,
    } = found;
    let keep = handoff.settings.history;
    // Without history to keep, the record changes only when a hand-over starts or
    // ends: then only is it written.
    let mut changed = keep > 0 || ended.is_some() || returning;
    record.remember(Speaker::Person, &message.body, &media_of(message), keep);
    for reply in &answer.replies {
        let shown = menu.as_text(reply);
        record.remember(Speaker::Agent, &shown.body, &shown.media, keep);
    }
    let mut events: Vec<Event> = ended.into_iter().collect();
    match &answer.handoff {
        Some(request) if route.delivery.outbox().is_some() => {
            changed = true;
            events.extend(start(
                handoff,
                &mut record,
                turn,
                request.trigger,
                request.metadata.clone(),
            ))
        }
        Some(_) => tracing::warn!(
            route = %route.name,
            conversation = %session,
            "the agent handed the conversation to a person, but this route answers only in the webhook (REPLY_MODE=twiml), and the human side needs the Messages API: the agent keeps the conversation"
        ),
        None => {}
    }
    if changed {
        handoff.save(&session, &record).await;
    }
    if let (Some(_), Some(active)) = (&answer.handoff, &record.active) {
        handoff.schedule_end(&session, active).await;
    }
    (!events.is_empty()).then_some(HandoffWork { events })
}

/// The agent failed: a hand-over that expired is over all the same, and said.
pub(super) async fn after_failure(
    handoff: &Handoff,
    session: SessionId,
    found: Found,
) -> Option<HandoffWork> {
    let mut record = found.record;
    record.returning |= found.returning;
    handoff.save(&session, &record).await;
    found.ended.map(|event| HandoffWork {
        events: vec![event],
    })
}

impl Conversations {
    /// Posts a turn's hand-over events, in order. One about the person's side that
    /// cannot be delivered gives the hand-over up: the person is told, once, and the
    /// conversation is back with the agent.
    pub(super) async fn post_events(
        &self,
        work: &HandoffWork,
        session: SessionId,
        recipient: &Recipient,
    ) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        for event in &work.events {
            let delivery = handoff.destination.deliver(event).await;
            if matches!(delivery, Delivery::Dropped { .. }) && event.kind != EventKind::HandoffEnded
            {
                self.give_up(handoff, session, recipient).await;
                return;
            }
        }
    }

    async fn give_up(&self, handoff: &Handoff, session: SessionId, recipient: &Recipient) {
        let Ok(mut record) = handoff.record(&session).await else {
            return;
        };
        if record.active.take().is_none() {
            return;
        }
        record.returning = handoff.settings.return_event;
        handoff.save(&session, &record).await;
        handoff.metrics.handoff_failed();
        handoff
            .metrics
            .handoff_ended(EndReason::Unavailable.label());
        tracing::warn!(
            conversation = %session,
            "the hand-over destination could not be reached: the person is told, and the conversation is back with the agent"
        );
        let notice = fit_to_limits(vec![ReplyMessage::text(
            &handoff.settings.unavailable_message,
        )]);
        if let (_, Err(error)) = self.send_now(recipient, &notice).await {
            tracing::error!(conversation = %session, error = %error, "the person could not be told that no one can take over");
        }
    }

    /// Ends, every `every`, the hand-overs quiet for `HANDOFF_TTL`, whatever instance
    /// started them: the helpdesk gets `handoff.ended` (`expired`) without waiting for
    /// the person to write again. Stops when the server does.
    ///
    /// A due hand-over is claimed for a lease, not taken out: it leaves the schedule
    /// only once its `handoff.ended` is delivered (or refused for good), so that a
    /// failed read, a helpdesk that is down or an instance that dies mid-way leaves it
    /// due again.
    pub async fn end_quiet_handoffs(self: Arc<Self>, every: std::time::Duration) {
        let Some(handoff) = self.handoff.clone() else {
            return;
        };
        // Longer than one look takes: its turn, then the event's delivery, tried for
        // `HANDOFF_RETRY_FOR`, each try bounded.
        let lease = (handoff.settings.retry_for + SWEEP_LEASE_MARGIN).as_secs();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = self.stopped() => return,
            }
            let due = self
                .state
                .claim_due(crate::handoff::SCHEDULE, now(), 100, lease)
                .await;
            for session in due.iter().filter_map(|id| SessionId::parse(id)) {
                // A trace of its own: the hand-over's record keeps no trace to link to.
                let ending = Arc::clone(&self).end_if_quiet(session, every);
                tokio::spawn(crate::telemetry::request::linked(
                    crate::telemetry::Later::QuietHandoff,
                    None,
                    ending,
                ));
            }
        }
    }

    async fn end_if_quiet(self: Arc<Self>, session: SessionId, every: std::time::Duration) {
        let Some(handoff) = self.handoff.clone() else {
            return;
        };
        let Ok(ticket) = self.human_turn(session).await else {
            // Shutting down, or the conversation held past the bound: looked at again
            // later, by this instance or another.
            let later = now() + RETRY_SWEEP.as_secs();
            self.state
                .schedule(crate::handoff::SCHEDULE, session.as_str(), later)
                .await;
            return;
        };
        // Unreadable: left claimed, it is due again when its lease runs out.
        let Ok(mut record) = handoff.record(&session).await else {
            return ticket.abandon().await;
        };
        let owed = match (&record.active, record.owed.clone()) {
            // A sweep before this one ended it, and the helpdesk did not take the event.
            (_, Some(owed)) => *owed,
            (Some(active), None) if handoff.expired(active) => {
                self.end_now(&handoff, session, &mut record, EndReason::Expired, true)
                    .await
            }
            // Active since: looked at again when its TTL may have run out.
            (Some(active), None) => {
                handoff.schedule_end(&session, active).await;
                return ticket.abandon().await;
            }
            (None, None) => {
                handoff.unschedule(&session).await;
                return ticket.abandon().await;
            }
        };
        match ticket.keep_alive(handoff.destination.deliver(&owed)).await {
            Delivery::Dropped { refused: false, .. } => {
                // Tried for HANDOFF_RETRY_FOR: tried again by a later sweep, for as long
                // as the record lives.
                let later = now() + every.as_secs().max(1);
                self.state
                    .schedule(crate::handoff::SCHEDULE, session.as_str(), later)
                    .await;
            }
            Delivery::Delivered { .. } | Delivery::Dropped { .. } => {
                if record.owed.take().is_some() && ticket.is_held() {
                    handoff.save(&session, &record).await;
                }
                match &record.active {
                    // A hand-over started since: swept when its own TTL may run out.
                    Some(active) => handoff.schedule_end(&session, active).await,
                    None => handoff.unschedule(&session).await,
                }
            }
        }
        ticket.abandon().await;
    }

    /// Sends through the outbox that serves `recipient`'s account.
    async fn send_now(
        &self,
        recipient: &Recipient,
        messages: &[ReplyMessage],
    ) -> (usize, Result<(), SendError>) {
        match self.outbox_of(&recipient.account_sid) {
            Some(outbox) => outbox.send_now(recipient, messages).await,
            None => (
                0,
                Err(SendError::Unknown(
                    "no Messages API for this account".into(),
                )),
            ),
        }
    }

    /// The human side writes to the person of `conversation`: sent now, in the
    /// conversation's order. Returns how many messages went out.
    ///
    /// The work runs on a task of its own that holds the conversation's turn, so that a
    /// caller hanging up cannot leave a message sent and not recorded.
    ///
    /// With an `Idempotency-Key`, a send already made with it answers as it did then,
    /// and sends nothing.
    pub async fn human_says(
        self: &Arc<Self>,
        conversation: &str,
        message: ReplyMessage,
        key: Option<IdempotencyKey>,
    ) -> Result<usize, HumanSideError> {
        let (handoff, session) = self.conversation_of(conversation)?;
        let handoff = Arc::clone(handoff);
        let this = Arc::clone(self);
        let work = async move {
            let ticket = this.human_turn(session).await?;
            let result = ticket
                .keep_alive(this.human_says_in_turn(&handoff, session, message, key, &ticket))
                .await;
            ticket.abandon().await;
            result
        };
        tokio::spawn(work)
            .await
            .unwrap_or(Err(HumanSideError::Busy))
    }

    async fn human_says_in_turn(
        &self,
        handoff: &Handoff,
        session: SessionId,
        message: ReplyMessage,
        key: Option<IdempotencyKey>,
        ticket: &crate::state::Ticket,
    ) -> Result<usize, HumanSideError> {
        // In the conversation's turn: a retry racing the first call waits for it, and
        // then finds what it did.
        let once = key.map(|key| (key.record_id(&session), idempotency::request_of(&message)));
        if let Some((id, request)) = &once {
            if let Some(before) = handoff.state.get(&idempotency::SENT_ONCE, id).await? {
                return match (&before.request == request, before.error) {
                    (false, _) => Err(HumanSideError::KeyReused),
                    (true, None) => Ok(before.sent),
                    (true, Some(error)) => Err(HumanSideError::SentBefore {
                        sent: before.sent,
                        error,
                    }),
                };
            }
        }
        if handoff.opted_out(&session).await? {
            return Err(HumanSideError::OptedOut);
        }
        let mut record = handoff.record(&session).await?;
        let active = match record.active.as_mut() {
            Some(active) if !handoff.expired(active) => active,
            Some(_) => {
                let ended = self
                    .end_now(handoff, session, &mut record, EndReason::Expired, false)
                    .await;
                handoff.destination.deliver(&ended).await;
                return Err(HumanSideError::NotHandedOver);
            }
            None => return Err(HumanSideError::NotHandedOver),
        };
        active.last_activity = now();
        let recipient = active.recipient.recipient("");
        let (sent, outcome) = self
            .send_now(&recipient, &fit_to_limits(vec![message.clone()]))
            .await;
        if sent > 0 {
            record.remember(
                Speaker::Human,
                &message.body,
                &message.media,
                handoff.settings.history,
            );
        }
        // Taken over meanwhile (the lease ran out): the record is another's to write.
        if ticket.is_held() {
            handoff.save(&session, &record).await;
        }
        // Remembered once anything went out: a retry must not send it again. A send
        // Twilio took nothing of may be tried again with the same key.
        if let (Some((id, request)), true) = (once, sent > 0 || outcome.is_ok()) {
            let done = SentOnce {
                request,
                sent,
                error: outcome.as_ref().err().map(ToString::to_string),
            };
            handoff.state.set(&idempotency::SENT_ONCE, &id, &done).await;
        }
        match outcome {
            Ok(()) => Ok(sent),
            Err(error) => Err(HumanSideError::Send { sent, error }),
        }
    }

    /// The human side gives `conversation` back to the agent. `handoff.ended` is posted
    /// in the conversation's turn, after the call has been answered; all of it on a task
    /// of its own, so that a caller hanging up leaves nothing half done.
    pub async fn human_ends(self: &Arc<Self>, conversation: &str) -> Result<(), HumanSideError> {
        let (handoff, session) = self.conversation_of(conversation)?;
        let handoff = Arc::clone(handoff);
        let this = Arc::clone(self);
        let (told, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let ticket = match this.human_turn(session).await {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    let _ = told.send(Err(refusal));
                    return;
                }
            };
            let mut record = match handoff.record(&session).await {
                Ok(record) => record,
                Err(unreadable) => {
                    let _ = told.send(Err(unreadable.into()));
                    return ticket.abandon().await;
                }
            };
            let reason = match &record.active {
                Some(active) if handoff.expired(active) => EndReason::Expired,
                Some(_) => EndReason::Desk,
                None => {
                    let _ = told.send(Err(HumanSideError::NotHandedOver));
                    return ticket.abandon().await;
                }
            };
            let ended = this
                .end_now(&handoff, session, &mut record, reason, false)
                .await;
            let _ = told.send(match reason {
                EndReason::Desk => Ok(()),
                _ => Err(HumanSideError::NotHandedOver),
            });
            ticket.keep_alive(handoff.destination.deliver(&ended)).await;
            ticket.abandon().await;
        });
        answer.await.unwrap_or(Err(HumanSideError::Busy))
    }

    fn conversation_of(
        &self,
        conversation: &str,
    ) -> Result<(&Arc<Handoff>, SessionId), HumanSideError> {
        let handoff = self.handoff.as_ref().ok_or(HumanSideError::NotHandedOver)?;
        let session = SessionId::parse(conversation).ok_or(HumanSideError::NotHandedOver)?;
        Ok((handoff, session))
    }

    /// A turn of the conversation for the human side, once the turns before it are done.
    ///
    /// The caller is a helpdesk's HTTP call: it waits at most [`Waits::human_turn`]
    /// (about 30 s), however long the turn ahead (a message at the agent, or one stuck)
    /// holds the conversation. Past it, the turn is given up (the conversation goes on
    /// without it) and the call is refused, nothing sent, to be tried again.
    ///
    /// [`Waits::human_turn`]: super::Waits::human_turn
    async fn human_turn(&self, session: SessionId) -> Result<crate::state::Ticket, HumanSideError> {
        let ticket = self
            .state
            .admit_uncounted(session)
            .await
            .ok_or(HumanSideError::Busy)?;
        let bound = self.waits.human_turn();
        let waited = tokio::time::timeout(bound, self.wait_or_leave(&ticket, bound)).await;
        match waited {
            Ok(Some(TurnWait::Ready)) => Ok(ticket),
            Ok(None) => {
                let _ = ticket.release().await;
                Err(HumanSideError::Busy)
            }
            Ok(Some(TurnWait::Stalled)) | Err(_) => {
                self.metrics.turn_wait_expired("human_side");
                tracing::warn!(
                    conversation = %session,
                    "the human side's call waited for the conversation's turn past its bound (an earlier message is still being answered): refused with nothing sent, to be tried again"
                );
                ticket.abandon().await;
                Err(HumanSideError::TurnHeld)
            }
        }
    }

    /// Ends the hand-over in `record` now; returns the `handoff.ended` event to post.
    /// With `owe` (the sweeper's), the record keeps the event until it is delivered:
    /// the sweeper tries it again until then.
    async fn end_now(
        &self,
        handoff: &Handoff,
        session: SessionId,
        record: &mut Record,
        reason: EndReason,
        owe: bool,
    ) -> Event {
        let ended = Event::ended(&session, reason);
        record.active = None;
        record.returning = handoff.settings.return_event;
        if owe {
            record.owed = Some(Box::new(ended.clone()));
        }
        handoff.save(&session, record).await;
        handoff.metrics.handoff_ended(reason.label());
        tracing::info!(conversation = %session, reason = reason.label(), "a hand-over ended: the conversation is back with the agent");
        ended
    }
}

/// Starts a hand-over in `record`: the `handoff.started` event, with the recent turns,
/// after the last hand-over's `handoff.ended` if the helpdesk has not taken it yet.
fn start(
    handoff: &Handoff,
    record: &mut Record,
    turn: &TurnAt<'_>,
    trigger: &'static str,
    metadata: Map<String, serde_json::Value>,
) -> Vec<Event> {
    let TurnAt {
        message,
        session,
        recipient,
        ..
    } = *turn;
    let history: Vec<Line> = record.recent.iter().cloned().collect();
    let owed = record.owed.take();
    record.active = Some(Active {
        started_at: now(),
        last_activity: now(),
        recipient: StoredRecipient::of(recipient),
        channel: message.channel().to_owned(),
        pace: Default::default(),
    });
    record.returning = false;
    handoff.metrics.handoff_started(trigger);
    tracing::info!(conversation = %session, trigger, "a hand-over to a person started");
    let unique = message
        .message_sid
        .clone()
        .unwrap_or_else(|| now().to_string());
    let started = Event::started(
        &session,
        &unique,
        message.channel(),
        trigger,
        metadata,
        &history,
        handoff
            .settings
            .include_address
            .then_some(message.from.as_str()),
    );
    owed.map(|owed| *owed)
        .into_iter()
        .chain([started])
        .collect()
}

fn media_of(message: &IncomingMessage) -> Vec<String> {
    message.media.iter().map(|m| m.url.clone()).collect()
}
