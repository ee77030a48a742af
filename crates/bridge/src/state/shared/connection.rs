//! Connecting to the server (TLS with `rediss://` and `STATE_CA_FILE`, the password in
//! `STATE_URL`), and connecting again: a server not there at start-up does not stop
//! the bridge. Also what `check` reports of the server.

use super::layout;
use super::scripts::Scripts;
use super::SharedState;
use crate::config::StateSettings;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::retry::{always, Backoff, RetryPolicy};
use crate::state::{LocalState, StoreError};
use redis::aio::ConnectionManagerConfig;
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
}

/// What `check` says of the store.
#[derive(Debug)]
pub struct StoreReport {
    pub server: String,
    pub tls: bool,
    pub latency: Duration,
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
        let tls = url.starts_with("rediss://");
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
        let state = Arc::new(Self {
            client,
            connection: OnceCell::new(),
            layout: layout::Layout::new(&settings.prefix),
            timeout: settings.timeout,
            lease: settings.lease,
            owner: instance_id(),
            tls,
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
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

    /// The server's name and version, whether the connection is encrypted, and a
    /// round trip's time.
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
        Ok(StoreReport {
            server,
            tls: self.tls,
            latency,
        })
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
