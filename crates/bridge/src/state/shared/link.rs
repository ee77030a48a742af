//! The link to the store: one server, or a Redis or Valkey Cluster.
//!
//! Every call goes through `invoke_async` (the scripts) or `query_async` (plain
//! commands), which need only [`redis::aio::ConnectionLike`]: so the rest of the shared
//! store does not know which it talks to. The cluster client routes `EVALSHA` by its
//! first key (every script's keys share one slot, `layout.rs`), sends `SCRIPT LOAD` to
//! every master, follows `MOVED` and `ASK`, and retries on `TRYAGAIN`, `CLUSTERDOWN`
//! and a closed connection, learning the new topology (`connection.rs` bounds its
//! retries within `STATE_TIMEOUT`). A retried script may have run already: every
//! script is safe to run twice (`ADMIT` gives the same token the same turn, with or
//! without a message; the others are fenced by the turn's token), so a retry never
//! sends a reply twice. When the client's own retries run out with the answer still
//! lost, the admission asks again itself, with the same token (`admission.rs`).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections to one server: calls go out on them in turn. One multiplexed connection
/// reads its answers in order, on one task: with a hundred calls in flight each waited
/// for all those ahead of it on that one socket, and for that task to be scheduled.
/// A few spread the queue and the reading over the runtime's threads. A cluster's
/// client keeps one connection per node already: it gets one link.
pub(super) const CONNECTIONS_TO_ONE_SERVER: usize = 4;

/// The links calls go out on, taken in turn. Never empty.
pub(super) struct Links {
    links: Vec<Link>,
    next: AtomicUsize,
}

impl Links {
    /// `first`, and `more` beside it.
    pub(super) fn new(first: Link, more: impl IntoIterator<Item = Link>) -> Self {
        Self {
            links: std::iter::once(first).chain(more).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The link for the next call.
    pub(super) fn next(&self) -> Link {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.links.len();
        self.links[at].clone()
    }

    pub(super) fn is_cluster(&self) -> bool {
        self.links.iter().any(Link::is_cluster)
    }

    pub(super) fn len(&self) -> usize {
        self.links.len()
    }
}

/// A connection to one server (reconnecting by itself), or to a cluster (following its
/// redirects and failovers by itself). Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A command about the server, answered by one node (of a cluster, any primary):
    /// the cluster client would otherwise ask every primary and answer with a map.
    pub(super) async fn ask_one_node<T: redis::FromRedisValue>(
        &mut self,
        command: &Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Single(connection) => command.query_async(connection).await,
            Self::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
                let value = connection.route_command(command.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

/// Keys asked for at each step of a scan: a few round trips for a large store, each
/// short for the server.
const SCAN_COUNT: u64 = 1000;

impl Link {
    /// Where a scan of every key must go: the one server (`None`), or each primary of
    /// a cluster, named by the first slot it serves.
    pub(super) async fn scan_targets(&mut self) -> redis::RedisResult<Vec<Option<u16>>> {
        let Self::Cluster(connection) = self else {
            return Ok(vec![None]);
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
        let slots = connection
            .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
            .await?;
        let Value::Array(ranges) = slots else {
            return Ok(Vec::new());
        };
        // A primary serving several ranges is scanned once: by the node its first
        // range's slot names, its address the key.
        let mut primaries: Vec<(Value, u16)> = Vec::new();
        for range in ranges {
            let Value::Array(range) = range else { continue };
            let (Some(Value::Int(start)), Some(Value::Array(primary))) =
                (range.first(), range.get(2))
            else {
                continue;
            };
            let address = Value::Array(primary.iter().take(2).cloned().collect());
            if !primaries.iter().any(|(known, _)| *known == address) {
                primaries.push((address, u16::try_from(*start).unwrap_or_default()));
            }
        }
        Ok(primaries.into_iter().map(|(_, slot)| Some(slot)).collect())
    }

    /// One step of `SCAN` on `target` (see [`Link::scan_targets`]): the next cursor
    /// (0 when done) and the keys of this step that match `pattern`.
    pub(super) async fn scan_page(
        &mut self,
        target: Option<u16>,
        cursor: u64,
        pattern: &str,
    ) -> redis::RedisResult<(u64, Vec<String>)> {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        match (self, target) {
            (Self::Cluster(connection), Some(slot)) => {
                use redis::cluster_routing::{Route, SlotAddr};
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let value = connection.route_command(command, routing).await?;
                redis::FromRedisValue::from_redis_value(value).map_err(Into::into)
            }
            (link, _) => command.query_async(link).await,
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}
