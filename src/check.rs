//! `twilio-dialogflow check`: the first thing to run after deploying. Reads the
//! configuration exactly as `serve` does, reports every problem at once, and unless
//! offline asks the agent one real question and shows the answer.

use bridge::agent::{Agent, AgentQuery, QueryInput};
use bridge::config::{AgentKind, ProjectLookup, RouteSettings, Secret, Settings, Vars};
use bridge::session::SessionId;
use bridge::state::SharedState;
use std::fmt::Write as _;
use std::time::Instant;

/// How a check ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok = 0,
    /// The agent, or the shared state store, could not be reached or failed.
    Unhealthy = 1,
    BadConfiguration = 2,
}

/// Runs the check; returns the verdict and the report to print. `project` says where
/// the project id came from (see [`bridge::config::complete_project`]).
pub async fn run(
    vars: &Vars,
    project: &ProjectLookup,
    offline: bool,
    all_routes: bool,
    text: &str,
) -> (Verdict, String) {
    let mut report = String::new();
    let settings = match bridge::config::load(vars, project) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors.0 {
                let _ = writeln!(report, "configuration error: {error}");
            }
            return (Verdict::BadConfiguration, report);
        }
    };
    let _ = writeln!(report, "configuration: ok");
    for (name, value) in resolved(&settings, project) {
        let _ = writeln!(report, "  {name:<28} {value}");
    }
    let file_routes: Vec<&RouteSettings> = settings
        .routes
        .iter()
        .filter(|route| route.matcher != bridge::routes::Matcher::default())
        .collect();
    if !file_routes.is_empty() {
        let _ = writeln!(report, "routes (first match wins):");
        for route in file_routes {
            let m = &route.matcher;
            let matched: Vec<String> = [
                m.to.as_ref().map(|v| format!("to {v}")),
                m.messaging_service_sid
                    .as_ref()
                    .map(|v| format!("service {v}")),
                Some(match &m.account_sid {
                    Some(v) => format!("account {v}"),
                    None => "any account".to_owned(),
                }),
            ]
            .into_iter()
            .flatten()
            .collect();
            let _ = writeln!(
                report,
                "  {:<16} {} -> {}, language {}, replies {}",
                route.name,
                matched.join(" and "),
                route.agent,
                route.agent.language_code,
                route.reply_mode
            );
        }
    }
    for warning in settings.warnings() {
        let _ = writeln!(report, "warning: {warning}");
    }
    if offline {
        return (Verdict::Ok, report);
    }
    let store = store_health(&settings).await;
    if let Some(line) = &store {
        let _ = writeln!(report, "{line}");
    }
    let mut healthy = store.as_deref().is_none_or(|line| !line.contains("cannot"));
    // The default route's agent (or the first route's); with --all-routes, every one.
    let asked: Vec<&RouteSettings> = if all_routes {
        settings.routes.iter().collect()
    } else {
        settings
            .default_route()
            .or(settings.routes.first())
            .into_iter()
            .collect()
    };
    let clients = bridge::agent::Clients::default();
    for route in asked {
        let label = if settings.routes.len() > 1 {
            format!("agent of route {}", route.name)
        } else {
            "agent".to_owned()
        };
        healthy &= ask(&mut report, &label, route, &clients, &settings, text).await;
    }
    let verdict = if healthy {
        Verdict::Ok
    } else {
        Verdict::Unhealthy
    };
    (verdict, report)
}

/// Asks `route`'s agent `text` and writes what it said; false if it failed.
async fn ask(
    report: &mut String,
    label: &str,
    route: &RouteSettings,
    clients: &bridge::agent::Clients,
    settings: &Settings,
    text: &str,
) -> bool {
    let client = match Agent::connect_with(&route.agent, clients).await {
        Ok(client) => client,
        Err(error) => {
            let _ = writeln!(report, "{label}: cannot create the client: {error}");
            return false;
        }
    };
    let query = AgentQuery {
        session: SessionId::for_conversation(
            &settings.session_key,
            &settings.twilio.account_sid,
            "twilio-dialogflow check",
            "",
        ),
        input: QueryInput::Text(text.to_owned()),
        payload: serde_json::Map::new(),
        parameters: serde_json::Map::new(),
        language: None,
    };
    let started = Instant::now();
    match client.detect_intent(&query).await {
        Ok(answer) => {
            let replies = answer.replies;
            let _ = writeln!(
                report,
                "{label}: asked {text:?}, answered in {} ms:",
                started.elapsed().as_millis()
            );
            for reply in &replies {
                for line in reply.body.lines() {
                    let _ = writeln!(report, "  < {line}");
                }
                for url in &reply.media {
                    let _ = writeln!(report, "  < [media] {url}");
                }
            }
            if replies.is_empty() {
                let _ = writeln!(report, "  (no messages for the TWILIO channel)");
            }
            if answer.handoff.is_some() {
                let _ = writeln!(report, "  (and a hand-over to a person)");
            }
            true
        }
        Err(error) => {
            let _ = writeln!(
                report,
                "{label}: asked {text:?}, failed after {} ms: {error}",
                started.elapsed().as_millis()
            );
            false
        }
    }
}

/// What the shared state store says, when one is configured: its server, version, TLS
/// and a round trip's time, then its mode, how the bridge authenticated (never the
/// password or token), TLS and the key prefix; or why it cannot be used.
async fn store_health(settings: &Settings) -> Option<String> {
    settings.state.url.as_ref()?;
    let metrics = std::sync::Arc::new(bridge::metrics::Metrics::new());
    let state = match SharedState::open(&settings.state, settings.rate_limits, metrics).await {
        Ok(state) => state,
        Err(error) => return Some(format!("state: cannot use the store: {error}")),
    };
    Some(match state.report().await {
        Ok(report) => {
            let mut lines = format!(
                "state: {} ({}), round trip {:.1} ms",
                report.server,
                match report.tls {
                    bridge::state::Tls::Off => "no TLS",
                    bridge::state::Tls::On { .. } => "TLS",
                },
                report.latency.as_secs_f64() * 1000.0
            );
            for (name, value) in [
                ("mode", report.mode.to_string()),
                ("authentication", report.auth.to_string()),
                ("TLS", report.tls.to_string()),
                ("key prefix", report.prefix.clone()),
            ] {
                let _ = write!(lines, "\n  {name:<28} {value}");
            }
            lines
        }
        Err(error) => {
            let mut line = format!("state: cannot reach the store: {error}");
            // Over TLS, a certificate for another name is a common reason: say what it
            // names, against what the URL dials.
            if let Some((host, Ok(names))) = state.certificate_names().await {
                let _ = write!(
                    line,
                    "; the server's certificate names {names}; STATE_URL dials {host} (only the certificate's IP and DNS names count, never its CN)"
                );
            }
            line.push_str("; the bridge would answer with each instance's own state");
            line
        }
    })
}

/// Every setting as `serve` resolved it, named as the variable that sets it; secrets
/// masked.
pub fn resolved(settings: &Settings, project: &ProjectLookup) -> Vec<(&'static str, String)> {
    let twilio = &settings.twilio;
    let replies = &settings.replies;
    let seconds = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut lines = vec![
        ("TWILIO_ACCOUNT_SID", twilio.account_sid.clone()),
        ("TWILIO_AUTH_TOKEN", masked(&twilio.auth_tokens)),
        (
            "TWILIO_AUTH_TOKEN_SECONDARY",
            masked(twilio.auth_tokens.get(1..).unwrap_or_default()),
        ),
    ];
    match settings.default_route() {
        Some(route) => lines.extend(agent_lines(&route.agent, project, &route.fallback_message)),
        None => lines.push(("default route", "(none: only the routes file's)".into())),
    }
    lines.extend([
        ("PORT", settings.port.to_string()),
        (
            "TWILIO_WEBHOOK_URL",
            twilio
                .webhook_url
                .clone()
                .unwrap_or_else(|| "(not set: the URL is read from the request)".into()),
        ),
        (
            "TWILIO_WEBHOOK_HOSTS",
            match (&twilio.webhook_hosts[..], &twilio.cloud_run) {
                ([], None) => "(not set: any host the request names)".into(),
                ([], Some(_)) => "(not set: only the Cloud Run service's own URL, asked of the metadata server at start-up)".into(),
                (hosts, None) => hosts.join(", "),
                (hosts, Some(_)) => format!("{}, and the Cloud Run service's own URL", hosts.join(", ")),
            },
        ),
        (
            "TRUST_PROXY",
            match twilio.trust_proxy {
                Some(hops) if hops.get() == 1 => "true (the public URL from the right-most X-Forwarded-Proto/X-Forwarded-Host value, which your proxy appended)".into(),
                Some(hops) => format!("{hops} (the public URL from the X-Forwarded-Proto/X-Forwarded-Host value {hops} from the right, which your outermost proxy appended)"),
                None => "false (the public URL from the Host header, over http)".into(),
            },
        ),
        ("REPLY_MODE", replies.mode.to_string()),
    ]);
    if replies.mode != bridge::config::ReplyMode::Twiml {
        lines.extend([
            ("REPLY_DEADLINE", seconds(replies.deadline)),
            ("TWILIO_API_BASE_URL", replies.api_base_url.clone()),
            ("TWILIO_CONTENT_BASE_URL", replies.content_base_url.clone()),
            (
                "TWILIO_MESSAGING_BASE_URL",
                replies.messaging_base_url.clone(),
            ),
            ("TWILIO_API_TIMEOUT", seconds(replies.api_timeout)),
            (
                "Messages API user",
                if replies.api_username.starts_with("SK") {
                    format!("{} (TWILIO_API_KEY_SID)", replies.api_username)
                } else {
                    replies.api_username.clone()
                },
            ),
            (
                "TWILIO_MESSAGING_SERVICE_SID",
                replies
                    .messaging_service_sid
                    .clone()
                    .unwrap_or_else(|| "(not set: replies come from the number written to)".into()),
            ),
        ]);
    }
    lines.push(("SHUTDOWN_GRACE", seconds(replies.shutdown_grace)));
    let count = |n: Option<std::num::NonZeroU32>, per: &str| {
        n.map_or("off".to_owned(), |n| format!("{n} {per}"))
    };
    lines.extend([
        (
            "RATE_LIMIT_PER_CONVERSATION",
            count(settings.rate_limits.per_conversation, "a minute"),
        ),
        (
            "AGENT_CALLS_PER_HOUR",
            count(settings.rate_limits.agent_calls_per_hour, "an hour"),
        ),
        (
            "RATE_LIMIT_MESSAGE",
            format!("{:?}", settings.rate_limit_message),
        ),
        ("MENU_ITEM", format!("{:?}", settings.rich.menu.item)),
        ("MENU_PROMPT", format!("{:?}", settings.rich.menu.prompt)),
        ("MENU_BUTTON", format!("{:?}", settings.rich.menu.button)),
        ("MENU_TTL", seconds(settings.rich.menu_ttl)),
        (
            "TYPING_AFTER",
            settings.rich.typing_after.map_or("off".to_owned(), seconds),
        ),
        ("HEADER_TIMEOUT", seconds(settings.limits.header)),
        ("BODY_TIMEOUT", seconds(settings.limits.body)),
        ("REQUEST_TIMEOUT", seconds(settings.limits.request)),
        ("IDLE_TIMEOUT", seconds(settings.limits.idle)),
        (
            "MAX_HEADER_BYTES",
            settings.limits.max_header_bytes.to_string(),
        ),
        ("MAX_CONNECTIONS", settings.connection_cap.to_string()),
        (
            "METRICS_PORT",
            settings.metrics.port.map_or_else(
                || "(not set: /metrics is on the public port)".to_owned(),
                |port| port.to_string(),
            ),
        ),
        (
            "METRICS_TOKEN",
            match settings.metrics.token {
                Some(_) => "*** (set)".to_owned(),
                None => "(not set)".to_owned(),
            },
        ),
    ]);
    match &settings.traces {
        None => lines.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "(not set: traces are not exported)".into(),
        )),
        Some(traces) => lines.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!(
                "{} ({:?}, sampler {:?}, service {})",
                without_password(&traces.endpoint),
                traces.protocol,
                traces.sampler,
                traces.service_name
            ),
        )),
    }
    match &settings.handoff {
        None => lines.push(("HANDOFF_URL", "(not set: hand-over is off)".into())),
        Some(handoff) => lines.extend([
            ("HANDOFF_URL", handoff.url.clone()),
            ("HANDOFF_SECRET", "whsec_*** (set)".into()),
            ("HANDOFF_TOKEN", "*** (set)".into()),
            (
                "HANDOFF_KEYWORDS",
                match handoff.keywords.is_empty() {
                    true => "(none)".into(),
                    false => handoff.keywords.join(", "),
                },
            ),
            ("HANDOFF_TTL", seconds(handoff.ttl)),
            ("HANDOFF_RETRY_FOR", seconds(handoff.retry_for)),
            ("HANDOFF_RETURN_EVENT", handoff.return_event.to_string()),
            (
                "HANDOFF_RATE_LIMIT",
                format!("{} a minute", handoff.rate_limit),
            ),
            (
                "HANDOFF_INCLUDE_ADDRESS",
                handoff.include_address.to_string(),
            ),
        ]),
    }
    match &settings.outbound {
        None => lines.push(("OUTBOUND_TOKEN", "(not set: POST /outbound is off)".into())),
        Some(outbound) => lines.extend([
            ("OUTBOUND_TOKEN", "*** (set: POST /outbound is on)".into()),
            (
                "OUTBOUND_PER_SECOND",
                outbound
                    .per_second
                    .map_or("unlimited".into(), |n| format!("{n} a second")),
            ),
        ]),
    }
    lines.push((
        "PRIVACY_TOKEN",
        match &settings.privacy_token {
            None => "(not set: POST /privacy/erase is off)".into(),
            Some(_) => "*** (set: POST /privacy/erase is on)".into(),
        },
    ));
    let state = &settings.state;
    match &state.url {
        None => lines.push(("STATE_URL", "(not set: this process's own state)".into())),
        Some(url) => lines.extend([
            ("STATE_URL", without_password(url.expose())),
            ("STATE_AUTH", state.auth.to_string()),
            ("STATE_CLUSTER", state.cluster.to_string()),
            (
                "STATE_CA_FILE",
                state
                    .ca_file
                    .as_ref()
                    .map_or("(not set)".into(), |path| path.display().to_string()),
            ),
            ("STATE_PREFIX", state.prefix.clone()),
            ("STATE_TIMEOUT", seconds(state.timeout)),
            ("STATE_LEASE", seconds(state.lease)),
        ]),
    }
    lines.extend([
        ("REPEAT_WINDOW", seconds(state.remembering.outcome)),
        ("REPLAY_WINDOW", seconds(state.remembering.replay)),
        (
            "SESSION_KEY",
            match settings.session_key.origin() {
                bridge::session::KeyOrigin::Configured => "***".into(),
                bridge::session::KeyOrigin::DerivedFromAuthToken => {
                    "(not set: derived from TWILIO_AUTH_TOKEN)".into()
                }
            },
        ),
    ]);
    lines
}

/// The default route's agent, as the variables that set it.
fn agent_lines(
    agent: &bridge::config::AgentSettings,
    project: &ProjectLookup,
    fallback_message: &str,
) -> Vec<(&'static str, String)> {
    let seconds = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut lines = vec![(
        "GCP_PROJECT",
        match project {
            ProjectLookup::FromMetadata => format!("{} (from the metadata server)", agent.project),
            _ => agent.project.clone(),
        },
    )];
    match &agent.kind {
        AgentKind::Cx {
            agent_id,
            session_ttl,
        } => {
            lines.push(("AGENT_TYPE", "CX".into()));
            lines.push(("AGENT_ID", agent_id.clone()));
            lines.push((
                "SESSION_TTL",
                session_ttl.map_or("the agent's default".into(), seconds),
            ));
        }
        AgentKind::Es => lines.push(("AGENT_TYPE", "ES".into())),
    }
    lines.extend([
        ("AGENT_LOCATION", agent.location.clone()),
        (
            "AGENT_ENVIRONMENT",
            agent
                .environment
                .clone()
                .unwrap_or_else(|| "(not set: the draft)".into()),
        ),
        ("LANGUAGE_CODE", agent.language_code.clone()),
        ("endpoint", agent.endpoint.url()),
        ("AGENT_TIMEOUT", seconds(agent.timeout)),
        (
            "AGENT_RETRY_WINDOW",
            seconds(agent.retry_window.min(agent.timeout)),
        ),
        ("FALLBACK_MESSAGE", format!("{fallback_message:?}")),
    ]);
    lines
}

/// `redis://user:password@host:port/0` as `redis://user:***@host:port/0`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(set)".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// A secret shown only as set or not, and its length (a token copied with a space or
/// cut short shows here).
fn masked(secrets: &[Secret]) -> String {
    match secrets.first() {
        None => "(not set)".into(),
        Some(secret) => format!("set ({} characters)", secret.expose().chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_store_url_is_shown_without_its_password() {
        assert_eq!(
            without_password("rediss://default:s3cret@10.0.0.3:6378/0"),
            "rediss://default:***@10.0.0.3:6378/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
