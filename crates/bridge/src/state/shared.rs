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
//! Keys, all under `STATE_PREFIX` and all with a time to live (the lease index excepted:
//! its entries leave with their turns):
//! - `P:m:{AccountSid}:{MessageSid}`: `pending`, or `done:` and the outcome;
//! - `P:c:{session}`: the conversation's `next` and `done` turn numbers;
//! - `P:rate:{session}`: the conversation's pace this minute, and when it was told to
//!   slow down; `P:budget`: the agent calls this hour;
//! - `P:t:{session}:{n}`: turn n: its message, fencing token (this instance's id and a
//!   counter: unique, even after the store loses its data), answer, progress, limits;
//! - `P:leases`: turns by the time their lease runs out;
//! - `P:r:{slot}:{session}`: conversation records.
//!
//! Sessions are hashes: no phone number is ever part of a key.

use super::local::LocalState;
use super::{
    Admission, Held, Json, MessageKey, Repeat, StoreError, Stored, TakenOver, Ticket, REMEMBER_FOR,
};
use crate::config::StateSettings;
use crate::metrics::Metrics;
use crate::rate_limit::{Limited, RateLimits, Scope};
use crate::retry::{always, Backoff, RetryPolicy, Verdict};
use crate::session::SessionId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell};

/// How long a conversation and its turns are kept without activity.
const CONVERSATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a wait on another instance looks again.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// At most this many expired turns taken over in one sweep.
const TAKE_AT_MOST: usize = 16;
/// Failures are logged at most this often; the metric counts every one.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// A server not there at start-up is tried again every second until it answers.
const RECONNECT_EVERY: Backoff = Backoff::constant(Duration::from_secs(1));
/// An admission whose answer was lost (a timeout) is asked again once, at once: with
/// the same token, the script gives the same turn.
const READMIT: RetryPolicy = RetryPolicy::new(Backoff::NONE).with_attempt_limit(2);
/// The end of a turn is tried three times, 100 ms then 200 ms apart.
const REFINISH: RetryPolicy = RetryPolicy::new(Backoff::exponential(
    Duration::from_millis(100),
    Duration::from_millis(200),
))
.with_attempt_limit(3);
/// An admission that may have been made unseen is cleared every 200 ms until the store
/// answers, within the lease (`SharedState::clear_lost_admission`).
const CLEAR_EVERY: Backoff = Backoff::constant(Duration::from_millis(200));

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

pub struct SharedState {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    lease: Duration,
    /// This instance, in the turns it holds.
    owner: String,
    tls: bool,
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
}

struct Scripts {
    admit: Script,
    wait_turn: Script,
    renew: Script,
    record: Script,
    finish: Script,
    release: Script,
    take_over: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            admit: Script::new(&format!("{NOW}{ADMIT}")),
            wait_turn: Script::new(&format!("{ADVANCE}{WAIT_TURN}")),
            renew: Script::new(&format!("{NOW}{RENEW}")),
            record: Script::new(RECORD),
            finish: Script::new(&format!("{ADVANCE}{FINISH}")),
            release: Script::new(RELEASE),
            take_over: Script::new(&format!("{NOW}{TAKE_OVER}")),
        }
    }
}

/// `now`, in milliseconds, by the server's clock.
const NOW: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Advances the conversation `KEYS[c]` past every finished turn after `done`: a turn
/// whose key is gone (finished out of order, or expired) is passed over, so that `done`
/// only ever names turns all finished before it.
const ADVANCE: &str = r#"
local function advance(conversation, prefix)
  local done = tonumber(redis.call('HGET', conversation, 'done') or '0')
  local next = tonumber(redis.call('HGET', conversation, 'next') or '0')
  while done < next and redis.call('EXISTS', prefix .. (done + 1)) == 0 do
    done = done + 1
  end
  redis.call('HSET', conversation, 'done', done)
  return done
end
"#;

/// KEYS: message (or ''), conversation, leases, the conversation's rate counts, the
/// agent budget's count, then records to read when the turn is ready.
/// ARGV: session, turn, token, lease ms, message ttl s, conversation ttl s, turn key
/// prefix, messages a minute per conversation (0: no limit), agent calls an hour (0: no
/// limit).
/// Returns {0, stored} for a repeat, {1, seq, limited, tell, ready, records} for a first
/// delivery (records: the values of the records to read, '' for none, when ready): limited is 0, 1 (the conversation's pace) or 2 (the agent budget); tell is
/// 1 the first time within a minute; ready is 1 when the turns before it are done (no
/// need to wait: the common case costs no further round trip). The same token again
/// (a retry of an admission whose answer was lost) gets the same turn.
const ADMIT: &str = r#"
local function records(ready)
  local values = {}
  if ready == 1 then
    for i = 6, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
  end
  return values
end
if KEYS[1] ~= '' then
  local seen = redis.call('GET', KEYS[1])
  if seen then
    local mine = 'pending:' .. ARGV[3] .. ':'
    if string.sub(seen, 1, #mine) ~= mine then return {0, seen} end
    local seq = tonumber(string.sub(seen, #mine + 1))
    local turn = ARGV[7] .. seq
    local limited = tonumber(redis.call('HGET', turn, 'limited') or '0')
    local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '0')
    local ready = 0
    if done + 1 >= seq then ready = 1 end
    return {1, seq, limited, 0, ready, records(ready)}
  end
end
local limited = 0
local per_minute = tonumber(ARGV[8])
if per_minute > 0 then
  local started = tonumber(redis.call('HGET', KEYS[4], 'started') or '0')
  local count
  if now - started >= 60000 then
    redis.call('HSET', KEYS[4], 'started', now, 'count', 1)
    count = 1
  else
    count = redis.call('HINCRBY', KEYS[4], 'count', 1)
  end
  redis.call('PEXPIRE', KEYS[4], 120000)
  if count > per_minute then limited = 1 end
end
local per_hour = tonumber(ARGV[9])
if limited == 0 and per_hour > 0 then
  local used = redis.call('INCR', KEYS[5])
  if used == 1 then redis.call('PEXPIRE', KEYS[5], 3600000) end
  if used > per_hour then limited = 2 end
end
local tell = 0
if limited > 0 then
  local told = tonumber(redis.call('HGET', KEYS[4], 'told') or '0')
  if now - told >= 60000 then
    tell = 1
    redis.call('HSET', KEYS[4], 'told', now)
    redis.call('PEXPIRE', KEYS[4], 120000)
  end
end
local seq = redis.call('HINCRBY', KEYS[2], 'next', 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
local turn = ARGV[7] .. seq
redis.call('HSET', turn, 'key', KEYS[1], 'turn', ARGV[2], 'token', ARGV[3], 'limited', limited, 'tell', tell)
redis.call('EXPIRE', turn, ARGV[6])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), turn)
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], 'pending:' .. ARGV[3] .. ':' .. seq, 'EX', ARGV[5]) end
local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '0')
local ready = 0
if done + 1 >= seq then ready = 1 end
return {1, seq, limited, tell, ready, records(ready)}
"#;

/// KEYS: conversation, then records to read. ARGV: seq, turn key prefix. Once the turns
/// before seq are done, {1, records} (their values, '' for none); 0 before.
const WAIT_TURN: &str = r#"
local done = advance(KEYS[1], ARGV[2])
if done + 1 >= tonumber(ARGV[1]) then
  local values = {}
  for i = 2, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
  return {1, values}
end
return 0
"#;

/// KEYS: turn, leases. ARGV: token, lease ms. 1 if still held (and renewed), 0 if
/// another instance holds it, -1 if the store no longer has the turn.
const RENEW: &str = r#"
local token = redis.call('HGET', KEYS[1], 'token')
if not token then return -1 end
if token ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), KEYS[1])
return 1
"#;

/// KEYS: turn. ARGV: token, field, value[, field, value]. As RENEW answers.
const RECORD: &str = r#"
local token = redis.call('HGET', KEYS[1], 'token')
if not token then return -1 end
if token ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// KEYS: turn, message (or ''), conversation, leases.
/// ARGV: token, outcome ('' to forget the message), message ttl s, conversation ttl s,
/// turn key prefix. As RENEW answers; with the turn gone, the outcome is still kept.
const FINISH: &str = r#"
local token = redis.call('HGET', KEYS[1], 'token')
if token and token ~= ARGV[1] then return 0 end
if KEYS[2] ~= '' then
  if ARGV[2] == '' then redis.call('DEL', KEYS[2])
  else redis.call('SET', KEYS[2], 'done:' .. ARGV[2], 'EX', ARGV[3]) end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], KEYS[1])
advance(KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
if not token then return -1 end
return 1
"#;

/// KEYS: turn, leases. ARGV: token. Lets the lease run out now.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', 0, KEYS[1])
return 1
"#;

/// KEYS: leases. ARGV: a token per turn to take, lease ms.
/// Returns, per turn taken: turn key, token, message key, turn, answer, sent, limited,
/// tell.
const TAKE_OVER: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, #ARGV - 1)
local taken = {}
for i, turn in ipairs(expired) do
  if redis.call('EXISTS', turn) == 1 then
    local token = ARGV[i]
    redis.call('HSET', turn, 'token', token)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[#ARGV]), turn)
    local f = redis.call('HMGET', turn, 'key', 'turn', 'answer', 'sent', 'limited', 'tell')
    for _, v in ipairs({turn, token, f[1] or '', f[2] or '', f[3] or '', f[4] or '0', f[5] or '0', f[6] or '0'}) do
      table.insert(taken, v)
    end
  else
    redis.call('ZREM', KEYS[1], turn)
  end
end
return taken
"#;

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
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            lease: settings.lease,
            owner: instance_id(),
            tls,
            local: Arc::new(LocalState::new(limits)),
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

    /// Runs one call on the connection, bounded by `STATE_TIMEOUT`; a failure is
    /// counted and logged (at most every few seconds) before it is returned.
    async fn call<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(connection) = self.connection.get() else {
            return Err(self.failed(op, StoreError::Timeout(Duration::ZERO)));
        };
        self.metrics.state_call(op);
        match tokio::time::timeout(self.timeout, call(connection.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(op, error.into())),
            Err(_) => Err(self.failed(op, StoreError::Timeout(self.timeout))),
        }
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

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    fn message_key(&self, key: &MessageKey) -> String {
        self.key(&["m", &key.account_sid, &key.message_sid])
    }

    fn turn_prefix(&self, session: &SessionId) -> String {
        format!("{}:", self.key(&["t", session.as_str()]))
    }

    pub(super) async fn admit(
        self: &Arc<Self>,
        key: Option<MessageKey>,
        session: SessionId,
        turn: Json,
        counted: bool,
        reads: &[&'static str],
    ) -> Admission {
        let record_keys: Vec<String> = reads
            .iter()
            .map(|slot| self.key(&["r", slot, session.as_str()]))
            .collect();
        let message_key = key
            .as_ref()
            .map(|k| self.message_key(k))
            .unwrap_or_default();
        let conversation = self.key(&["c", session.as_str()]);
        let token = self.new_token();
        // The script may have run when its answer is lost (a timeout): asked again with
        // the same token, it gives the same turn. Only then is this process's own state
        // used, and the turn left in the store is cleared once the store answers.
        let call = AdmitCall {
            message_key: &message_key,
            conversation: &conversation,
            session: &session,
            turn: &turn,
            token: &token,
            counted,
            record_keys: &record_keys,
        };
        let answer_lost = |error: &StoreError| match error {
            StoreError::Timeout(_) => Verdict::Retry,
            _ => Verdict::Final,
        };
        let admitted = READMIT.run(answer_lost, |_| self.run_admit(&call)).await;
        // More than one attempt: the first one's answer was lost.
        let timed_out = matches!(&admitted, Err(gave_up) if gave_up.attempts > 1);
        match admitted {
            Ok(Admitted::First {
                seq,
                limited,
                ready,
                records,
            }) => Admission::First(Ticket {
                session,
                key,
                limited,
                held: Held::Shared(Box::new(
                    SharedTicket::new(Arc::clone(self), &session, message_key, seq, token, ready)
                        .reading(reads, record_keys, records),
                )),
            }),
            Ok(Admitted::Repeat(seen)) => match (key, seen.strip_prefix("done:")) {
                (_, Some(outcome)) => {
                    let outcome: Json = outcome.into();
                    Admission::Repeat(Repeat::Local(crate::ledger::Repeat::Done(outcome)))
                }
                (Some(key), None) => Admission::Repeat(Repeat::Shared {
                    state: Arc::clone(self),
                    key,
                }),
                (None, None) => self.local.admit(None, session, counted),
            },
            // Counted and logged in `call`: this message is handled as one instance would.
            Err(_) => {
                self.metrics.state_fallback();
                if timed_out && !message_key.is_empty() {
                    tokio::spawn(Arc::clone(self).clear_lost_admission(
                        message_key,
                        conversation,
                        session,
                        token,
                    ));
                }
                self.local.admit(key, session, counted)
            }
        }
    }

    async fn run_admit(&self, call: &AdmitCall<'_>) -> Result<Admitted, StoreError> {
        let AdmitCall {
            message_key,
            conversation,
            session,
            turn,
            token,
            counted,
            record_keys,
        } = *call;
        // Uncounted turns pass no limits: the script then counts nothing.
        let per_conversation = self
            .limits
            .per_conversation
            .filter(|_| counted)
            .map_or(0, |n| n.get());
        let per_hour = self
            .limits
            .agent_calls_per_hour
            .filter(|_| counted)
            .map_or(0, |n| n.get());
        let reply = self
            .call("admit", |mut connection| {
                let mut invocation = self.scripts.admit.prepare_invoke();
                invocation
                    .key(message_key)
                    .key(conversation)
                    .key(self.key(&["leases"]))
                    .key(self.key(&["rate", session.as_str()]))
                    .key(self.key(&["budget"]));
                for record in record_keys {
                    invocation.key(record);
                }
                invocation
                    .arg(session.as_str())
                    .arg(&**turn)
                    .arg(token)
                    .arg(self.lease.as_millis() as u64)
                    .arg(REMEMBER_FOR.as_secs())
                    .arg(CONVERSATION_TTL.as_secs())
                    .arg(self.turn_prefix(session))
                    .arg(per_conversation)
                    .arg(per_hour);
                async move { invocation.invoke_async::<Vec<Value>>(&mut connection).await }
            })
            .await?;
        match reply.as_slice() {
            [Value::Int(0), seen] => Ok(Admitted::Repeat(text(seen)?)),
            [Value::Int(1), Value::Int(seq), Value::Int(limited), Value::Int(tell), Value::Int(ready), records] =>
            {
                Ok(Admitted::First {
                    seq: (*seq).max(0) as u64,
                    limited: limited_of(*limited, *tell),
                    ready: *ready == 1,
                    // A value that cannot be read is read again when asked for: the
                    // turn itself was made, and stands.
                    records: (*ready == 1).then(|| values_of(records).ok()).flatten(),
                })
            }
            other => Err(StoreError::Corrupt(format!("admit answered {other:?}"))),
        }
    }

    /// An admission whose answer never came may still have made a turn in the store,
    /// which would hold up the conversation and, once its lease ran out, be answered a
    /// second time by another instance. This process answered the message itself:
    /// once the store answers again (within the lease), that turn is finished and the
    /// message forgotten there.
    async fn clear_lost_admission(
        self: Arc<Self>,
        message_key: String,
        conversation: String,
        session: SessionId,
        token: String,
    ) {
        let mine = format!("pending:{token}:");
        let clear = || async {
            let seen = self
                .call("outcome", |mut connection| {
                    let message_key = message_key.clone();
                    async move {
                        redis::cmd("GET")
                            .arg(message_key)
                            .query_async::<Option<String>>(&mut connection)
                            .await
                    }
                })
                .await?;
            let seq = seen.and_then(|v| v.strip_prefix(&mine)?.parse::<u64>().ok());
            // The script never ran, or another delivery owns the message: nothing to do.
            let Some(seq) = seq else { return Ok(()) };
            let ticket = SharedTicket::new(
                Arc::clone(&self),
                &session,
                message_key.clone(),
                seq,
                token.clone(),
                true,
            );
            debug_assert_eq!(ticket.conversation, conversation);
            ticket.try_finish(None).await
        };
        // The store has just failed to answer: give it a pause before the first try.
        let first = CLEAR_EVERY.pause(1);
        tokio::time::sleep(first).await;
        let within_lease =
            RetryPolicy::new(CLEAR_EVERY).with_time_limit(self.lease.saturating_sub(first));
        if within_lease.run(always, |_| clear()).await.is_ok() {
            return;
        }
        tracing::error!(
            "an admission the shared store did not confirm could not be cleared: another instance may answer its message again after STATE_LEASE"
        );
    }

    /// A fencing token no other turn holder has: this instance's id and a counter.
    fn new_token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.owner)
    }

    /// Polls the first delivery's outcome: `None` once it is withdrawn, or when the
    /// store cannot say.
    pub(super) async fn wait_outcome(&self, key: &MessageKey) -> Option<Json> {
        let message_key = self.message_key(key);
        loop {
            let seen: Option<String> = self
                .call("outcome", |mut connection| {
                    let message_key = message_key.clone();
                    async move {
                        redis::cmd("GET")
                            .arg(message_key)
                            .query_async(&mut connection)
                            .await
                    }
                })
                .await
                .ok()?;
            match seen?.strip_prefix("done:") {
                Some(outcome) => return Some(outcome.into()),
                None => self.pause().await,
            }
        }
    }

    /// A short wait, cut short when a turn of this process finishes.
    async fn pause(&self) {
        let _ = tokio::time::timeout(POLL_EVERY, self.finished.notified()).await;
    }

    pub(super) async fn take_over_expired(self: &Arc<Self>) -> Vec<TakenOver> {
        let tokens: Vec<String> = (0..TAKE_AT_MOST).map(|_| self.new_token()).collect();
        let taken = self
            .call("take_over", |mut connection| {
                let mut invocation = self.scripts.take_over.prepare_invoke();
                invocation.key(self.key(&["leases"]));
                for token in &tokens {
                    invocation.arg(token);
                }
                invocation.arg(self.lease.as_millis() as u64);
                async move {
                    invocation
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                }
            })
            .await
            .unwrap_or_default();
        taken
            .chunks_exact(8)
            .filter_map(|fields| self.taken_over(fields))
            .collect()
    }

    fn taken_over(self: &Arc<Self>, fields: &[String]) -> Option<TakenOver> {
        let [turn, token, message, data, answer, sent, limited, tell] = fields else {
            return None;
        };
        // `P:t:{session}:{seq}`.
        let (session, seq) = turn
            .strip_prefix(&format!("{}:", self.key(&["t"])))?
            .rsplit_once(':')?;
        let session = SessionId::parse(session)?;
        let key = message
            .strip_prefix(&format!("{}:", self.key(&["m"])))
            .and_then(|rest| rest.split_once(':'))
            .map(|(account_sid, message_sid)| MessageKey {
                account_sid: account_sid.to_owned(),
                message_sid: message_sid.to_owned(),
            });
        let answer = Stored::from_text(answer.as_str().into());
        // The count is the record script's; one it cannot have written is said, and
        // the answer sent from the start (as before any count was recorded).
        let sent = sent.parse().unwrap_or_else(|_| {
            self.metrics.record_unreadable("sent");
            tracing::error!("a taken-over turn's count of messages sent cannot be read: its answer is sent from the start");
            0
        });
        Some(TakenOver {
            ticket: Ticket {
                session,
                key,
                limited: limited_of(limited.parse().unwrap_or(0), tell.parse().unwrap_or(0)),
                held: Held::Shared(Box::new(SharedTicket::new(
                    Arc::clone(self),
                    &session,
                    message.clone(),
                    seq.parse().ok()?,
                    token.clone(),
                    false,
                ))),
            },
            turn: Stored::from_text(data.as_str().into()),
            // The message after those accepted was being sent, or about to be.
            sending: answer.is_some().then_some(sent),
            answer,
            sent,
        })
    }

    pub(super) async fn get_record(&self, slot: &'static str, id: &str) -> Option<Json> {
        let key = self.key(&["r", slot, id]);
        match self
            .call("get_record", |mut connection| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await
        {
            Ok(value) => value.map(Json::from),
            Err(_) => self.local.records.get(slot, id),
        }
    }

    pub(super) async fn set_record(&self, slot: &'static str, id: &str, json: Json, ttl: Duration) {
        let key = self.key(&["r", slot, id]);
        let value = Arc::clone(&json);
        let written = self
            .call("set_record", |mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(&*value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if written.is_err() {
            self.local.records.set(slot, id, json, ttl);
        }
    }

    pub(super) async fn schedule(&self, index: &'static str, id: &str, at: u64) {
        let key = self.key(&["due", index]);
        let member = id.to_owned();
        let written = self
            .call("schedule", |mut connection| async move {
                redis::cmd("ZADD")
                    .arg(key)
                    .arg(at)
                    .arg(member)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if written.is_err() {
            self.local.schedules.schedule(index, id, at);
        }
    }

    /// Up to `limit` ids due at `now`, each taken out by one instance only (`ZREM`
    /// answers 1 to one caller).
    pub(super) async fn claim_due(
        &self,
        index: &'static str,
        now: u64,
        limit: usize,
    ) -> Vec<String> {
        let mut claimed = self.local.schedules.claim_due(index, now, limit);
        let key = self.key(&["due", index]);
        let due_key = key.clone();
        let due = self
            .call("due", |mut connection| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(due_key)
                    .arg(0)
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async::<Vec<String>>(&mut connection)
                    .await
            })
            .await
            .unwrap_or_default();
        for id in due {
            let key = key.clone();
            let member = id.clone();
            let removed = self
                .call("claim", |mut connection| async move {
                    redis::cmd("ZREM")
                        .arg(key)
                        .arg(member)
                        .query_async::<i64>(&mut connection)
                        .await
                })
                .await;
            if matches!(removed, Ok(1)) {
                claimed.push(id);
            }
        }
        claimed
    }

    pub(super) async fn remove_record(&self, slot: &'static str, id: &str) {
        let key = self.key(&["r", slot, id]);
        self.local.records.remove(slot, id);
        let _ = self
            .call("remove_record", |mut connection| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
    }

    /// The server's name and version, whether the connection is encrypted, and a
    /// round trip's time.
    pub async fn report(&self) -> Result<StoreReport, StoreError> {
        if self.connection.get().is_none() {
            self.connect().await?;
        }
        let started = Instant::now();
        let () = self
            .call("ping", |mut connection| async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map(drop)
            })
            .await?;
        let latency = started.elapsed();
        let info: String = self
            .call("info", |mut connection| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut connection)
                    .await
            })
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

fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| StoreError::Corrupt("a value is not UTF-8".into())),
        Value::SimpleString(text) => Ok(text.clone()),
        other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
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

/// What an admission asks the script.
#[derive(Clone, Copy)]
struct AdmitCall<'a> {
    message_key: &'a str,
    conversation: &'a str,
    session: &'a SessionId,
    turn: &'a Json,
    token: &'a str,
    counted: bool,
    record_keys: &'a [String],
}

/// What an admission script said.
enum Admitted {
    First {
        seq: u64,
        limited: Option<Limited>,
        ready: bool,
        /// The records asked for, read when the turn was ready.
        records: Option<Vec<Option<Json>>>,
    },
    Repeat(String),
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

/// What a script that checks the fencing token answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// This instance holds the turn.
    Yes,
    /// Another instance took it over.
    Lost,
    /// The store no longer has the turn (it lost its data): nobody else can work it, so
    /// this instance goes on.
    Gone,
}

impl Holding {
    fn of(answer: i64) -> Self {
        match answer {
            0 => Holding::Lost,
            -1 => Holding::Gone,
            _ => Holding::Yes,
        }
    }
}

/// A turn held in the shared store, by the fencing token this instance got for it.
pub(super) struct SharedTicket {
    state: Arc<SharedState>,
    turn: String,
    turn_prefix: String,
    message: String,
    conversation: String,
    seq: u64,
    token: String,
    /// Another instance took the turn over.
    lost: AtomicBool,
    /// When the store last confirmed the lease (ms since `created`); past the lease
    /// without a confirmation, another instance may hold the turn.
    confirmed: AtomicU64,
    created: Instant,
    /// The turns before it were done when it was admitted.
    ready: AtomicBool,
    /// Records read when the turn became ready: their slots, keys, and values.
    reads: Vec<&'static str>,
    record_keys: Vec<String>,
    records: std::sync::Mutex<Option<Vec<Option<Json>>>>,
}

impl SharedTicket {
    fn new(
        state: Arc<SharedState>,
        session: &SessionId,
        message: String,
        seq: u64,
        token: String,
        ready: bool,
    ) -> Self {
        let turn_prefix = state.turn_prefix(session);
        Self {
            turn: format!("{turn_prefix}{seq}"),
            conversation: state.key(&["c", session.as_str()]),
            turn_prefix,
            message,
            seq,
            token,
            lost: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            created: Instant::now(),
            ready: AtomicBool::new(ready),
            reads: Vec::new(),
            record_keys: Vec::new(),
            records: std::sync::Mutex::new(None),
            state,
        }
    }

    /// The records to read when the turn is ready, and those read already.
    fn reading(
        mut self,
        reads: &[&'static str],
        record_keys: Vec<String>,
        records: Option<Vec<Option<Json>>>,
    ) -> Self {
        self.reads = reads.to_vec();
        self.record_keys = record_keys;
        self.records = std::sync::Mutex::new(records);
        self
    }

    /// Record `slot` of the conversation as it was when the turn became ready: read
    /// with the admission or the wait, else now.
    pub(super) async fn read(&self, slot: &'static str, session: &SessionId) -> Option<Json> {
        let read = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|values| {
                let at = self.reads.iter().position(|r| *r == slot)?;
                Some(values.get(at).cloned().flatten())
            });
        match read {
            Some(value) => value,
            None => self.state.get_record(slot, session.as_str()).await,
        }
    }

    fn confirm(&self) {
        self.confirmed
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// False once another instance took the turn, or once the lease may have run out
    /// unconfirmed (the store could not be reached to renew it).
    pub(super) fn is_held(&self) -> bool {
        let confirmed = Duration::from_millis(self.confirmed.load(Ordering::Relaxed));
        let unconfirmed = self.created.elapsed().saturating_sub(confirmed);
        // A margin for the clocks: the lease runs on the server's.
        !self.lost.load(Ordering::Relaxed) && unconfirmed < self.state.lease * 5 / 6
    }

    fn note(&self, held: Holding) {
        match held {
            Holding::Yes => self.confirm(),
            Holding::Gone => {
                self.confirm();
                tracing::warn!(turn = %self.turn, "the shared store lost this turn (did it restart empty?): this instance goes on with it");
            }
            Holding::Lost => {
                if !self.lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(turn = %self.turn, "another instance took this turn over: its lease ran out");
                }
            }
        }
    }

    pub(super) async fn wait_turn(&self) {
        if self.ready.load(Ordering::Relaxed) {
            return;
        }
        // From a fiftieth of a second to a third: a long queue does not hammer the store.
        let mut pause = POLL_EVERY;
        loop {
            let ready = self
                .state
                .call("wait_turn", |mut connection| {
                    let mut invocation = self.state.scripts.wait_turn.prepare_invoke();
                    invocation.key(&self.conversation);
                    for record in &self.record_keys {
                        invocation.key(record);
                    }
                    invocation.arg(self.seq).arg(&self.turn_prefix);
                    async move { invocation.invoke_async::<Value>(&mut connection).await }
                })
                .await;
            match ready {
                Ok(Value::Int(0)) => {
                    let _ = tokio::time::timeout(pause, self.state.finished.notified()).await;
                    pause = (pause * 2).min(POLL_EVERY * 16);
                }
                Ok(Value::Array(answer)) => {
                    if let Some(Ok(values)) = answer.get(1).map(values_of) {
                        *self
                            .records
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(values);
                    }
                    return;
                }
                // Ready; or the store cannot say, and a person is not kept waiting for it.
                _ => return,
            }
        }
    }

    pub(super) async fn keep_alive<T>(&self, work: impl Future<Output = T>) -> T {
        let renewals = async {
            let every = self.state.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                if !self.renew().await {
                    return;
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => return done,
            () = renewals => {}
        }
        // The turn was lost: the work still ends (its sends check `is_held`).
        work.await
    }

    /// False once another instance holds the turn; a store that cannot answer is not
    /// taken as a loss (the lease may still be good: `is_held` watches its age).
    async fn renew(&self) -> bool {
        let renewed = self
            .state
            .call("renew", |mut connection| {
                let mut invocation = self.state.scripts.renew.prepare_invoke();
                invocation
                    .key(&self.turn)
                    .key(self.state.key(&["leases"]))
                    .arg(&self.token)
                    .arg(self.state.lease.as_millis() as u64);
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if let Ok(answer) = renewed {
            self.note(Holding::of(answer));
        }
        !self.lost.load(Ordering::Relaxed)
    }

    async fn record(&self, fields: &[(&str, &str)]) {
        let recorded = self
            .state
            .call("record", |mut connection| {
                let mut invocation = self.state.scripts.record.prepare_invoke();
                invocation.key(&self.turn).arg(&self.token);
                for (name, value) in fields {
                    invocation.arg(*name).arg(*value);
                }
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if let Ok(answer) = recorded {
            self.note(Holding::of(answer));
        }
    }

    pub(super) async fn record_answer(&self, answer: &Json, sent: usize) {
        self.record(&[("answer", answer), ("sent", &sent.to_string())])
            .await;
    }

    pub(super) async fn record_sent(&self, sent: usize) {
        self.record(&[("sent", &sent.to_string())]).await;
    }

    /// Records the outcome (or forgets the message with `None`) and lets the next turn
    /// go. Tried a few times: a turn that stays unfinished is taken over later, and its
    /// message may then be answered twice, which the log says.
    pub(super) async fn finish(self, outcome: Option<Json>) {
        let finished = REFINISH
            .run(always, |_| self.try_finish(outcome.clone()))
            .await;
        if finished.is_ok() {
            return;
        }
        tracing::error!(
            turn = %self.turn,
            "the end of this turn could not be recorded in the shared store: another instance will take it over after STATE_LEASE, and may answer its message again"
        );
    }

    /// One attempt at [`SharedTicket::finish`]: done once the store answered.
    async fn try_finish(&self, outcome: Option<Json>) -> Result<(), StoreError> {
        let outcome = outcome.as_deref().unwrap_or_default().to_owned();
        let finished = self
            .state
            .call("finish", |mut connection| {
                let mut invocation = self.state.scripts.finish.prepare_invoke();
                invocation
                    .key(&self.turn)
                    .key(&self.message)
                    .key(&self.conversation)
                    .key(self.state.key(&["leases"]))
                    .arg(&self.token)
                    .arg(&outcome)
                    .arg(REMEMBER_FOR.as_secs())
                    .arg(CONVERSATION_TTL.as_secs())
                    .arg(&self.turn_prefix);
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if Holding::of(finished?) == Holding::Lost {
            self.note(Holding::Lost);
        }
        self.state.finished.notify_waiters();
        Ok(())
    }

    pub(super) async fn release(self) -> bool {
        let released = self
            .state
            .call("release", |mut connection| {
                let mut invocation = self.state.scripts.release.prepare_invoke();
                invocation
                    .key(&self.turn)
                    .key(self.state.key(&["leases"]))
                    .arg(&self.token);
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        // Unreleased, its lease still runs out: another instance takes it later.
        !matches!(released, Ok(0))
    }
}
