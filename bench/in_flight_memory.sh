#!/usr/bin/env bash
# Memory per conversation in flight: the bridge's resident memory while N conversations
# wait for an agent that takes a second to answer (`bench/agent.yaml`'s "slow"), less
# its resident memory before, divided by N. A fresh bridge each run, configured as
# `examples/bench.rs` configures it.
#
#     cargo build --profile profiling --features jemalloc --bins
#     bench/in_flight_memory.sh [N] [RUNS]
#
# BIN names another build (e.g. target/release/twilio-dialogflow).
set -euo pipefail

N=${1:-300}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/profiling/twilio-dialogflow}
[[ -x $BIN ]] || { echo "$BIN is missing: cargo build --profile profiling --features jemalloc --bins" >&2; exit 1; }

. "$ROOT/bench/ports.sh"
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

EMULATOR_PORT=$(free_port)
"$BIN" emulator --agent "$ROOT/bench/agent.yaml" --port "$EMULATOR_PORT" >/dev/null 2>&1 &
EMULATOR=$!
trap 'kill $EMULATOR 2>/dev/null || true' EXIT
wait_port "$EMULATOR_PORT"

for run in $(seq 1 "$RUNS"); do
  port=$(free_port)
  env -i PATH="$PATH" PORT="$port" AGENT_TYPE=CX AGENT_ID=bench GCP_PROJECT=bench-project \
    TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000 TWILIO_AUTH_TOKEN=bench-token \
    REPLY_MODE=twiml RATE_LIMIT_PER_CONVERSATION=off \
    DIALOGFLOW_EMULATOR_HOST="127.0.0.1:$EMULATOR_PORT" TWILIO_API_BASE_URL=http://127.0.0.1:9 \
    "$BIN" serve >/dev/null 2>&1 &
  bridge=$!
  wait_port "$port"
  sleep 0.5
  idle=$(rss_kib "$bridge")
  "$ROOT/bench/send_webhooks.py" "http://127.0.0.1:$port/" "$N" "$N" slow &
  sender=$!
  peak=$idle
  while kill -0 "$sender" 2>/dev/null; do
    now=$(rss_kib "$bridge")
    (( now > peak )) && peak=$now
    sleep 0.02
  done
  wait "$sender"
  kill -TERM "$bridge"
  wait "$bridge" || true
  echo "run $run: idle $idle KiB, peak $peak KiB, $(( (peak - idle) * 1024 / N )) bytes per conversation in flight ($N)"
done
