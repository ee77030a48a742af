//! The agent: which one, where, and how long it may take. The agent variables
//! (`AGENT_ID`, `SESSION_TTL`, `AGENT_TIMEOUT`, …) are read here once, whether they make
//! the default route or only fill the gaps of the routes file's routes.

use super::values::{
    parse_agent_id, parse_duration, parse_environment, parse_location, parse_session_ttl,
    AgentType, ReplyMode,
};
use super::vars::{project_of, Reader};
use super::Problem;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    Cx {
        agent_id: String,
        session_ttl: Option<Duration>,
    },
    Es,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Google's API over HTTPS, with Application Default Credentials.
    Google { host: String },
    /// A local emulator over plain HTTP, with no credentials.
    Emulator { host: String },
}

impl Endpoint {
    pub fn url(&self) -> String {
        match self {
            Endpoint::Google { host } => format!("https://{host}"),
            Endpoint::Emulator { host } => format!("http://{host}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub kind: AgentKind,
    pub project: String,
    pub location: String,
    pub language_code: String,
    pub endpoint: Endpoint,
    /// How long one webhook may wait for the agent, retries included. Twilio gives up on
    /// a webhook after 15 s, so this stays well inside that.
    pub timeout: Duration,
    /// How long after the first attempt a failing agent is asked again.
    pub retry_window: Duration,
    /// The agent's environment (CX `environments/E`, ES `environments/E/users/-`); none:
    /// the draft.
    pub environment: Option<String>,
}

impl fmt::Display for AgentSettings {
    /// The agent as Google names it, e.g. `CX agent projects/p/locations/global/agents/a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AgentKind::Cx { agent_id, .. } => write!(
                f,
                "CX agent projects/{}/locations/{}/agents/{agent_id}",
                self.project, self.location
            ),
            AgentKind::Es => write!(
                f,
                "ES agent projects/{}/locations/{}/agent",
                self.project, self.location
            ),
        }
    }
}

/// How long after the first attempt a failure may still be asked again
/// (`AGENT_RETRY_WINDOW`).
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(15);
const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio waits 15 s for a webhook; with TwiML replies the agent must be back before.
pub(super) const MAX_AGENT_TIMEOUT: Duration = Duration::from_secs(14);
/// When replies may go through the API, the agent may take as long as CX allows a
/// webhook (30 s), plus a margin.
const DEFAULT_AGENT_TIMEOUT_API: Duration = Duration::from_secs(35);
const MAX_AGENT_TIMEOUT_API: Duration = Duration::from_secs(120);

/// The default and the longest agent timeout in `mode`, and why the longest: Twilio
/// waits 15 s for a webhook that must carry the replies; otherwise as long as CX lets a
/// webhook run, and more.
fn agent_timeouts(mode: ReplyMode) -> (Duration, Duration, &'static str) {
    match mode {
        ReplyMode::Twiml => (
            DEFAULT_AGENT_TIMEOUT,
            MAX_AGENT_TIMEOUT,
            "with REPLY_MODE=twiml Twilio waits 15s for the webhook",
        ),
        ReplyMode::Api | ReplyMode::Auto => (
            DEFAULT_AGENT_TIMEOUT_API,
            MAX_AGENT_TIMEOUT_API,
            "longer is not a conversation",
        ),
    }
}

/// The agent variables, each parsed once: the default route's agent, and the values a
/// route of the routes file takes where it says nothing.
#[derive(Debug)]
pub(super) struct AgentVars<'a> {
    pub project: Option<&'a str>,
    kind: AgentType,
    agent_id: Option<String>,
    location: String,
    environment: Option<String>,
    pub language_code: Option<&'a str>,
    pub session_ttl: Option<Duration>,
    /// `AGENT_TIMEOUT` as set (within the bounds of `REPLY_MODE`).
    timeout: Option<Duration>,
    pub retry_window: Duration,
    pub emulator_host: Option<&'a str>,
    endpoint: Option<&'a str>,
}

impl<'a> AgentVars<'a> {
    /// Reads every agent variable that is set; those the default route needs are
    /// required only when `default_route`.
    pub fn read(reader: &mut Reader<'a>, mode: ReplyMode, default_route: bool) -> Self {
        let project = project_of(reader.vars);
        if default_route && project.is_none() {
            reader.fail_var(
                "GCP_PROJECT",
                Problem::missing_because("GOOGLE_CLOUD_PROJECT is also accepted; on Google Cloud the metadata server tells it"),
            );
        }
        let location = reader
            .parsed("AGENT_LOCATION", parse_location)
            .unwrap_or_else(|| "global".to_owned());
        let kind = reader.parsed_or("AGENT_TYPE", str::parse, AgentType::Cx);
        let session_ttl = reader.parsed("SESSION_TTL", parse_session_ttl);
        let agent_id = match (default_route, kind) {
            (true, AgentType::Cx) => reader
                .required("AGENT_ID")
                .and_then(|_| reader.parsed("AGENT_ID", parse_agent_id)),
            _ => reader.parsed("AGENT_ID", parse_agent_id),
        };
        let (_, max_timeout, why) = agent_timeouts(mode);
        let timeout = reader.parsed("AGENT_TIMEOUT", |v| {
            let timeout = parse_duration(v)?;
            match timeout > max_timeout {
                true => Err(format!("must be at most {}s: {why}", max_timeout.as_secs())),
                false => Ok(timeout),
            }
        });
        let environment = reader.parsed("AGENT_ENVIRONMENT", parse_environment);
        let retry_window =
            reader.parsed_or("AGENT_RETRY_WINDOW", parse_duration, DEFAULT_RETRY_WINDOW);
        AgentVars {
            project,
            kind,
            agent_id,
            location,
            environment,
            language_code: reader.get("LANGUAGE_CODE"),
            session_ttl,
            timeout,
            retry_window,
            emulator_host: reader.get("DIALOGFLOW_EMULATOR_HOST"),
            endpoint: reader.get("DF_ENDPOINT"),
        }
    }

    /// The agent's timeout on a route whose replies go in `mode`: `AGENT_TIMEOUT`, held
    /// to what that mode allows; else that mode's default.
    pub fn timeout_in(&self, mode: ReplyMode) -> Duration {
        let (default, max, _) = agent_timeouts(mode);
        self.timeout.map_or(default, |timeout| timeout.min(max))
    }

    /// The default route's agent; `None` when a variable it needs was missing or wrong
    /// (already reported).
    pub fn default_agent(&self, mode: ReplyMode) -> Option<AgentSettings> {
        let kind = match self.kind {
            AgentType::Cx => AgentKind::Cx {
                agent_id: self.agent_id.clone()?,
                session_ttl: self.session_ttl,
            },
            AgentType::Es => AgentKind::Es,
        };
        Some(AgentSettings {
            kind,
            project: self.project?.to_owned(),
            location: self.location.clone(),
            language_code: self.language_code.unwrap_or("en").to_owned(),
            endpoint: endpoint_of(&self.location, self.emulator_host, self.endpoint),
            timeout: self.timeout_in(mode),
            retry_window: self.retry_window,
            environment: self.environment.clone(),
        })
    }
}

/// Where an agent at `location` is asked: a local emulator if one is named, else
/// Google's `endpoint` as given, else the location's own endpoint.
pub(super) fn endpoint_of(
    location: &str,
    emulator_host: Option<&str>,
    endpoint: Option<&str>,
) -> Endpoint {
    match emulator_host {
        Some(host) => Endpoint::Emulator {
            host: host.to_owned(),
        },
        None => Endpoint::Google {
            host: match endpoint {
                Some(host) => host
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_owned(),
                None if location == "global" => "dialogflow.googleapis.com".to_owned(),
                None => format!("{location}-dialogflow.googleapis.com"),
            },
        },
    }
}
