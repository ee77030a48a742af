//! Connecting to the server (TLS with `rediss://` and `STATE_CA_FILE`, the password in
//! `STATE_URL` or an IAM access token, `STATE_AUTH`), and connecting again: a server not
//! there at start-up does not stop the bridge. Also what `check` reports of the server.
//!
//! TLS is rustls's, verified against `STATE_CA_FILE` (else the system's roots) for the
//! host `STATE_URL` names: a DNS name must be among the certificate's DNS names, an IP
//! address among its IP addresses (Memorystore names a node by IP). rustls reads only
//! the subjectAltName extension, never the subject's CN.
//!
//! A cluster is found by itself (`STATE_CLUSTER=auto`): the node `STATE_URL` names is
//! asked `INFO cluster`, and a cluster gets the `redis` crate's cluster client, which
//! learns every node from that one, with the same password or tokens and TLS. Its
//! retries (on `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, a closed connection) are
//! bounded within `STATE_TIMEOUT`, as every call is: a failover longer than that is an
//! outage as a single server's is, and the turn falls back on this process's state
//! until the promoted replica answers.

use super::certificate::{self, CertificateNames};
use super::iam::{IamTokens, NoCredentials};
use super::layout;
use super::link::{Link, Links, CONNECTIONS_TO_ONE_SERVER};
use super::scripts::Scripts;
use super::SharedState;
use crate::config::{ClusterMode, StateAuth, StateSettings};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::retry::{always, Backoff, RetryPolicy};
use crate::state::{LocalState, StoreError};
use redis::aio::ConnectionManagerConfig;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
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
    /// Cluster mode: the masters that serve slots (its shards), and the replicas.
    Cluster { masters: usize, replicas: usize },
}

impl StoreMode {
    /// The cluster `CLUSTER NODES` describes: a line a node, its flags the third field,
    /// a master's slots from the ninth (a master without slots is no shard).
    fn of_cluster_nodes(nodes: &str) -> Self {
        let (mut masters, mut replicas) = (0, 0);
        for fields in nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
        {
            let Some(flags) = fields.get(2) else { continue };
            let flags: Vec<&str> = flags.split(',').collect();
            if flags.contains(&"master") && fields.len() > 8 {
                masters += 1;
            } else if flags.contains(&"slave") || flags.contains(&"replica") {
                replicas += 1;
            }
        }
        Self::Cluster { masters, replicas }
    }
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
            StoreMode::Cluster { masters, replicas } => {
                write!(f, "cluster ({masters} masters, {replicas} replicas)")
            }
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
        let root_cert = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(OpenError::CaFile)?),
            None => None,
        };
        let certificates = |root_cert: &Option<Vec<u8>>| redis::TlsCertificates {
            client_tls: None,
            root_cert: root_cert.clone(),
        };
        let client = match &root_cert {
            Some(_) => redis::Client::build_with_tls(url, certificates(&root_cert)),
            None => redis::Client::open(url),
        }
        .map_err(OpenError::Url)?;
        let redis_settings = client.get_connection_info().redis_settings();
        let auth = match settings.auth {
            StateAuth::Iam => Auth::Iam(IamTokens::from_adc(redis_settings.username())?),
            StateAuth::Password if redis_settings.password().is_some() => Auth::Password,
            StateAuth::Password => Auth::None,
        };
        // The cluster client starts from the same node, with the same password (or
        // tokens) and certificates; it connects only if the server is a cluster.
        let cluster_client = match settings.cluster {
            ClusterMode::Off => None,
            ClusterMode::Auto | ClusterMode::On => {
                let builder = ClusterClientBuilder::new([client.get_connection_info().clone()]);
                let builder = match &root_cert {
                    Some(_) => builder.certs(certificates(&root_cert)),
                    None => builder,
                };
                let builder = match &auth {
                    Auth::Iam(tokens) => builder.set_credentials_provider(tokens.clone()),
                    Auth::None | Auth::Password => builder,
                };
                Some(
                    with_retries(builder, settings.timeout)
                        .build()
                        .map_err(OpenError::Url)?,
                )
            }
        };
        let state = Arc::new(Self {
            client,
            cluster_client,
            cluster: settings.cluster,
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
        let attempt = async {
            let single = match (self.cluster, &self.cluster_client) {
                (ClusterMode::On, Some(cluster)) => {
                    return Ok::<_, redis::RedisError>(Links::new(
                        cluster_link(cluster).await?,
                        [],
                    ));
                }
                _ => {
                    self.client
                        .get_connection_manager_with_config(config.clone())
                        .await?
                }
            };
            match (self.cluster, &self.cluster_client) {
                (ClusterMode::Auto, Some(cluster)) if cluster_enabled(single.clone()).await? => {
                    Ok(Links::new(cluster_link(cluster).await?, []))
                }
                _ => Ok(Links::new(
                    Link::Single(single),
                    self.more_connections(&config).await,
                )),
            }
        };
        let connection =
            match tokio::time::timeout(self.timeout.max(Duration::from_secs(2)), attempt).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => return Err(self.failed("connect", error.into())),
                Err(_) => return Err(self.failed("connect", StoreError::Timeout(self.timeout))),
            };
        if connection.is_cluster() {
            tracing::info!("the shared state store is a cluster");
        }
        tracing::debug!(
            connections = connection.len(),
            "connected to the shared state store"
        );
        let _ = self.connection.set(connection);
        Ok(())
    }

    /// The connections to one server beside the first (see
    /// [`CONNECTIONS_TO_ONE_SERVER`]), opened together; one that cannot be opened is
    /// done without, as the first answered.
    async fn more_connections(&self, config: &ConnectionManagerConfig) -> Vec<Link> {
        let opening = (1..CONNECTIONS_TO_ONE_SERVER).map(|_| {
            self.client
                .get_connection_manager_with_config(config.clone())
        });
        futures_util::future::join_all(opening)
            .await
            .into_iter()
            .filter_map(|opened| opened.ok().map(Link::Single))
            .collect()
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
            .call("info", |mut link| async move {
                link.ask_one_node(redis::cmd("INFO").arg("server")).await
            })
            .await?;
        let cluster = self.connection.get().is_some_and(Links::is_cluster);
        let mode = match cluster {
            false => StoreMode::Standalone,
            true => {
                let nodes: String = self
                    .call("cluster_nodes", |mut link| async move {
                        link.ask_one_node(redis::cmd("CLUSTER").arg("NODES")).await
                    })
                    .await?;
                StoreMode::of_cluster_nodes(&nodes)
            }
        };
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
            mode,
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

/// Whether the server says it is a cluster's node (`cluster_enabled:1`).
async fn cluster_enabled(mut single: redis::aio::ConnectionManager) -> redis::RedisResult<bool> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut single)
        .await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

/// A connection to the cluster: its topology read from the first node that answers.
async fn cluster_link(cluster: &ClusterClient) -> redis::RedisResult<Link> {
    Ok(Link::Cluster(cluster.get_async_connection().await?))
}

/// The cluster client's retries, bounded within `timeout` (`STATE_TIMEOUT`): a call
/// answered `MOVED` or `ASK` goes on at once to the node named; one answered
/// `TRYAGAIN` or `CLUSTERDOWN`, or whose connection closed, after a pause that grows
/// from [`MIN_RETRY_WAIT`] and never passes a quarter of `timeout`, as many times as
/// the longest pauses fit in it. Each attempt, and all of them together, end at
/// `timeout` too: a call is never left running after the bridge stopped waiting on it.
fn with_retries(builder: ClusterClientBuilder, timeout: Duration) -> ClusterClientBuilder {
    let plan = RetryPlan::within(timeout);
    builder
        .connection_timeout(timeout.max(Duration::from_secs(1)))
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout))
        .retries(plan.retries)
        .min_retry_wait(plan.min_wait_ms)
        .max_retry_wait(plan.max_wait_ms)
}

/// The shortest pause before a retry: a failover or a slot's move is not over sooner.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(10);

/// How often, and after how long a pause, a cluster call is tried again.
#[derive(Debug, PartialEq, Eq)]
struct RetryPlan {
    retries: u32,
    min_wait_ms: u64,
    max_wait_ms: u64,
}

impl RetryPlan {
    fn within(timeout: Duration) -> Self {
        let budget = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let min_wait_ms = u64::try_from(MIN_RETRY_WAIT.as_millis()).unwrap_or(10);
        // The pause is drawn below `max_wait_ms` (and above the minimum): counting
        // each at its longest keeps every retry's pause within the budget.
        let max_wait_ms = (budget / 4).max(min_wait_ms + 1);
        let retries = u32::try_from(budget / max_wait_ms)
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            retries,
            min_wait_ms,
            max_wait_ms,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_count_as_shards_and_replicas() {
        // As redis-server 7 answers CLUSTER NODES, one master without slots.
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master - 0 1 3 connected 10923-16383
b1 127.0.0.1:7003@17003 slave a1 0 1 1 connected
b2 127.0.0.1:7004@17004 slave a2 0 1 2 connected
b3 127.0.0.1:7005@17005 slave,fail a3 0 1 3 connected
c1 127.0.0.1:7006@17006 master - 0 1 4 connected
";
        let topology = StoreMode::of_cluster_nodes(nodes);
        assert_eq!(
            topology,
            StoreMode::Cluster {
                masters: 3,
                replicas: 3
            }
        );
        assert_eq!(topology.to_string(), "cluster (3 masters, 3 replicas)");
        assert_eq!(StoreMode::Standalone.to_string(), "standalone");
    }

    #[test]
    fn retries_pause_within_the_timeout() {
        for millis in [1, 50, 300, 1000, 5000] {
            let timeout = Duration::from_millis(millis);
            let plan = RetryPlan::within(timeout);
            assert!(plan.retries >= 1, "{millis}ms: {plan:?}");
            assert!(plan.min_wait_ms < plan.max_wait_ms, "{millis}ms: {plan:?}");
            if millis >= 100 {
                let longest = u64::from(plan.retries) * plan.max_wait_ms;
                assert!(longest <= millis, "{millis}ms: {plan:?}");
            }
        }
        assert_eq!(
            RetryPlan::within(Duration::from_millis(300)),
            RetryPlan {
                retries: 4,
                min_wait_ms: 10,
                max_wait_ms: 75
            }
        );
    }
}
