//! The Dialogflow agent: one question in, the messages it answers out.
//!
//! CX and ES are two APIs with two official clients, but the bridge asks both the same
//! thing, so they sit behind one small enum. Each backend turns our [`AgentQuery`] into
//! its request and its response into [`ReplyMessage`]s; everything Dialogflow-specific
//! stays in `cx.rs` and `es.rs`.

mod cx;
mod es;
mod payload;
pub mod retry;

use crate::config::{AgentKind, AgentSettings, Endpoint};
use crate::reply::ReplyMessage;
use crate::retry::RetryPolicy;
use crate::session::SessionId;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// The event sent instead of text when a message has media but no words: Dialogflow
/// rejects an empty text query. The media URLs are in the query payload.
pub const MEDIA_EVENT: &str = "twilio_media";

/// The event sent for a location shared on WhatsApp; the place is in the query
/// payload's `location`.
pub const LOCATION_EVENT: &str = "twilio_location";

/// What the agent answered: its messages, and whether it handed the conversation to a
/// person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentAnswer {
    pub replies: Vec<ReplyMessage>,
    /// The agent handed the conversation to a person.
    pub handoff: Option<HandoffRequest>,
}

/// A hand-over the agent asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffRequest {
    /// Free-form, for the human side.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `live_agent_handoff` (CX's response message) or `payload` (a custom payload's
    /// `handoff`).
    pub trigger: &'static str,
}

/// What the bridge asks the agent.
#[derive(Debug, Clone)]
pub struct AgentQuery {
    pub session: SessionId,
    pub input: QueryInput,
    /// Every webhook parameter, for the agent's own webhooks to read.
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// Parameters set with the query (an outbound event's): CX's query parameters, ES's
    /// event parameters. Usually empty.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The query's language, when not the agent's configured one (the sender's country
    /// may choose it).
    pub language: Option<String>,
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
    /// Why the person gets the fallback message: the class of failure of [`retry`]'s
    /// table.
    pub fn reason(&self) -> retry::FallbackReason {
        match self {
            AgentError::Timeout(_) => retry::FallbackReason::Timeout,
            AgentError::Call(e) => retry::FallbackReason::of(retry::Failure::of(e)),
            AgentError::Client(_) => retry::FallbackReason::Client,
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> String {
        self.reason().label().to_owned()
    }
}

/// A Dialogflow agent, its client made at most once: ahead of the first question
/// ([`Agent::connect`], which start-up runs beside everything else), or by the first
/// question that needs it.
///
/// Making the official client takes milliseconds (it builds its TLS configuration and
/// reads the system's roots), so the bridge serves meanwhile: a webhook that arrives
/// first waits only for what is left of it, not for the whole of start-up.
#[derive(Clone, Debug)]
pub struct Agent {
    settings: AgentSettings,
    clients: Clients,
    backend: tokio::sync::OnceCell<Backend>,
    timeout: Duration,
    /// What is asked again, within `AGENT_RETRY_WINDOW` (and the timeout).
    retry: RetryPolicy,
}

#[derive(Clone, Debug)]
enum Backend {
    Cx(cx::CxAgent),
    Es(es::EsAgent),
}

/// The official clients made so far, one per API and endpoint: agents on the same
/// endpoint share one (its connections, its credentials), however many routes name them.
/// Clones share the clients.
#[derive(Clone, Debug, Default)]
pub struct Clients(std::sync::Arc<MadeClients>);

#[derive(Debug, Default)]
struct MadeClients {
    cx: tokio::sync::Mutex<HashMap<String, cx::Client>>,
    es: tokio::sync::Mutex<HashMap<String, es::Client>>,
}

/// The client of `endpoint` in `made`, made with `connect` if there is none yet.
async fn shared<C, F>(
    made: &tokio::sync::Mutex<HashMap<String, C>>,
    endpoint: String,
    connect: impl FnOnce() -> F,
) -> Result<C, AgentError>
where
    C: Clone,
    F: Future<Output = Result<C, AgentError>>,
{
    let mut made = made.lock().await;
    if let Some(client) = made.get(&endpoint) {
        return Ok(client.clone());
    }
    let client = connect().await?;
    made.insert(endpoint, client.clone());
    Ok(client)
}

impl Agent {
    /// The agent of `settings`, its client not made yet: with Google's endpoint it will
    /// resolve Application Default Credentials; with the emulator it uses none. A client
    /// for the same endpoint is taken from `clients` when one was made already.
    pub fn new(settings: &AgentSettings, clients: &Clients) -> Self {
        Self {
            settings: settings.clone(),
            clients: clients.clone(),
            backend: tokio::sync::OnceCell::new(),
            timeout: settings.timeout,
            retry: retry::policy(settings.retry_window).with_time_limit(settings.timeout),
        }
    }

    /// The agent of `settings` with its client made.
    pub async fn connect(settings: &AgentSettings) -> Result<Self, AgentError> {
        Self::connect_with(settings, &Clients::default()).await
    }

    /// As [`Agent::connect`], with a client from `clients` when one for the same
    /// endpoint was made already.
    pub async fn connect_with(
        settings: &AgentSettings,
        clients: &Clients,
    ) -> Result<Self, AgentError> {
        let agent = Self::new(settings, clients);
        agent.backend().await?;
        Ok(agent)
    }

    /// Makes the client now, unless it is made already or being made.
    pub async fn make_client(&self) -> Result<(), AgentError> {
        self.backend().await.map(|_| ())
    }

    /// The backend, its client made by the first caller; the others wait for it.
    async fn backend(&self) -> Result<&Backend, AgentError> {
        self.backend
            .get_or_try_init(|| async {
                let settings = &self.settings;
                let endpoint = settings.endpoint.url();
                Ok(match &settings.kind {
                    AgentKind::Cx {
                        agent_id,
                        session_ttl,
                    } => {
                        let client = shared(&self.clients.0.cx, endpoint, || {
                            cx::connect(&settings.endpoint)
                        })
                        .await?;
                        Backend::Cx(cx::CxAgent::new(client, settings, agent_id, *session_ttl))
                    }
                    AgentKind::Es => {
                        let client = shared(&self.clients.0.es, endpoint, || {
                            es::connect(&settings.endpoint)
                        })
                        .await?;
                        Backend::Es(es::EsAgent::new(client, settings))
                    }
                })
            })
            .await
    }

    /// The agent's API, for traces: `cx` or `es`.
    pub fn kind(&self) -> &'static str {
        match self.settings.kind {
            AgentKind::Cx { .. } => "cx",
            AgentKind::Es => "es",
        }
    }

    /// How long one question may take, retries included (`AGENT_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks the agent, retrying transient failures, and gives up after the configured
    /// timeout (which bounds the client's making too, when the question comes first).
    pub async fn detect_intent(&self, query: &AgentQuery) -> Result<AgentAnswer, AgentError> {
        let call = async {
            // Made once, by the first question: boxed, so that the making of a client
            // is not carried inline by every question in flight.
            let backend = match self.backend.get() {
                Some(backend) => backend,
                None => Box::pin(self.backend()).await?,
            };
            // Made for each call, once the client is there: gax's policies remember the
            // call's last pause, and the retry window counts from the first attempt, not
            // from a wait for the client.
            let retry = self.retry.for_gax(retry::Failure::verdict_of, self.timeout);
            match backend {
                Backend::Cx(agent) => agent.detect_intent(query, retry).await,
                Backend::Es(agent) => agent.detect_intent(query, retry).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentKind, AgentSettings, Endpoint};
    use crate::session::{SessionId, SessionKey};

    fn settings(kind: AgentKind) -> AgentSettings {
        AgentSettings {
            kind,
            project: "p".into(),
            location: "global".into(),
            language_code: "en".into(),
            // Building the client connects to nothing.
            endpoint: Endpoint::Emulator {
                host: "127.0.0.1:9".into(),
            },
            timeout: Duration::from_secs(5),
            retry_window: Duration::from_secs(5),
            environment: None,
        }
    }

    /// Every conversation in flight holds a question to the agent, and every layer that
    /// awaits it moves it once: the official clients' request state is boxed where it is
    /// made, so that what the turn holds and moves is small. Prints the sizes
    /// (`--nocapture`); the bound catches the request's state inlined again.
    #[tokio::test]
    async fn a_question_in_flight_is_small() {
        let cx = AgentKind::Cx {
            agent_id: "a".into(),
            session_ttl: None,
        };
        let query = AgentQuery {
            session: SessionId::for_conversation(&SessionKey::for_tests(), "AC1", "+1555", "+1556"),
            input: QueryInput::Text("hi".into()),
            payload: serde_json::Map::new(),
            parameters: serde_json::Map::new(),
            language: None,
        };
        for (name, kind) in [("CX", cx), ("ES", AgentKind::Es)] {
            let agent = Agent::connect(&settings(kind)).await.unwrap();
            let asking = agent.detect_intent(&query);
            let size = std::mem::size_of_val(&asking);
            println!("{name}: Agent::detect_intent's future: {size} bytes");
            assert!(size <= 1024, "{size} bytes");
        }
    }
}
