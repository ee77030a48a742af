//! What the bridge takes on: the HTTP server's connection limits, and how fast one
//! conversation may write and the agent be called.

use super::values::parse_duration;
use super::vars::Reader;
use crate::rate_limit::RateLimits;
use std::num::NonZeroU32;
use std::time::Duration;

/// The HTTP server's connection limits (`HEADER_TIMEOUT`, `BODY_TIMEOUT`, …).
pub use hardened_http::Limits as ConnectionLimits;
pub use hardened_http::{
    default_max_connections, memory_limit, open_files_limit, per_connection_bytes, CapBound,
    ConnectionCap, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
};

/// Twilio's webhooks are a few KiB; anything far larger is not from Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Past the body timeout, what `REQUEST_TIMEOUT` adds by default: a body that pauses
/// once for almost the body timeout still arrives whole. Twilio sends its webhooks
/// whole in milliseconds, so the total only ever cuts a client that trickles.
const REQUEST_TIMEOUT_OVER_BODY: Duration = Duration::from_secs(5);

/// Far more than any proxy or client sends; hyper's own default is about 400 KiB.
const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// How the connection cap was chosen: what the start-up log and `check` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapChoice {
    /// `MAX_CONNECTIONS`, and what the process could afford without it.
    Set {
        max: usize,
        affordable: ConnectionCap,
    },
    /// From the open-files and memory limits.
    Derived(ConnectionCap),
}

impl std::fmt::Display for CapChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapChoice::Set { max, affordable } => {
                write!(
                    f,
                    "{max} (MAX_CONNECTIONS; the limits alone allow {affordable})"
                )
            }
            CapChoice::Derived(cap) => write!(f, "{cap}"),
        }
    }
}

pub const DEFAULT_RATE_LIMIT_MESSAGE: &str =
    "You're writing faster than I can answer. Please wait a minute, then try again.";

/// The connection limits, and how their cap was chosen.
pub(super) fn connection_limits(reader: &mut Reader<'_>) -> (ConnectionLimits, CapChoice) {
    let files = open_files_limit();
    let header = reader.parsed_or("HEADER_TIMEOUT", parse_duration, DEFAULT_HEADER_TIMEOUT);
    let body = reader.parsed_or("BODY_TIMEOUT", parse_duration, DEFAULT_BODY_TIMEOUT);
    let request = reader.parsed_or(
        "REQUEST_TIMEOUT",
        parse_duration,
        body + REQUEST_TIMEOUT_OVER_BODY,
    );
    let idle = reader.parsed_or("IDLE_TIMEOUT", parse_duration, DEFAULT_IDLE_TIMEOUT);
    let max_header_bytes = reader.parsed_or(
        "MAX_HEADER_BYTES",
        parse_header_bytes,
        DEFAULT_MAX_HEADER_BYTES,
    );
    let affordable =
        ConnectionCap::of_this_process(per_connection_bytes(max_header_bytes, MAX_BODY_BYTES));
    let set = reader.parsed("MAX_CONNECTIONS", |v| {
        let n: usize = v.parse().map_err(|_| "must be a whole number".to_owned())?;
        match n == 0 || n > files {
            true => Err(format!(
                "must be between 1 and the open-files limit, {files} (each connection is a file)"
            )),
            false => Ok(n),
        }
    });
    let choice = match set {
        Some(max) => CapChoice::Set { max, affordable },
        None => CapChoice::Derived(affordable),
    };
    let limits = ConnectionLimits {
        header,
        body,
        request,
        idle,
        max_connections: set.unwrap_or(affordable.max),
        max_header_bytes,
    };
    (limits, choice)
}

/// Bytes, between hyper's smallest buffer and 1 MiB.
fn parse_header_bytes(value: &str) -> Result<usize, String> {
    let min = hardened_http::MIN_MAX_HEADER_BYTES;
    match value.parse::<usize>() {
        Ok(n) if (min..=MAX_MAX_HEADER_BYTES).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of bytes between {min} and {MAX_MAX_HEADER_BYTES}"
        )),
    }
}

pub(super) fn rate_limits(reader: &mut Reader<'_>) -> RateLimits {
    let defaults = RateLimits::default();
    RateLimits {
        per_conversation: reader.parsed_or(
            "RATE_LIMIT_PER_CONVERSATION",
            parse_count,
            defaults.per_conversation,
        ),
        agent_calls_per_hour: reader.parsed_or(
            "AGENT_CALLS_PER_HOUR",
            parse_count,
            defaults.agent_calls_per_hour,
        ),
    }
}

/// `20`, `20/min`, `300/h`; `off`, `none` or `0`: no limit.
fn parse_count(value: &str) -> Result<Option<NonZeroU32>, String> {
    match value.to_ascii_lowercase().as_str() {
        "off" | "none" | "0" => Ok(None),
        v => v
            .trim_end_matches("/min")
            .trim_end_matches("/h")
            .trim()
            .parse::<u32>()
            .map(NonZeroU32::new)
            .map_err(|_| "must be a whole number, or off".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_count, parse_header_bytes};

    #[test]
    fn a_header_limit_hyper_can_take() {
        assert_eq!(parse_header_bytes("32768"), Ok(32768));
        assert!(parse_header_bytes("4096").is_err(), "below hyper's minimum");
        assert!(parse_header_bytes("32KiB").is_err());
        assert!(parse_header_bytes("99999999").is_err());
    }

    #[test]
    fn a_count_or_off() {
        assert_eq!(
            parse_count("20/min").map(|n| n.map(u32::from)),
            Ok(Some(20))
        );
        assert_eq!(parse_count("off"), Ok(None));
        assert!(parse_count("lots").is_err());
    }
}
