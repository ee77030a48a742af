//! Erasing a person on request (`POST /privacy/erase`): on when `PRIVACY_TOKEN` is set.

use super::error::Problem;
use super::values::Secret;
use super::vars::Reader;

/// The shortest token taken: it lets its holder erase what the bridge keeps of anyone.
const MIN_TOKEN_CHARS: usize = 16;

/// `PRIVACY_TOKEN`, the bearer token of `/privacy/erase`: `None`, the endpoint does
/// not exist; `Err(())`, a problem, reported.
pub(super) fn read(reader: &mut Reader<'_>) -> Result<Option<Secret>, ()> {
    let Some(token) = reader.get("PRIVACY_TOKEN") else {
        return Ok(None);
    };
    if token.chars().count() < MIN_TOKEN_CHARS {
        reader.fail_var(
            "PRIVACY_TOKEN",
            Problem::invalid_secret(
                "must be at least 16 characters: it lets its holder erase what the bridge keeps of anyone",
            ),
        );
        return Err(());
    }
    Ok(Some(Secret::new(token)))
}
