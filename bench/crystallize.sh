#!/usr/bin/env bash
# The cascade learning: questions the cartridge layer answers, asked with
# repeats drawn from a Zipf distribution, once with crystallisation on and
# once with it off, against one private redis-server, one daemon and one
# cartridge worker (release build). `kitbash bench --window` prints, per
# window of 1,000 queries, the share layer0 answered, the jobs handed to
# worker layers and the end-to-end percentiles.
#
#   bench/crystallize.sh                  # N=10000 RATE=300 ZIPF=0.8
#   N=20000 RATE=500 ZIPF=1.0 bench/crystallize.sh
#   WORKER=echo DELAY_MS=20 bench/crystallize.sh
#
# WORKER=cartridge (default) answers from the demo cartridges in about half
# a millisecond; WORKER=echo serves layer2 with the echo worker taking
# DELAY_MS per job, a stand-in for a model layer's latency (its answer is
# the question itself, at confidence 1).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RATE=${RATE:-300}
ZIPF=${ZIPF:-0.8}
WINDOW=${WINDOW:-1000}
WORKER=${WORKER:-cartridge}
DELAY_MS=${DELAY_MS:-20}

cargo build --release --quiet
KB=$PWD/target/release/kitbash
WORK=$(mktemp -d /tmp/kitbash-crystallize.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT
export KITBASH_CONFIG=/dev/null KITBASH_REDIS__URL="redis://127.0.0.1:$PORT/0" \
  KITBASH_HTTP__ENABLED=false KITBASH_LOGGING__LEVEL=warn \
  KITBASH_LAYERS__LAYER1__ENABLED=false KITBASH_LAYERS__LAYER4__ENABLED=false
for _ in $(seq 50); do redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done

# Questions the cartridge layer answers (the labelled set's cartridge kinds).
python3 - "$WORK/questions.txt" <<'PY'
import json, sys
out = [json.loads(l)["query"] for l in open("eval/labels.jsonl")
       if l.startswith("{") and json.loads(l)["kind"].startswith("cartridge_")]
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print(f"crystallize.sh: {len(out)} distinct questions", file=sys.stderr)
PY

run() { # $1: label, $2: crystallization.enabled
  local prefix="kbcrystal-$1"
  KITBASH_REDIS__KEY_PREFIX=$prefix KITBASH_CRYSTALLIZATION__ENABLED=$2 "$KB" serve &
  PIDS+=($!)
  if [ "$WORKER" = echo ]; then
    KITBASH_REDIS__KEY_PREFIX=$prefix KITBASH_WORKERS__ECHO_DELAY_MS=$DELAY_MS \
      "$KB" worker echo --layer layer2 --concurrency 64 &
  else
    KITBASH_REDIS__KEY_PREFIX=$prefix "$KB" worker cartridge &
  fi
  PIDS+=($!)
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$PORT" --scan --pattern "$prefix:health:*" | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  sleep 1 # the daemon sees the worker on its next directory refresh
  echo "crystallize.sh: $1 (crystallization.enabled=$2), $N queries at $RATE/s, zipf $ZIPF, worker $WORKER" >&2
  KITBASH_REDIS__KEY_PREFIX=$prefix "$KB" bench --mode paced --rate "$RATE" -n "$N" \
    --questions "$WORK/questions.txt" --zipf "$ZIPF" --window "$WINDOW"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}
run on true
echo
run off false
