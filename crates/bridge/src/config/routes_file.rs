//! The routes file (`ROUTES_FILE`): read once, and each route's fields checked through
//! the same parsers as the variables, its gaps filled from the agent variables as they
//! were parsed (never read a second time).

use super::agent::{endpoint_of, AgentKind, AgentSettings, AgentVars};
use super::error::{Place, Problem};
use super::route_spec::{RouteSpec, RoutesFile};
use super::values::{
    parse_agent_id, parse_country, parse_environment, parse_location, parse_session_ttl, parse_sid,
    AgentType, ReplyMode,
};
use super::vars::Reader;
use crate::routes::Matcher;
use std::collections::BTreeMap;

/// One route: what it matches, and the agent that answers there and how.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// For logs and metrics (never a phone number).
    pub name: String,
    pub matcher: Matcher,
    pub agent: AgentSettings,
    /// The sender's country (`FromCountry`) to the language asked in.
    pub languages: BTreeMap<String, String>,
    /// What the user gets when the agent cannot answer.
    pub fallback_message: String,
    pub reply_mode: ReplyMode,
}

/// The routes file `ROUTES_FILE` names, if set; `None` too when it cannot be read or
/// is not a routes file (reported).
pub(super) fn read(reader: &mut Reader<'_>) -> Option<RoutesFile> {
    let path = reader.get("ROUTES_FILE")?;
    let problem = match std::fs::read_to_string(path) {
        Ok(text) => match RoutesFile::parse(&text) {
            Ok(file) => return Some(file),
            Err(e) => format!("{e} (got {path:?})"),
        },
        Err(e) => format!("cannot be read: {e} (got {path:?})"),
    };
    reader.fail_var("ROUTES_FILE", Problem::Unreadable(problem));
    None
}

/// What a route takes from the rest of the configuration where it says nothing.
pub(super) struct Inherited<'r, 'a> {
    pub agent: &'r AgentVars<'a>,
    pub reply_mode: ReplyMode,
    pub fallback_message: &'r str,
    /// `TWILIO_ACCOUNT_SID`: the account of a route that names none.
    pub account_sid: Option<&'r str>,
}

/// The routes of `file`, in its order; a route with a problem is left out (and each
/// problem reported, named by the route's place and field).
pub(super) fn routes(
    reader: &mut Reader<'_>,
    file: &RoutesFile,
    inherited: &Inherited<'_, '_>,
) -> Vec<RouteSettings> {
    let mut routes: Vec<RouteSettings> = Vec::new();
    for (index, spec) in file.routes.iter().enumerate() {
        let mut fields = Fields {
            reader: &mut *reader,
            index,
            ok: true,
        };
        let route = fields.route(spec, inherited);
        if routes.iter().any(|r| r.name == route.name) {
            fields.fail(
                "name",
                Problem::Conflict("is another route's name too: names label metrics".into()),
            );
        }
        if fields.ok {
            routes.push(route);
        }
    }
    routes
}

/// The fields of route `index`, with whether all of them were right.
struct Fields<'r, 'a> {
    reader: &'r mut Reader<'a>,
    index: usize,
    ok: bool,
}

impl Fields<'_, '_> {
    fn fail(&mut self, field: &'static str, problem: Problem) {
        let place = Place::RouteField {
            index: self.index,
            field,
        };
        self.reader.fail(place, problem);
        self.ok = false;
    }

    /// The field through `parse`, the parser its variable goes through.
    fn parsed<T>(
        &mut self,
        field: &'static str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = value?;
        parse(raw)
            .map_err(|expected| self.fail(field, Problem::invalid(expected, raw)))
            .ok()
    }

    fn route(&mut self, spec: &RouteSpec, inherited: &Inherited<'_, '_>) -> RouteSettings {
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("route-{}", self.index));
        self.parsed("name", Some(&name), parse_route_name);
        let matcher = self.matcher(spec, inherited.account_sid);
        let reply_mode = self
            .parsed("reply_mode", spec.reply_mode.as_deref(), str::parse)
            .unwrap_or(inherited.reply_mode);
        let agent = self.agent(spec, inherited.agent, reply_mode);
        let mut languages = BTreeMap::new();
        for (country, language) in &spec.languages {
            if let Some(country) = self.parsed("languages", Some(country), parse_country) {
                languages.insert(country, language.clone());
            }
        }
        RouteSettings {
            name,
            matcher,
            agent,
            languages,
            fallback_message: spec
                .fallback_message
                .clone()
                .unwrap_or_else(|| inherited.fallback_message.to_owned()),
            reply_mode,
        }
    }

    /// What the route matches: what it says, and its own account unless it takes any.
    fn matcher(&mut self, spec: &RouteSpec, main_account: Option<&str>) -> Matcher {
        let given = &spec.matcher;
        if spec.any_account && given.account_sid.is_some() {
            self.fail(
                "any_account",
                Problem::Conflict(
                    "cannot go with match.account_sid: a route names its account, or takes any"
                        .into(),
                ),
            );
        }
        let mut matcher = Matcher {
            to: self.parsed("match.to", given.to.as_deref(), parse_to),
            messaging_service_sid: self.parsed(
                "match.messaging_service_sid",
                given.messaging_service_sid.as_deref(),
                parse_sid("MG"),
            ),
            account_sid: self.parsed(
                "match.account_sid",
                given.account_sid.as_deref(),
                parse_sid("AC"),
            ),
        };
        let names_none = given.to.is_none()
            && given.messaging_service_sid.is_none()
            && given.account_sid.is_none();
        if names_none {
            self.fail("match", Problem::missing_because("one of to, messaging_service_sid or account_sid: the default route is today's variables"));
        }
        // A number or a Messaging Service belongs to one account: a sub-account's
        // webhook that names another account's is not that account's route to answer.
        if matcher.account_sid.is_none() && !spec.any_account {
            matcher.account_sid = main_account.map(str::to_owned);
        }
        matcher
    }

    fn agent(
        &mut self,
        spec: &RouteSpec,
        vars: &AgentVars<'_>,
        reply_mode: ReplyMode,
    ) -> AgentSettings {
        let agent = &spec.agent;
        let kind = match agent.kind.as_deref() {
            None => {
                self.fail("agent.type", Problem::missing_because("CX or ES"));
                None
            }
            kind => self.parsed("agent.type", kind, str::parse::<AgentType>),
        };
        let project = agent.project.as_deref().or(vars.project);
        if project.is_none() {
            self.fail("agent.project", Problem::missing_because("or GCP_PROJECT"));
        }
        let location = self
            .parsed("agent.location", agent.location.as_deref(), parse_location)
            .unwrap_or_else(|| "global".to_owned());
        let agent_id = self.parsed("agent.id", agent.id.as_deref(), parse_agent_id);
        if kind == Some(AgentType::Cx) && agent.id.is_none() {
            self.fail("agent.id", Problem::missing_because("for a CX agent"));
        }
        let environment = self.parsed(
            "agent.environment",
            agent.environment.as_deref(),
            parse_environment,
        );
        let session_ttl = match spec.session_ttl.as_deref() {
            None => vars.session_ttl,
            ttl => self.parsed("session_ttl", ttl, parse_session_ttl),
        };
        let kind = match kind {
            Some(AgentType::Es) => AgentKind::Es,
            _ => AgentKind::Cx {
                agent_id: agent_id.unwrap_or_default(),
                session_ttl,
            },
        };
        let emulator_host = agent.emulator_host.as_deref().or(vars.emulator_host);
        AgentSettings {
            kind,
            project: project.unwrap_or_default().to_owned(),
            endpoint: endpoint_of(&location, emulator_host, agent.endpoint.as_deref()),
            location,
            language_code: spec
                .language
                .as_deref()
                .or(vars.language_code)
                .unwrap_or("en")
                .to_owned(),
            timeout: vars.timeout_in(reply_mode),
            retry_window: vars.retry_window,
            environment,
        }
    }
}

/// A route's name labels metrics; `default` is the route of today's variables.
fn parse_route_name(name: &str) -> Result<(), String> {
    if name == "default" {
        return Err("default is the name of the route of today's variables".to_owned());
    }
    match name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        true => Ok(()),
        false => Err("must be letters, digits, '-', '_' or '.' (it is a metrics label)".to_owned()),
    }
}

/// The number written to, as Twilio sends it: E.164, `whatsapp:` for the WhatsApp sender.
fn parse_to(to: &str) -> Result<String, String> {
    let number = to.strip_prefix("whatsapp:").unwrap_or(to);
    let e164 = number.strip_prefix('+').is_some_and(|digits| {
        (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    match e164 {
        true => Ok(to.to_owned()),
        false => Err("must be a number as Twilio sends it, +33170000001 (E.164), with whatsapp: for the WhatsApp sender only".to_owned()),
    }
}
