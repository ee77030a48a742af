//! The kinds of value a setting can take, each parsed in one place, whether it comes
//! from a variable or from the routes file. A parser's error says what the value must
//! be; the caller says where it was.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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

/// How replies reach the user (`REPLY_MODE`, a route's `reply_mode`).
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

impl FromStr for ReplyMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "twiml" => Ok(ReplyMode::Twiml),
            "api" => Ok(ReplyMode::Api),
            "auto" => Ok(ReplyMode::Auto),
            _ => Err("must be twiml, api or auto".to_owned()),
        }
    }
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

/// Which Dialogflow an agent is (`AGENT_TYPE`, a route's `agent.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentType {
    Cx,
    Es,
}

impl FromStr for AgentType {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "CX" => Ok(AgentType::Cx),
            "ES" => Ok(AgentType::Es),
            _ => Err("must be CX or ES".to_owned()),
        }
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
pub fn parse_session_ttl(value: &str) -> Result<Duration, String> {
    let ttl = parse_duration(value)?;
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
        return Err(
            "must be between 1s and 24h: Dialogflow CX keeps a session at most a day".into(),
        );
    }
    Ok(ttl)
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// An `http(s)://` URL, without its trailing slash.
pub fn parse_base_url(value: &str) -> Result<String, String> {
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("must be an http(s):// URL".to_owned())
    }
}

/// A Twilio SID: two letters (`AC` an account, `SK` an API key, `MG` a Messaging
/// Service) and 32 hexadecimal characters.
pub fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A SID of the kind `prefix` names.
pub fn parse_sid(prefix: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |value| match is_sid(value, prefix) {
        true => Ok(value.to_owned()),
        false => Err(format!(
            "must be {prefix} followed by 32 hexadecimal characters"
        )),
    }
}

/// Ids that go into a resource path: no slashes or spaces that would change the path.
pub fn is_resource_id(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// An agent's location: `global`, `us-central1`, …
pub fn parse_location(value: &str) -> Result<String, String> {
    match is_resource_id(value) {
        true => Ok(value.to_owned()),
        false => Err("must be a location id such as global or us-central1".to_owned()),
    }
}

/// An agent's id: the UUID in its console URL.
pub fn parse_agent_id(value: &str) -> Result<String, String> {
    match is_resource_id(value) {
        true => Ok(value.to_owned()),
        false => Err(
            "must be the agent's id (the UUID in its console URL), not a name or path".to_owned(),
        ),
    }
}

/// An agent's environment id.
pub fn parse_environment(value: &str) -> Result<String, String> {
    match is_resource_id(value) {
        true => Ok(value.to_owned()),
        false => Err("must be the environment's id, not a name or path".to_owned()),
    }
}

/// A country as Twilio's `FromCountry` names it: two letters, upper case.
pub fn parse_country(value: &str) -> Result<String, String> {
    let value = value.trim();
    match value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        true => Ok(value.to_ascii_uppercase()),
        false => Err("must be a two-letter country code such as FR".to_owned()),
    }
}

/// `FR:fr,CA:en`: the sender's country to a language code.
pub fn parse_languages(value: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((country, language)) if !language.trim().is_empty() => Ok((
                parse_country(country).map_err(|_| ())?,
                language.trim().to_owned(),
            )),
            _ => Err(()),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| "must be COUNTRY:language pairs, e.g. FR:fr,CA:en".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for wrong in ["0s", "banana", "999h", "-5"] {
            assert!(parse_duration(wrong).is_err(), "{wrong}");
        }
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
    fn modes_and_kinds_whatever_their_case() {
        assert_eq!("TwiML".parse(), Ok(ReplyMode::Twiml));
        assert_eq!(" api ".parse(), Ok(ReplyMode::Api));
        assert!("sometimes".parse::<ReplyMode>().is_err());
        assert_eq!("es".parse(), Ok(AgentType::Es));
        assert!("DX".parse::<AgentType>().is_err());
        for mode in [ReplyMode::Twiml, ReplyMode::Api, ReplyMode::Auto] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
        }
    }

    #[test]
    fn sids_ids_and_countries() {
        assert!(parse_sid("AC")("AC0123456789abcdef0123456789abcdef").is_ok());
        assert!(parse_sid("AC")("SK0123456789abcdef0123456789abcdef").is_err());
        assert!(parse_location("europe west").is_err());
        assert!(parse_agent_id("projects/p/agents/a").is_err());
        assert_eq!(parse_country("fr"), Ok("FR".to_owned()));
        assert!(parse_country("FRA").is_err());
        assert!(parse_languages("FR:fr,CA:en").is_ok());
        assert!(parse_languages("FR=fr").is_err());
        assert!(parse_languages("FRA:fr").is_err());
    }

    #[test]
    fn booleans_and_urls() {
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(
            parse_base_url("http://127.0.0.1:9/"),
            Ok("http://127.0.0.1:9".to_owned())
        );
        assert!(parse_base_url("api.twilio.com").is_err());
    }
}
