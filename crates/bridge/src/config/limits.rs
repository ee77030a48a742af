//! What the bridge takes on: the HTTP server's connection limits, and how fast one
//! conversation may write and the agent be called.

use super::values::parse_duration;
use super::vars::Reader;
use crate::rate_limit::RateLimits;
use std::num::NonZeroU32;

/// The HTTP server's connection limits (`HEADER_TIMEOUT`, `BODY_TIMEOUT`, …).
pub use hardened_http::Limits as ConnectionLimits;
pub use hardened_http::{
    default_max_connections, open_files_limit, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};

pub const DEFAULT_RATE_LIMIT_MESSAGE: &str =
    "You're writing faster than I can answer. Please wait a minute, then try again.";

pub(super) fn connection_limits(reader: &mut Reader<'_>) -> ConnectionLimits {
    let defaults = ConnectionLimits::default();
    let files = open_files_limit();
    ConnectionLimits {
        header: reader.parsed_or("HEADER_TIMEOUT", parse_duration, defaults.header),
        body: reader.parsed_or("BODY_TIMEOUT", parse_duration, defaults.body),
        idle: reader.parsed_or("IDLE_TIMEOUT", parse_duration, defaults.idle),
        max_connections: reader
            .parsed("MAX_CONNECTIONS", |v| {
                let n: usize = v.parse().map_err(|_| "must be a whole number".to_owned())?;
                match n == 0 || n > files {
                    true => Err(format!(
                        "must be between 1 and the open-files limit, {files} (each connection is a file)"
                    )),
                    false => Ok(n),
                }
            })
            .unwrap_or(defaults.max_connections),
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
    use super::parse_count;

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
