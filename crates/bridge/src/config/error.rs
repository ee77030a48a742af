//! What is wrong with a configuration: *where* (a variable, or a field of the routes
//! file) and *what*, each problem typed, all of them listed at once.

use super::vars::ProjectLookup;
use std::fmt;

/// Where a problem is: the variable, or the place in the routes file, an operator edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A variable of the environment or `.env`.
    Var(String),
    /// A field of route `index` of the routes file (`ROUTES_FILE`), e.g. `agent.type`.
    RouteField { index: usize, field: &'static str },
    /// A field of account `index` of the routes file, e.g. `auth_token_env`.
    AccountField { index: usize, field: &'static str },
}

impl Place {
    pub fn var(name: impl Into<String>) -> Self {
        Place::Var(name.into())
    }

    /// Whether this is the variable `name`.
    pub fn is_var(&self, name: &str) -> bool {
        matches!(self, Place::Var(var) if var == name)
    }
}

impl fmt::Display for Place {
    /// As the operator finds it: `PORT`, `ROUTES_FILE: routes[1].agent.type`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Var(name) => f.write_str(name),
            Place::RouteField { index, field } => {
                write!(f, "ROUTES_FILE: routes[{index}].{field}")
            }
            Place::AccountField { index, field } => {
                write!(f, "ROUTES_FILE: accounts[{index}].{field}")
            }
        }
    }
}

/// What is wrong at a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Required, and not set; the hint says what would do.
    Missing { hint: Option<String> },
    /// Set to what it cannot be: what it must be, and what it was, unless that may be a
    /// secret (then never shown).
    Invalid {
        expected: String,
        got: Option<String>,
    },
    /// A value fine alone that does not go with the rest of the configuration.
    Conflict(String),
    /// The routes file cannot be read, or is not a routes file.
    Unreadable(String),
}

impl Problem {
    pub fn missing() -> Self {
        Problem::Missing { hint: None }
    }

    pub fn missing_because(hint: impl Into<String>) -> Self {
        Problem::Missing {
            hint: Some(hint.into()),
        }
    }

    /// A value that is not what `expected` says; `got` is shown with it.
    pub fn invalid(expected: impl Into<String>, got: &str) -> Self {
        Problem::Invalid {
            expected: expected.into(),
            got: Some(got.to_owned()),
        }
    }

    /// A value that is not what `expected` says, and may hold a secret: not shown.
    pub fn invalid_secret(expected: impl Into<String>) -> Self {
        Problem::Invalid {
            expected: expected.into(),
            got: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { hint: None } => f.write_str("is required but not set"),
            Problem::Missing { hint: Some(hint) } => {
                write!(f, "is required but not set ({hint})")
            }
            Problem::Invalid {
                expected,
                got: Some(got),
            } => write!(f, "{expected} (got {got:?})"),
            Problem::Invalid {
                expected,
                got: None,
            } => f.write_str(expected),
            Problem::Conflict(why) | Problem::Unreadable(why) => f.write_str(why),
        }
    }
}

/// One problem of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}{}", because.as_ref().map(|why| format!("; {why}")).unwrap_or_default())]
pub struct ConfigError {
    pub place: Place,
    pub problem: Problem,
    /// What else is known of the cause, found outside the variables (why the metadata
    /// server could not tell the project).
    pub because: Option<String>,
}

impl ConfigError {
    pub fn new(place: Place, problem: Problem) -> Self {
        Self {
            place,
            problem,
            because: None,
        }
    }
}

/// All the problems found in a configuration, in the order the variables are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The errors, with why the metadata server could not tell the project added to
    /// the one about the project.
    pub fn explained(mut self, lookup: &ProjectLookup) -> Self {
        if let ProjectLookup::Failed(why) = lookup {
            for error in &mut self.0 {
                if error.place.is_var("GCP_PROJECT") {
                    error.because = Some(why.to_string());
                }
            }
        }
        self
    }

    /// Whether a problem is at `place`.
    pub fn at(&self, place: &Place) -> Option<&ConfigError> {
        self.0.iter().find(|error| &error.place == place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_reads_as_the_operator_finds_it() {
        assert_eq!(Place::var("PORT").to_string(), "PORT");
        let field = Place::RouteField {
            index: 1,
            field: "agent.type",
        };
        assert_eq!(field.to_string(), "ROUTES_FILE: routes[1].agent.type");
    }

    #[test]
    fn a_secret_value_is_never_shown() {
        let error = ConfigError::new(
            Place::var("STATE_URL"),
            Problem::invalid_secret("must be a redis:// URL"),
        );
        assert_eq!(error.to_string(), "STATE_URL: must be a redis:// URL");
        let error = ConfigError::new(Place::var("PORT"), Problem::invalid("must be a port", "x"));
        assert_eq!(error.to_string(), "PORT: must be a port (got \"x\")");
    }
}
