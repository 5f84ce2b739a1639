#!/usr/bin/env bash
# Side by side: BullMQ (no-op jobs, Worker concurrency 50, addBulk) and
# `kitbash bench` (layer0 hits, one daemon) against the same Redis, in one
# run, so the comparison is a ratio taken under the same noise.
#
#   bench/compare.sh                      # N=20000, REDIS_URL=redis://127.0.0.1:6379/0
#   N=50000 REDIS_URL=redis://127.0.0.1:6380/0 bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export REDIS_URL N

command -v node >/dev/null || { echo "compare.sh: node is needed for BullMQ" >&2; exit 2; }
if [ ! -d bench/node_modules/bullmq ]; then
  echo "compare.sh: installing bullmq and ioredis into bench/node_modules" >&2
  (cd bench && npm install --no-audit --no-fund --silent)
fi
cargo build --release --quiet
KB=target/release/kitbash
PREFIX="kbcompare-$$"

echo "compare.sh: BullMQ, $N jobs" >&2
node bench/bullmq.js > /tmp/kitbash-compare-bullmq.json

echo "compare.sh: kitbash, $N queries" >&2
KITBASH_REDIS__URL=$REDIS_URL KITBASH_REDIS__KEY_PREFIX=$PREFIX KITBASH_HTTP__ENABLED=false \
  KITBASH_LOGGING__LEVEL=warn "$KB" serve &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null || true; wait $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  KITBASH_REDIS__URL=$REDIS_URL redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:health:*" | grep -q . && break
  sleep 0.1
done
KITBASH_REDIS__URL=$REDIS_URL KITBASH_REDIS__KEY_PREFIX=$PREFIX "$KB" bench -n "$N" --json \
  > /tmp/kitbash-compare-kitbash.json
kill -TERM $DAEMON; wait $DAEMON || true
trap - EXIT
# What the daemon itself recorded under the bench prefix (feed, metrics, stats).
redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r redis-cli -u "$REDIS_URL" DEL >/dev/null

python3 - <<'PY'
import json
b = json.load(open('/tmp/kitbash-compare-bullmq.json'))
k = json.load(open('/tmp/kitbash-compare-kitbash.json'))
rows = [
    ("throughput (/s)", b["throughput"], k["throughput"]),
    ("Redis commands per job/query", b["redis_commands_per_job"], k["redis_commands_per_query"]),
    ("Redis CPU µs per job/query", b["redis_cpu_us_per_job"], k["redis_cpu_us_per_query"]),
]
print(f"{'':32} {'BullMQ':>12} {'kitbash':>12} {'kitbash/BullMQ':>15}")
for name, x, y in rows:
    print(f"{name:32} {x:12.1f} {y:12.1f} {y / x if x else float('nan'):15.2f}")
e = k["end_to_end_ms"]
print(f"kitbash end-to-end ms: p50 {e['p50']:.3f} p99 {e['p99']:.3f} p99.9 {e['p999']:.3f}; "
      f"daemon peak RSS {k.get('daemon_peak_rss_mb') or 0:.1f} MB")
PY
