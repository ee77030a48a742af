//! The Lua scripts, one per atomic step, each documented with its KEYS, ARGV and
//! answer. A webhook costs two of them in the common case (`ADMIT`, `FINISH`); `NOW`
//! and `ADVANCE` are preludes the scripts that need them start with.

use redis::Script;

/// The scripts, loaded once (by their hash, after the first call).
pub(super) struct Scripts {
    pub(super) admit: Script,
    pub(super) wait_turn: Script,
    pub(super) renew: Script,
    pub(super) record: Script,
    pub(super) finish: Script,
    pub(super) release: Script,
    pub(super) take_over: Script,
    pub(super) claim_due: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            admit: Script::new(&format!("{NOW}{ADMIT}")),
            wait_turn: Script::new(&format!("{ADVANCE}{WAIT_TURN}")),
            renew: Script::new(&format!("{NOW}{HELD}{RENEW}")),
            record: Script::new(&format!("{HELD}{RECORD}")),
            finish: Script::new(&format!("{ADVANCE}{FINISH}")),
            release: Script::new(RELEASE),
            take_over: Script::new(&format!("{NOW}{TAKE_OVER}")),
            claim_due: Script::new(CLAIM_DUE),
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
/// agent budget's count, the message's seen marker (or ''), then records to read when
/// the turn is ready.
/// ARGV: session, turn, token, lease ms, message ttl s, conversation ttl s, turn key
/// prefix, messages a minute per conversation (0: no limit), agent calls an hour (0: no
/// limit).
/// Returns {0, stored} for a repeat, {2} for a replay (the outcome forgotten, the seen
/// marker there), {1, seq, limited, tell, ready, records} for a first
/// delivery (records: the values of the records to read, '' for none, when ready): limited is 0, 1 (the conversation's pace) or 2 (the agent budget); tell is
/// 1 the first time within a minute; ready is 1 when the turns before it are done (no
/// need to wait: the common case costs no further round trip). The same token again
/// (a retry of an admission whose answer was lost) gets the same turn.
const ADMIT: &str = r#"
local function records(ready)
  local values = {}
  if ready == 1 then
    for i = 7, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
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
  if redis.call('EXISTS', KEYS[6]) == 1 then return {2} end
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
/// before seq are done, {1, records} (their values, '' for none); before, {0, done}
/// (how far the conversation got: a wait tells a queue that moves from one that is stuck).
const WAIT_TURN: &str = r#"
local done = advance(KEYS[1], ARGV[2])
if done + 1 >= tonumber(ARGV[1]) then
  local values = {}
  for i = 2, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
  return {1, values}
end
return {0, done}
"#;

/// The start of the scripts that act only for the turn's holder: with the turn
/// `KEYS[1]` gone, -1; held by another token than `ARGV[1]`, 0; else they go on.
const HELD: &str = r#"
local token = redis.call('HGET', KEYS[1], 'token')
if not token then return -1 end
if token ~= ARGV[1] then return 0 end
"#;

/// After HELD. KEYS: turn, leases. ARGV: token, lease ms. 1 if still held (and renewed), 0 if
/// another instance holds it, -1 if the store no longer has the turn.
const RENEW: &str = r#"
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), KEYS[1])
return 1
"#;

/// After HELD. KEYS: turn. ARGV: token, field, value[, field, value]. As RENEW answers.
const RECORD: &str = r#"
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// KEYS: turn, message (or ''), conversation, leases, the message's seen marker (or '').
/// ARGV: token, outcome ('' to forget the message), message ttl s, conversation ttl s,
/// turn key prefix, replay window s. As RENEW answers; with the turn gone, the outcome
/// is still kept. The outcome lives for the message ttl; the seen marker, a few bytes,
/// for the replay window.
const FINISH: &str = r#"
local token = redis.call('HGET', KEYS[1], 'token')
if token and token ~= ARGV[1] then return 0 end
if KEYS[2] ~= '' then
  if ARGV[2] == '' then redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], 'done:' .. ARGV[2], 'EX', ARGV[3])
    redis.call('SET', KEYS[5], '1', 'EX', ARGV[6])
  end
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

/// KEYS: a schedule (`P:due:{index}`). ARGV: an id, now, the end of the lease (Unix
/// seconds, the sweeper's clock, as the schedule's scores are).
/// Claims the id for the lease: moves it to the lease's end if it is still due (no
/// other instance claimed it since it was read). Returns 1 to the one claimer, else 0.
const CLAIM_DUE: &str = r#"
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"#;
