//! Messages the business starts (`POST /outbound`): on when `OUTBOUND_TOKEN` is set.

use super::error::Problem;
use super::values::Secret;
use super::vars::Reader;
use std::num::NonZeroU32;

/// The outbound endpoint's token, and its pace.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// The bearer token `/outbound` needs (`OUTBOUND_TOKEN`).
    pub token: Secret,
    /// Outbound sends a second, bridge-wide (`OUTBOUND_PER_SECOND`); `None`: as fast as
    /// Twilio takes them (Twilio queues what a sender cannot send at once).
    pub per_second: Option<NonZeroU32>,
}

/// The shortest token taken: it lets its holder write to every person.
const MIN_TOKEN_CHARS: usize = 16;

/// `Ok(None)`: the endpoint is off (no `OUTBOUND_TOKEN`); `Err(())`: a problem, reported.
/// `all_twiml`: no route sends through the Messages API, so nothing could go out.
pub(super) fn read(
    reader: &mut Reader<'_>,
    all_twiml: bool,
) -> Result<Option<OutboundSettings>, ()> {
    let per_second = reader.parsed("OUTBOUND_PER_SECOND", parse_per_second);
    let Some(token) = reader.get("OUTBOUND_TOKEN") else {
        if reader.get("OUTBOUND_PER_SECOND").is_some() {
            reader.fail_var(
                "OUTBOUND_PER_SECOND",
                Problem::Conflict(
                    "is set but OUTBOUND_TOKEN is not: the outbound endpoint is off".to_owned(),
                ),
            );
        }
        return Ok(None);
    };
    let mut fine = true;
    if token.chars().count() < MIN_TOKEN_CHARS {
        reader.fail_var(
            "OUTBOUND_TOKEN",
            Problem::invalid_secret(
                "must be at least 16 characters: it lets its holder write to every person",
            ),
        );
        fine = false;
    }
    if all_twiml {
        reader.fail_var(
            "OUTBOUND_TOKEN",
            Problem::Conflict(
                "needs REPLY_MODE=auto or api: outbound messages go through the Messages API"
                    .to_owned(),
            ),
        );
        fine = false;
    }
    if reader.get("OUTBOUND_PER_SECOND").is_some() && per_second.is_none() {
        fine = false;
    }
    fine.then(|| {
        Some(OutboundSettings {
            token: Secret::new(token),
            per_second: per_second.flatten(),
        })
    })
    .ok_or(())
}

/// A whole number of sends a second, at least 1; `unlimited` (the default) for none.
fn parse_per_second(value: &str) -> Result<Option<NonZeroU32>, String> {
    if value.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    value.trim().parse::<NonZeroU32>().map(Some).map_err(|_| {
        "must be a whole number of messages a second, at least 1, or unlimited".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_per_second;

    #[test]
    fn the_pace_is_a_positive_whole_number_or_unlimited() {
        assert_eq!(parse_per_second("10").unwrap().map(|n| n.get()), Some(10));
        assert_eq!(parse_per_second("unlimited").unwrap(), None);
        assert!(parse_per_second("0").is_err());
        assert!(parse_per_second("2.5").is_err());
        assert!(parse_per_second("-1").is_err());
    }
}
