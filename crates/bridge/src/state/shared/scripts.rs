//! The Lua scripts, one per atomic step, each documented with its KEYS, ARGV and
//! answer. Every key a script touches is in its KEYS, and all of them in one hash slot
//! (`layout.rs`): a conversation's scripts touch only keys tagged with its session, a
//! bucket's only keys tagged with the bucket. A webhook costs two round trips in the
//! common case: `ADMIT` (with `MARK` on the conversation's bucket, sent at once beside
//! it) and `FINISH`. `NOW`, `ADVANCE` and `HELD` are preludes the scripts that need
//! them start with.

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
    pub(super) mark: Script,
    pub(super) visit: Script,
    pub(super) settle: Script,
    pub(super) count_call: Script,
    pub(super) claim_due: Script,
    pub(super) pace: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            admit: Script::new(&format!("{NOW}{ADMIT}")),
            wait_turn: Script::new(&format!("{ADVANCE}{WAIT_TURN}")),
            renew: Script::new(&format!("{NOW}{HELD}{RENEW}")),
            record: Script::new(&format!("{HELD}{RECORD}")),
            finish: Script::new(&format!("{ADVANCE}{FINISH}")),
            release: Script::new(&format!("{HELD}{RELEASE}")),
            take_over: Script::new(&format!("{NOW}{TAKE_OVER}")),
            mark: Script::new(&format!("{NOW}{MARK}")),
            visit: Script::new(&format!("{NOW}{VISIT}")),
            settle: Script::new(&format!("{NOW}{SETTLE}")),
            count_call: Script::new(COUNT_CALL),
            claim_due: Script::new(CLAIM_DUE),
            pace: Script::new(&format!("{NOW}{PACE}")),
        }
    }
}

/// `now`, in milliseconds, by the server's clock.
const NOW: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Advances the conversation `conversation` past every finished turn after `done`: a
/// turn whose fields are gone (finished out of order, or expired) is passed over, so
/// that `done` only ever names turns all finished before it. Writes only a change: a
/// conversation the store no longer has is not made again without its time to live.
const ADVANCE: &str = r#"
local function advance(conversation)
  local before = tonumber(redis.call('HGET', conversation, 'done') or '0')
  local next = tonumber(redis.call('HGET', conversation, 'next') or '0')
  local done = before
  while done < next and redis.call('HEXISTS', conversation, (done + 1) .. ':token') == 0 do
    done = done + 1
  end
  if done ~= before then redis.call('HSET', conversation, 'done', done) end
  return done
end
"#;

/// KEYS: conversation, the conversation's rate counts, message (for a turn of no
/// message, its claim by token: `Layout::turn_claim`), the message's seen marker (a
/// placeholder in the conversation's slot for a turn of no message), then records to
/// read when the turn is ready.
/// ARGV: turn, token, lease ms, message ttl s, conversation ttl s, messages a minute
/// per conversation (0: no limit), '1' when the agent budget is spent (counted by
/// `COUNT_CALL` before), '1' for a turn of a message.
/// Returns {0, stored} for a repeat, {2} for a replay (the outcome forgotten, the seen
/// marker there), {1, seq, limited, tell, ready, records} for a first delivery
/// (records: the values of the records to read, '' for none, when ready): limited is
/// 0, 1 (the conversation's pace) or 2 (the agent budget); tell is 1 the first time
/// within a minute; ready is 1 when the turns before it are done (no need to wait: the
/// common case costs no further round trip). The same token again (a retry of an
/// admission whose answer was lost) gets the same turn, with or without a message: a
/// turn of no message is claimed for its lease, past which a retry would be fenced
/// out anyway.
const ADMIT: &str = r#"
local c = KEYS[1]
local has_message = ARGV[8] == '1'
local function records(ready)
  local values = {}
  if ready == 1 then
    for i = 5, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
  end
  return values
end
local seen = redis.call('GET', KEYS[3])
if seen then
  local mine = 'pending:' .. ARGV[2] .. ':'
  if string.sub(seen, 1, #mine) ~= mine then return {0, seen} end
  local seq = tonumber(string.sub(seen, #mine + 1))
  local limited = tonumber(redis.call('HGET', c, seq .. ':limited') or '0')
  local done = tonumber(redis.call('HGET', c, 'done') or '0')
  local ready = 0
  if done + 1 >= seq then ready = 1 end
  return {1, seq, limited, 0, ready, records(ready)}
end
if has_message and redis.call('EXISTS', KEYS[4]) == 1 then return {2} end
local limited = 0
local per_minute = tonumber(ARGV[6])
if per_minute > 0 then
  local started = tonumber(redis.call('HGET', KEYS[2], 'started') or '0')
  local count
  if now - started >= 60000 then
    redis.call('HSET', KEYS[2], 'started', now, 'count', 1)
    count = 1
  else
    count = redis.call('HINCRBY', KEYS[2], 'count', 1)
  end
  redis.call('PEXPIRE', KEYS[2], 120000)
  if count > per_minute then limited = 1 end
end
if limited == 0 and ARGV[7] == '1' then limited = 2 end
local tell = 0
if limited > 0 then
  local told = tonumber(redis.call('HGET', KEYS[2], 'told') or '0')
  if now - told >= 60000 then
    tell = 1
    redis.call('HSET', KEYS[2], 'told', now)
    redis.call('PEXPIRE', KEYS[2], 120000)
  end
end
local seq = redis.call('HINCRBY', c, 'next', 1)
local f = seq .. ':'
local key = ''
if has_message then key = KEYS[3] end
redis.call('HSET', c, f .. 'key', key, f .. 'turn', ARGV[1], f .. 'token', ARGV[2], f .. 'lease', now + tonumber(ARGV[3]), f .. 'limited', limited, f .. 'tell', tell)
redis.call('EXPIRE', c, ARGV[5])
if has_message then redis.call('SET', KEYS[3], 'pending:' .. ARGV[2] .. ':' .. seq, 'EX', ARGV[4])
else redis.call('SET', KEYS[3], 'pending:' .. ARGV[2] .. ':' .. seq, 'PX', ARGV[3]) end
local done = tonumber(redis.call('HGET', c, 'done') or '0')
local ready = 0
if done + 1 >= seq then ready = 1 end
return {1, seq, limited, tell, ready, records(ready)}
"#;

/// KEYS: conversation, then records to read. ARGV: seq. Once the turns before seq are
/// done, {1, records} (their values, '' for none); before, {0, done} (how far the
/// conversation got: a wait tells a queue that moves from one that is stuck).
const WAIT_TURN: &str = r#"
local done = advance(KEYS[1])
if done + 1 >= tonumber(ARGV[1]) then
  local values = {}
  for i = 2, #KEYS do values[#values + 1] = redis.call('GET', KEYS[i]) or '' end
  return {1, values}
end
return {0, done}
"#;

/// The start of the scripts that act only for the turn's holder: KEYS[1] the
/// conversation, ARGV[1] the token, ARGV[2] the turn's number. With the turn gone, -1;
/// held by another token, 0; else they go on, `f` the turn's fields' prefix.
const HELD: &str = r#"
local f = ARGV[2] .. ':'
local token = redis.call('HGET', KEYS[1], f .. 'token')
if not token then return -1 end
if token ~= ARGV[1] then return 0 end
"#;

/// After HELD. KEYS: conversation. ARGV: token, seq, lease ms. 1 if still held (and
/// renewed), 0 if another instance holds it, -1 if the store no longer has the turn.
const RENEW: &str = r#"
redis.call('HSET', KEYS[1], f .. 'lease', now + tonumber(ARGV[3]))
return 1
"#;

/// After HELD. KEYS: conversation. ARGV: token, seq, field, value[, field, value]. As
/// RENEW answers.
const RECORD: &str = r#"
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], f .. ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// After HELD. KEYS: conversation. ARGV: token, seq. Lets the lease run out now.
const RELEASE: &str = r#"
redis.call('HSET', KEYS[1], f .. 'lease', 0)
return 1
"#;

/// KEYS: conversation, message, the message's seen marker (placeholders for a turn of
/// no message). ARGV: token, seq, outcome ('' to forget the message), message ttl s,
/// conversation ttl s, replay window s, '1' for a turn of a message. As RENEW answers;
/// with the turn gone, the outcome is still kept. The outcome lives for the message
/// ttl; the seen marker, a few bytes, for the replay window.
const FINISH: &str = r#"
local c = KEYS[1]
local f = ARGV[2] .. ':'
local token = redis.call('HGET', c, f .. 'token')
if token and token ~= ARGV[1] then return 0 end
if ARGV[7] == '1' then
  if ARGV[3] == '' then redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], 'done:' .. ARGV[3], 'EX', ARGV[4])
    redis.call('SET', KEYS[3], '1', 'EX', ARGV[6])
  end
end
redis.call('HDEL', c, f .. 'key', f .. 'turn', f .. 'token', f .. 'lease', f .. 'limited', f .. 'tell', f .. 'answer', f .. 'sent')
advance(c)
redis.call('EXPIRE', c, ARGV[5])
if not token then return -1 end
return 1
"#;

/// KEYS: conversation. ARGV: a token per turn to take, lease ms.
/// Claims the conversation's open turns whose lease ran out, each with a new token and
/// lease. Returns {soonest, taken}: soonest the ms until the first lease of an open turn
/// runs out (-1 with no turn open); taken, per turn: seq, token, message key, turn,
/// answer, sent, limited, tell.
const TAKE_OVER: &str = r#"
local c = KEYS[1]
local done = tonumber(redis.call('HGET', c, 'done') or '0')
local next = tonumber(redis.call('HGET', c, 'next') or '0')
local lease_ms = tonumber(ARGV[#ARGV])
local taken = {}
local soonest = -1
local n = 0
for seq = done + 1, next do
  local f = seq .. ':'
  local token = redis.call('HGET', c, f .. 'token')
  if token then
    local lease = tonumber(redis.call('HGET', c, f .. 'lease') or '0')
    if lease <= now and n < #ARGV - 1 then
      n = n + 1
      token = ARGV[n]
      lease = now + lease_ms
      redis.call('HSET', c, f .. 'token', token, f .. 'lease', lease)
      local v = redis.call('HMGET', c, f .. 'key', f .. 'turn', f .. 'answer', f .. 'sent', f .. 'limited', f .. 'tell')
      for _, value in ipairs({tostring(seq), token, v[1] or '', v[2] or '', v[3] or '', v[4] or '0', v[5] or '0', v[6] or '0'}) do
        table.insert(taken, value)
      end
    end
    local left = math.max(lease - now, 0)
    if soonest < 0 or left < soonest then soonest = left end
  end
end
return {soonest, taken}
"#;

/// KEYS: a bucket's visits (`P:{b:N}:leases`) and marks (`P:{b:N}:marks`). ARGV:
/// session, ms from now. The conversation may hold a lease that runs out: a sweeper
/// looks at it by then at the latest (an earlier visit is kept), and its generation
/// moves on, so that a sweeper that found it idle before does not drop it.
const MARK: &str = r#"
redis.call('ZADD', KEYS[1], 'LT', now + tonumber(ARGV[2]), ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"#;

/// KEYS: a bucket's visits and marks. ARGV: at most how many, lease ms. Claims the
/// conversations due for a visit: each is moved a lease ahead (no other sweeper takes
/// it meanwhile). Returns, per conversation: session, generation.
const VISIT: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, session in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), session)
  table.insert(out, session)
  table.insert(out, redis.call('HGET', KEYS[2], session) or '0')
end
return out
"#;

/// KEYS: a bucket's visits and marks. ARGV: session, the generation its visit saw, ms
/// until its first lease runs out (-1: no turn open).
/// With a turn open, the next visit is when its lease runs out. With none, the
/// conversation is dropped only when it was found idle twice, a lease apart, with no
/// mark between: a `MARK` is sent beside its admission, not after it, so an admission
/// may land just after a visit found the conversation idle; a lease later it is seen.
const SETTLE: &str = r#"
local session = ARGV[1]
local soonest = tonumber(ARGV[3])
if soonest >= 0 then
  redis.call('ZADD', KEYS[1], 'LT', now + soonest, session)
  return 1
end
if (redis.call('HGET', KEYS[2], session) or '0') ~= ARGV[2] then return 0 end
local idle = session .. ':idle'
if redis.call('HGET', KEYS[2], idle) == ARGV[2] then
  redis.call('ZREM', KEYS[1], session)
  redis.call('HDEL', KEYS[2], session, idle)
  return 2
end
redis.call('HSET', KEYS[2], idle, ARGV[2])
return 0
"#;

/// KEYS: the agent budget's count. Counts one agent call this hour; returns the count.
const COUNT_CALL: &str = r#"
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('PEXPIRE', KEYS[1], 3600000) end
return used
"#;

/// KEYS: a schedule (`P:{b:N}:due:{index}`). ARGV: an id, now, the end of the lease
/// (Unix seconds, the sweeper's clock, as the schedule's scores are).
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

/// KEYS: the outbound pace (`P:{pace}:outbound`), a hash of the second it counts
/// (`s`, by the server's clock) and the sends counted in it (`n`). ARGV: sends a
/// second, bridge-wide.
/// Counts one send in this second: returns 0 when it may go now, else the
/// milliseconds until the next second, when it may ask again. One clock (the
/// server's) for every instance, so that a second is the same second for all.
const PACE: &str = r#"
local second = math.floor(now / 1000)
if redis.call('HGET', KEYS[1], 's') ~= tostring(second) then
  redis.call('HSET', KEYS[1], 's', second, 'n', 0)
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], 2000)
if n <= tonumber(ARGV[1]) then return 0 end
return 1000 - (now % 1000)
"#;
