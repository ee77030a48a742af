//! Where the bridge keeps what must hold across instances (`STATE_URL`, …).

use super::error::Problem;
use super::values::{parse_duration, Secret};
use super::vars::Reader;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where the bridge keeps what must hold across instances: the messages already
/// answered, the order of each conversation's turns, the replies still owed.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// `redis://` or `rediss://`; none: in this process only.
    pub url: Option<Secret>,
    /// The server's CA certificate (PEM), for `rediss://` with a private CA (Memorystore).
    pub ca_file: Option<PathBuf>,
    /// How the bridge proves who it is to the server (`STATE_AUTH`).
    pub auth: StateAuth,
    /// Every key starts with this, so that several bridges can share one server.
    pub prefix: String,
    /// The longest any one call to the store may take before the bridge goes on without
    /// it.
    pub timeout: Duration,
    /// How long an instance may hold a turn without renewing it; after that, another
    /// instance takes over its work.
    pub lease: Duration,
    /// How long a handled message is remembered: its outcome for re-deliveries
    /// (`REPEAT_WINDOW`), and that it was handled, against replays (`REPLAY_WINDOW`).
    pub remembering: crate::state::Remembering,
    /// Whether the server is a cluster (`STATE_CLUSTER`): asked of it, or told.
    pub cluster: ClusterMode,
}

/// Whether the store is a Redis or Valkey Cluster, which needs a client that follows
/// the cluster's redirects and learns its topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// Ask the server (`INFO cluster`, `cluster_enabled:1`): right for a plain server,
    /// a cluster's node and Memorystore's discovery endpoint alike.
    #[default]
    Auto,
    /// A cluster, whatever the server says.
    On,
    /// A single server (or a cluster mode disabled instance), whatever the server says.
    Off,
}

impl ClusterMode {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("must be auto, on or off".to_owned()),
        }
    }
}

impl fmt::Display for ClusterMode {
    /// As `STATE_CLUSTER` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterMode::Auto => "auto",
            ClusterMode::On => "on",
            ClusterMode::Off => "off",
        })
    }
}

/// How the bridge authenticates to the store (`STATE_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateAuth {
    /// The password in `STATE_URL`, if it has one (or none at all).
    #[default]
    Password,
    /// An OAuth access token of the service account (Application Default Credentials)
    /// as the password, as Memorystore's IAM authentication wants it; the user is the
    /// URL's, else `default`.
    Iam,
}

impl FromStr for StateAuth {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "password" => Ok(StateAuth::Password),
            "iam" => Ok(StateAuth::Iam),
            _ => Err("must be password or iam".to_owned()),
        }
    }
}

impl fmt::Display for StateAuth {
    /// As `STATE_AUTH` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateAuth::Password => "password",
            StateAuth::Iam => "iam",
        })
    }
}

pub const DEFAULT_STATE_PREFIX: &str = "twilio-dialogflow";
const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(300);
const DEFAULT_STATE_LEASE: Duration = Duration::from_secs(30);

pub(super) fn read(reader: &mut Reader<'_>) -> StateSettings {
    // The URL may hold a password: an error never repeats it.
    let url = reader.parsed_secret("STATE_URL", |v| {
        if v.starts_with("redis://") || v.starts_with("rediss://") {
            Ok(Secret::new(v))
        } else {
            Err("must be a redis:// or rediss:// URL (user and password in it if the server needs them)".to_owned())
        }
    });
    let ca_file = reader.parsed("STATE_CA_FILE", |v| {
        let path = PathBuf::from(v);
        match path.is_file() {
            true => Ok(path),
            false => Err("must be the path of a PEM file that exists".to_owned()),
        }
    });
    let over_tls = url
        .as_ref()
        .is_some_and(|u| u.expose().starts_with("rediss://"));
    if ca_file.is_some() && !over_tls {
        reader.fail_var(
            "STATE_CA_FILE",
            Problem::Conflict("is only for a rediss:// STATE_URL".to_owned()),
        );
    }
    let auth = reader.parsed_or("STATE_AUTH", StateAuth::from_str, StateAuth::default());
    if auth == StateAuth::Iam {
        match url.as_ref().map(|u| redis::parse_redis_url(u.expose())) {
            None => reader.fail_var(
                "STATE_AUTH",
                Problem::Conflict("iam is only for a STATE_URL".to_owned()),
            ),
            // A fixed password would be sent instead of the token, or mistaken for one.
            Some(Some(parsed)) if parsed.password().is_some() => reader.fail_var(
                "STATE_AUTH",
                Problem::Conflict(
                    "iam sends an access token as the password: STATE_URL must not hold one"
                        .to_owned(),
                ),
            ),
            Some(_) => {}
        }
    }
    let prefix = reader
        .parsed("STATE_PREFIX", |v| {
            match v
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
            {
                true => Ok(v.to_owned()),
                false => Err("must be printable characters without spaces or braces".to_owned()),
            }
        })
        .unwrap_or_else(|| DEFAULT_STATE_PREFIX.to_owned());
    let timeout = reader.parsed_or("STATE_TIMEOUT", parse_duration, DEFAULT_STATE_TIMEOUT);
    let lease = reader
        .parsed("STATE_LEASE", |v| {
            let lease = parse_duration(v)?;
            match lease < Duration::from_secs(1) {
                true => Err("must be at least 1s".to_owned()),
                false => Ok(lease),
            }
        })
        .unwrap_or(DEFAULT_STATE_LEASE);
    let defaults = crate::state::Remembering::default();
    let outcome = reader.parsed_or("REPEAT_WINDOW", parse_duration, defaults.outcome);
    let replay = reader.parsed_or("REPLAY_WINDOW", parse_duration, defaults.replay);
    if replay < outcome {
        reader.fail_var(
            "REPLAY_WINDOW",
            Problem::Conflict(format!(
                "must be at least REPEAT_WINDOW ({outcome:?}): a message is known as handled at least as long as its answer is kept"
            )),
        );
    }
    let cluster = reader.parsed_or("STATE_CLUSTER", ClusterMode::parse, ClusterMode::Auto);
    StateSettings {
        cluster,
        url,
        ca_file,
        auth,
        prefix,
        timeout,
        lease,
        remembering: crate::state::Remembering { outcome, replay },
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterMode;

    #[test]
    fn cluster_mode_is_one_of_three_words() {
        assert_eq!(ClusterMode::parse("auto"), Ok(ClusterMode::Auto));
        assert_eq!(ClusterMode::parse("on"), Ok(ClusterMode::On));
        assert_eq!(ClusterMode::parse("off"), Ok(ClusterMode::Off));
        assert!(ClusterMode::parse("yes").is_err());
        assert!(ClusterMode::parse("").is_err());
    }
}
