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
struct Channel {
    channel: &'static str,
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
    taps_unoffered: Family<Channel, Counter>,
    handoffs_started: Family<Trigger, Counter>,
    handoffs_ended: Family<Reason, Counter>,
    handoffs_failed: Counter,
    repeat_waits_expired: Counter,
    turn_waits_expired: Family<Waiting, Counter>,
    handoff_events: Family<EventResult, Counter>,
    deliveries_failed: Family<TwilioError, Counter>,
    state_calls: Family<Op, Counter>,
    state_latency: Family<Op, Histogram, fn() -> Histogram>,
    records_unreadable: Family<Kind, Counter>,
    outbound_requests: Family<OutboundRequest, Counter>,
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

/// Who waited for the conversation's turn: `message`, `takeover` or `human_side`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Waiting {
    waiting: &'static str,
}

/// An outbound request's kind (`event`, `text`, `template`, or `none` when unreadable)
/// and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundRequest {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventResult {
    result: &'static str,
}

/// `metric`, registered in `registry` under `name` with `help`: the value kept and the
/// one registered are the same counters.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twilio_dialogflow");
        // Registered in this order, the order `/metrics` lists them in.
        Self {
            webhooks: registered(
                &mut registry,
                "webhooks",
                "Incoming-message webhooks by outcome (answered, fallback, empty, queued, or the reason for refusing them)",
                Default::default(),
            ),
            // From 5 ms to about 40 s: a quick agent to a slow CX webhook.
            agent_latency: registered(
                &mut registry,
                "agent_latency_seconds",
                "Time waiting for Dialogflow per message, retries included",
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
                ]),
            ),
            agent_errors: registered(
                &mut registry,
                "agent_errors",
                "Dialogflow calls that failed, by status",
                Default::default(),
            ),
            replies_sent: registered(
                &mut registry,
                "replies_sent",
                "Reply messages sent, by route (webhook TwiML or Messages API)",
                Default::default(),
            ),
            replies_failed: registered(
                &mut registry,
                "replies_failed",
                "Reply messages the Messages API did not accept, by Twilio's HTTP status and error code (none: no answer)",
                Default::default(),
            ),
            duplicates: registered(
                &mut registry,
                "duplicates_suppressed",
                "Re-delivered webhooks answered without asking the agent again",
                Default::default(),
            ),
            state_errors: registered(
                &mut registry,
                "state_errors",
                "Calls to the shared state store that failed or timed out, by operation and error",
                Default::default(),
            ),
            state_fallbacks: registered(
                &mut registry,
                "state_fallbacks",
                "Messages handled with this process's state because the shared store could not admit them",
                Default::default(),
            ),
            turns_taken_over: registered(
                &mut registry,
                "turns_taken_over",
                "Turns another instance left unfinished (its lease ran out) that this one took over",
                Default::default(),
            ),
            connections_open: registered(
                &mut registry,
                "connections_open",
                "HTTP connections open now",
                Default::default(),
            ),
            connections_closed: registered(
                &mut registry,
                "connections_closed",
                "HTTP connections closed by the server's limits, by reason (header_timeout, request_timeout, idle_timeout, shed, refused)",
                Default::default(),
            ),
            rate_limited: registered(
                &mut registry,
                "rate_limited",
                "Messages not sent to the agent, or to the human side, because they went past a rate limit (conversation, agent_budget, handoff)",
                Default::default(),
            ),
            routed: registered(
                &mut registry,
                "routed_webhooks",
                "Webhooks by the route that answered them (route names come from the configuration)",
                Default::default(),
            ),
            rich_sent: registered(
                &mut registry,
                "rich_messages_sent",
                "WhatsApp rich messages sent through the Messages API, by kind (quick_reply, list_picker, template)",
                Default::default(),
            ),
            menus_as_text: registered(
                &mut registry,
                "menus_as_text",
                "Menus sent as numbered text, by reason (channel, twiml, too_many_choices, title_too_long, body_too_long, content_failed, send_failed, …)",
                Default::default(),
            ),
            contents_created: registered(
                &mut registry,
                "contents_created",
                "Content API contents created for menus (each is made once and then reused)",
                Default::default(),
            ),
            choices_picked: registered(
                &mut registry,
                "choices_picked",
                "Menu choices the person picked, by how (button, list, number, title)",
                Default::default(),
            ),
            taps_unoffered: registered(
                &mut registry,
                "taps_unoffered",
                "Taps on a choice no pending menu of the conversation offered (forged, replayed, or from a menu that expired or was replaced), sent to the agent as the text shown, by channel",
                Default::default(),
            ),
            handoffs_started: registered(
                &mut registry,
                "handoffs_started",
                "Hand-overs to people started, by trigger (agent, payload, keyword)",
                Default::default(),
            ),
            handoffs_ended: registered(
                &mut registry,
                "handoffs_ended",
                "Hand-overs ended, by reason (desk, expired, unavailable)",
                Default::default(),
            ),
            handoffs_failed: registered(
                &mut registry,
                "handoffs_failed",
                "Hand-overs given back to the agent because the destination could not be reached",
                Default::default(),
            ),
            repeat_waits_expired: registered(
                &mut registry,
                "repeat_waits_expired",
                "Re-deliveries answered empty because the first delivery did not finish within the webhook's time",
                Default::default(),
            ),
            turn_waits_expired: registered(
                &mut registry,
                "turn_waits_expired",
                "Waits for the turns before that ended at their bound, by who waited (message: answered out of order; takeover: sent out of order; human_side: refused with 503)",
                Default::default(),
            ),
            handoff_events: registered(
                &mut registry,
                "handoff_events",
                "Hand-over events posted to HANDOFF_URL, by result (delivered, retried, dropped)",
                Default::default(),
            ),
            deliveries_failed: registered(
                &mut registry,
                "deliveries_failed",
                "Replies Twilio took but reported failed or undelivered (status callback), by Twilio error code",
                Default::default(),
            ),
            state_calls: registered(
                &mut registry,
                "state_calls",
                "Round trips to the shared state store, by operation",
                Default::default(),
            ),
            // From a quarter of a millisecond (a store beside the bridge) to a second
            // (past any STATE_TIMEOUT worth setting), finest around the 2 ms a round
            // trip should stay within: where a webhook's time in the store goes.
            state_latency: registered(
                &mut registry,
                "state_call_seconds",
                "Time of each round trip to the shared state store, by operation, failures included",
                Family::new_with_constructor(|| {
                    Histogram::new([
                        0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 1.0,
                    ])
                }),
            ),
            records_unreadable: registered(
                &mut registry,
                "state_records_unreadable",
                "Stored records this bridge could not read (left as they are, not used), by kind",
                Default::default(),
            ),
            outbound_requests: registered(
                &mut registry,
                "outbound_requests",
                "Requests to POST /outbound, by kind and outcome (queued, repeat, a refusal's code)",
                Default::default(),
            ),
            registry,
        }
        .with_known_series_at_zero()
    }

    /// Every series whose labels come from a short fixed list, created at zero. The
    /// families are then in `/metrics` from the start, where dashboards and alerts find
    /// them; and the first event on a new instance is a rise from 0, which `rate` and
    /// `increase` count, rather than a series appearing at 1, which they do not (the
    /// first hand-over event dropped would otherwise go unseen by the alert on it).
    fn with_known_series_at_zero(self) -> Self {
        use hardened_http::Closed;
        let closed = [
            Closed::HeaderTimeout,
            Closed::RequestTimeout,
            Closed::IdleTimeout,
            Closed::Shed,
            Closed::Refused,
        ];
        for reason in closed.map(Closed::label) {
            self.connections_closed
                .get_or_create(&Reason { reason })
                .inc_by(0);
        }
        // `rate_limit::Scope`, `handoff::destination`'s results, `handoff::EndReason`,
        // the hand-over's triggers, and the replies' two ways.
        for limit in ["conversation", "agent_budget", "handoff"] {
            self.rate_limited.get_or_create(&Limit { limit }).inc_by(0);
        }
        for result in ["delivered", "retried", "dropped"] {
            self.handoff_events
                .get_or_create(&EventResult { result })
                .inc_by(0);
        }
        for reason in ["desk", "expired", "unavailable", "opted_out"] {
            self.handoffs_ended
                .get_or_create(&Reason { reason })
                .inc_by(0);
        }
        for trigger in ["agent", "payload", "keyword"] {
            self.handoffs_started
                .get_or_create(&Trigger { trigger })
                .inc_by(0);
        }
        for route in ["webhook", "api"] {
            self.replies_sent.get_or_create(&Route { route }).inc_by(0);
        }
        self
    }

    pub fn outbound(&self, kind: &'static str, outcome: &'static str) {
        self.outbound_requests
            .get_or_create(&OutboundRequest { kind, outcome })
            .inc();
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

    pub fn repeat_wait_expired(&self) {
        self.repeat_waits_expired.inc();
    }

    pub fn turn_wait_expired(&self, waiting: &'static str) {
        self.turn_waits_expired
            .get_or_create(&Waiting { waiting })
            .inc();
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

    pub fn tap_unoffered(&self, channel: &'static str) {
        self.taps_unoffered
            .get_or_create(&Channel { channel })
            .inc();
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

    pub fn state_call_took(&self, op: &'static str, took: std::time::Duration) {
        self.state_latency
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_fixed_labels_are_there_at_zero_before_anything_happened() {
        let text = Metrics::new().render();
        for series in [
            r#"twilio_dialogflow_handoff_events_total{result="dropped"} 0"#,
            r#"twilio_dialogflow_connections_closed_total{reason="shed"} 0"#,
            r#"twilio_dialogflow_connections_closed_total{reason="refused"} 0"#,
            r#"twilio_dialogflow_rate_limited_total{limit="conversation"} 0"#,
            r#"twilio_dialogflow_handoffs_ended_total{reason="desk"} 0"#,
            r#"twilio_dialogflow_handoffs_started_total{trigger="agent"} 0"#,
            r#"twilio_dialogflow_replies_sent_total{route="api"} 0"#,
        ] {
            assert!(
                text.lines().any(|line| line == series),
                "{series} in\n{text}"
            );
        }
    }
}
