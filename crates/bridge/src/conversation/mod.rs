//! One incoming message, answered: its turn in the conversation, what to ask the agent
//! (once per message), which way the replies go, and what the user gets when the agent
//! cannot answer.
//!
//! This is the middle of the pipeline: it takes a verified [`IncomingMessage`] and
//! gives back the messages the webhook answers with. It knows nothing of HTTP or TwiML.
//! The turn's place, the message's id and the replies owed are kept by the state
//! layer, so that they hold across instances.
//!
//! Where to read: `turn.rs` is one message's turn, top to bottom (admitted, asked,
//! decided, delivered); `query.rs` what the agent is asked; `handover.rs` the steps of
//! a hand-over to people the turn calls, and the human side's own turns; `takeover.rs`
//! the turns of a dead instance, which join the turn at its delivery. This file holds
//! the types they share: what became of a message ([`Handled`], built by its
//! constructors), the routes and what answers on them ([`Answers`]), and
//! [`Conversations`], which starts and stops them.

mod handover;
mod outbound;
mod query;
mod takeover;
mod turn;
mod waits;

pub use query::{payload_of, query_input, MAX_QUERY_CHARS};

use turn::Turn;

pub use handover::{HandoffWork, HumanSideError};
pub use outbound::{BusinessEvent, EventTurn};
pub use waits::Waits;

use crate::agent::retry::FallbackReason;
use crate::agent::{Agent, AgentAnswer, AgentError, AgentQuery};
use crate::menu::{MenuFormat, PendingMenu};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Recipient};
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::session::{SessionId, SessionKey};
use crate::state::{Record, Slot, StateStore, Stored, Ticket, TurnWait};
use crate::twilio::webhook::IncomingMessage;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How a message was handled, for logs and metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The agent answered.
    Answered,
    /// The agent could not answer; the user got the fallback message, for this reason.
    Fallback(FallbackReason),
    /// Nothing to ask: no text and no media.
    Empty,
    /// The webhook was answered before the agent; the replies follow through the API.
    Queued,
    /// Past a rate limit: the agent was not asked.
    RateLimited,
    /// A STOP, START or HELP keyword: Twilio answers it, the agent is not asked.
    OptOut,
    /// No route matches the number written to, and there is no default route.
    NoRoute,
    /// The conversation is with a person: the message went to the human side.
    WithPerson,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Fallback(_) => "fallback",
            Outcome::Empty => "empty",
            Outcome::Queued => "queued",
            Outcome::RateLimited => "rate_limited",
            Outcome::OptOut => "opt_out",
            Outcome::NoRoute => "no_route",
            Outcome::WithPerson => "with_person",
        }
    }
}

/// Which way the replies travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Route {
    /// In the webhook's TwiML answer.
    Webhook,
    /// Through the Messages API, after the webhook was answered.
    Api,
}

/// What became of one message.
#[derive(Debug, Clone)]
pub struct Handled {
    /// What the agent (or the fallback) said.
    pub replies: Arc<Vec<ReplyMessage>>,
    pub route: Route,
    pub outcome: Outcome,
    /// Time spent waiting for the agent, retries included.
    pub agent_latency: Option<Duration>,
    pub session: SessionId,
    /// A re-delivery, answered from the first delivery's outcome.
    pub duplicate: bool,
    /// The name of the route that answered, for logs and metrics.
    pub agent_route: Option<Arc<str>>,
    /// Hand-over events to post once the replies are on their way.
    pub handoff: Option<HandoffWork>,
}

impl Handled {
    /// The messages the webhook's answer carries: none when they go through the API.
    pub fn webhook_replies(&self) -> &[ReplyMessage] {
        match self.route {
            Route::Webhook => &self.replies,
            Route::Api => &[],
        }
    }

    /// `outcome` with `replies`, in the webhook's answer unless said otherwise.
    fn new(session: SessionId, outcome: Outcome, replies: Vec<ReplyMessage>) -> Self {
        Handled {
            replies: Arc::new(replies),
            route: Route::Webhook,
            outcome,
            agent_latency: None,
            session,
            duplicate: false,
            agent_route: None,
            handoff: None,
        }
    }

    /// Nothing to say: `outcome` says why.
    fn nothing(session: SessionId, outcome: Outcome) -> Self {
        Handled::new(session, outcome, Vec::new())
    }

    /// The webhook answers empty; the replies follow through the API.
    fn queued(session: SessionId) -> Self {
        Handled::nothing(session, Outcome::Queued).by_api()
    }

    /// The agent's answer, within Twilio's limits.
    fn answered(session: SessionId, replies: Vec<ReplyMessage>, latency: Duration) -> Self {
        Handled {
            agent_latency: Some(latency),
            ..Handled::new(session, Outcome::Answered, fit_to_limits(replies))
        }
    }

    /// `fallback` (the route's message) because of `reason`.
    fn fallback(session: SessionId, fallback: &str, reason: FallbackReason) -> Self {
        let replies = fit_to_limits(vec![ReplyMessage::text(fallback)]);
        Handled::new(session, Outcome::Fallback(reason), replies)
    }

    /// With a person: the message goes to the human side, with `events` to post.
    fn with_person(
        session: SessionId,
        replies: Vec<ReplyMessage>,
        events: Vec<crate::handoff::Event>,
    ) -> Self {
        Handled::new(session, Outcome::WithPerson, replies).posting(Some(HandoffWork { events }))
    }

    /// A re-delivery's answer: the first delivery's outcome.
    fn repeat_of(session: SessionId, first: StoredOutcome) -> Self {
        Handled {
            route: first.route,
            duplicate: true,
            ..Handled::new(session, first.outcome, first.replies)
        }
    }

    /// The same, its replies through the API.
    fn by_api(self) -> Self {
        Handled {
            route: Route::Api,
            ..self
        }
    }

    /// The same, with hand-over events to post after the replies.
    fn posting(self, handoff: Option<HandoffWork>) -> Self {
        Handled { handoff, ..self }
    }

    /// The same, with `event` posted before its own events.
    fn posting_first(self, event: crate::handoff::Event) -> Self {
        let mut events = vec![event];
        events.extend(
            self.handoff
                .iter()
                .flat_map(|work| work.events.iter().cloned()),
        );
        self.posting(Some(HandoffWork { events }))
    }

    /// The same, with `replies` instead.
    fn saying(self, replies: Vec<ReplyMessage>) -> Self {
        Handled {
            replies: Arc::new(replies),
            ..self
        }
    }
}

/// How replies reach the user, and what sends them when not in the webhook's answer.
pub enum Delivery {
    Twiml,
    Api(Arc<Outbox>),
    Auto {
        deadline: Duration,
        outbox: Arc<Outbox>,
    },
}

impl Delivery {
    /// The outbox, when replies may go through the API.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        match self {
            Delivery::Twiml => None,
            Delivery::Api(outbox) | Delivery::Auto { outbox, .. } => Some(outbox),
        }
    }
}

/// What answers on a route: the Dialogflow [`Agent`], or a test's script.
pub trait Answers: Send + Sync {
    /// The answer to `query`, retries included.
    fn detect_intent<'a>(
        &'a self,
        query: &'a AgentQuery,
    ) -> Pin<Box<dyn Future<Output = Result<AgentAnswer, AgentError>> + Send + 'a>>;
    /// How long one question may take (`AGENT_TIMEOUT`).
    fn timeout(&self) -> Duration;
    /// The agent's API, for traces.
    fn kind(&self) -> &'static str {
        "other"
    }
}

impl Answers for Agent {
    fn detect_intent<'a>(
        &'a self,
        query: &'a AgentQuery,
    ) -> Pin<Box<dyn Future<Output = Result<AgentAnswer, AgentError>> + Send + 'a>> {
        Box::pin(Agent::detect_intent(self, query))
    }

    fn timeout(&self) -> Duration {
        Agent::timeout(self)
    }

    fn kind(&self) -> &'static str {
        Agent::kind(self)
    }
}

/// One route at work: the agent that answers there, in which language, what the person
/// gets when it cannot, and which way the replies go.
pub struct AgentRoute {
    pub name: Arc<str>,
    pub agent: Arc<dyn Answers>,
    /// The sender's country (`FromCountry`) to the language asked in.
    pub languages: std::collections::BTreeMap<String, String>,
    pub fallback: String,
    pub delivery: Delivery,
}

/// The routes, in order, and the index that finds the first that matches.
pub struct AgentRoutes {
    routes: Vec<Arc<AgentRoute>>,
    index: crate::routes::Index,
}

impl AgentRoutes {
    /// `routes` with what each matches, first match first.
    pub fn new(routes: Vec<(crate::routes::Matcher, AgentRoute)>) -> Self {
        let (matchers, routes): (Vec<_>, Vec<_>) = routes
            .into_iter()
            .map(|(matcher, route)| (matcher, Arc::new(route)))
            .unzip();
        Self {
            routes,
            index: crate::routes::Index::new(matchers),
        }
    }

    /// The route of `message`, if any matches.
    pub fn find(&self, message: &IncomingMessage) -> Option<&Arc<AgentRoute>> {
        let addressed = crate::routes::Addressed {
            to: &message.to,
            messaging_service_sid: message.params.get("MessagingServiceSid"),
            account_sid: &message.account_sid,
        };
        self.index.find(&addressed).map(|i| &self.routes[i])
    }

    /// Every outbox the routes send through, once each.
    fn outboxes(&self) -> Vec<Arc<Outbox>> {
        let mut outboxes: Vec<Arc<Outbox>> = Vec::new();
        for outbox in self.routes.iter().filter_map(|r| r.delivery.outbox()) {
            if !outboxes.iter().any(|o| Arc::ptr_eq(o, outbox)) {
                outboxes.push(Arc::clone(outbox));
            }
        }
        outboxes
    }
}

/// What the state store keeps of a turn's message: what another instance needs to
/// work the turn if this one cannot.
#[derive(Serialize, Deserialize)]
struct TurnRecord {
    params: Vec<(String, String)>,
    status_callback: String,
    /// The trace of the webhook that started the turn (`traceparent`'s form), which
    /// the instance taking it over links its work to. Absent in records written
    /// before traces were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

impl Record for TurnRecord {
    const KIND: &'static str = "turn";
}

/// What the state store keeps of a handled message, for its re-deliveries.
#[derive(Serialize, Deserialize)]
struct StoredOutcome {
    replies: Vec<ReplyMessage>,
    route: Route,
    outcome: Outcome,
    /// What a takeover must still post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handoff: Option<HandoffWork>,
}

impl Record for StoredOutcome {
    const KIND: &'static str = "outcome";
}

impl StoredOutcome {
    /// `handled` as the store keeps it; `None` (logged) if it cannot be written, and
    /// then nothing is recorded rather than an empty outcome.
    fn of(handled: &Handled) -> Option<Stored> {
        let stored = StoredOutcome {
            replies: handled.replies.to_vec(),
            route: handled.route,
            outcome: handled.outcome.clone(),
            handoff: handled.handoff.clone(),
        };
        Stored::of(&stored)
            .inspect_err(|error| tracing::error!(session = %handled.session, %error, "a turn's outcome was not recorded"))
            .ok()
    }
}

/// Finishes `ticket`'s turn with `handled` as its outcome; without one that can be
/// recorded, a re-delivery is handled afresh.
async fn finish(ticket: Ticket, handled: &Handled) {
    match StoredOutcome::of(handled) {
        Some(outcome) => ticket.finish(&outcome).await,
        None => ticket.abandon().await,
    }
}

/// What a turn knows of its conversation when it starts.
#[derive(Default)]
pub(super) struct Known {
    /// The menu waiting for an answer.
    pub menu: Option<PendingMenu>,
    /// The hand-over record, with hand-over on and the record readable.
    pub handoff: Option<crate::handoff::Record>,
}

impl Known {
    /// With a person now (the rate limits then do not hold the person back).
    pub fn with_a_person(&self, handoff: Option<&crate::handoff::Handoff>) -> bool {
        match (handoff, &self.handoff) {
            (Some(handoff), Some(record)) => record
                .active
                .as_ref()
                .is_some_and(|active| !handoff.expired(active)),
            _ => false,
        }
    }
}

/// What the bridge itself says to a person, beside each route's fallback message.
#[derive(Debug, Clone)]
pub struct Messages {
    /// Once, to a person writing faster than the rate limits allow.
    pub rate_limited: String,
    /// STOP, START and HELP go to the agent as events (`OPT_OUT_TO_AGENT`).
    pub opt_out_to_agent: bool,
    /// How a menu reads as text.
    pub menu: MenuFormat,
    /// How long a menu waits for its answer.
    pub menu_ttl: Duration,
    /// WhatsApp shows "typing…" when the agent takes longer than this.
    pub typing_after: Option<Duration>,
}

/// Answers incoming messages with the agent.
pub struct Conversations {
    routes: AgentRoutes,
    messages: Messages,
    state: StateStore,
    metrics: Arc<Metrics>,
    /// The accounts whose messages are answered (a turn taken over is read again).
    accounts: Vec<String>,
    /// Once the server begins to shut down: when it must have answered every webhook.
    stopping: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    /// Once the grace is over: turns still owed are left to the other instances.
    handing_over: tokio::sync::watch::Sender<bool>,
    /// Hand-over to people, when configured.
    handoff: Option<Arc<crate::handoff::Handoff>>,
    /// How long a turn waits for the turns before it.
    waits: Waits,
    /// What conversation ids are keyed with.
    session_key: SessionKey,
}

/// Whose conversations are answered: the accounts, and the key their ids are keyed with.
pub struct Ours {
    pub accounts: Vec<String>,
    pub session_key: SessionKey,
}

impl Conversations {
    pub fn new(
        routes: AgentRoutes,
        messages: Messages,
        state: StateStore,
        metrics: Arc<Metrics>,
        ours: Ours,
        handoff: Option<Arc<crate::handoff::Handoff>>,
        waits: Waits,
    ) -> Arc<Self> {
        let Ours {
            accounts,
            session_key,
        } = ours;
        Arc::new(Self {
            routes,
            messages,
            state,
            metrics,
            accounts,
            handoff,
            waits,
            session_key,
            stopping: tokio::sync::watch::Sender::new(None),
            handing_over: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Webhooks still waiting for the agent stop waiting and answer empty, their replies
    /// following through the API; with no API to follow through (`REPLY_MODE=twiml`),
    /// they wait until `grace` has passed and then answer the fallback message, rather
    /// than be cut off when the platform kills the process.
    pub fn begin_shutdown(&self, grace: Duration) {
        self.stopping
            .send_replace(Some(tokio::time::Instant::now() + grace));
    }

    /// Resolves once the server is stopping (for the work beside the turns).
    pub(crate) async fn stopping(&self) {
        let _ = self.stopped().await;
    }

    /// Resolves once the server is stopping, with when it must have answered every
    /// webhook.
    async fn stopped(&self) -> Option<tokio::time::Instant> {
        let mut stopping = self.stopping.subscribe();
        let deadline = stopping
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|deadline| *deadline);
        deadline
    }

    /// Resolves when the server stops waiting for the agent: at the end of the grace.
    async fn out_of_grace(&self) {
        match self.stopped().await {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// The outbox that sends for `account_sid`.
    pub fn outbox_of(&self, account_sid: &str) -> Option<Arc<Outbox>> {
        self.outboxes().into_iter().find(|o| o.serves(account_sid))
    }

    /// The outboxes replies may go through.
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.routes.outboxes()
    }

    /// At the end of the grace: the turns still at work stop, and leave their replies to
    /// the other instances (shared state), or name them as not sent (this process's
    /// state); returns once they all did, or after `wait`.
    pub async fn hand_over(&self, wait: Duration) {
        self.handing_over.send_replace(true);
        for outbox in self.outboxes() {
            let _ = outbox.drain(wait).await;
        }
    }

    async fn handed_over(&self) {
        let _ = self.handing_over.subscribe().wait_for(|over| *over).await;
    }

    /// Answers `message`, asking the agent at most once per `MessageSid`, after the
    /// messages of its conversation that came before it. What comes back is what the
    /// webhook should answer now; replies that cannot wait go to `recipient` through
    /// the API.
    pub async fn handle(
        self: &Arc<Self>,
        message: IncomingMessage,
        recipient: Recipient,
    ) -> Handled {
        let session = self.session_of(&message);
        let Some(route) = self.routes.find(&message).cloned() else {
            // Not a 5xx: Twilio would only deliver it again.
            return Handled::nothing(session, Outcome::NoRoute);
        };
        let handled = Turn::admit(self, &route, message, recipient, session).await;
        Handled {
            agent_route: Some(Arc::clone(&route.name)),
            ..handled
        }
    }

    /// Waits for the turns before `ticket`'s, keeping its lease, for as long as they
    /// move ([`Ticket::wait_turn`], bounded by `stall`); `None` if the server handed its
    /// work over meanwhile.
    async fn wait_or_leave(&self, ticket: &Ticket, stall: Duration) -> Option<TurnWait> {
        tokio::select! {
            waited = ticket.keep_alive(ticket.wait_turn(stall)) => Some(waited),
            () = self.handed_over() => None,
        }
    }

    fn menu_slot(&self) -> Slot<PendingMenu> {
        Slot::new("menu", self.messages.menu_ttl)
    }

    /// The conversation records a turn reads when it starts: the pending menu, and
    /// with hand-over on, the hand-over record.
    fn reads(&self) -> Vec<&'static str> {
        let mut reads = vec![self.menu_slot().name()];
        if let Some(handoff) = &self.handoff {
            reads.push(handoff.slot().name());
        }
        reads
    }

    /// The records of [`Conversations::reads`], as the turn found them. One that
    /// cannot be read (logged and counted by the store) is as if absent, and is not
    /// written over: a menu is then not waited on; a hand-over is left as it is.
    pub(super) async fn known(&self, ticket: &Ticket) -> Known {
        let menu = self
            .state
            .read_in_turn(ticket, &self.menu_slot())
            .await
            .ok()
            .flatten();
        let handoff = match &self.handoff {
            Some(handoff) => self
                .state
                .read_in_turn(ticket, &handoff.slot())
                .await
                .ok()
                .map(Option::unwrap_or_default),
            None => None,
        };
        Known { menu, handoff }
    }
}

impl Conversations {
    fn session_of(&self, message: &IncomingMessage) -> SessionId {
        SessionId::for_conversation(
            &self.session_key,
            &message.account_sid,
            &message.from,
            &message.to,
        )
    }
}

#[cfg(test)]
mod tests;
