//! Connecting to the server (TLS with `rediss://` and `STATE_CA_FILE`, the password in
//! `STATE_URL` or an IAM access token, `STATE_AUTH`), and connecting again: a server not
//! there at start-up does not stop the bridge. Also what `check` reports of the server.
//!
//! TLS is rustls's, verified against `STATE_CA_FILE` (else the system's roots) for the
//! host `STATE_URL` names: a DNS name must be among the certificate's DNS names, an IP
//! address among its IP addresses (Memorystore names a node by IP). rustls reads only
//! the subjectAltName extension, never the subject's CN.

use super::certificate::{self, CertificateNames};
use super::iam::{IamTokens, NoCredentials};
use super::layout;
use super::scripts::Scripts;
use super::SharedState;
use crate::config::{StateAuth, StateSettings};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::retry::{always, Backoff, RetryPolicy};
use crate::state::{LocalState, StoreError};
use redis::aio::ConnectionManagerConfig;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell};

/// A server not there at start-up is tried again every second until it answers.
const RECONNECT_EVERY: Backoff = Backoff::constant(Duration::from_secs(1));

/// Why the shared store cannot be set up at all (a wrong setting, not an outage).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("STATE_URL cannot be used: {0}")]
    Url(redis::RedisError),
    #[error("STATE_CA_FILE cannot be read: {0}")]
    CaFile(std::io::Error),
    #[error(transparent)]
    Iam(#[from] NoCredentials),
}

/// How this process reaches the server and proves who it is: fixed at start-up.
pub(super) struct Access {
    tls: Tls,
    auth: Auth,
}

/// Whether the connection is encrypted, and against which roots it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    Off,
    /// `rediss://`, verified against `ca_file` or, without one, the system's roots.
    On {
        ca_file: Option<PathBuf>,
    },
}

/// How connections authenticate.
enum Auth {
    /// No password at all.
    None,
    /// The password in `STATE_URL`.
    Password,
    /// A fresh IAM access token for each new connection.
    Iam(IamTokens),
}

/// What `check` says of the store.
#[derive(Debug)]
pub struct StoreReport {
    /// The server's name and version (`Redis 7.2.4`, `Valkey 8.0.1`).
    pub server: String,
    pub mode: StoreMode,
    pub auth: AuthReport,
    pub tls: Tls,
    /// One round trip's time (a `PING`).
    pub latency: Duration,
    /// `STATE_PREFIX`, which every key starts with.
    pub prefix: String,
}

/// How the server keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// One server (or a primary and its replicas), cluster mode disabled.
    Standalone,
    // Cluster mode: its shards and replicas, once the bridge speaks it.
}

/// How the bridge authenticated, as `check` tells it: never the password or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReport {
    None,
    Password,
    /// An IAM access token was obtained for `user` (and the server took it).
    IamToken {
        user: String,
    },
}

impl std::fmt::Display for StoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreMode::Standalone => f.write_str("standalone"),
        }
    }
}

impl std::fmt::Display for AuthReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthReport::None => f.write_str("none"),
            AuthReport::Password => f.write_str("the password in STATE_URL"),
            AuthReport::IamToken { user } => {
                write!(
                    f,
                    "IAM: an access token was obtained and accepted, as user {user}"
                )
            }
        }
    }
}

impl std::fmt::Display for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Off => f.write_str("off"),
            Tls::On { ca_file: None } => f.write_str("on, verified against the system's roots"),
            Tls::On {
                ca_file: Some(path),
            } => {
                write!(f, "on, verified against {}", path.display())
            }
        }
    }
}

impl SharedState {
    pub async fn open(
        settings: &StateSettings,
        limits: RateLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, OpenError> {
        let url = settings
            .url
            .as_ref()
            .map(|u| u.expose())
            .unwrap_or_default();
        let tls = match url.starts_with("rediss://") {
            true => Tls::On {
                ca_file: settings.ca_file.clone(),
            },
            false => Tls::Off,
        };
        let client = match &settings.ca_file {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(OpenError::CaFile)?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
            None => redis::Client::open(url),
        }
        .map_err(OpenError::Url)?;
        let redis_settings = client.get_connection_info().redis_settings();
        let auth = match settings.auth {
            StateAuth::Iam => Auth::Iam(IamTokens::from_adc(redis_settings.username())?),
            StateAuth::Password if redis_settings.password().is_some() => Auth::Password,
            StateAuth::Password => Auth::None,
        };
        let state = Arc::new(Self {
            client,
            connection: OnceCell::new(),
            layout: layout::Layout::new(&settings.prefix),
            timeout: settings.timeout,
            lease: settings.lease,
            owner: instance_id(),
            access: Access { tls, auth },
            local: Arc::new(LocalState::new(limits, settings.remembering)),
            remembering: settings.remembering,
            limits,
            tokens: AtomicU64::new(0),
            metrics,
            finished: Notify::new(),
            last_warning: std::sync::Mutex::new(None),
            scripts: Scripts::new(),
        });
        // A server that is not there yet must not stop the bridge: the first attempt is
        // bounded, later ones run in the background until one succeeds.
        if state.connect().await.is_err() {
            let retry = Arc::clone(&state);
            tokio::spawn(async move {
                // The first attempt has just failed: the next one after a pause.
                tokio::time::sleep(RECONNECT_EVERY.pause(1)).await;
                let until_connected = RetryPolicy::new(RECONNECT_EVERY);
                if until_connected
                    .run(always, |_| retry.connect())
                    .await
                    .is_ok()
                {
                    tracing::info!("connected to the shared state store");
                }
            });
        }
        Ok(state)
    }

    async fn connect(&self) -> Result<(), StoreError> {
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        if let Auth::Iam(tokens) = &self.access.auth {
            // Asked at each connection the manager opens, its first and every
            // reconnection: each authenticates with the token valid then.
            config = config.set_credentials_provider(tokens.clone());
        }
        let attempt = self.client.get_connection_manager_with_config(config);
        let connection =
            match tokio::time::timeout(self.timeout.max(Duration::from_secs(2)), attempt).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => return Err(self.failed("connect", error.into())),
                Err(_) => return Err(self.failed("connect", StoreError::Timeout(self.timeout))),
            };
        let _ = self.connection.set(connection);
        Ok(())
    }

    /// The server's name and version, its mode, how the bridge authenticated, whether
    /// the connection is encrypted, a round trip's time and the key prefix.
    pub async fn report(&self) -> Result<StoreReport, StoreError> {
        if self.connection.get().is_none() {
            self.connect().await?;
        }
        let started = Instant::now();
        let _: String = self.command("ping", &redis::cmd("PING")).await?;
        let latency = started.elapsed();
        let info: String = self
            .command("info", redis::cmd("INFO").arg("server"))
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let server = match (field("valkey_version"), field("redis_version")) {
            (Some(version), _) => format!("Valkey {version}"),
            (None, Some(version)) => format!("Redis {version}"),
            (None, None) => "an unknown server".to_owned(),
        };
        let auth = match &self.access.auth {
            Auth::None => AuthReport::None,
            Auth::Password => AuthReport::Password,
            // The connection took a token; asking again shows one is still to be had.
            Auth::Iam(tokens) => {
                tokens
                    .current()
                    .await
                    .map_err(|error| self.failed("token", error.into()))?;
                AuthReport::IamToken {
                    user: tokens.user().to_owned(),
                }
            }
        };
        Ok(StoreReport {
            server,
            // Where the cluster's shards and replicas will be told, from CLUSTER SHARDS.
            mode: StoreMode::Standalone,
            auth,
            tls: self.access.tls.clone(),
            latency,
            prefix: self.layout.prefix().to_owned(),
        })
    }
}

impl SharedState {
    /// With TLS, the host `STATE_URL` dials and the names on the certificate the server
    /// shows (or why they cannot be read): what `check` says when the store cannot be
    /// reached, as a certificate for another name is a common reason.
    pub async fn certificate_names(&self) -> Option<(String, Result<CertificateNames, String>)> {
        let redis::ConnectionAddr::TcpTls { host, port, .. } =
            self.client.get_connection_info().addr()
        else {
            return None;
        };
        let within = self.timeout.max(Duration::from_secs(2));
        Some((
            host.clone(),
            certificate::presented_by(host, *port, within).await,
        ))
    }
}

/// An id for this process among the instances: random enough not to collide.
fn instance_id() -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hash = Sha256::new();
    hash.update(nanos.to_be_bytes());
    hash.update(std::process::id().to_be_bytes());
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
