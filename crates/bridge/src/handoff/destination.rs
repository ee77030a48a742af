//! Posting events to `HANDOFF_URL`, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`; the `standardwebhooks`
//! crate signs), and tried again with backoff on a 5xx, a 408 or 429, a timeout or a
//! connection that failed, for `HANDOFF_RETRY_FOR`. Any other answer is final, a
//! redirect (3xx) too: it is never followed.

use super::Event;
use crate::config::HandoffSettings;
use crate::metrics::Metrics;
use crate::retry::{Backoff, GaveUp, RetryPolicy, Retrying, Verdict};
use std::sync::Arc;
use std::time::Duration;

/// One attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept to the destination at most: events come one per turn, so a
/// burst of turns opens a connection each, and past it these few are enough for the
/// next events while the rest close at once instead of resting 90 s with their buffers.
const IDLE_CONNECTIONS: usize = 8;
/// From 250 ms, doubling up to 5 s; for `HANDOFF_RETRY_FOR`.
const BACKOFF: Backoff = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(5));

pub struct Destination {
    client: reqwest::Client,
    url: String,
    signer: standardwebhooks::Webhook,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

/// Why the destination could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("HANDOFF_SECRET cannot sign: {0}")]
    Secret(standardwebhooks::WebhookError),
    #[error("cannot create the HTTP client for HANDOFF_URL: {0}")]
    Client(reqwest::Error),
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted, after this many attempts.
    Delivered { attempts: u32 },
    /// Given up: the last answer (an HTTP status) or why there was none; `refused`
    /// when that answer was final (the destination will not take it), rather than a
    /// failure that outlasted `HANDOFF_RETRY_FOR`.
    Dropped {
        attempts: u32,
        last: String,
        refused: bool,
    },
}

impl Destination {
    pub fn new(settings: &HandoffSettings, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let signer =
            standardwebhooks::Webhook::new(settings.secret.expose()).map_err(SetupError::Secret)?;
        // A redirect is not followed: it could lead the events (what people write) from
        // https:// to http://, or to a host nobody configured. A 3xx is a refusal.
        let client = crate::tls::shared(reqwest::Client::builder())
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .user_agent(concat!("twilio-dialogflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::Client)?;
        Ok(Self {
            client,
            url: settings.url.clone(),
            signer,
            retry: RetryPolicy::new(BACKOFF).with_time_limit(settings.retry_for),
            metrics,
        })
    }

    /// Posts `event` until it is accepted, refused, or `HANDOFF_RETRY_FOR` has passed;
    /// every try carries the same `webhook-id`, so that the desk can drop repeats.
    pub async fn deliver(&self, event: &Event) -> Delivery {
        let payload = &event.body.to_string();
        let retried = |retry: &Retrying<'_, Attempt>| {
            self.metrics.handoff_event("retried");
            tracing::debug!(event = %event.kind, webhook_id = %event.id, attempts = retry.attempt, last = %retry.error.last(), "the hand-over destination did not take an event; trying again");
        };
        let attempt = |attempt| async move { self.attempt(event, payload).await.map(|()| attempt) };
        let span = tracing::info_span!(target: crate::telemetry::SPANS, "handoff.event", otel.kind = "client", event.kind = %event.kind);
        match tracing::Instrument::instrument(
            self.retry.run_observed(Attempt::verdict, retried, attempt),
            span,
        )
        .await
        {
            Ok(attempts) => {
                self.metrics.handoff_event("delivered");
                Delivery::Delivered { attempts }
            }
            Err(GaveUp {
                error,
                attempts,
                stop,
            }) => self.dropped(
                event,
                attempts,
                error.into_last(),
                matches!(stop, crate::retry::Stop::Final),
            ),
        }
    }

    fn dropped(&self, event: &Event, attempts: u32, last: String, refused: bool) -> Delivery {
        self.metrics.handoff_event("dropped");
        tracing::warn!(
            event = %event.kind,
            webhook_id = %event.id,
            conversation = event.body["conversation"].as_str().unwrap_or_default(),
            attempts,
            last = %last,
            "the hand-over destination did not take an event; given up"
        );
        Delivery::Dropped {
            attempts,
            last,
            refused,
        }
    }

    async fn attempt(&self, event: &Event, payload: &str) -> Result<(), Attempt> {
        let timestamp = super::now() as i64;
        let signature = self
            .signer
            .sign(&event.id, timestamp, payload.as_bytes())
            .map_err(|e| Attempt::Final(format!("cannot sign: {e}")))?;
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &event.id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(payload.to_owned())
            .send()
            .await;
        let status = match response {
            Ok(response) => response.status(),
            Err(error) if error.is_timeout() => return Err(Attempt::Again("timeout".into())),
            Err(error) if error.is_connect() => {
                return Err(Attempt::Again("could not connect".into()))
            }
            Err(_) => return Err(Attempt::Again("connection lost".into())),
        };
        let last = format!("HTTP {}", status.as_u16());
        match status.as_u16() {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(Attempt::Again(last)),
            _ => Err(Attempt::Final(last)),
        }
    }
}

/// Why one try failed: the answer (an HTTP status) or why there was none.
enum Attempt {
    /// A 5xx, 408 or 429, a timeout or a connection that failed: tried again.
    Again(String),
    Final(String),
}

impl Attempt {
    fn verdict(&self) -> Verdict {
        match self {
            Attempt::Again(_) => Verdict::Retry,
            Attempt::Final(_) => Verdict::Final,
        }
    }

    fn last(&self) -> &str {
        match self {
            Attempt::Again(last) | Attempt::Final(last) => last,
        }
    }

    fn into_last(self) -> String {
        match self {
            Attempt::Again(last) | Attempt::Final(last) => last,
        }
    }
}
