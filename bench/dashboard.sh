#!/usr/bin/env bash
# What an open dashboard costs the deployment it watches, in one sitting: a
# private redis-server whose latency metrics are full (10,000 samples per
# layer, the cap, so every overview refresh reads the most it can), one
# release daemon with its HTTP endpoint, and `kitbash bench` (layer0
# backlog) run alternately with no page open and with headless Chromium
# showing a view on the same machine (the overview refreshes every 2 s; the
# live feed streams decisions), or with the view `stream`: the live feed's
# stream read by curl, the server's share of the cost without a browser.
# Prints throughput and Redis CPU per query for each run.
#
#   bench/dashboard.sh                    # target/release/kitbash, N=20000, RUNS=3, VIEWS="overview feed stream"
#   N=50000 RUNS=5 VIEWS=overview bench/dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
RUNS=${RUNS:-3}
VIEWS=${VIEWS:-overview feed stream}
KB=${KB:-$PWD/target/release/kitbash}
CHROMIUM=${CHROMIUM:-chromium}
[ -x "$KB" ] || cargo build --release --quiet
. bench/lib.sh
start_redis dashboard
HTTP=$(free_port)

export KITBASH_CONFIG=/dev/null KITBASH_LOGGING__LEVEL=error
export KITBASH_REDIS__URL="redis://127.0.0.1:$REDIS/0" KITBASH_REDIS__KEY_PREFIX=kbdash
export KITBASH_HTTP__LISTEN="127.0.0.1:$HTTP"

# Full latency metrics: what a deployment that has run for a while keeps.
python3 - "$REDIS" <<'PY'
import random, socket, sys, time
port = int(sys.argv[1]); now = int(time.time() * 1000)
out = []
def cmd(*args):
    out.append(f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args))
for layer in ("layer0", "layer1", "layer2", "layer4", "query"):
    for i in range(10_000):
        cmd("ZADD", f"kbdash:metrics:latency:{layer}", now - random.randint(0, 290_000), f"{random.random() * 5:.3f}|fill{i}")
s = socket.create_connection(("127.0.0.1", port)); s.sendall("".join(out).encode())
need = len(out); got = 0; buf = b""
while got < need:
    buf += s.recv(65536); got = buf.count(b"\r\n")
PY

"$KB" serve & PIDS+=($!)
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$HTTP/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
"$KB" bench -n 2000 --json >/dev/null # warm-up

bench() { # $1 label
  "$KB" bench -n "$N" --json >"$WORK/out.json"
  python3 - "$1" "$WORK/out.json" <<'PY'
import json, sys
label, path = sys.argv[1:]
r = json.load(open(path))
print(f"{label:<18} {r['throughput']:>7.0f}/s  redis CPU {r['redis_cpu_us_per_query']:6.1f} µs/q  "
      f"{r['redis_commands_per_query']:5.1f} cmds/q  completed {r['completed']}/{r['sent']}")
PY
}

for i in $(seq "$RUNS"); do
  bench "no page"
  for view in $VIEWS; do
    if [ "$view" = stream ]; then # the live feed's stream read by curl: the server's part alone
      curl -sN "http://127.0.0.1:$HTTP/api/feed/stream" >/dev/null &
    else
      "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --user-data-dir="$WORK/chrome" "http://127.0.0.1:$HTTP/#/$view" >/dev/null 2>&1 &
    fi
    chrome=$!
    sleep 3 # the page is up and polling (or streaming)
    bench "$view page open"
    kill -TERM "$chrome" 2>/dev/null || true; wait "$chrome" 2>/dev/null || true
  done
done
