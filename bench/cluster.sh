#!/usr/bin/env bash
# Standalone against Redis Cluster, in one sitting: a private redis-server
# and a private 3-primary cluster (one replica each, created with
# `redis-cli --cluster create`) on free loopback ports; on each, one
# daemon and `kitbash bench` (layer0 backlog, then a worker-layer mix with
# the echo worker). Prints throughput and Redis CPU and commands per query,
# and, for the cluster, each primary's share of the commands.
#
#   bench/cluster.sh                       # target/release/kitbash, N=20000
#   N=50000 RUNS=3 bench/cluster.sh
#   KEEP=1 bench/cluster.sh               # leave the cluster running; prints its seed URL
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
RUNS=${RUNS:-1}
KB=${KB:-$PWD/target/release/kitbash}
[ -x "$KB" ] || cargo build --release --quiet
WORK=$(mktemp -d /tmp/kitbash-cluster.XXXXXX)
free_port() { # a port whose cluster-bus port (+10000) is free too
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p >= 55000: continue
    t = socket.socket()
    try: t.bind(("127.0.0.1", p + 10000))
    except OSError: continue
    finally: t.close()
    print(p); break
PY
}
SERVERS=()
PIDS=()
stop_procs() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_procs
  if [ -z "${KEEP:-}" ]; then
    for port in "${SERVERS[@]}"; do redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  fi
}
trap cleanup EXIT
start_server() { # $1 port, $2.. extra flags
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize yes --logfile "$WORK/redis-$port.log" --pidfile "$WORK/redis-$port.pid" "$@"
  SERVERS+=("$port")
  for _ in $(seq 100); do redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "redis-server on $port did not start" >&2; exit 1
}

SOLO=$(free_port); start_server "$SOLO"
PORTS=()
for _ in 1 2 3 4 5 6; do
  p=$(free_port); while [[ " ${PORTS[*]} " == *" $p "* ]]; do p=$(free_port); done
  PORTS+=("$p")
  start_server "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 2000
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 200); do
  redis-cli -p "${PORTS[0]}" CLUSTER INFO | grep -q 'cluster_state:ok' && break; sleep 0.1
done
sleep 2 # replicas sync
SEED="redis://127.0.0.1:${PORTS[0]}/"
if [ -n "${KEEP:-}" ]; then echo "cluster seed: $SEED (nodes ${PORTS[*]})"; fi

export KITBASH_CONFIG=/dev/null KITBASH_HTTP__ENABLED=false KITBASH_LOGGING__LEVEL=error
NODES=() # the ports a deployment's health keys may be on
ready() { # $1: "daemon" or "layer2" (a daemon that sees a layer2 worker)
  for _ in $(seq 300); do
    for port in "${NODES[@]}"; do
      for key in $(redis-cli -p "$port" --scan --pattern "$KITBASH_REDIS__KEY_PREFIX:health:*"); do
        rec=$(redis-cli -p "$port" GET "$key" 2>/dev/null || true)
        case "$1:$rec" in
          daemon:*'"role":"daemon"'*) sleep 1; return ;;
          layer2:*'"role":"daemon"'*'layer2'*) sleep 1; return ;;
        esac
      done
    done
    sleep 0.1
  done
  echo "no ready daemon ($1)" >&2; exit 1
}

run() { # $1 label, $2 mix; environment names the Redis
  export KITBASH_REDIS__KEY_PREFIX="kbbench$RANDOM"
  "$KB" serve & PIDS+=($!)
  if [ "$2" = worker ]; then
    KITBASH_WORKERS__ECHO_DELAY_MS=0 "$KB" worker echo --layer layer2 --concurrency 64 & PIDS+=($!)
    ready layer2
  else
    ready daemon
  fi
  "$KB" bench -n 2000 --mix "$2" --json >/dev/null # warm-up
  "$KB" bench -n "$N" --mix "$2" --json >"$WORK/out.json"
  stop_procs
  python3 - "$1" "$2" "$WORK/out.json" <<'PY'
import json, sys
label, mix, path = sys.argv[1:]
r = json.load(open(path))
share = "  ".join(f"{n} {p:.1f}%" for n, p in r.get("redis_command_share", []))
print(f"{label:<10} {mix:<7} {r['throughput']:>7.0f}/s  redis CPU {r['redis_cpu_us_per_query']:6.1f} µs/q  "
      f"{r['redis_commands_per_query']:5.1f} cmds/q  completed {r['completed']}/{r['sent']}  {share}")
PY
}

for i in $(seq "$RUNS"); do
  for mix in layer0 worker; do
    NODES=("$SOLO")
    KITBASH_REDIS__CLUSTER=false KITBASH_REDIS__URL="redis://127.0.0.1:$SOLO/0" run standalone "$mix"
    NODES=("${PORTS[@]}")
    KITBASH_REDIS__CLUSTER=true KITBASH_REDIS__URL="$SEED" run cluster "$mix"
  done
done
