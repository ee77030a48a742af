//! Prometheus metrics, served on `GET /metrics` in the text exposition format.
//!
//! Counters by outcome rather than one per event kind keep the set small and the
//! dashboards simple; label values come from fixed lists (outcomes, gRPC status names,
//! rejection reasons), never from user input.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreFailure {
    op: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Twilio's HTTP status and error code: numbers from Twilio's fixed lists.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendFailure {
    status: String,
    twilio_error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Limit {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteName {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    routed: Family<RouteName, Counter>,
    rate_limited: Family<Limit, Counter>,
    connections_open: prometheus_client::metrics::gauge::Gauge,
    connections_closed: Family<Reason, Counter>,
    state_errors: Family<StoreFailure, Counter>,
    state_fallbacks: Counter,
    turns_taken_over: Counter,
    webhooks: Family<Outcome, Counter>,
    agent_latency: Histogram,
    agent_errors: Family<Status, Counter>,
    replies_sent: Family<Route, Counter>,
    replies_failed: Family<SendFailure, Counter>,
    duplicates: Counter,
    rich_sent: Family<Kind, Counter>,
    menus_as_text: Family<Reason, Counter>,
    contents_created: Counter,
    choices_picked: Family<Kind, Counter>,
    handoffs_started: Family<Trigger, Counter>,
    handoffs_ended: Family<Reason, Counter>,
    handoffs_failed: Counter,
    handoff_events: Family<EventResult, Counter>,
    deliveries_failed: Family<TwilioError, Counter>,
    state_calls: Family<Op, Counter>,
    records_unreadable: Family<Kind, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TwilioError {
    twilio_error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Trigger {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventResult {
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twilio_dialogflow");
        let webhooks = Family::<Outcome, Counter>::default();
        registry.register(
            "webhooks",
            "Incoming-message webhooks by outcome (answered, fallback, empty, queued, or the reason for refusing them)",
            webhooks.clone(),
        );
        // From 5 ms to about 40 s: a quick agent to a slow CX webhook.
        let agent_latency = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
        ]);
        registry.register(
            "agent_latency_seconds",
            "Time waiting for Dialogflow per message, retries included",
            agent_latency.clone(),
        );
        let agent_errors = Family::<Status, Counter>::default();
        registry.register(
            "agent_errors",
            "Dialogflow calls that failed, by status",
            agent_errors.clone(),
        );
        let replies_sent = Family::<Route, Counter>::default();
        registry.register(
            "replies_sent",
            "Reply messages sent, by route (webhook TwiML or Messages API)",
            replies_sent.clone(),
        );
        let replies_failed = Family::<SendFailure, Counter>::default();
        registry.register(
            "replies_failed",
            "Reply messages the Messages API did not accept, by Twilio's HTTP status and error code (none: no answer)",
            replies_failed.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "duplicates_suppressed",
            "Re-delivered webhooks answered without asking the agent again",
            duplicates.clone(),
        );
        let state_errors = Family::<StoreFailure, Counter>::default();
        registry.register(
            "state_errors",
            "Calls to the shared state store that failed or timed out, by operation and error",
            state_errors.clone(),
        );
        let state_fallbacks = Counter::default();
        registry.register(
            "state_fallbacks",
            "Messages handled with this process's state because the shared store could not admit them",
            state_fallbacks.clone(),
        );
        let turns_taken_over = Counter::default();
        registry.register(
            "turns_taken_over",
            "Turns another instance left unfinished (its lease ran out) that this one took over",
            turns_taken_over.clone(),
        );
        let connections_open = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        let connections_closed = Family::<Reason, Counter>::default();
        registry.register(
            "connections_closed",
            "HTTP connections closed by the server's limits, by reason (header_timeout, idle_timeout, shed, refused)",
            connections_closed.clone(),
        );
        let rate_limited = Family::<Limit, Counter>::default();
        registry.register(
            "rate_limited",
            "Messages not sent to the agent because they went past a rate limit (conversation, agent_budget)",
            rate_limited.clone(),
        );
        let routed = Family::<RouteName, Counter>::default();
        registry.register(
            "routed_webhooks",
            "Webhooks by the route that answered them (route names come from the configuration)",
            routed.clone(),
        );
        let rich_sent = Family::<Kind, Counter>::default();
        registry.register(
            "rich_messages_sent",
            "WhatsApp rich messages sent through the Messages API, by kind (quick_reply, list_picker, template)",
            rich_sent.clone(),
        );
        let menus_as_text = Family::<Reason, Counter>::default();
        registry.register(
            "menus_as_text",
            "Menus sent as numbered text, by reason (channel, twiml, too_many_choices, title_too_long, body_too_long, content_failed, send_failed, …)",
            menus_as_text.clone(),
        );
        let contents_created = Counter::default();
        registry.register(
            "contents_created",
            "Content API contents created for menus (each is made once and then reused)",
            contents_created.clone(),
        );
        let choices_picked = Family::<Kind, Counter>::default();
        registry.register(
            "choices_picked",
            "Menu choices the person picked, by how (button, list, number, title)",
            choices_picked.clone(),
        );
        let handoffs_started = Family::<Trigger, Counter>::default();
        registry.register(
            "handoffs_started",
            "Hand-overs to people started, by trigger (agent, payload, keyword)",
            handoffs_started.clone(),
        );
        let handoffs_ended = Family::<Reason, Counter>::default();
        registry.register(
            "handoffs_ended",
            "Hand-overs ended, by reason (desk, expired, unavailable)",
            handoffs_ended.clone(),
        );
        let handoffs_failed = Counter::default();
        registry.register(
            "handoffs_failed",
            "Hand-overs given back to the agent because the destination could not be reached",
            handoffs_failed.clone(),
        );
        let handoff_events = Family::<EventResult, Counter>::default();
        registry.register(
            "handoff_events",
            "Hand-over events posted to HANDOFF_URL, by result (delivered, retried, dropped)",
            handoff_events.clone(),
        );
        let deliveries_failed = Family::<TwilioError, Counter>::default();
        registry.register(
            "deliveries_failed",
            "Replies Twilio took but reported failed or undelivered (status callback), by Twilio error code",
            deliveries_failed.clone(),
        );
        let state_calls = Family::<Op, Counter>::default();
        registry.register(
            "state_calls",
            "Round trips to the shared state store, by operation",
            state_calls.clone(),
        );
        let records_unreadable = Family::<Kind, Counter>::default();
        registry.register(
            "state_records_unreadable",
            "Stored records this bridge could not read (left as they are, not used), by kind",
            records_unreadable.clone(),
        );
        Self {
            registry,
            state_calls,
            records_unreadable,
            deliveries_failed,
            handoffs_started,
            handoffs_ended,
            handoffs_failed,
            handoff_events,
            rich_sent,
            menus_as_text,
            contents_created,
            choices_picked,
            routed,
            rate_limited,
            connections_open,
            connections_closed,
            state_errors,
            state_fallbacks,
            turns_taken_over,
            webhooks,
            agent_latency,
            agent_errors,
            replies_sent,
            replies_failed,
            duplicates,
        }
    }

    pub fn delivery_failed(&self, code: Option<u32>) {
        let twilio_error = code.map_or_else(String::new, |c| c.to_string());
        self.deliveries_failed
            .get_or_create(&TwilioError { twilio_error })
            .inc();
    }

    pub fn handoff_started(&self, trigger: &'static str) {
        self.handoffs_started
            .get_or_create(&Trigger { trigger })
            .inc();
    }

    pub fn handoff_ended(&self, reason: &'static str) {
        self.handoffs_ended.get_or_create(&Reason { reason }).inc();
    }

    pub fn handoff_failed(&self) {
        self.handoffs_failed.inc();
    }

    pub fn handoff_event(&self, result: &'static str) {
        self.handoff_events
            .get_or_create(&EventResult { result })
            .inc();
    }

    pub fn rich_sent(&self, kind: &'static str) {
        self.rich_sent.get_or_create(&Kind { kind }).inc();
    }

    pub fn menu_as_text(&self, reason: &'static str) {
        self.menus_as_text.get_or_create(&Reason { reason }).inc();
    }

    pub fn content_created(&self) {
        self.contents_created.inc();
    }

    pub fn choice_picked(&self, kind: &'static str) {
        self.choices_picked.get_or_create(&Kind { kind }).inc();
    }

    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn agent_answered(&self, latency: Duration) {
        self.agent_latency.observe(latency.as_secs_f64());
    }

    pub fn agent_failed(&self, latency: Duration, status: String) {
        self.agent_latency.observe(latency.as_secs_f64());
        self.agent_errors.get_or_create(&Status { status }).inc();
    }

    pub fn replies_sent(&self, route: &'static str, count: usize) {
        self.replies_sent
            .get_or_create(&Route { route })
            .inc_by(count as u64);
    }

    /// A reply not sent: Twilio's HTTP status and error code, if it answered.
    pub fn reply_failed(&self, status: Option<u16>, twilio_error: Option<u32>) {
        let label = |value: Option<String>| value.unwrap_or_else(|| "none".to_owned());
        self.replies_failed
            .get_or_create(&SendFailure {
                status: label(status.map(|s| s.to_string())),
                twilio_error: label(twilio_error.map(|c| c.to_string())),
            })
            .inc();
    }

    pub fn routed(&self, route: &str) {
        self.routed
            .get_or_create(&RouteName {
                route: route.to_owned(),
            })
            .inc();
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&Limit { limit }).inc();
    }

    pub fn record_unreadable(&self, kind: &'static str) {
        self.records_unreadable.get_or_create(&Kind { kind }).inc();
    }

    pub fn state_call(&self, op: &'static str) {
        self.state_calls.get_or_create(&Op { op }).inc();
    }

    pub fn state_error(&self, op: &'static str, error: &'static str) {
        self.state_errors
            .get_or_create(&StoreFailure { op, error })
            .inc();
    }

    pub fn state_fallback(&self) {
        self.state_fallbacks.inc();
    }

    pub fn turn_taken_over(&self) {
        self.turns_taken_over.inc();
    }

    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP server's connections, counted.
impl hardened_http::Observer for Metrics {
    fn opened(&self) {
        self.connections_open.inc();
    }

    fn ended(&self) {
        self.connections_open.dec();
    }

    fn closed(&self, reason: hardened_http::Closed) {
        self.connections_closed
            .get_or_create(&Reason {
                reason: reason.label(),
            })
            .inc();
    }
}
