//! Hand-over to people (`HANDOFF_URL`, …): on when `HANDOFF_URL` is set.

use super::error::Problem;
use super::values::{parse_base_url, parse_bool, parse_duration, Secret};
use super::vars::Reader;
use std::time::Duration;

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
    /// The person's messages a minute while with a person (`HANDOFF_RATE_LIMIT`):
    /// higher than the agent's limit, as people chat faster with people, but a limit
    /// all the same, so that a flood does not reach the helpdesk.
    pub rate_limit: u32,
}

const DEFAULT_HANDOFF_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_HANDOFF_RETRY_FOR: Duration = Duration::from_secs(60);
const DEFAULT_HANDOFF_HISTORY: usize = 10;
/// Five times the agent's default per-conversation limit.
pub const DEFAULT_HANDOFF_RATE_LIMIT: u32 = 5 * crate::rate_limit::DEFAULT_PER_CONVERSATION;
const DEFAULT_HANDOFF_UNAVAILABLE_MESSAGE: &str =
    "Sorry, no one can take over right now. You're back with the assistant.";
const DEFAULT_HANDOFF_STARTED_MESSAGE: &str = "One moment: a person will answer you here.";

/// The variables that only mean something with `HANDOFF_URL`: one set without it is a
/// conflict, not a silent no-op (an operator who set a hand-over rate limit believes
/// one applies).
const HANDOFF_ONLY: [&str; 11] = [
    "HANDOFF_SECRET",
    "HANDOFF_TOKEN",
    "HANDOFF_KEYWORDS",
    "HANDOFF_TTL",
    "HANDOFF_RETURN_EVENT",
    "HANDOFF_INCLUDE_ADDRESS",
    "HANDOFF_UNAVAILABLE_MESSAGE",
    "HANDOFF_STARTED_MESSAGE",
    "HANDOFF_RETRY_FOR",
    "HANDOFF_HISTORY",
    "HANDOFF_RATE_LIMIT",
];

/// `Ok(None)`: hand-over is off (no `HANDOFF_URL`); `Err(())`: a problem, reported.
/// `all_twiml`: every route answers in the webhook, so the human side could not reply.
pub(super) fn read(
    reader: &mut Reader<'_>,
    all_twiml: bool,
) -> Result<Option<HandoffSettings>, ()> {
    let Some(url) = reader.parsed("HANDOFF_URL", parse_handoff_url) else {
        if reader.get("HANDOFF_URL").is_some() {
            return Err(());
        }
        for name in HANDOFF_ONLY {
            if reader.get(name).is_some() {
                reader.fail_var(
                    name,
                    Problem::Conflict("is set but HANDOFF_URL is not: hand-over is off".to_owned()),
                );
            }
        }
        return Ok(None);
    };
    let secret = reader.required("HANDOFF_SECRET");
    let token = reader.required("HANDOFF_TOKEN");
    if secret.is_some() {
        reader.parsed_secret("HANDOFF_SECRET", check_webhook_secret);
    }
    if token.is_some_and(|t| t.len() < 16) {
        reader.fail_var(
            "HANDOFF_TOKEN",
            Problem::invalid_secret(
                "must be at least 16 characters: it lets its holder write to your users",
            ),
        );
    }
    if all_twiml {
        reader.fail_var(
            "HANDOFF_URL",
            Problem::Conflict("needs REPLY_MODE=auto or api: the human side's replies go through the Messages API".to_owned()),
        );
    }
    let keywords = reader
        .get("HANDOFF_KEYWORDS")
        .map(|list| {
            list.split(',')
                .map(|k| k.trim().to_lowercase())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let settings = HandoffSettings {
        url,
        secret: Secret::new(secret.ok_or(())?),
        token: Secret::new(token.ok_or(())?),
        keywords,
        ttl: reader.parsed_or("HANDOFF_TTL", parse_duration, DEFAULT_HANDOFF_TTL),
        return_event: reader.parsed_or("HANDOFF_RETURN_EVENT", parse_bool, false),
        include_address: reader.parsed_or("HANDOFF_INCLUDE_ADDRESS", parse_bool, false),
        unavailable_message: reader.text_or(
            "HANDOFF_UNAVAILABLE_MESSAGE",
            DEFAULT_HANDOFF_UNAVAILABLE_MESSAGE,
        ),
        started_message: reader.text_or("HANDOFF_STARTED_MESSAGE", DEFAULT_HANDOFF_STARTED_MESSAGE),
        retry_for: reader.parsed_or(
            "HANDOFF_RETRY_FOR",
            parse_duration,
            DEFAULT_HANDOFF_RETRY_FOR,
        ),
        history: reader
            .parsed("HANDOFF_HISTORY", |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 100)
                    .ok_or_else(|| "must be a number of turns, 0-100".to_owned())
            })
            .unwrap_or(DEFAULT_HANDOFF_HISTORY),
        rate_limit: reader
            .parsed("HANDOFF_RATE_LIMIT", |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| "must be a number of messages a minute, at least 1".to_owned())
            })
            .unwrap_or(DEFAULT_HANDOFF_RATE_LIMIT),
    };
    Ok(Some(settings))
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
