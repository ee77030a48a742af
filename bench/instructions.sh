#!/usr/bin/env bash
# Instructions per webhook, bridge and bare server, counted by callgrind: a figure that
# does not depend on the machine's load, unlike the CPU time `examples/bench.rs` reads.
#
#     cargo build --profile profiling --features jemalloc --bins --examples
#     bench/instructions.sh [MANY] [FEW] [CONCURRENCY]
#
# Each server runs twice under callgrind, once for FEW webhooks and once for MANY (from
# CONCURRENCY senders, signed as Twilio signs by `send_webhooks.py`, answered by the
# emulator with `bench/agent.yaml`'s instant intent); (instructions of MANY - instructions of FEW) /
# (MANY - FEW) leaves out start-up and shutdown. The bridge is configured as
# `examples/bench.rs` configures it; the bare server is its `bare` mode. BIN and BENCH
# name other builds (e.g. target/release). The callgrind files of the MANY runs stay in
# OUT (target/instructions by default) for `callgrind_annotate`.
set -euo pipefail

MANY=${1:-2000}
FEW=${2:-200}
CONCURRENCY=${3:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/profiling/twilio-dialogflow}
BENCH=${BENCH:-$TARGET/profiling/examples/bench}
OUT=${OUT:-$TARGET/instructions}
mkdir -p "$OUT"

for f in "$BIN" "$BENCH"; do
  [[ -x $f ]] || { echo "$f is missing: cargo build --profile profiling --features jemalloc --bins --examples" >&2; exit 1; }
done

. "$ROOT/bench/ports.sh"

EMULATOR_PORT=$(free_port)
"$BIN" emulator --agent "$ROOT/bench/agent.yaml" --port "$EMULATOR_PORT" >/dev/null 2>&1 &
EMULATOR=$!
trap 'kill $EMULATOR 2>/dev/null || true' EXIT
wait_port "$EMULATOR_PORT"

# Runs `$@`, a server listening on port $3, under callgrind in the environment
# SERVER_ENV alone, sends it $2 webhooks, stops it, and prints its instruction count.
count_run() {
  local name=$1 requests=$2 port=$3
  shift 3
  local file="$OUT/callgrind.$name.$requests"
  env -i PATH="$PATH" "${SERVER_ENV[@]}" \
    valgrind --tool=callgrind --callgrind-out-file="$file" "$@" >/dev/null 2>"$file.log" &
  local server=$!
  wait_port "$port"
  "$ROOT/bench/send_webhooks.py" "http://127.0.0.1:$port/" "$CONCURRENCY" "$requests" >&2
  kill -TERM "$server"
  wait "$server" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

bridge() {
  local requests=$1 port
  port=$(free_port)
  SERVER_ENV=(PORT="$port" AGENT_TYPE=CX AGENT_ID=bench GCP_PROJECT=bench-project
    TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000 TWILIO_AUTH_TOKEN=bench-token
    REPLY_MODE=twiml RATE_LIMIT_PER_CONVERSATION=off
    DIALOGFLOW_EMULATOR_HOST="127.0.0.1:$EMULATOR_PORT" TWILIO_API_BASE_URL=http://127.0.0.1:9)
  count_run bridge "$requests" "$port" "$BIN" serve
}

bare() {
  local requests=$1 port
  port=$(free_port)
  SERVER_ENV=()
  count_run bare "$requests" "$port" "$BENCH" bare "$port"
}

for server in bridge bare; do
  few=$($server "$FEW")
  many=$($server "$MANY")
  echo "$server: $(( (many - few) / (MANY - FEW) )) instructions per webhook ($few for $FEW, $many for $MANY)"
done
echo "annotate: callgrind_annotate --inclusive=yes $OUT/callgrind.bridge.$MANY | head -60"
