#!/usr/bin/env bash
# The common workload (../shared/bench): Q1 and Q2 over N generated transactions, from the
# JSON-lines file to the sorted CSV on disk (examples/jobs/q1.toml and q2.toml sort in the sink),
# timed as a whole, with peak RSS, and checked byte for byte against the Python reference.
#
#   benches/workload.sh [N] [WORKERS]        (default 2000000 events, 2 workers)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${EDDY_BENCH_DIR:-$here/../shared/bench}
n=${1:-2000000}
workers=${2:-2}
work=${EDDY_WORK_DIR:-$here/target/workload}
mkdir -p "$work"
cd "$work"

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
eddy=$here/target/release/eddy

if [ ! -f "txn-$n.jsonl" ]; then
  python3 "$bench/gen.py" "$n" "txn-$n.jsonl" >/dev/null
fi
for q in q1 q2; do
  if [ ! -f "ref-$q-$n.csv" ]; then
    python3 "$bench/ref.py" "$q" "txn-$n.jsonl" "ref-$q-$n.csv" 2>/dev/null
  fi
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o rss.txt env EDDY_INPUT="$work/txn-$n.jsonl" EDDY_OUTPUT="$work/$q.csv" \
    "$eddy" run "$here/examples/jobs/$q.toml" -w "$workers" 2>/dev/null
  end=$(date +%s.%N)
  verdict=$(python3 "$bench/check.py" "ref-$q-$n.csv" "$q.csv" | head -n 1)
  awk -v q="$q" -v n="$n" -v s="$start" -v e="$end" -v rss="$(cat rss.txt)" -v w="$workers" -v v="$verdict" \
    'BEGIN { t = e - s; printf "%s: %d events, %d workers, %.2f s, %.0f k events/s, peak RSS %.0f MiB: %s\n", q, n, w, t, n / t / 1000, rss / 1024, v }'
done
