//! One incoming message, answered: what to ask the agent, asking it once per message,
//! and what the user gets when the agent cannot answer.
//!
//! This is the middle of the pipeline: it takes a verified [`IncomingMessage`] and
//! gives back the messages to send. It knows nothing of HTTP or TwiML.

use crate::agent::{Agent, AgentQuery, QueryInput, MEDIA_EVENT};
use crate::ledger::{Claim, Ledger};
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::session::SessionId;
use crate::twilio::webhook::IncomingMessage;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Dialogflow refuses text queries longer than this (CX and ES `TextInput.text`).
pub const MAX_QUERY_CHARS: usize = 256;
/// How long a handled message id is remembered; Twilio's re-deliveries come within
/// minutes.
const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);
/// At most this many remembered ids, whatever the traffic.
const REMEMBER_AT_MOST: usize = 100_000;

/// How a message was handled, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The agent answered.
    Answered,
    /// The agent could not answer; the user got the fallback message. The label says why.
    Fallback(String),
    /// Nothing to ask: no text and no media.
    Empty,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Fallback(_) => "fallback",
            Outcome::Empty => "empty",
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone)]
pub struct Handled {
    pub messages: Arc<Vec<ReplyMessage>>,
    pub outcome: Outcome,
    /// Time spent waiting for the agent, retries included.
    pub agent_latency: Option<Duration>,
    pub session: SessionId,
    /// A re-delivery, answered from the first delivery's outcome.
    pub duplicate: bool,
}

/// Answers incoming messages with the agent.
pub struct Conversations {
    agent: Agent,
    fallback_message: String,
    handled: Arc<Ledger<Handled>>,
}

impl Conversations {
    pub fn new(agent: Agent, fallback_message: String) -> Arc<Self> {
        Arc::new(Self {
            agent,
            fallback_message,
            handled: Ledger::new(REMEMBER_FOR, REMEMBER_AT_MOST),
        })
    }

    /// Answers `message`, asking the agent at most once per `MessageSid`.
    pub async fn handle(self: &Arc<Self>, message: IncomingMessage) -> Handled {
        let session = session_of(&message);
        let Some(sid) = message.message_sid.clone() else {
            return self.answer(message, session).await;
        };
        match self.handled.claim(&sid) {
            Claim::First(completion) => {
                // The work runs on its own task so that it finishes, and its outcome is
                // remembered, even if Twilio hangs up on this request.
                let this = Arc::clone(self);
                let for_work = session.clone();
                let work = tokio::spawn(async move {
                    let handled = this.answer(message, for_work).await;
                    completion.complete(handled.clone());
                    handled
                });
                match work.await {
                    Ok(handled) => handled,
                    Err(panicked) => {
                        tracing::error!(error = %panicked, "answering a message panicked");
                        self.fallback(session, "PANIC".into(), None)
                    }
                }
            }
            Claim::Repeat(repeat) => match repeat.outcome().await {
                Some(first) => Handled {
                    duplicate: true,
                    ..first
                },
                None => self.fallback(session, "ABANDONED".into(), None),
            },
        }
    }

    async fn answer(&self, message: IncomingMessage, session: SessionId) -> Handled {
        let Some(input) = query_input(&message) else {
            return Handled {
                messages: Arc::default(),
                outcome: Outcome::Empty,
                agent_latency: None,
                session,
                duplicate: false,
            };
        };
        let query = AgentQuery {
            session: session.clone(),
            input,
            payload: payload_of(&message),
        };
        let started = Instant::now();
        let result = self.agent.detect_intent(&query).await;
        let latency = Some(started.elapsed());
        match result {
            Ok(replies) => Handled {
                messages: Arc::new(fit_to_limits(replies)),
                outcome: Outcome::Answered,
                agent_latency: latency,
                session,
                duplicate: false,
            },
            Err(error) => {
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
            messages: Arc::new(fit_to_limits(vec![ReplyMessage::text(
                &self.fallback_message,
            )])),
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
