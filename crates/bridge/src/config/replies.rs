//! How replies reach the user: in the webhook's answer, or through Twilio's Messages
//! API, with which credentials and from which sender.

use super::agent::MAX_AGENT_TIMEOUT;
use super::error::Problem;
use super::twilio::TwilioSettings;
use super::values::{parse_base_url, parse_duration, parse_sid, ReplyMode, Secret};
use super::vars::Reader;
use std::time::Duration;

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

pub const DEFAULT_TWILIO_API_BASE_URL: &str = "https://api.twilio.com";
pub const DEFAULT_TWILIO_CONTENT_BASE_URL: &str = "https://content.twilio.com";
pub const DEFAULT_TWILIO_MESSAGING_BASE_URL: &str = "https://messaging.twilio.com";
const DEFAULT_REPLY_DEADLINE: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
const DEFAULT_TWILIO_API_TIMEOUT: Duration = Duration::from_secs(10);

/// The reply settings; the Messages API user is the account's own unless an API key is
/// set (`twilio` is `None` when the account's variables were wrong: already reported).
pub(super) fn read(
    reader: &mut Reader<'_>,
    mode: ReplyMode,
    twilio: Option<&TwilioSettings>,
) -> Option<ReplySettings> {
    let deadline = reader
        .parsed("REPLY_DEADLINE", |v| {
            let deadline = parse_duration(v)?;
            match deadline > MAX_AGENT_TIMEOUT {
                true => Err(format!(
                    "must be at most {}s: Twilio waits 15s for the webhook",
                    MAX_AGENT_TIMEOUT.as_secs()
                )),
                false => Ok(deadline),
            }
        })
        .unwrap_or(DEFAULT_REPLY_DEADLINE);
    let api_base_url = reader
        .parsed("TWILIO_API_BASE_URL", parse_base_url)
        .unwrap_or_else(|| DEFAULT_TWILIO_API_BASE_URL.to_owned());
    // A stand-in for the Messages API (`emulator --twilio-port`) serves the other
    // two as well: with TWILIO_API_BASE_URL set, they default to it, so that a
    // local setup never reaches Twilio by omission.
    let other_host = |default: &str| match api_base_url.as_str() {
        DEFAULT_TWILIO_API_BASE_URL => default.to_owned(),
        stand_in => stand_in.to_owned(),
    };
    let content_base_url = reader
        .parsed("TWILIO_CONTENT_BASE_URL", parse_base_url)
        .unwrap_or_else(|| other_host(DEFAULT_TWILIO_CONTENT_BASE_URL));
    let messaging_base_url = reader
        .parsed("TWILIO_MESSAGING_BASE_URL", parse_base_url)
        .unwrap_or_else(|| other_host(DEFAULT_TWILIO_MESSAGING_BASE_URL));
    let key_sid = reader.get("TWILIO_API_KEY_SID");
    let key_secret = reader.get("TWILIO_API_KEY_SECRET").map(Secret::new);
    let credentials = match (key_sid, key_secret) {
        (Some(sid), Some(secret)) => {
            reader.parsed("TWILIO_API_KEY_SID", parse_sid("SK"));
            Some((sid.to_owned(), vec![secret]))
        }
        (None, None) => {
            twilio.map(|twilio| (twilio.account_sid.clone(), twilio.auth_tokens.clone()))
        }
        (Some(_), None) => {
            reader.fail_var(
                "TWILIO_API_KEY_SECRET",
                Problem::missing_because("with TWILIO_API_KEY_SID"),
            );
            None
        }
        (None, Some(_)) => {
            reader.fail_var(
                "TWILIO_API_KEY_SID",
                Problem::missing_because("with TWILIO_API_KEY_SECRET"),
            );
            None
        }
    };
    let messaging_service_sid = reader.parsed("TWILIO_MESSAGING_SERVICE_SID", parse_sid("MG"));
    let shutdown_grace = reader.parsed_or("SHUTDOWN_GRACE", parse_duration, DEFAULT_SHUTDOWN_GRACE);
    let api_timeout = reader.parsed_or(
        "TWILIO_API_TIMEOUT",
        parse_duration,
        DEFAULT_TWILIO_API_TIMEOUT,
    );
    let (api_username, api_passwords) = credentials?;
    Some(ReplySettings {
        mode,
        deadline,
        api_base_url,
        api_username,
        api_passwords,
        messaging_service_sid,
        shutdown_grace,
        api_timeout,
        content_base_url,
        messaging_base_url,
    })
}
