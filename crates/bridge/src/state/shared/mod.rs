//! The state shared by every instance, in Redis or Valkey (Memorystore on Google Cloud).
//!
//! Each step that must be atomic is one Lua script, so that a webhook costs two round
//! trips in the common case: admitting the message (claim its id, take the next turn of
//! its conversation, write the turn and its lease) and finishing it (record the outcome,
//! advance the conversation, drop the turn). Waiting for another instance (the turn
//! before, or the first delivery of a message) is a short poll, cut short when the
//! awaited turn finishes in this process. Times come from the server (`TIME`), so the
//! instances' clocks need not agree.
//!
//! Keys, all under `STATE_PREFIX`, are laid out for a cluster's hash slots
//! (`layout.rs` says which and why): everything one conversation needs shares the
//! conversation's tag, and what every instance must find (the conversations a sweeper
//! looks at, the schedules) is spread over tagged buckets. The same layout serves a
//! single server.
//!
//! Round trips, in the common case: a webhook's admission is one (the `ADMIT` script
//! in the conversation's slot, and `MARK` in its bucket's, sent together and awaited
//! together), its finish another (`FINISH`): two, as on a single server. With
//! `AGENT_CALLS_PER_HOUR` set, the budget's count comes first (one more, and only
//! then): the budget is global, and a script runs in one slot.
//!
//! Keys written by the layout before this one (`P:m:…`, `P:c:…`, `P:t:…`, `P:leases`)
//! are not read: they expire within a day, except `P:leases`, which can be deleted. An
//! instance of the new layout does not see the turns an instance of the old one holds,
//! nor its messages: a deploy in the middle of a conversation may ask a re-delivered
//! message again, and leaves the old instances' owed replies to the old instances (sent
//! at SIGTERM as they stop, as today).
//!
//! Sessions are hashes: no phone number is ever part of a key.
//!
//! The files, by job: this one holds [`SharedState`] and the bounded call every other
//! goes through (a failure counted, logged, and left to the caller to fall back on
//! this process's state); `scripts.rs` the Lua scripts; `link.rs` the link to one
//! server or to a cluster; `connection.rs` connecting (TLS, password in the URL or an
//! IAM token, cluster or not) and connecting again; `iam.rs` the IAM access tokens each
//! new connection authenticates with; `certificate.rs` the names on the server's
//! certificate, for `check`; `admission.rs` admitting a message
//! and a re-delivery's wait; `ticket.rs` the turn held: waiting, lease, records,
//! finishing; `takeover.rs` finding and claiming the turns whose lease ran out;
//! `records.rs` and `schedules.rs` the features' records and sorted-set schedules;
//! `pace.rs` the outbound sends' pace, counted per second for the bridge.

mod admission;
mod certificate;
mod connection;
mod forget;
mod iam;
mod layout;
mod link;
mod pace;
mod records;
mod schedules;
mod scripts;
mod takeover;
mod ticket;

pub use certificate::CertificateNames;
pub use connection::{AuthReport, OpenError, StoreMode, StoreReport, Tls};
pub(super) use ticket::SharedTicket;

use super::local::LocalState;
use super::{Json, StoreError};
use crate::metrics::Metrics;
use crate::rate_limit::{Limited, RateLimits, Scope};
use layout::Layout;
use link::{Link, Links};
use redis::Value;
use scripts::Scripts;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell};

/// How long a conversation and its turns are kept without activity.
const CONVERSATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a wait on another instance looks again.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Failures are logged at most this often; the metric counts every one.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The shared store of one process: the connection, this instance's name and fencing
/// tokens, and this process's own state for the calls the server cannot answer.
pub struct SharedState {
    client: redis::Client,
    /// The cluster client, unless `STATE_CLUSTER=off`: used when the server is a
    /// cluster (`connection.rs`).
    cluster_client: Option<redis::cluster::ClusterClient>,
    cluster: crate::config::ClusterMode,
    /// The connections, once made: several to one server, one to a cluster.
    connection: OnceCell<Links>,
    layout: Layout,
    timeout: Duration,
    lease: Duration,
    /// This instance, in the turns it holds.
    owner: String,
    /// TLS and authentication.
    access: connection::Access,
    limits: RateLimits,
    /// Counts the fencing tokens this instance made.
    tokens: AtomicU64,
    /// This process's state, for the messages the shared store cannot take.
    local: Arc<LocalState>,
    metrics: Arc<Metrics>,
    /// Wakes waits in this process when a turn of this process finishes.
    finished: Notify,
    last_warning: std::sync::Mutex<Option<Instant>>,
    scripts: Scripts,
    remembering: crate::state::Remembering,
}

impl SharedState {
    /// Runs one call on the connection, bounded by `STATE_TIMEOUT`; a failure is
    /// counted and logged (at most every few seconds) before it is returned.
    async fn call<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(connection) = self.connection.get() else {
            return Err(self.failed(op, StoreError::Timeout(Duration::ZERO)));
        };
        self.metrics.state_call(op);
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call(connection.next())).await;
        self.metrics.state_call_took(op, started.elapsed());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(op, error.into())),
            Err(_) => Err(self.failed(op, StoreError::Timeout(self.timeout))),
        }
    }

    /// Runs one plain command, bounded, counted and logged as [`SharedState::call`].
    async fn command<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.call(op, |mut connection| async move {
            command.query_async(&mut connection).await
        })
        .await
    }

    fn failed(&self, op: &'static str, error: StoreError) -> StoreError {
        self.metrics.state_error(op, error.label());
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(op, %error, "the shared state store failed; this process's own state serves meanwhile");
        }
        error
    }

    /// How long messages are remembered, outcome and replay.
    fn remembering(&self) -> crate::state::Remembering {
        self.remembering
    }

    /// A fencing token no other turn holder has: this instance's id and a counter.
    fn new_token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.owner)
    }
}

/// A script's value read as text.
fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| StoreError::Corrupt("a value is not UTF-8".into())),
        Value::SimpleString(text) => Ok(text.clone()),
        other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
    }
}

/// The limit a turn went past, as the scripts number them.
fn limited_of(limited: i64, tell: i64) -> Option<Limited> {
    let scope = match limited {
        1 => Scope::Conversation,
        2 => Scope::AgentBudget,
        _ => return None,
    };
    Some(Limited {
        scope,
        tell: tell == 1,
    })
}

/// The records a script read: '' for none.
fn values_of(value: &Value) -> Result<Vec<Option<Json>>, StoreError> {
    match value {
        Value::Array(values) => values
            .iter()
            .map(|v| text(v).map(|t| (!t.is_empty()).then(|| Json::from(t))))
            .collect(),
        other => Err(StoreError::Corrupt(format!(
            "expected records, got {other:?}"
        ))),
    }
}
