//! `twilio-dialogflow check`: the first thing to run after deploying. Reads the
//! configuration exactly as `serve` does, reports every problem at once, and unless
//! offline asks the agent one real question and shows the answer.

use crate::agent::{Agent, AgentQuery, QueryInput};
use crate::config::{AgentKind, Settings, Vars};
use crate::session::SessionId;
use std::fmt::Write as _;
use std::time::Instant;

/// How a check ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok = 0,
    AgentFailed = 1,
    BadConfiguration = 2,
}

/// Runs the check; returns the verdict and the report to print.
pub async fn run(vars: &Vars, offline: bool, text: &str) -> (Verdict, String) {
    let mut report = String::new();
    let settings = match Settings::from_vars(vars) {
        Ok(settings) => settings,
        Err(errors) => {
            for line in &errors.0 {
                let _ = writeln!(report, "configuration error: {line}");
            }
            return (Verdict::BadConfiguration, report);
        }
    };
    let agent = &settings.agent;
    let resource = match &agent.kind {
        AgentKind::Cx { agent_id, .. } => format!(
            "CX agent projects/{}/locations/{}/agents/{agent_id}",
            agent.project, agent.location
        ),
        AgentKind::Es => format!("ES agent of project {} ({})", agent.project, agent.location),
    };
    let _ = writeln!(report, "configuration: ok");
    let _ = writeln!(
        report,
        "  agent:    {resource}, language {}",
        agent.language_code
    );
    let _ = writeln!(report, "  endpoint: {}", agent.endpoint.url());
    let _ = writeln!(
        report,
        "  replies:  {:?} (agent timeout {:?})",
        settings.replies.mode, agent.timeout
    );
    let _ = writeln!(
        report,
        "  webhook:  {}",
        match (&settings.twilio.webhook_url, settings.twilio.trust_proxy) {
            (Some(url), _) => format!("signatures checked against {url}"),
            (None, true) => "public URL from X-Forwarded-Proto/X-Forwarded-Host".to_owned(),
            (None, false) => "public URL from the Host header, over http".to_owned(),
        }
    );
    if offline {
        return (Verdict::Ok, report);
    }
    let client = match Agent::connect(agent).await {
        Ok(client) => client,
        Err(error) => {
            let _ = writeln!(report, "agent: cannot create the client: {error}");
            return (Verdict::AgentFailed, report);
        }
    };
    let query = AgentQuery {
        session: SessionId::for_conversation(
            &settings.twilio.account_sid,
            "twilio-dialogflow check",
            "",
        ),
        input: QueryInput::Text(text.to_owned()),
        payload: serde_json::Map::new(),
    };
    let started = Instant::now();
    match client.detect_intent(&query).await {
        Ok(replies) => {
            let _ = writeln!(
                report,
                "agent: asked {text:?}, answered in {} ms:",
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
            (Verdict::Ok, report)
        }
        Err(error) => {
            let _ = writeln!(
                report,
                "agent: asked {text:?}, failed after {} ms: {error}",
                started.elapsed().as_millis()
            );
            (Verdict::AgentFailed, report)
        }
    }
}
