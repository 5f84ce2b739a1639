#!/usr/bin/env bash
# What one query costs, against a private redis-server and one daemon:
# Redis commands, Redis CPU, daemon CPU and bytes sent to Redis per query
# for layer0 hits and for queries answered by a worker layer (the echo
# worker at layer2), backlog and paced; then the daemon's RSS with 10,000
# queries waiting on a worker layer. Pass two binaries to compare them in
# one sitting, alternating.
#
#   bench/cost.sh                                   # target/release/kitbash
#   bench/cost.sh /tmp/kitbash-old target/release/kitbash
#   N=20000 RUNS=3 bench/cost.sh
#   ONLY=waiting bench/cost.sh                    # only the RSS figure
#
# Bytes are INFO's total_net_input_bytes over the run divided by the
# queries: the bench client's writes (state and queue entry) included.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-1}
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- "$PWD/target/release/kitbash"
fi
WORK=$(mktemp -d /tmp/kitbash-cost.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
PIDS=()
stop() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop; kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true' EXIT
export KITBASH_CONFIG=/dev/null KITBASH_REDIS__URL="redis://127.0.0.1:$PORT/0" \
  KITBASH_HTTP__ENABLED=false KITBASH_LOGGING__LEVEL=error
for _ in $(seq 50); do redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
net_in() { redis-cli -p "$PORT" INFO stats | tr -d '\r' | awk -F: '/^total_net_input_bytes/{print $2}'; }
ready() { # $1: the health-key pattern to wait for (default: any process)
  for _ in $(seq 200); do
    redis-cli -p "$PORT" --scan --pattern "$KITBASH_REDIS__KEY_PREFIX:health:${1:-*}" | grep -q . && break
    sleep 0.1
  done
  sleep 1 # the daemon's worker directory refreshes every 250 ms
}

cost() { # $1 binary, $2 mix, $3 mode
  export KITBASH_REDIS__KEY_PREFIX="kbcost-$RANDOM"
  "$1" serve & PIDS+=($!)
  if [ "$2" = worker ]; then
    KITBASH_WORKERS__ECHO_DELAY_MS=0 "$1" worker echo --layer layer2 --concurrency 64 & PIDS+=($!)
    ready 'echo*'
  fi
  ready
  "$1" bench -n 2000 --mix "$2" --json >/dev/null # warm-up
  local before after
  before=$(net_in)
  "$1" bench -n "$N" --mix "$2" --mode "$3" --rate 1000 --json >"$WORK/out.json"
  after=$(net_in)
  stop
  python3 - "$1" "$2" "$3" "$before" "$after" "$WORK/out.json" <<'PY'
import json, sys
kb, mix, mode, b, a, path = sys.argv[1:]
k = json.load(open(path))
e = k["end_to_end_ms"]
print(f"{kb:32} {mix:6} {mode:7} {k['throughput']:9.0f}/s {k['redis_commands_per_query']:6.1f} cmds "
      f"{k['redis_cpu_us_per_query']:7.1f} µs Redis {k['daemon_cpu_ms_per_1k'] or 0:6.0f} ms daemon/1k "
      f"{(int(a) - int(b)) / max(k['completed'], 1):7.0f} B  p50 {e['p50']:.2f} p99 {e['p99']:.2f} ms")
PY
}

waiting() { # $1 binary: RSS with 10,000 queries waiting on layer2
  export KITBASH_REDIS__KEY_PREFIX="kbcost-$RANDOM"
  KITBASH_ORCHESTRATOR__MAX_IN_FLIGHT=10000 KITBASH_ORCHESTRATOR__LANES__RESERVED_IN_FLIGHT=0 \
    KITBASH_ORCHESTRATOR__MAX_JOBS_PER_LAYER=20000 \
    KITBASH_LAYERS__LAYER2__TIMEOUT_MS=120000 "$1" serve & local d=$!
  PIDS+=($d)
  KITBASH_WORKERS__ECHO_DELAY_MS=600000 "$1" worker echo --layer layer2 --concurrency 1 & PIDS+=($!)
  ready 'echo*'
  ready
  local idle
  idle=$(awk '/VmRSS/{print $2}' /proc/$d/status)
  timeout 200 "$1" bench -n 10000 --mix worker --drain-timeout 30 >/dev/null 2>&1 & local b=$!
  for _ in $(seq 360); do
    [ "$(redis-cli -p "$PORT" LLEN "$KITBASH_REDIS__KEY_PREFIX:jobs:layer2")" -ge 9990 ] && break
    sleep 0.5
  done
  sleep 2
  echo "$1 waiting: $(redis-cli -p "$PORT" LLEN "$KITBASH_REDIS__KEY_PREFIX:jobs:layer2") jobs queued; daemon RSS $(awk '/VmRSS/{print $2}' /proc/$d/status) kB (idle $idle kB)"
  kill "$b" 2>/dev/null || true
  stop
  redis-cli -p "$PORT" FLUSHALL >/dev/null
}

for _ in $(seq "$RUNS"); do
  [ "${ONLY:-}" = waiting ] || for mix in layer0 worker; do
    for mode in backlog paced; do
      for kb in "$@"; do cost "$kb" "$mix" "$mode"; done
    done
  done
  for kb in "$@"; do waiting "$kb"; done
done
