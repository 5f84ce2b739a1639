#!/usr/bin/env bash
# Takes the README's dashboard screenshots from a real run: asks the running
# stack (`cargo run --release -- up`, in another terminal) a few questions
# with `kitbash query`, then has headless Chromium (Debian's `chromium`)
# render the overview and the path of one query that escalated. Run it on
# a fresh stack (no answers crystallised yet), or the first question is
# answered by layer0.
#
#   bash docs/images/take-screenshots.sh            # writes docs/images/dashboard-*.png
#
# DASHBOARD (default http://127.0.0.1:9464) and KB (default
# ./target/release/kitbash) name others.
set -euo pipefail
cd "$(dirname "$0")/../.."
KB=${KB:-./target/release/kitbash}
DASHBOARD=${DASHBOARD:-http://127.0.0.1:9464}
OUT=docs/images
CHROMIUM=${CHROMIUM:-chromium}

curl -fsS "$DASHBOARD/health/ready" >/dev/null || {
  echo "no ready daemon at $DASHBOARD: start the stack first (cargo run --release -- up)" >&2
  exit 1
}

# A mix: layer0 grains, layer2 cartridge facts, one nobody knows.
questions=(
  "What is the capital of Kenya?"
  "What is the capital of France?"
  "What is the population of Kenya?"
  "Which group is gold in?"
  "What is the capital of Atlantis?"
  "What is the capital of Peru?"
  "What is the population of Japan?"
  "What is the atomic number of iron?"
)
# The query whose waterfall is shown: one that escalates to layer2 (asked
# before the rounds below, which crystallise its answer into a grain).
id=$("$KB" query --json "What is the population of Kenya?" | python3 -c 'import json,sys; print(json.load(sys.stdin)["query_id"])')
for round in 1 2 3; do
  for q in "${questions[@]}"; do
    "$KB" query "$q" >/dev/null || true # unanswered exits 1
  done
done

shot() { # name url height
  nice "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --hide-scrollbars --window-size=1280,"$3" --virtual-time-budget=4000 \
    --screenshot="$OUT/$1.png" "$2" 2>/dev/null
  echo "wrote $OUT/$1.png"
}
shot dashboard-overview "$DASHBOARD/#/overview" 900
shot dashboard-query "$DASHBOARD/#/query/$id" 1250
