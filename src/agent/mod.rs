//! The Dialogflow agent: one question in, the messages it answers out.
//!
//! CX and ES are two APIs with two official clients, but the bridge asks both the same
//! thing, so they sit behind one small enum. Each backend turns our [`AgentQuery`] into
//! its request and its response into [`ReplyMessage`]s; everything Dialogflow-specific
//! stays in `cx.rs` and `es.rs`.

mod cx;
mod es;
mod payload;

use crate::config::{AgentKind, AgentSettings, Endpoint};
use crate::reply::ReplyMessage;
use crate::session::SessionId;
use google_cloud_gax::backoff_policy::BackoffPolicyArg;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicy, RetryPolicyArg, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use std::time::Duration;
use thiserror::Error;

/// The event sent instead of text when a message has media but no words: Dialogflow
/// rejects an empty text query. The media URLs are in the query payload.
pub const MEDIA_EVENT: &str = "twilio_media";

/// What the bridge asks the agent.
#[derive(Debug, Clone)]
pub struct AgentQuery {
    pub session: SessionId,
    pub input: QueryInput,
    /// Every webhook parameter, for the agent's own webhooks to read.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryInput {
    Text(String),
    Event(String),
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent call failed: {0}")]
    Call(#[from] google_cloud_gax::error::Error),
    #[error("could not create the Dialogflow client: {0}")]
    Client(#[from] google_cloud_gax::client_builder::Error),
}

impl AgentError {
    /// A short label for logs and metrics: the gRPC status name, or the kind of failure.
    pub fn label(&self) -> String {
        match self {
            AgentError::Timeout(_) => "DEADLINE_EXCEEDED".to_owned(),
            AgentError::Call(e) => match e.status() {
                Some(status) => status.code.name().to_owned(),
                None if e.is_timeout() => "DEADLINE_EXCEEDED".to_owned(),
                None if e.is_authentication() => "AUTHENTICATION".to_owned(),
                None => "TRANSPORT".to_owned(),
            },
            AgentError::Client(_) => "CLIENT".to_owned(),
        }
    }
}

/// A connected Dialogflow agent.
#[derive(Clone, Debug)]
pub struct Agent {
    backend: Backend,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Backend {
    Cx(cx::CxAgent),
    Es(es::EsAgent),
}

impl Agent {
    /// Builds the client for `settings`. With Google's endpoint this resolves
    /// Application Default Credentials; with the emulator it uses none.
    pub async fn connect(settings: &AgentSettings) -> Result<Self, AgentError> {
        let backend = match &settings.kind {
            AgentKind::Cx {
                agent_id,
                session_ttl,
            } => Backend::Cx(cx::CxAgent::connect(settings, agent_id, *session_ttl).await?),
            AgentKind::Es => Backend::Es(es::EsAgent::connect(settings).await?),
        };
        Ok(Self {
            backend,
            timeout: settings.timeout,
        })
    }

    /// Asks the agent, retrying transient failures, and gives up after the configured
    /// timeout.
    pub async fn detect_intent(&self, query: &AgentQuery) -> Result<Vec<ReplyMessage>, AgentError> {
        let call = async {
            match &self.backend {
                Backend::Cx(agent) => agent.detect_intent(query, self.timeout).await,
                Backend::Es(agent) => agent.detect_intent(query, self.timeout).await,
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| AgentError::Timeout(self.timeout))?
    }
}

/// The client builder's settings shared by CX and ES.
fn endpoint_and_credentials<B>(endpoint: &Endpoint, builder: B) -> B
where
    B: ConfigureClient,
{
    let builder = builder.endpoint(endpoint.url());
    match endpoint {
        Endpoint::Emulator { .. } => builder.anonymous(),
        Endpoint::Google { .. } => builder,
    }
}

/// The two official client builders are distinct types with the same methods.
trait ConfigureClient: Sized {
    fn endpoint(self, url: String) -> Self;
    fn anonymous(self) -> Self;
}

impl<F, Cr> ConfigureClient for google_cloud_gax::client_builder::ClientBuilder<F, Cr>
where
    Cr: From<google_cloud_auth::credentials::Credentials>,
{
    fn endpoint(self, url: String) -> Self {
        self.with_endpoint(url)
    }
    fn anonymous(self) -> Self {
        self.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
    }
}

/// Retries UNAVAILABLE (and transport failures before the request was sent), and
/// RESOURCE_EXHAUSTED with backoff, for as long as the webhook can wait.
fn retry_policy(budget: Duration) -> RetryPolicyArg {
    TransientOnly.with_time_limit(budget).into()
}

/// What may be asked again: a request that never left (connection refused), and the
/// answers that say the agent did not take it (UNAVAILABLE or HTTP 503,
/// RESOURCE_EXHAUSTED or HTTP 429). Not a connection lost after the request went out:
/// the agent may have taken that turn, and asking again would play it twice ("yes,
/// place the order"). The official clients' own policies retry those too when a call is
/// marked idempotent, which a conversational turn is not.
#[derive(Debug)]
struct TransientOnly;

impl RetryPolicy for TransientOnly {
    fn on_error(&self, state: &RetryState, error: google_cloud_gax::error::Error) -> RetryResult {
        let code = error.status().map(|status| status.code);
        if matches!(code, Some(Code::Unavailable | Code::ResourceExhausted))
            || matches!(error.http_status_code(), Some(429 | 503))
        {
            return RetryResult::Continue(error);
        }
        // The official policy for a call that is not idempotent retries exactly what
        // never reached the service.
        Aip194Strict.on_error(&state.clone().set_idempotent(false), error)
    }
}

fn backoff_policy() -> BackoffPolicyArg {
    ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_maximum_delay(Duration::from_secs(2))
        .with_scaling(2.0)
        .clamp()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;
    use google_cloud_gax::error::Error;

    fn retried(error: Error) -> bool {
        TransientOnly
            .on_error(&RetryState::new(false), error)
            .is_continue()
    }

    #[test]
    fn only_what_the_agent_did_not_take_is_asked_again() {
        let status = |code| Error::service(Status::default().set_code(code));
        let http = |code| Error::http(code, Default::default(), Default::default());
        assert!(retried(status(Code::Unavailable)));
        assert!(retried(status(Code::ResourceExhausted)));
        assert!(retried(http(503)));
        assert!(retried(http(429)));
        assert!(!retried(status(Code::InvalidArgument)));
        assert!(!retried(status(Code::Internal)));
        assert!(!retried(http(500)));
    }
}
