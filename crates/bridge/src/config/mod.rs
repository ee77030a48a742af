//! The configuration: read once at start-up from the environment, a `.env` file and
//! the routes file, checked whole, and turned into typed settings.
//!
//! The variable names are those of the Node sample this bridge replaces, so its `.env`
//! works unchanged. Every value is parsed in one place ([`values`]), whether it comes
//! from a variable or the routes file, and every problem is reported at once, each
//! named by where it is (a variable, or a route's field) and what is wrong, before any
//! port is opened. `serve` and `check` load through the same [`load`].
//!
//! Each area reads its own variables: [`agent`], [`routes_file`] (the file's shape in
//! [`route_spec`]), [`twilio`],
//! [`replies`], [`state`], [`limits`], [`rich`], [`handoff`], [`outbound`], [`metrics`], [`ids`] (the key
//! of conversation ids). None of them reaches into
//! the modules that use the settings.

mod agent;
mod error;
mod handoff;
mod ids;
mod limits;
mod metrics;
mod outbound;
mod privacy;
mod replies;
mod rich;
mod route_spec;
mod routes_file;
mod state;
mod traces;
mod twilio;
mod values;
mod vars;
mod warnings;

pub use agent::{AgentKind, AgentSettings, Endpoint, DEFAULT_RETRY_WINDOW};
pub use error::{ConfigError, ConfigErrors, Place, Problem};
pub use handoff::{check_webhook_secret, HandoffSettings};
pub use limits::{
    default_max_connections, memory_limit, open_files_limit, per_connection_bytes, CapBound,
    CapChoice, ConnectionCap, ConnectionLimits, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_HEADER_BYTES, DEFAULT_RATE_LIMIT_MESSAGE, MAX_BODY_BYTES,
};
pub use metrics::MetricsSettings;
pub use outbound::OutboundSettings;
pub use replies::{
    ReplySettings, DEFAULT_TWILIO_API_BASE_URL, DEFAULT_TWILIO_CONTENT_BASE_URL,
    DEFAULT_TWILIO_MESSAGING_BASE_URL,
};
pub use rich::RichSettings;
pub use routes_file::RouteSettings;
pub use state::{ClusterMode, StateAuth, StateSettings, DEFAULT_STATE_PREFIX};
pub use traces::{trace_export, OtlpProtocol, SamplerSetting, TraceExport};
pub use twilio::{Account, TwilioSettings};
pub use values::{parse_duration, AgentType, ReplyMode, Secret};
pub use vars::{complete_project, load_vars, on_cloud_run, project_of, ProjectLookup, Vars};

use crate::routes::Matcher;
use vars::Reader;

pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Sorry, I can't answer right now. Please try again in a moment.";
const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub twilio: TwilioSettings,
    /// Which agent answers which webhook, first match first: those of `ROUTES_FILE`, then
    /// the default route of today's variables (`AGENT_ID`, …) if they name an agent.
    pub routes: Vec<RouteSettings>,
    pub replies: ReplySettings,
    pub state: StateSettings,
    pub limits: ConnectionLimits,
    /// How `limits.max_connections` was chosen.
    pub connection_cap: CapChoice,
    /// Where `/metrics` is served and what it needs.
    pub metrics: MetricsSettings,
    pub rate_limits: crate::rate_limit::RateLimits,
    /// What a person who writes faster than the limits is told, once.
    pub rate_limit_message: String,
    /// STOP, START and HELP (Twilio's opt-out keywords) go to the agent as events.
    pub opt_out_to_agent: bool,
    pub rich: RichSettings,
    /// Hand-over to people: on when `HANDOFF_URL` is set.
    pub handoff: Option<HandoffSettings>,
    /// Messages the business starts (`POST /outbound`): on when `OUTBOUND_TOKEN` is set.
    pub outbound: Option<OutboundSettings>,
    /// What conversation ids are keyed with (`SESSION_KEY`, or derived).
    pub session_key: crate::session::SessionKey,
    /// The bearer token of `/privacy/erase` (`PRIVACY_TOKEN`); `None`: the endpoint
    /// does not exist.
    pub privacy_token: Option<Secret>,
    /// Where spans are exported: on when an OTLP endpoint is set.
    pub traces: Option<TraceExport>,
}

/// The settings of `vars`, or every problem with them, the one about the project with
/// why the metadata server could not tell it: what `serve` and `check` both start from.
pub fn load(vars: &Vars, project: &ProjectLookup) -> Result<Settings, ConfigErrors> {
    Settings::from_vars(vars).map_err(|errors| errors.explained(project))
}

impl Settings {
    /// The settings of `vars`, or every problem with them, in the order they are read.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(vars);
        let settings = read(&mut reader);
        match settings {
            Some(settings) if reader.errors.is_empty() => Ok(settings),
            _ => Err(ConfigErrors(reader.errors)),
        }
    }

    /// The catch-all route of today's variables, if they name an agent.
    pub fn default_route(&self) -> Option<&RouteSettings> {
        self.routes
            .last()
            .filter(|route| route.matcher == Matcher::default())
    }
}

/// Reads every area, each variable once; `None` when a problem leaves nothing to build
/// (every problem is in the reader).
fn read(reader: &mut Reader<'_>) -> Option<Settings> {
    let port = reader.parsed("PORT", |v| {
        v.parse::<u16>()
            .map_err(|_| "must be a port number, 0-65535".to_owned())
    });
    let file = routes_file::read(reader);
    let twilio = twilio::read(reader, file.as_ref().map_or(&[][..], |file| &file.accounts));
    let session_key = ids::read(reader, reader.get("TWILIO_AUTH_TOKEN"));
    let reply_mode = reader.parsed_or("REPLY_MODE", str::parse, ReplyMode::Auto);
    let fallback_message = reader.text_or("FALLBACK_MESSAGE", DEFAULT_FALLBACK_MESSAGE);
    // With a routes file, today's variables make a default route only if they name
    // an agent; their values fill the routes' gaps either way.
    let has_default = reader.get("ROUTES_FILE").is_none()
        || reader.get("AGENT_ID").is_some()
        || reader.get("AGENT_TYPE").is_some();
    let agent = agent::AgentVars::read(reader, reply_mode, has_default);
    let mut routes = Vec::new();
    if let Some(file) = &file {
        let inherited = routes_file::Inherited {
            agent: &agent,
            reply_mode,
            fallback_message: &fallback_message,
            account_sid: twilio.as_ref().map(|t| t.account_sid.as_str()),
        };
        routes = routes_file::routes(reader, file, &inherited);
        if file.routes.is_empty() && !has_default {
            reader.fail_var(
                "ROUTES_FILE",
                Problem::Conflict(
                    "has no routes, and no AGENT_ID or AGENT_TYPE makes a default one".to_owned(),
                ),
            );
        }
    }
    let default_languages = reader
        .parsed("LANGUAGE_BY_COUNTRY", values::parse_languages)
        .unwrap_or_default();
    let replies = replies::read(reader, reply_mode, twilio.as_ref());
    let state = state::read(reader);
    let (limits, connection_cap) = limits::connection_limits(reader);
    let metrics = metrics::read(reader, port.unwrap_or(DEFAULT_PORT));
    let rate_limits = limits::rate_limits(reader);
    let opt_out_to_agent = reader.parsed_or("OPT_OUT_TO_AGENT", values::parse_bool, false);
    let rate_limit_message = reader.text_or("RATE_LIMIT_MESSAGE", DEFAULT_RATE_LIMIT_MESSAGE);
    let rich = rich::read(reader);
    // The default route, added last, answers in `reply_mode`.
    let all_twiml = reply_mode == ReplyMode::Twiml
        && routes
            .iter()
            .all(|route| route.reply_mode == ReplyMode::Twiml);
    let handoff = handoff::read(reader, all_twiml);
    let outbound = outbound::read(reader, all_twiml);
    let privacy_token = privacy::read(reader);
    let traces = traces::read(reader);
    if has_default {
        routes.push(RouteSettings {
            name: "default".into(),
            matcher: Matcher::default(),
            agent: agent.default_agent(reply_mode)?,
            languages: default_languages,
            fallback_message,
            reply_mode,
        });
    }
    Some(Settings {
        port: port.unwrap_or(DEFAULT_PORT),
        twilio: twilio?,
        routes,
        replies: replies?,
        state,
        limits,
        connection_cap,
        metrics,
        rate_limits,
        rate_limit_message,
        opt_out_to_agent,
        rich,
        handoff: handoff.ok()?,
        outbound: outbound.ok()?,
        session_key: session_key?,
        privacy_token: privacy_token.ok()?,
        traces,
    })
}

#[cfg(test)]
mod tests;
