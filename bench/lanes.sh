#!/usr/bin/env bash
# Priority lanes under a backlog, in one sitting, on a private redis-server
# with one release daemon (layer0 answers every bench query):
#   1. idle: a high query's end-to-end latency (paced, `--priority-mix high=1`);
#   2. the same while at least BACKLOG low queries are queued and draining
#      (2 x BACKLOG are pushed while the daemon is stopped; the low lane's
#      length is sampled every 20 ms while the high queries are sent, and
#      its least and greatest, and low's drain rate, are printed);
#   3. BACKLOG low and BACKLOG normal queued at once: how fast each lane
#      drains while both have entries (LLEN sampled every 50 ms), so low's
#      share of the takes can be read against its minimum share.
#
#   bench/lanes.sh                    # target/release/kitbash, BACKLOG=50000, HIGH=50 at RATE=100/s
#
# The high queries of step 2 count only if the low lane held about BACKLOG
# or more throughout (the script prints its least length).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKLOG=${BACKLOG:-50000}
HIGH=${HIGH:-50}
RATE=${RATE:-100}
KB=${KB:-$PWD/target/release/kitbash}
[ -x "$KB" ] || cargo build --release --quiet
. bench/lib.sh
start_redis lanes

export KITBASH_CONFIG=/dev/null KITBASH_LOGGING__LEVEL=error KITBASH_HTTP__ENABLED=false
export KITBASH_REDIS__URL="redis://127.0.0.1:$REDIS/0" KITBASH_REDIS__KEY_PREFIX=kblanes
"$KB" serve & PIDS+=($!)
for _ in $(seq 300); do
  [ -n "$(redis-cli -p "$REDIS" --scan --pattern 'kblanes:health:*')" ] && break; sleep 0.1
done
"$KB" bench -n 2000 --json >/dev/null # warm-up

high() { # $1 label
  "$KB" bench --mode paced --rate "$RATE" -n "$HIGH" --priority-mix high=1 --json >"$WORK/high.json"
  python3 - "$1" "$WORK/high.json" <<'PY'
import json, sys
label, path = sys.argv[1:]
r = json.load(open(path))
l = r["end_to_end_ms_by_lane"]["high"]
print(f"{label:<34} high e2e ms  p50 {l['p50']:7.3f}  p95 {l['p95']:7.3f}  p99 {l['p99']:7.3f}  max {l['max']:7.3f}  ({l['count']} queries)")
PY
}

high "idle"

# The low backlog: 2 x BACKLOG pushed while the daemon is stopped (SIGSTOP),
# so no pusher competes with the measurement; then the daemon goes on and
# the high queries start at once. The low lane's length is sampled every
# 20 ms for the HIGH/RATE s the high queries are sent in, plus 1.5 s.
DAEMON=${PIDS[0]}
kill -STOP "$DAEMON"
"$KB" bench -n "$((BACKLOG * 2))" --priority-mix low=1 --json >"$WORK/low.json" &
LOW=$!
until [ "$(redis-cli -p "$REDIS" LLEN kblanes:queries:queue:low)" -ge "$((BACKLOG * 2))" ]; do sleep 0.05; done
kill -CONT "$DAEMON"
WINDOW=$(python3 -c "print($HIGH / $RATE + 1.5)")
high "with $BACKLOG+ low queued" &
HIGHRUN=$!
python3 - "$REDIS" "$WINDOW" <<'PY'
import sys, time, redis
r, window = redis.Redis(port=int(sys.argv[1])), float(sys.argv[2])
samples, end = [], time.monotonic() + window
while time.monotonic() < end:
    samples.append((time.monotonic(), r.llen("kblanes:queries:queue:low")))
    time.sleep(0.02)
(t0, l0), (t1, l1) = samples[0], samples[-1]
lens = [l for _, l in samples]
print(f"low queued in the {window} s the high queries were sent in: least {min(lens)}, "
      f"greatest {max(lens)}; drained at {(l0 - l1) / (t1 - t0):.0f} /s meanwhile")
PY
wait "$HIGHRUN"
wait "$LOW"
python3 - "$WORK/low.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# (its throughput counts the time the daemon was stopped: the drain rate
# above is the figure)
print(f"low backlog: {r['completed']}/{r['sent']} completed")
PY

# Low against a saturated normal lane: each lane's drain rate while both
# have entries.
python3 - "$REDIS" "$BACKLOG" "$KB" <<'PY'
import subprocess, sys, time, redis
port, n, kb = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = redis.Redis(port=port)
bench = subprocess.Popen([kb, "bench", "-n", str(2 * n), "--priority-mix", "normal=0.5,low=0.5", "--json"],
                         stdout=subprocess.DEVNULL)
samples = []
while bench.poll() is None:
    p = r.pipeline()
    p.llen("kblanes:queries:queue"); p.llen("kblanes:queries:queue:low")
    normal, low = p.execute()
    samples.append((time.monotonic(), normal, low))
    time.sleep(0.05)
# Drained per lane between samples where both lanes had entries (and the
# push was over: both lanes shrinking or still).
drained_n = drained_l = 0
peak = max(range(len(samples)), key=lambda i: samples[i][1] + samples[i][2])
for (t0, n0, l0), (t1, n1, l1) in zip(samples[peak:], samples[peak + 1:]):
    if n1 > 0 and l1 > 0:
        drained_n += max(n0 - n1, 0); drained_l += max(l0 - l1, 0)
total = drained_n + drained_l
if total:
    print(f"normal and low both queued: low got {drained_l / total:.1%} of {total} takes "
          f"(minimum share 5.0%), normal {drained_n / total:.1%}")
else:
    print("normal and low were never both queued after the push (raise BACKLOG)")
PY
