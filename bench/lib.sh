# Shared by bench scripts: a private redis-server on a free port, and the
# processes a script starts beside it, all stopped when the script exits.
#
#   . bench/lib.sh
#   start_redis lanes         # sets WORK (a scratch directory) and REDIS (the port)
#   "$KB" serve & PIDS+=($!)  # stopped (TERM, then waited for) on exit

# A free TCP port on the loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${REDIS:-}" ] && redis-cli -p "$REDIS" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# $1: a name for the scratch directory. Starts redis-server without
# persistence and waits until it answers.
start_redis() {
  WORK=$(mktemp -d "/tmp/kitbash-$1.XXXXXX")
  REDIS=$(free_port)
  trap cleanup EXIT
  redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize yes --logfile "$WORK/redis.log" --pidfile "$WORK/redis.pid"
  for _ in $(seq 100); do redis-cli -p "$REDIS" PING 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "redis-server on $REDIS did not start" >&2
  exit 1
}
