//! The configuration: read once at start-up from the environment and a `.env` file,
//! checked whole, and turned into typed settings.
//!
//! The variable names are those of the Node sample this bridge replaces, so its `.env`
//! works unchanged. Every problem is reported at once, one line per variable, before
//! any port is opened.

use crate::gcp_metadata::{self, MetadataError};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Where variables come from: the process environment over a `.env` file.
pub type Vars = HashMap<String, String>;

/// The process environment, over the `.env` file in `dir` if there is one. A variable
/// that is set but empty in the environment does not hide the `.env` file's value: the
/// image sets `GCP_PROJECT` from a build argument that may be empty.
pub fn load_vars(dir: &Path) -> Result<Vars, String> {
    let mut vars = Vars::new();
    let dotenv = dir.join(".env");
    if dotenv.is_file() {
        let entries =
            dotenvy::from_path_iter(&dotenv).map_err(|e| format!("{}: {e}", dotenv.display()))?;
        for entry in entries {
            let (key, value) = entry.map_err(|e| format!("{}: {e}", dotenv.display()))?;
            vars.insert(key, value);
        }
    }
    for (key, value) in std::env::vars() {
        if !value.trim().is_empty() || !vars.contains_key(&key) {
            vars.insert(key, value);
        }
    }
    Ok(vars)
}

/// Where the agent's project id comes from.
#[derive(Debug)]
pub enum ProjectLookup {
    /// `GCP_PROJECT` or `GOOGLE_CLOUD_PROJECT`.
    Configured,
    /// Neither is set; the metadata server told it (and it is now in the variables).
    FromMetadata,
    /// Neither is set, and the metadata server could not tell it.
    Failed(MetadataError),
}

/// Fills in the project from the metadata server when the variables name none, as on
/// Google Cloud with the Node sample's `.env`; says where the project comes from.
pub async fn complete_project(vars: &mut Vars) -> ProjectLookup {
    if project_of(vars).is_some() {
        return ProjectLookup::Configured;
    }
    let host = vars
        .get("GCE_METADATA_HOST")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .unwrap_or(gcp_metadata::DEFAULT_HOST);
    match gcp_metadata::project_id(host).await {
        Ok(project) => {
            vars.insert("GOOGLE_CLOUD_PROJECT".to_owned(), project);
            ProjectLookup::FromMetadata
        }
        Err(error) => ProjectLookup::Failed(error),
    }
}

/// The project named by the variables: `GCP_PROJECT`, else `GOOGLE_CLOUD_PROJECT`.
pub fn project_of(vars: &Vars) -> Option<&str> {
    ["GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"]
        .iter()
        .filter_map(|name| vars.get(*name))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

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
    pub rate_limits: crate::rate_limit::RateLimits,
    /// What a person who writes faster than the limits is told, once.
    pub rate_limit_message: String,
    /// STOP, START and HELP (Twilio's opt-out keywords) go to the agent as events.
    pub opt_out_to_agent: bool,
    pub rich: RichSettings,
    /// Hand-over to people: on when `HANDOFF_URL` is set.
    pub handoff: Option<HandoffSettings>,
}

/// Where conversations go when the agent hands them to a person, and how.
#[derive(Debug, Clone)]
pub struct HandoffSettings {
    /// Where the hand-over events are posted (`HANDOFF_URL`).
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`) that signs them.
    pub secret: Secret,
    /// The bearer token the human side answers with (`HANDOFF_TOKEN`).
    pub token: Secret,
    /// Words that hand the conversation over without asking the agent, lower case.
    pub keywords: Vec<String>,
    /// A hand-over with no activity this long ends by itself.
    pub ttl: Duration,
    /// The agent gets the event `handoff_ended` before the first message back.
    pub return_event: bool,
    /// `handoff.started` carries the person's address.
    pub include_address: bool,
    /// What the person is told when the destination cannot be reached.
    pub unavailable_message: String,
    /// What the person is told when a keyword starts the hand-over.
    pub started_message: String,
    /// How long an event is tried before the hand-over is given up.
    pub retry_for: Duration,
    /// How many recent turns `handoff.started` carries.
    pub history: usize,
}

/// How menus and WhatsApp's rich messages are shown.
#[derive(Debug, Clone)]
pub struct RichSettings {
    pub menu: crate::menu::MenuFormat,
    /// How long a menu waits for its answer ("2", or a choice's title).
    pub menu_ttl: Duration,
    /// Show "typing…" on WhatsApp when the agent has not answered this fast; never
    /// when `None` (`TYPING_AFTER=0`).
    pub typing_after: Option<Duration>,
}

/// The HTTP server's connection limits (`HEADER_TIMEOUT`, `BODY_TIMEOUT`, …).
pub use hardened_http::Limits as ConnectionLimits;
pub use hardened_http::{
    default_max_connections, open_files_limit, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};

/// One route: what it matches, and the agent that answers there and how.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// For logs and metrics (never a phone number).
    pub name: String,
    pub matcher: crate::routes::Matcher,
    pub agent: AgentSettings,
    /// The sender's country (`FromCountry`) to the language asked in.
    pub languages: std::collections::BTreeMap<String, String>,
    /// What the user gets when the agent cannot answer.
    pub fallback_message: String,
    pub reply_mode: ReplyMode,
}

impl Settings {
    /// The catch-all route of today's variables, if they name an agent.
    pub fn default_route(&self) -> Option<&RouteSettings> {
        self.routes
            .last()
            .filter(|route| route.matcher == crate::routes::Matcher::default())
    }
}

/// Where the bridge keeps what must hold across instances: the messages already
/// answered, the order of each conversation's turns, the replies still owed.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// `redis://` or `rediss://`; none: in this process only.
    pub url: Option<Secret>,
    /// The server's CA certificate (PEM), for `rediss://` with a private CA (Memorystore).
    pub ca_file: Option<std::path::PathBuf>,
    /// Every key starts with this, so that several bridges can share one server.
    pub prefix: String,
    /// The longest any one call to the store may take before the bridge goes on without
    /// it.
    pub timeout: Duration,
    /// How long an instance may hold a turn without renewing it; after that, another
    /// instance takes over its work.
    pub lease: Duration,
}

/// How replies reach the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// In the webhook's answer, as TwiML (the Node sample's way).
    Twiml,
    /// Always through the Messages API; the webhook is answered at once.
    Api,
    /// In the webhook's answer if the agent is back within the deadline, else through
    /// the Messages API.
    Auto,
}

impl fmt::Display for ReplyMode {
    /// As `REPLY_MODE` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyMode::Twiml => "twiml",
            ReplyMode::Api => "api",
            ReplyMode::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub mode: ReplyMode,
    /// In `auto` mode, how long the webhook waits for the agent before answering empty.
    pub deadline: Duration,
    pub api_base_url: String,
    /// The account SID, or an API key SID.
    pub api_username: String,
    /// The API key's secret; or the auth token, then the secondary one if set, which
    /// takes over when Twilio refuses the first (a token rotation).
    pub api_passwords: Vec<Secret>,
    /// Send from this Messaging Service instead of the number the user wrote to.
    pub messaging_service_sid: Option<String>,
    /// How long, after SIGTERM, replies still owed may take to be sent.
    pub shutdown_grace: Duration,
    /// How long one request to the Messages API may take; one unanswered is not sent
    /// again (it may have gone out).
    pub api_timeout: Duration,
    /// Twilio's Content API (`TWILIO_CONTENT_BASE_URL`): WhatsApp buttons and lists.
    pub content_base_url: String,
    /// Twilio's Messaging v2 API (`TWILIO_MESSAGING_BASE_URL`): the typing indicator.
    pub messaging_base_url: String,
}

#[derive(Debug, Clone)]
pub struct TwilioSettings {
    pub account_sid: String,
    /// The auth token, then the secondary token during a rotation.
    pub auth_tokens: Vec<Secret>,
    /// The exact URL configured in Twilio, when the operator knows it.
    pub webhook_url: Option<String>,
    /// Whether `X-Forwarded-Proto`/`X-Forwarded-Host` describe the public URL.
    pub trust_proxy: bool,
    /// Webhooks configuration SharedKeys by name, with the account each belongs to
    /// (`TWILIO_WEBHOOK_KEYS` the main account's, `TWILIO_WEBHOOK_KEYS__AC…` another's):
    /// a key signs only its own account's webhooks.
    pub webhook_keys: HashMap<String, (String, Secret)>,
    /// The sub-accounts (or other accounts) whose webhooks are taken too, each with its
    /// own tokens and API credentials; `account_sid` is not among them.
    pub other_accounts: Vec<Account>,
}

/// An account's SID, and the variables (or values) of its token, secondary token, API
/// key SID and API key secret, before they are read.
type AccountVars = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// An account other than `TWILIO_ACCOUNT_SID` whose webhooks the bridge takes.
#[derive(Debug, Clone)]
pub struct Account {
    pub sid: String,
    /// Its auth token, then the secondary during a rotation: they verify its webhooks.
    pub auth_tokens: Vec<Secret>,
    /// The Messages API user: the account SID, or an API key SID.
    pub api_username: String,
    /// The API key's secret; or the auth tokens.
    pub api_passwords: Vec<Secret>,
}

impl TwilioSettings {
    /// The tokens that verify the webhooks of `account_sid`, if it is one of ours.
    pub fn tokens_of(&self, account_sid: &str) -> Option<&[Secret]> {
        if account_sid == self.account_sid {
            return Some(&self.auth_tokens);
        }
        self.other_accounts
            .iter()
            .find(|account| account.sid == account_sid)
            .map(|account| account.auth_tokens.as_slice())
    }
}

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

pub const DEFAULT_RATE_LIMIT_MESSAGE: &str =
    "You're writing faster than I can answer. Please wait a minute, then try again.";
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Sorry, I can't answer right now. Please try again in a moment.";
const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_AGENT_TIMEOUT: Duration = Duration::from_secs(14);
/// When replies may go through the API, the agent may take as long as CX allows a
/// webhook (30 s), plus a margin.
const DEFAULT_AGENT_TIMEOUT_API: Duration = Duration::from_secs(35);
const MAX_AGENT_TIMEOUT_API: Duration = Duration::from_secs(120);
const DEFAULT_REPLY_DEADLINE: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(300);
const DEFAULT_STATE_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_STATE_PREFIX: &str = "twilio-dialogflow";
pub const DEFAULT_TWILIO_API_BASE_URL: &str = "https://api.twilio.com";
pub const DEFAULT_TWILIO_CONTENT_BASE_URL: &str = "https://content.twilio.com";
pub const DEFAULT_TWILIO_MESSAGING_BASE_URL: &str = "https://messaging.twilio.com";
const DEFAULT_HANDOFF_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_HANDOFF_RETRY_FOR: Duration = Duration::from_secs(60);
const DEFAULT_HANDOFF_HISTORY: usize = 10;
const DEFAULT_HANDOFF_UNAVAILABLE_MESSAGE: &str =
    "Sorry, no one can take over right now. You're back with the assistant.";
const DEFAULT_HANDOFF_STARTED_MESSAGE: &str = "One moment: a person will answer you here.";
const DEFAULT_MENU_TTL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_TYPING_AFTER: Duration = Duration::from_secs(1);
/// WhatsApp's limit for the button that opens a list.
const MAX_MENU_BUTTON_CHARS: usize = 20;
const DEFAULT_TWILIO_API_TIMEOUT: Duration = Duration::from_secs(10);

/// All the problems found in a configuration, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The errors, with why the metadata server could not tell the project added to
    /// the line about the project.
    pub fn explained(mut self, lookup: &ProjectLookup) -> Self {
        if let ProjectLookup::Failed(why) = lookup {
            for line in &mut self.0 {
                if line.starts_with("GCP_PROJECT:") {
                    line.push_str(&format!("; {why}"));
                }
            }
        }
        self
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigErrors> {
        let mut reader = Reader {
            vars,
            errors: Vec::new(),
        };
        let settings = reader.settings();
        match settings {
            Some(settings) if reader.errors.is_empty() => Ok(settings),
            _ => Err(ConfigErrors(reader.errors)),
        }
    }
}

impl Settings {
    /// Settings that are valid but probably not what the operator meant, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for route in &self.routes {
            let agent = &route.agent;
            let Endpoint::Google { host } = &agent.endpoint else {
                continue;
            };
            let regional = format!("{}-dialogflow.googleapis.com", agent.location);
            let mismatch = if agent.location == "global" {
                host.ends_with("-dialogflow.googleapis.com")
            } else {
                host == "dialogflow.googleapis.com"
            };
            if mismatch {
                let expected = if agent.location == "global" {
                    "dialogflow.googleapis.com"
                } else {
                    &regional
                };
                let (location, endpoint) = match route.name.as_str() {
                    "default" => ("AGENT_LOCATION".to_owned(), "DF_ENDPOINT".to_owned()),
                    name => (
                        format!("route {name}: agent.location"),
                        "agent.endpoint".to_owned(),
                    ),
                };
                warnings.push(format!(
                    "{location} is {} but {endpoint} is {host}: an agent is only served by its own location's endpoint ({expected}); expect NOT_FOUND or the fallback message. Unset {endpoint} to use the right one.",
                    agent.location
                ));
            }
        }
        let on_emulator = self
            .routes
            .iter()
            .any(|route| matches!(route.agent.endpoint, Endpoint::Emulator { .. }));
        if on_emulator
            && self
                .routes
                .iter()
                .any(|route| route.reply_mode != ReplyMode::Twiml)
            && self.replies.api_base_url == DEFAULT_TWILIO_API_BASE_URL
        {
            warnings.push(format!(
                "the agent is an emulator but replies that miss REPLY_DEADLINE go to the real {DEFAULT_TWILIO_API_BASE_URL} (REPLY_MODE={}): set TWILIO_API_BASE_URL to a local stand-in (`emulator --twilio-port`) or REPLY_MODE=twiml",
                self.replies.mode
            ));
        }
        warnings
    }
}

/// Reads variables and collects every problem instead of stopping at the first.
struct Reader<'a> {
    vars: &'a Vars,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, name: &str, problem: impl fmt::Display) {
        self.errors.push(format!("{name}: {problem}"));
    }

    fn required(&mut self, name: &str) -> Option<String> {
        let value = self.get(name).map(str::to_owned);
        if value.is_none() {
            self.fail(name, "is required but not set");
        }
        value
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.get(name)?;
        match parse(raw) {
            Ok(value) => Some(value),
            Err(problem) => {
                self.fail(name, format!("{problem} (got {raw:?})"));
                None
            }
        }
    }

    fn settings(&mut self) -> Option<Settings> {
        let port = self.parsed("PORT", |v| {
            v.parse::<u16>()
                .map_err(|_| "must be a port number, 0-65535".to_owned())
        });
        let twilio = self.twilio();
        let mode = self
            .parsed("REPLY_MODE", |v| match v.to_ascii_lowercase().as_str() {
                "twiml" => Ok(ReplyMode::Twiml),
                "api" => Ok(ReplyMode::Api),
                "auto" => Ok(ReplyMode::Auto),
                _ => Err("must be twiml, api or auto".to_owned()),
            })
            .unwrap_or(ReplyMode::Auto);
        let fallback_message = self
            .get("FALLBACK_MESSAGE")
            .unwrap_or(DEFAULT_FALLBACK_MESSAGE)
            .to_owned();
        let routes_file = self.parsed("ROUTES_FILE", |v| {
            let text = std::fs::read_to_string(v).map_err(|e| format!("cannot be read: {e}"))?;
            crate::routes::RoutesFile::parse(&text)
        });
        // With a routes file, today's variables make a default route only if they name
        // an agent.
        let has_default = self.get("ROUTES_FILE").is_none()
            || self.get("AGENT_ID").is_some()
            || self.get("AGENT_TYPE").is_some();
        let default_agent = if has_default {
            self.agent(mode)
        } else {
            Some(None).flatten()
        };
        let mut routes = Vec::new();
        if let Some(file) = &routes_file {
            for (i, spec) in file.routes.iter().enumerate() {
                if let Some(route) = self.route(i, spec, mode, &fallback_message) {
                    if routes.iter().any(|r: &RouteSettings| r.name == route.name) {
                        self.fail(
                            &format!("ROUTES_FILE: routes[{i}].name"),
                            "is another route's name too: names label metrics",
                        );
                    }
                    routes.push(route);
                }
            }
            if file.routes.is_empty() && !has_default {
                self.fail(
                    "ROUTES_FILE",
                    "has no routes, and no AGENT_ID or AGENT_TYPE makes a default one",
                );
            }
        }
        let default_languages = self
            .parsed("LANGUAGE_BY_COUNTRY", parse_languages)
            .unwrap_or_default();
        let replies = self.replies(mode);
        let state = self.state();
        if has_default {
            routes.push(RouteSettings {
                name: "default".into(),
                matcher: crate::routes::Matcher::default(),
                agent: default_agent?,
                languages: default_languages,
                fallback_message: fallback_message.clone(),
                reply_mode: mode,
            });
        }
        let limits = self.limits();
        let rate_limits = self.rate_limits();
        let opt_out_to_agent = self.parsed("OPT_OUT_TO_AGENT", parse_bool).unwrap_or(false);
        let rate_limit_message = self
            .get("RATE_LIMIT_MESSAGE")
            .unwrap_or(DEFAULT_RATE_LIMIT_MESSAGE)
            .to_owned();
        let rich = self.rich();
        let handoff = self.handoff(mode, &routes);
        Some(Settings {
            port: port.unwrap_or(8080),
            twilio: twilio?,
            routes,
            replies: replies?,
            state: state?,
            limits,
            rate_limits,
            rate_limit_message,
            opt_out_to_agent,
            rich,
            handoff: handoff?,
        })
    }

    /// Route `i` of the routes file, its gaps filled from today's variables; every
    /// problem is named by the route's place and field.
    fn route(
        &mut self,
        i: usize,
        spec: &crate::routes::RouteSpec,
        default_mode: ReplyMode,
        default_fallback: &str,
    ) -> Option<RouteSettings> {
        let field = |name: &str| format!("ROUTES_FILE: routes[{i}].{name}");
        let mut ok = true;
        let mut fail = |reader: &mut Self, name: &str, problem: &str| {
            reader.fail(&field(name), problem);
            ok = false;
        };
        let name = spec.name.clone().unwrap_or_else(|| format!("route-{i}"));
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            fail(
                self,
                "name",
                "must be letters, digits, '-', '_' or '.' (it is a metrics label)",
            );
        }
        let matcher = crate::routes::Matcher {
            to: spec.matcher.to.clone(),
            messaging_service_sid: spec.matcher.messaging_service_sid.clone(),
            account_sid: spec.matcher.account_sid.clone(),
        };
        if let Some(to) = &matcher.to {
            let number = to.strip_prefix("whatsapp:").unwrap_or(to);
            let e164 = number.strip_prefix('+').is_some_and(|digits| {
                (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            });
            if !e164 {
                fail(self, "match.to", "must be a number as Twilio sends it, +33170000001 (E.164), with whatsapp: for the WhatsApp sender only");
            }
        }
        if name == "default" {
            fail(
                self,
                "name",
                "default is the name of the route of today's variables",
            );
        }
        if matcher == crate::routes::Matcher::default() {
            fail(self, "match", "must name a to, messaging_service_sid or account_sid (the default route is today's variables)");
        }
        if let Some(sid) = &matcher.messaging_service_sid {
            if !is_sid(sid, "MG") {
                fail(
                    self,
                    "match.messaging_service_sid",
                    "must be MG followed by 32 hexadecimal characters",
                );
            }
        }
        if let Some(sid) = &matcher.account_sid {
            if !is_sid(sid, "AC") {
                fail(
                    self,
                    "match.account_sid",
                    "must be AC followed by 32 hexadecimal characters",
                );
            }
        }
        let mode = match spec
            .reply_mode
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => default_mode,
            Some("twiml") => ReplyMode::Twiml,
            Some("api") => ReplyMode::Api,
            Some("auto") => ReplyMode::Auto,
            Some(_) => {
                fail(self, "reply_mode", "must be twiml, api or auto");
                default_mode
            }
        };
        let agent = &spec.agent;
        let cx = match agent
            .kind
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("CX") => true,
            Some("ES") => false,
            _ => {
                fail(self, "agent.type", "is required: CX or ES");
                true
            }
        };
        let project = agent
            .project
            .clone()
            .or_else(|| project_of(self.vars).map(str::to_owned));
        if project.is_none() {
            fail(self, "agent.project", "is required (or GCP_PROJECT)");
        }
        let location = agent.location.clone().unwrap_or_else(|| "global".into());
        if !is_resource_id(&location) {
            fail(
                self,
                "agent.location",
                "must be a location id such as global or us-central1",
            );
        }
        let agent_id = agent.id.clone();
        match &agent_id {
            Some(id) if !is_resource_id(id) => fail(
                self,
                "agent.id",
                "must be the agent's id, not a name or path",
            ),
            None if cx => fail(self, "agent.id", "is required for a CX agent"),
            _ => {}
        }
        if let Some(environment) = &agent.environment {
            if !is_resource_id(environment) {
                fail(
                    self,
                    "agent.environment",
                    "must be the environment's id, not a name or path",
                );
            }
        }
        let session_ttl = match &spec.session_ttl {
            Some(ttl) => match parse_session_ttl(ttl) {
                Ok(ttl) => Some(ttl),
                Err(problem) => {
                    fail(self, "session_ttl", &problem);
                    None
                }
            },
            None => self
                .get("SESSION_TTL")
                .and_then(|v| parse_session_ttl(v).ok()),
        };
        let mut languages = std::collections::BTreeMap::new();
        for (country, language) in &spec.languages {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                fail(
                    self,
                    "languages",
                    "keys must be two-letter country codes such as FR",
                );
            }
            languages.insert(country.to_ascii_uppercase(), language.clone());
        }
        let endpoint = endpoint_of(
            &location,
            agent
                .emulator_host
                .as_deref()
                .or(self.get("DIALOGFLOW_EMULATOR_HOST")),
            agent.endpoint.as_deref(),
        );
        let (default_timeout, max_timeout) = agent_timeouts(mode);
        let timeout = self
            .get("AGENT_TIMEOUT")
            .and_then(|v| parse_duration(v).ok())
            .map_or(default_timeout, |t| t.min(max_timeout));
        let retry_window = self
            .get("AGENT_RETRY_WINDOW")
            .and_then(|v| parse_duration(v).ok())
            .unwrap_or(crate::agent::retry::DEFAULT_RETRY_WINDOW);
        let kind = match cx {
            true => AgentKind::Cx {
                agent_id: agent_id.unwrap_or_default(),
                session_ttl,
            },
            false => AgentKind::Es,
        };
        let settings = RouteSettings {
            name,
            matcher,
            agent: AgentSettings {
                kind,
                project: project.unwrap_or_default(),
                location,
                language_code: spec
                    .language
                    .clone()
                    .or_else(|| self.get("LANGUAGE_CODE").map(str::to_owned))
                    .unwrap_or_else(|| "en".into()),
                endpoint,
                timeout,
                retry_window,
                environment: agent.environment.clone(),
            },
            languages,
            fallback_message: spec
                .fallback_message
                .clone()
                .unwrap_or_else(|| default_fallback.to_owned()),
            reply_mode: mode,
        };
        ok.then_some(settings)
    }

    fn rate_limits(&mut self) -> crate::rate_limit::RateLimits {
        use std::num::NonZeroU32;
        let count = |v: &str| -> Result<Option<NonZeroU32>, String> {
            match v.to_ascii_lowercase().as_str() {
                "off" | "none" | "0" => Ok(None),
                v => v
                    .trim_end_matches("/min")
                    .trim_end_matches("/h")
                    .trim()
                    .parse::<u32>()
                    .map(NonZeroU32::new)
                    .map_err(|_| "must be a whole number, or off".to_owned()),
            }
        };
        let defaults = crate::rate_limit::RateLimits::default();
        crate::rate_limit::RateLimits {
            per_conversation: self
                .parsed("RATE_LIMIT_PER_CONVERSATION", count)
                .unwrap_or(defaults.per_conversation),
            agent_calls_per_hour: self
                .parsed("AGENT_CALLS_PER_HOUR", count)
                .unwrap_or(defaults.agent_calls_per_hour),
        }
    }

    fn limits(&mut self) -> ConnectionLimits {
        let defaults = ConnectionLimits::default();
        let files = open_files_limit();
        ConnectionLimits {
            header: self
                .parsed("HEADER_TIMEOUT", parse_duration)
                .unwrap_or(defaults.header),
            body: self
                .parsed("BODY_TIMEOUT", parse_duration)
                .unwrap_or(defaults.body),
            idle: self
                .parsed("IDLE_TIMEOUT", parse_duration)
                .unwrap_or(defaults.idle),
            max_connections: self
                .parsed("MAX_CONNECTIONS", |v| {
                    let n: usize = v.parse().map_err(|_| "must be a whole number".to_owned())?;
                    if n == 0 || n > files {
                        return Err(format!(
                            "must be between 1 and the open-files limit, {files} (each connection is a file)"
                        ));
                    }
                    Ok(n)
                })
                .unwrap_or(defaults.max_connections),
        }
    }

    fn state(&mut self) -> Option<StateSettings> {
        let url = self.parsed("STATE_URL", |v| {
            if v.starts_with("redis://") || v.starts_with("rediss://") {
                Ok(Secret::new(v))
            } else {
                Err("must be a redis:// or rediss:// URL (user and password in it if the server needs them)".to_owned())
            }
        });
        // The URL may hold a password: the error above must not repeat it.
        if let Some(line) = self.errors.last_mut() {
            if line.starts_with("STATE_URL:") {
                *line = "STATE_URL: must be a redis:// or rediss:// URL (user and password in it if the server needs them)".to_owned();
            }
        }
        let ca_file = self.parsed("STATE_CA_FILE", |v| {
            let path = std::path::PathBuf::from(v);
            if path.is_file() {
                Ok(path)
            } else {
                Err("must be the path of a PEM file that exists".to_owned())
            }
        });
        if ca_file.is_some()
            && !url
                .as_ref()
                .is_some_and(|u| u.expose().starts_with("rediss://"))
        {
            self.fail("STATE_CA_FILE", "is only for a rediss:// STATE_URL");
        }
        let prefix = self
            .parsed("STATE_PREFIX", |v| {
                if v.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
                {
                    Ok(v.to_owned())
                } else {
                    Err("must be printable characters without spaces or braces".to_owned())
                }
            })
            .unwrap_or_else(|| DEFAULT_STATE_PREFIX.to_owned());
        let timeout = self
            .parsed("STATE_TIMEOUT", parse_duration)
            .unwrap_or(DEFAULT_STATE_TIMEOUT);
        let lease = self
            .parsed("STATE_LEASE", |v| {
                let lease = parse_duration(v)?;
                if lease < Duration::from_secs(1) {
                    return Err("must be at least 1s".to_owned());
                }
                Ok(lease)
            })
            .unwrap_or(DEFAULT_STATE_LEASE);
        Some(StateSettings {
            url,
            ca_file,
            prefix,
            timeout,
            lease,
        })
    }

    fn twilio(&mut self) -> Option<TwilioSettings> {
        let account_sid = self.required("TWILIO_ACCOUNT_SID");
        if let Some(sid) = &account_sid {
            if !is_sid(sid, "AC") {
                self.fail("TWILIO_ACCOUNT_SID", "must be AC followed by 32 hexadecimal characters, as shown in the Twilio console");
            }
        }
        let token = self.required("TWILIO_AUTH_TOKEN");
        let secondary = self.get("TWILIO_AUTH_TOKEN_SECONDARY").map(Secret::new);
        let webhook_url = self.parsed("TWILIO_WEBHOOK_URL", |v| {
            if v.starts_with("https://") || v.starts_with("http://") {
                Ok(v.to_owned())
            } else {
                Err("must be the full http(s):// URL configured in Twilio".to_owned())
            }
        });
        let on_cloud_run = on_cloud_run(self.vars);
        let trust_proxy = self
            .parsed("TRUST_PROXY", parse_bool)
            .unwrap_or(on_cloud_run);
        let mut webhook_keys = HashMap::new();
        let mut key_vars: Vec<(String, String)> = self
            .vars
            .keys()
            .filter_map(|name| {
                let account = match name.strip_prefix("TWILIO_WEBHOOK_KEYS") {
                    Some("") => account_sid.clone()?,
                    Some(rest) => rest.strip_prefix("__")?.to_owned(),
                    None => return None,
                };
                Some((name.clone(), account))
            })
            .collect();
        key_vars.sort();
        for (name, account) in key_vars {
            let keys = self.parsed(&name, |v| {
                v.split(',')
                    .filter(|entry| !entry.trim().is_empty())
                    .map(|entry| match entry.split_once('=') {
                        Some((key, secret))
                            if !key.trim().is_empty() && !secret.trim().is_empty() =>
                        {
                            Ok((key.trim().to_owned(), Secret::new(secret.trim())))
                        }
                        _ => Err("must be name=secret pairs, separated by commas".to_owned()),
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
            // The value holds secrets: the error must not repeat it.
            if let Some(line) = self.errors.last_mut() {
                if line.starts_with(&format!("{name}:")) {
                    *line = format!("{name}: must be name=secret pairs, separated by commas");
                }
            }
            for (key, secret) in keys.unwrap_or_default() {
                webhook_keys.insert(key, (account.clone(), secret));
            }
        }
        let other_accounts = self.other_accounts();
        let auth_tokens = std::iter::once(Secret::new(token?))
            .chain(secondary)
            .collect();
        Some(TwilioSettings {
            account_sid: account_sid?,
            auth_tokens,
            webhook_url,
            trust_proxy,
            webhook_keys,
            other_accounts,
        })
    }

    /// Accounts from `TWILIO_AUTH_TOKEN__AC…` (with `TWILIO_AUTH_TOKEN_SECONDARY__AC…`,
    /// `TWILIO_API_KEY_SID__AC…` and `TWILIO_API_KEY_SECRET__AC…`), and from the routes
    /// file's `accounts`, which name the variables that hold the secrets.
    fn other_accounts(&mut self) -> Vec<Account> {
        let mut specs: Vec<AccountVars> = Vec::new();
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        for name in names {
            if let Some(sid) = name.strip_prefix("TWILIO_AUTH_TOKEN__") {
                specs.push((
                    sid.to_owned(),
                    name.clone(),
                    Some(format!("TWILIO_AUTH_TOKEN_SECONDARY__{sid}")),
                    self.get(&format!("TWILIO_API_KEY_SID__{sid}"))
                        .map(str::to_owned),
                    Some(format!("TWILIO_API_KEY_SECRET__{sid}")),
                ));
            }
        }
        let file = self
            .get("ROUTES_FILE")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| crate::routes::RoutesFile::parse(&text).ok());
        for spec in file.map(|f| f.accounts).unwrap_or_default() {
            specs.push((
                spec.sid,
                spec.auth_token_env,
                spec.auth_token_secondary_env,
                spec.api_key_sid,
                spec.api_key_secret_env,
            ));
        }
        let mut accounts = Vec::new();
        for (sid, token_var, secondary_var, key_sid, key_secret_var) in specs {
            if !is_sid(&sid, "AC") {
                self.fail(
                    &token_var,
                    "must end in an account SID: AC followed by 32 hexadecimal characters",
                );
                continue;
            }
            let Some(token) = self.get(&token_var).map(Secret::new) else {
                // A token written where its variable's name belongs must not be printed.
                let looks_like_a_name = token_var
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                let shown = if looks_like_a_name {
                    token_var.clone()
                } else {
                    "ROUTES_FILE: accounts[].auth_token_env".to_owned()
                };
                self.fail(
                    &shown,
                    format!("must name a variable that holds the auth token of {sid}"),
                );
                continue;
            };
            let tokens: Vec<Secret> = std::iter::once(token)
                .chain(secondary_var.and_then(|v| self.get(&v)).map(Secret::new))
                .collect();
            let key_secret = key_secret_var.and_then(|v| self.get(&v)).map(Secret::new);
            let (api_username, api_passwords) = match (key_sid, key_secret) {
                (Some(key), Some(secret)) if is_sid(&key, "SK") => (key, vec![secret]),
                (Some(key), _) => {
                    self.fail(&format!("TWILIO_API_KEY_SID__{sid}"), format!("{key:?} must be SK followed by 32 hexadecimal characters, with its secret set"));
                    continue;
                }
                (None, _) => (sid.clone(), tokens.clone()),
            };
            accounts.push(Account {
                sid,
                auth_tokens: tokens,
                api_username,
                api_passwords,
            });
        }
        accounts
    }

    fn replies(&mut self, mode: ReplyMode) -> Option<ReplySettings> {
        let deadline = self
            .parsed("REPLY_DEADLINE", |v| {
                let d = parse_duration(v)?;
                if d > MAX_AGENT_TIMEOUT {
                    return Err(format!(
                        "must be at most {}s: Twilio waits 15s for the webhook",
                        MAX_AGENT_TIMEOUT.as_secs()
                    ));
                }
                Ok(d)
            })
            .unwrap_or(DEFAULT_REPLY_DEADLINE);
        let api_base_url = self
            .parsed("TWILIO_API_BASE_URL", parse_base_url)
            .unwrap_or_else(|| DEFAULT_TWILIO_API_BASE_URL.to_owned());
        // A stand-in for the Messages API (`emulator --twilio-port`) serves the other
        // two as well: with TWILIO_API_BASE_URL set, they default to it, so that a
        // local setup never reaches Twilio by omission.
        let other_host = |default: &str| match api_base_url.as_str() {
            DEFAULT_TWILIO_API_BASE_URL => default.to_owned(),
            stand_in => stand_in.to_owned(),
        };
        let content_base_url = self
            .parsed("TWILIO_CONTENT_BASE_URL", parse_base_url)
            .unwrap_or_else(|| other_host(DEFAULT_TWILIO_CONTENT_BASE_URL));
        let messaging_base_url = self
            .parsed("TWILIO_MESSAGING_BASE_URL", parse_base_url)
            .unwrap_or_else(|| other_host(DEFAULT_TWILIO_MESSAGING_BASE_URL));
        let key_sid = self.get("TWILIO_API_KEY_SID").map(str::to_owned);
        let key_secret = self.get("TWILIO_API_KEY_SECRET").map(Secret::new);
        let (api_username, api_passwords) = match (key_sid, key_secret) {
            (Some(sid), Some(secret)) => {
                if !is_sid(&sid, "SK") {
                    self.fail(
                        "TWILIO_API_KEY_SID",
                        "must be SK followed by 32 hexadecimal characters",
                    );
                }
                (Some(sid), Some(vec![secret]))
            }
            (None, None) => (
                self.get("TWILIO_ACCOUNT_SID").map(str::to_owned),
                self.get("TWILIO_AUTH_TOKEN").map(|token| {
                    std::iter::once(token)
                        .chain(self.get("TWILIO_AUTH_TOKEN_SECONDARY"))
                        .map(Secret::new)
                        .collect()
                }),
            ),
            (Some(_), None) => {
                self.fail(
                    "TWILIO_API_KEY_SECRET",
                    "is required with TWILIO_API_KEY_SID",
                );
                (None, None)
            }
            (None, Some(_)) => {
                self.fail(
                    "TWILIO_API_KEY_SID",
                    "is required with TWILIO_API_KEY_SECRET",
                );
                (None, None)
            }
        };
        let messaging_service_sid = self.parsed("TWILIO_MESSAGING_SERVICE_SID", |v| {
            if is_sid(v, "MG") {
                Ok(v.to_owned())
            } else {
                Err("must be MG followed by 32 hexadecimal characters".to_owned())
            }
        });
        let shutdown_grace = self
            .parsed("SHUTDOWN_GRACE", parse_duration)
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        let api_timeout = self
            .parsed("TWILIO_API_TIMEOUT", parse_duration)
            .unwrap_or(DEFAULT_TWILIO_API_TIMEOUT);
        Some(ReplySettings {
            mode,
            deadline,
            api_base_url,
            api_username: api_username?,
            api_passwords: api_passwords?,
            messaging_service_sid,
            shutdown_grace,
            api_timeout,
            content_base_url,
            messaging_base_url,
        })
    }

    /// `None` inside: hand-over is off (no `HANDOFF_URL`); the outer `None`: a problem.
    fn handoff(
        &mut self,
        mode: ReplyMode,
        routes: &[RouteSettings],
    ) -> Option<Option<HandoffSettings>> {
        let Some(url) = self.parsed("HANDOFF_URL", parse_handoff_url) else {
            for name in ["HANDOFF_SECRET", "HANDOFF_TOKEN", "HANDOFF_KEYWORDS"] {
                if self.get(name).is_some() {
                    self.fail(name, "is set but HANDOFF_URL is not: hand-over is off");
                }
            }
            return Some(None);
        };
        let secret = self.required("HANDOFF_SECRET");
        let token = self.required("HANDOFF_TOKEN");
        if let Some(secret) = &secret {
            if let Err(problem) = check_webhook_secret(secret) {
                self.fail("HANDOFF_SECRET", problem);
            }
        }
        if token.as_ref().is_some_and(|t| t.trim().len() < 16) {
            self.fail(
                "HANDOFF_TOKEN",
                "must be at least 16 characters: it lets its holder write to your users",
            );
        }
        if mode == ReplyMode::Twiml && routes.iter().all(|r| r.reply_mode == ReplyMode::Twiml) {
            self.fail(
                "HANDOFF_URL",
                "needs REPLY_MODE=auto or api: the human side's replies go through the Messages API",
            );
        }
        let keywords = self
            .get("HANDOFF_KEYWORDS")
            .map(|list| {
                list.split(',')
                    .map(|k| k.trim().to_lowercase())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let text = |this: &Self, name: &str, default: &str| match this.get(name) {
            Some(value) if !value.trim().is_empty() => value.to_owned(),
            _ => default.to_owned(),
        };
        let unavailable_message = text(
            self,
            "HANDOFF_UNAVAILABLE_MESSAGE",
            DEFAULT_HANDOFF_UNAVAILABLE_MESSAGE,
        );
        let started_message = text(
            self,
            "HANDOFF_STARTED_MESSAGE",
            DEFAULT_HANDOFF_STARTED_MESSAGE,
        );
        let settings = HandoffSettings {
            url,
            secret: Secret::new(secret?),
            token: Secret::new(token?),
            keywords,
            ttl: self
                .parsed("HANDOFF_TTL", parse_duration)
                .unwrap_or(DEFAULT_HANDOFF_TTL),
            return_event: self
                .parsed("HANDOFF_RETURN_EVENT", parse_bool)
                .unwrap_or(false),
            include_address: self
                .parsed("HANDOFF_INCLUDE_ADDRESS", parse_bool)
                .unwrap_or(false),
            unavailable_message,
            started_message,
            retry_for: self
                .parsed("HANDOFF_RETRY_FOR", parse_duration)
                .unwrap_or(DEFAULT_HANDOFF_RETRY_FOR),
            history: self
                .parsed("HANDOFF_HISTORY", |v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n <= 100)
                        .ok_or_else(|| "must be a number of turns, 0-100".to_owned())
                })
                .unwrap_or(DEFAULT_HANDOFF_HISTORY),
        };
        Some(Some(settings))
    }

    fn rich(&mut self) -> RichSettings {
        let defaults = crate::menu::MenuFormat::default();
        let text = |name: &str, default: String| match self.get(name) {
            Some(value) if !value.trim().is_empty() => value.to_owned(),
            _ => default,
        };
        let item = text("MENU_ITEM", defaults.item);
        let prompt = text("MENU_PROMPT", defaults.prompt);
        let button = text("MENU_BUTTON", defaults.button);
        if !item.contains("{title}") && !item.contains("{number}") {
            self.fail(
                "MENU_ITEM",
                format!("must contain {{number}} or {{title}} (got {item:?})"),
            );
        }
        if button.chars().count() > MAX_MENU_BUTTON_CHARS {
            self.fail(
                "MENU_BUTTON",
                format!("must be at most {MAX_MENU_BUTTON_CHARS} characters: WhatsApp refuses a longer list button (got {button:?})"),
            );
        }
        RichSettings {
            menu: crate::menu::MenuFormat {
                item,
                prompt,
                button,
            },
            menu_ttl: self
                .parsed("MENU_TTL", parse_duration)
                .unwrap_or(DEFAULT_MENU_TTL),
            typing_after: self
                .parsed("TYPING_AFTER", |v| match v.trim() {
                    "0" => Ok(Duration::ZERO),
                    v => parse_duration(v),
                })
                .map_or(Some(DEFAULT_TYPING_AFTER), |d| {
                    Some(d).filter(|d| !d.is_zero())
                }),
        }
    }

    fn agent(&mut self, mode: ReplyMode) -> Option<AgentSettings> {
        let project = project_of(self.vars).map(str::to_owned);
        if project.is_none() {
            self.fail(
                "GCP_PROJECT",
                "is required but not set (GOOGLE_CLOUD_PROJECT is also accepted; on Google Cloud the metadata server tells it)",
            );
        }
        let location = self.get("AGENT_LOCATION").unwrap_or("global").to_owned();
        if !is_resource_id(&location) {
            self.fail(
                "AGENT_LOCATION",
                format!("must be a location id such as global or us-central1 (got {location:?})"),
            );
        }
        let kind = self.parsed("AGENT_TYPE", |v| match v.to_ascii_uppercase().as_str() {
            "CX" => Ok(true),
            "ES" => Ok(false),
            _ => Err("must be CX or ES".to_owned()),
        });
        let session_ttl = self.parsed("SESSION_TTL", parse_session_ttl);
        let agent_id = match kind.unwrap_or(true) {
            true => {
                let agent_id = self.required("AGENT_ID");
                if let Some(id) = &agent_id {
                    if !is_resource_id(id) {
                        self.fail("AGENT_ID", "must be the agent's id (the UUID in its console URL), not a name or path");
                    }
                }
                Some(agent_id)
            }
            false => None,
        };
        let language_code = self.get("LANGUAGE_CODE").unwrap_or("en").to_owned();
        let endpoint = endpoint_of(
            &location,
            self.get("DIALOGFLOW_EMULATOR_HOST"),
            self.get("DF_ENDPOINT"),
        );
        let (default_timeout, max_timeout, why) = match mode {
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
        };
        let timeout = self
            .parsed("AGENT_TIMEOUT", |v| {
                let d = parse_duration(v)?;
                if d > max_timeout {
                    Err(format!("must be at most {}s: {why}", max_timeout.as_secs()))
                } else {
                    Ok(d)
                }
            })
            .unwrap_or(default_timeout);
        let environment = self.parsed("AGENT_ENVIRONMENT", |v| {
            if is_resource_id(v) {
                Ok(v.to_owned())
            } else {
                Err("must be the environment's id, not a name or path".to_owned())
            }
        });
        let retry_window = self
            .parsed("AGENT_RETRY_WINDOW", parse_duration)
            .unwrap_or(crate::agent::retry::DEFAULT_RETRY_WINDOW);
        let kind = match agent_id {
            Some(agent_id) => AgentKind::Cx {
                agent_id: agent_id?,
                session_ttl,
            },
            None => AgentKind::Es,
        };
        Some(AgentSettings {
            kind,
            project: project?,
            location,
            language_code,
            endpoint,
            timeout,
            retry_window,
            environment,
        })
    }
}

/// A Cloud Run service (`K_SERVICE`), or a Cloud Run job (`CLOUD_RUN_JOB`): a `check`
/// job reads the service's configuration with the service's defaults.
pub fn on_cloud_run(vars: &Vars) -> bool {
    ["K_SERVICE", "CLOUD_RUN_JOB"]
        .iter()
        .any(|name| vars.get(*name).is_some_and(|v| !v.trim().is_empty()))
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Ids that go into a resource path: no slashes or spaces that would change the path.
fn is_resource_id(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Where an agent at `location` is asked: a local emulator if one is named, else
/// Google's `endpoint` as given, else the location's own endpoint.
fn endpoint_of(location: &str, emulator_host: Option<&str>, endpoint: Option<&str>) -> Endpoint {
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

/// `FR:fr,CA:en`: the sender's country to a language code.
fn parse_languages(value: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((country, language))
                if country.trim().len() == 2 && !language.trim().is_empty() =>
            {
                Ok((
                    country.trim().to_ascii_uppercase(),
                    language.trim().to_owned(),
                ))
            }
            _ => Err("must be COUNTRY:language pairs, e.g. FR:fr,CA:en".to_owned()),
        })
        .collect()
}

/// The default and the longest agent timeout in `mode`: Twilio waits 15 s for a webhook
/// that must carry the replies; otherwise as long as CX lets a webhook run, and more.
fn agent_timeouts(mode: ReplyMode) -> (Duration, Duration) {
    match mode {
        ReplyMode::Twiml => (DEFAULT_AGENT_TIMEOUT, MAX_AGENT_TIMEOUT),
        ReplyMode::Api | ReplyMode::Auto => (DEFAULT_AGENT_TIMEOUT_API, MAX_AGENT_TIMEOUT_API),
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes.
pub fn check_webhook_secret(secret: &str) -> Result<(), String> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_").ok_or(
        "must be a Standard Webhooks secret: whsec_ followed by base64 (e.g. whsec_$(openssl rand -base64 32))",
    )?;
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if (24..=64).contains(&key.len()) => Ok(()),
        Ok(key) => Err(format!(
            "must carry 24 to 64 bytes after whsec_ (it carries {})",
            key.len()
        )),
        Err(_) => Err("is not base64 after whsec_".to_owned()),
    }
}

/// The events carry what people write: HTTPS, except to this machine (a local desk).
fn parse_handoff_url(value: &str) -> Result<String, String> {
    let url = parse_base_url(value)?;
    let host = url
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .map(|authority| {
            authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host)
        });
    match host {
        None | Some("127.0.0.1" | "localhost" | "[::1]") => Ok(url),
        Some(_) => Err(
            "must be an https:// URL: the events carry what people write (http:// only to 127.0.0.1 or localhost)"
                .to_owned(),
        ),
    }
}

fn parse_base_url(value: &str) -> Result<String, String> {
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("must be an http(s):// URL".to_owned())
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// `30m`, `12h`, `1h 30m`, `90s`, or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(value)
            .map_err(|e| format!("must be a duration such as 30m or 12h: {e}"))?,
    };
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    // Far past any sensible setting, and far from where time arithmetic overflows.
    if duration > Duration::from_secs(7 * 24 * 3600) {
        return Err("must be at most 7 days".to_owned());
    }
    Ok(duration)
}

/// Dialogflow CX takes whole seconds, and keeps a session at most a day.
fn parse_session_ttl(value: &str) -> Result<Duration, String> {
    let ttl = parse_duration(value)?;
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
        return Err(
            "must be between 1s and 24h: Dialogflow CX keeps a session at most a day".into(),
        );
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seed_env_file_works_unchanged() {
        let settings = Settings::from_vars(&vars(&[
            ("AGENT_LOCATION", "us-central1"),
            ("DF_ENDPOINT", "us-central1-dialogflow.googleapis.com"),
            ("AGENT_TYPE", "CX"),
            ("AGENT_ID", "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"),
            ("LANGUAGE_CODE", "en"),
            ("SESSION_TTL", "12h"),
            ("GCP_PROJECT", "my-project"),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "token"),
        ]))
        .unwrap();
        assert_eq!(settings.port, 8080);
        assert_eq!(
            settings.routes[0].agent.kind,
            AgentKind::Cx {
                agent_id: "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab".into(),
                session_ttl: Some(Duration::from_secs(12 * 3600))
            }
        );
        assert_eq!(
            settings.routes[0].agent.endpoint.url(),
            "https://us-central1-dialogflow.googleapis.com"
        );
        assert!(!settings.twilio.trust_proxy);
        assert_eq!(
            settings.routes[0].fallback_message,
            DEFAULT_FALLBACK_MESSAGE
        );
    }

    #[test]
    fn defaults_follow_the_location_and_cloud_run() {
        let settings = Settings::from_vars(&vars(&[
            ("AGENT_TYPE", "es"),
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("AGENT_LOCATION", "europe-west2"),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_AUTH_TOKEN_SECONDARY", "next"),
            ("K_SERVICE", "bridge"),
            ("PORT", "9000"),
        ]))
        .unwrap();
        assert_eq!(settings.routes[0].agent.kind, AgentKind::Es);
        assert_eq!(
            settings.routes[0].agent.endpoint.url(),
            "https://europe-west2-dialogflow.googleapis.com"
        );
        assert!(settings.twilio.trust_proxy);
        assert_eq!(settings.port, 9000);
        assert_eq!(settings.twilio.auth_tokens.len(), 2);
    }

    #[test]
    fn a_session_ttl_is_whole_seconds_up_to_a_day() {
        assert_eq!(parse_session_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_session_ttl("90"), Ok(Duration::from_secs(90)));
        for wrong in ["48h", "500ms", "soon"] {
            assert!(parse_session_ttl(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_emulator_host_wins_over_the_endpoint() {
        let settings = Settings::from_vars(&vars(&[
            ("AGENT_TYPE", "CX"),
            ("AGENT_ID", "pizza"),
            ("GCP_PROJECT", "p"),
            ("DF_ENDPOINT", "dialogflow.googleapis.com"),
            ("DIALOGFLOW_EMULATOR_HOST", "127.0.0.1:8085"),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "token"),
        ]))
        .unwrap();
        assert_eq!(
            settings.routes[0].agent.endpoint,
            Endpoint::Emulator {
                host: "127.0.0.1:8085".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_the_variable() {
        let errors = Settings::from_vars(&vars(&[
            ("PORT", "eighty"),
            ("AGENT_TYPE", "DX"),
            ("SESSION_TTL", "forever"),
            ("TWILIO_ACCOUNT_SID", "SK123"),
            ("TRUST_PROXY", "maybe"),
            ("TWILIO_WEBHOOK_URL", "example.com/hook"),
            ("AGENT_TIMEOUT", "30s"),
            ("REPLY_MODE", "twiml"),
            ("TWILIO_API_KEY_SID", "SK1"),
        ]))
        .unwrap_err();
        let names: Vec<&str> = errors
            .0
            .iter()
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "PORT",
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN",
                "TWILIO_WEBHOOK_URL",
                "TRUST_PROXY",
                "GCP_PROJECT",
                "AGENT_TYPE",
                "SESSION_TTL",
                "AGENT_ID",
                "AGENT_TIMEOUT",
                "TWILIO_API_KEY_SECRET"
            ]
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let settings = Settings::from_vars(&vars(&[
            ("AGENT_TYPE", "ES"),
            ("GCP_PROJECT", "p"),
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "super-secret-token"),
        ]))
        .unwrap();
        assert!(!format!("{settings:?}").contains("super-secret-token"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
    }
}
