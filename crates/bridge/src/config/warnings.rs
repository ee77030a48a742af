//! Settings that are valid but probably not what the operator meant.

use super::{CapBound, CapChoice, Endpoint, ReplyMode, Settings, DEFAULT_TWILIO_API_BASE_URL};
use crate::session::KeyOrigin;

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
        if !self.twilio.host_is_pinned() {
            warnings.push(UNPINNED_URL.to_owned());
        }
        if self.metrics.is_open() {
            warnings.push(
                "/metrics is open to anyone who reaches the service (route names and volumes): set METRICS_PORT to serve it on a port of its own, or METRICS_TOKEN to require Authorization: Bearer".to_owned(),
            );
        }
        if let CapChoice::Set { max, affordable } = self.connection_cap {
            if matches!(affordable.bound, CapBound::Memory { .. }) && max > affordable.max {
                warnings.push(format!(
                    "MAX_CONNECTIONS is {max}, more than the memory limit allows: {affordable}; a flood of slow requests could exhaust the memory"
                ));
            }
        }
        if self.session_key.origin() == KeyOrigin::DerivedFromAuthToken {
            warnings.push(super::ids::DERIVED_WARNING.to_owned());
        }
        warnings
    }
}

/// Why a bridge that takes the URL from the request should not: the Node sample did,
/// and it still works, but any host of the account is as good as this one.
const UNPINNED_URL: &str = "nothing pins the URL Twilio signs: with neither TWILIO_WEBHOOK_URL nor TWILIO_WEBHOOK_HOSTS set (and not on Cloud Run), it is read from the request, so a webhook Twilio signed for another host of the same account (another service or deployment) would be accepted here. Set TWILIO_WEBHOOK_URL to the URL configured in Twilio, or TWILIO_WEBHOOK_HOSTS to its host names.";
