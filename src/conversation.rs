//! One incoming message, answered: what to ask the agent, asking it once per message,
//! and what the user gets when the agent cannot answer.
//!
//! This is the middle of the pipeline: it takes a verified [`IncomingMessage`] and
//! gives back the messages to send. It knows nothing of HTTP or TwiML.

use crate::agent::{Agent, AgentQuery, QueryInput, MEDIA_EVENT};
use crate::ledger::{Claim, Completion, Ledger, Repeat};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Recipient};
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::session::SessionId;
use crate::twilio::webhook::IncomingMessage;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Dialogflow refuses text queries longer than this (CX and ES `TextInput.text`).
pub const MAX_QUERY_CHARS: usize = 256;
/// How long a handled message id is remembered; Twilio's re-deliveries come within
/// minutes.
const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);
/// At most this many remembered ids, whatever the traffic: minutes of the busiest
/// WhatsApp sender (80 messages/s), hours of an SMS number, for about 16 MiB.
const REMEMBER_AT_MOST: usize = 20_000;

/// How a message was handled, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The agent answered.
    Answered,
    /// The agent could not answer; the user got the fallback message. The label says why.
    Fallback(String),
    /// Nothing to ask: no text and no media.
    Empty,
    /// The webhook was answered before the agent; the replies follow through the API.
    Queued,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Fallback(_) => "fallback",
            Outcome::Empty => "empty",
            Outcome::Queued => "queued",
        }
    }
}

/// Which way the replies travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Handled {
    /// The messages the webhook's answer carries: none when they go through the API.
    pub fn webhook_replies(&self) -> &[ReplyMessage] {
        match self.route {
            Route::Webhook => &self.replies,
            Route::Api => &[],
        }
    }

    fn queued(session: SessionId, duplicate: bool) -> Self {
        Handled {
            replies: Arc::default(),
            route: Route::Api,
            outcome: Outcome::Queued,
            agent_latency: None,
            session,
            duplicate,
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

/// Answers incoming messages with the agent.
pub struct Conversations {
    agent: Agent,
    fallback_message: String,
    delivery: Delivery,
    handled: Arc<Ledger<Handled>>,
    metrics: Arc<Metrics>,
    /// Once the server begins to shut down: when it must have answered every webhook.
    stopping: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl Conversations {
    pub fn new(
        agent: Agent,
        fallback_message: String,
        delivery: Delivery,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            agent,
            fallback_message,
            delivery,
            handled: Ledger::new(REMEMBER_FOR, REMEMBER_AT_MOST),
            metrics,
            stopping: tokio::sync::watch::Sender::new(None),
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

    /// The outbox, when replies may go through the API.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        match &self.delivery {
            Delivery::Twiml => None,
            Delivery::Api(outbox) | Delivery::Auto { outbox, .. } => Some(outbox),
        }
    }

    /// Answers `message`, asking the agent at most once per `MessageSid`. What comes
    /// back is what the webhook should answer now.
    ///
    /// `status_callback` is where Twilio reports the delivery of replies sent through
    /// the API.
    pub async fn handle(
        self: &Arc<Self>,
        message: IncomingMessage,
        status_callback: String,
    ) -> Handled {
        let session = session_of(&message);
        let completion = match message
            .message_sid
            .as_deref()
            .map(|sid| self.handled.claim(sid))
        {
            Some(Claim::Repeat(repeat)) => return self.repeat(repeat, session).await,
            Some(Claim::First(completion)) => Some(completion),
            None => None,
        };
        match &self.delivery {
            Delivery::Twiml => self.answer_in_webhook(message, session, completion).await,
            Delivery::Api(outbox) => {
                self.queue(outbox, message, session, completion, None, status_callback);
                Handled::queued(session, false)
            }
            Delivery::Auto { deadline, outbox } => {
                let (answer, mut answered) = oneshot::channel();
                self.queue(
                    outbox,
                    message,
                    session,
                    completion,
                    Some(answer),
                    status_callback,
                );
                // A shutdown cuts the wait short: the replies then go through the API,
                // and the server can stop within Cloud Run's grace period.
                let wait = async {
                    tokio::select! {
                        answer = &mut answered => Ok(answer),
                        _ = self.stopped() => Err(()),
                    }
                };
                match tokio::time::timeout(*deadline, wait)
                    .await
                    .unwrap_or(Err(()))
                {
                    Ok(Ok(handled)) => handled,
                    Ok(Err(_)) => self.fallback(session, "ABANDONED".into(), None),
                    Err(()) => {
                        // Too late for the webhook. Closing first makes the hand-over
                        // exact: either the answer is already here, or the queue's send
                        // fails and the replies go through the API.
                        answered.close();
                        answered
                            .try_recv()
                            .unwrap_or_else(|_| Handled::queued(session, false))
                    }
                }
            }
        }
    }

    /// A re-delivery: the first delivery's outcome, never a second agent call or a
    /// second set of messages.
    async fn repeat(&self, repeat: Repeat<Handled>, session: SessionId) -> Handled {
        let wait = match &self.delivery {
            Delivery::Twiml => None,
            Delivery::Api(_) => Some(Duration::ZERO),
            Delivery::Auto { deadline, .. } => Some(*deadline),
        };
        let outcome = match wait {
            None => repeat.outcome().await,
            Some(wait) => {
                // Like a first delivery, a repeat stops waiting when the server stops:
                // the first delivery's replies then go through the API.
                tokio::select! {
                    outcome = tokio::time::timeout(wait, repeat.outcome()) => outcome.ok().flatten(),
                    _ = self.stopped() => None,
                }
            }
        };
        match outcome {
            Some(first) => Handled {
                duplicate: true,
                ..first
            },
            None => Handled::queued(session, true),
        }
    }

    async fn answer_in_webhook(
        self: &Arc<Self>,
        message: IncomingMessage,
        session: SessionId,
        completion: Option<Completion<Handled>>,
    ) -> Handled {
        // The work runs on its own task so that it finishes, and its outcome is
        // remembered, even if Twilio hangs up on this request.
        let this = Arc::clone(self);
        let work = tokio::spawn(async move {
            let handled = this.answer(message, session).await;
            if let Some(completion) = completion {
                completion.complete(handled.clone());
            }
            handled
        });
        let work = async {
            tokio::select! {
                done = work => Some(done),
                _ = self.out_of_grace() => None,
            }
        };
        match work.await {
            Some(Ok(handled)) => handled,
            None => self.fallback(session, "SHUTDOWN".into(), None),
            Some(Err(panicked)) => {
                tracing::error!(error = %panicked, "answering a message panicked");
                self.fallback(session, "PANIC".into(), None)
            }
        }
    }

    /// Queues the message on its conversation: the agent is asked after the messages
    /// before it, and the replies go to the webhook still `waiting`, or else through
    /// the API.
    fn queue(
        self: &Arc<Self>,
        outbox: &Arc<Outbox>,
        message: IncomingMessage,
        session: SessionId,
        completion: Option<Completion<Handled>>,
        waiting: Option<oneshot::Sender<Handled>>,
        status_callback: String,
    ) {
        let recipient = Recipient {
            to: message.from.clone(),
            our_number: message.to.clone(),
            message_sid: message.message_sid.clone().unwrap_or_default(),
            status_callback,
        };
        let message_sid = recipient.message_sid.clone();
        let this = Arc::clone(self);
        let sender = Arc::clone(outbox);
        let job = Box::pin(async move {
            let handled = this.answer(message, session).await;
            let handled = match waiting {
                Some(webhook) => match webhook.send(handled.clone()) {
                    Ok(()) => {
                        if let Some(completion) = completion {
                            completion.complete(handled);
                        }
                        return;
                    }
                    Err(handled) => handled,
                },
                None => handled,
            };
            let handled = Handled {
                route: Route::Api,
                ..handled
            };
            if let Some(completion) = completion {
                completion.complete(handled.clone());
            }
            let report = sender.send(&recipient, &handled.replies).await;
            let (sent, replies) = (report.sent, handled.replies.len());
            this.metrics.replies_sent("api", sent);
            this.metrics.replies_failed(replies - sent);
            let agent_ms = handled.agent_latency.map(|d| d.as_millis() as u64);
            match report.last_error {
                None => tracing::info!(
                    message_sid = %recipient.message_sid,
                    session = %handled.session,
                    outcome = handled.outcome.label(),
                    agent_ms,
                    sent,
                    "replies sent through the Messages API"
                ),
                Some(error) => tracing::warn!(
                    message_sid = %recipient.message_sid,
                    session = %handled.session,
                    outcome = handled.outcome.label(),
                    agent_ms,
                    sent,
                    replies,
                    error = %error,
                    "replies not sent through the Messages API: {} of {replies} failed",
                    replies - sent
                ),
            }
        });
        outbox.enqueue(&session, &message_sid, job);
    }

    async fn answer(&self, message: IncomingMessage, session: SessionId) -> Handled {
        let Some(input) = query_input(&message) else {
            return Handled {
                replies: Arc::default(),
                route: Route::Webhook,
                outcome: Outcome::Empty,
                agent_latency: None,
                session,
                duplicate: false,
            };
        };
        let query = AgentQuery {
            session,
            input,
            payload: payload_of(&message),
        };
        let started = Instant::now();
        let result = self.agent.detect_intent(&query).await;
        let elapsed = started.elapsed();
        let latency = Some(elapsed);
        match result {
            Ok(replies) => {
                self.metrics.agent_answered(elapsed);
                Handled {
                    replies: Arc::new(fit_to_limits(replies)),
                    route: Route::Webhook,
                    outcome: Outcome::Answered,
                    agent_latency: latency,
                    session,
                    duplicate: false,
                }
            }
            Err(error) => {
                self.metrics.agent_failed(elapsed, error.label());
                tracing::warn!(session = %session, error = %error, "the agent could not answer; sending the fallback message");
                self.fallback(session, error.label(), latency)
            }
        }
    }

    fn fallback(
        &self,
        session: SessionId,
        reason: String,
        agent_latency: Option<Duration>,
    ) -> Handled {
        Handled {
            replies: Arc::new(fit_to_limits(vec![ReplyMessage::text(
                &self.fallback_message,
            )])),
            route: Route::Webhook,
            outcome: Outcome::Fallback(reason),
            agent_latency,
            session,
            duplicate: false,
        }
    }
}

fn session_of(message: &IncomingMessage) -> SessionId {
    SessionId::for_conversation(&message.account_sid, &message.from, &message.to)
}

/// The text, cut to what Dialogflow accepts (the whole body is in the payload); or,
/// for media without words, the media event; or nothing to ask.
pub fn query_input(message: &IncomingMessage) -> Option<QueryInput> {
    let text = message.body.trim();
    if !text.is_empty() {
        let text = match text.char_indices().nth(MAX_QUERY_CHARS) {
            Some((cut, _)) => &text[..cut],
            None => text,
        };
        return Some(QueryInput::Text(text.to_owned()));
    }
    (!message.media.is_empty()).then(|| QueryInput::Event(MEDIA_EVENT.to_owned()))
}

/// Every webhook parameter, as the agent's webhooks will see it in the query payload.
pub fn payload_of(message: &IncomingMessage) -> Map<String, Value> {
    message
        .params
        .pairs()
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::webhook::FormParams;

    fn message(pairs: &[(&str, &str)]) -> IncomingMessage {
        let mut all = vec![
            ("AccountSid", "AC1"),
            ("From", "+15551234567"),
            ("To", "+18005550000"),
        ];
        all.extend_from_slice(pairs);
        let params = FormParams::from_pairs(
            all.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        IncomingMessage::from_verified(params, "AC1").unwrap()
    }

    #[test]
    fn text_is_asked_as_text_trimmed_and_cut_to_dialogflow_limit() {
        assert_eq!(
            query_input(&message(&[("Body", "  hi  ")])),
            Some(QueryInput::Text("hi".into()))
        );
        let long = "é".repeat(300);
        let Some(QueryInput::Text(cut)) = query_input(&message(&[("Body", &long)])) else {
            panic!()
        };
        assert_eq!(cut.chars().count(), MAX_QUERY_CHARS);
    }

    #[test]
    fn media_without_words_is_the_media_event_and_nothing_is_nothing() {
        let mms = message(&[
            ("Body", ""),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://m/1"),
        ]);
        assert_eq!(
            query_input(&mms),
            Some(QueryInput::Event(MEDIA_EVENT.into()))
        );
        assert_eq!(
            payload_of(&mms).get("MediaUrl0"),
            Some(&Value::String("https://m/1".into()))
        );
        assert_eq!(query_input(&message(&[("Body", " ")])), None);
    }
}
