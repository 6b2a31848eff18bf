#!/usr/bin/env bash
# The common workload (../shared/bench): Q1 and Q2 over N generated transactions, from the
# JSON-lines file to the sorted CSV on disk (examples/jobs/q1.toml and q2.toml sort in the sink),
# timed as a whole, with peak RSS, checked byte for byte against the Python reference. The same
# queries written in Flink SQL (examples/jobs/q1.sql and q2.sql) run too: their file sinks write
# rows as windows fire, so their output is sorted after the timed run, before the check. Each job
# runs RUNS times (default 3); the median is reported, as for the peers in ../shared/bench.
#
#   benches/workload.sh [N] [WORKERS]        (default 2000000 events, 2 workers)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${EDDY_BENCH_DIR:-$here/../shared/bench}
n=${1:-2000000}
workers=${2:-2}
runs=${RUNS:-3}
work=${EDDY_WORK_DIR:-$here/target/workload}
mkdir -p "$work"
cd "$work"

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
eddy=$here/target/release/eddy

if [ ! -f "txn-$n.jsonl" ]; then
  python3 "$bench/gen.py" "$n" "txn-$n.jsonl" >/dev/null
fi
for job in q1.toml q2.toml q1.sql q2.sql; do
  q=${job%.*}
  if [ ! -f "ref-$q-$n.csv" ]; then
    python3 "$bench/ref.py" "$q" "txn-$n.jsonl" "ref-$q-$n.csv" 2>/dev/null
  fi
  : > times.txt
  for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o rss.txt env EDDY_INPUT="$work/txn-$n.jsonl" EDDY_OUTPUT="$work/$q.csv" \
      "$eddy" run "$here/examples/jobs/$job" -w "$workers" 2>/dev/null
    end=$(date +%s.%N)
    echo "$start $end $(cat rss.txt)" | awk '{ printf "%.3f %d\n", $2 - $1, $3 }' >> times.txt
  done
  if [ "${job#*.}" = sql ]; then
    { head -n 1 "$q.csv"; tail -n +2 "$q.csv" | sort -t, -k1,1n -k2,2n; } > "$q.sorted.csv"
    mv "$q.sorted.csv" "$q.csv"
  fi
  verdict=$(python3 "$bench/check.py" "ref-$q-$n.csv" "$q.csv" | head -n 1)
  sort -n times.txt | awk -v q="$job" -v n="$n" -v w="$workers" -v v="$verdict" -v runs="$runs" '
    { t[NR] = $1; rss[NR] = $2 }
    END {
      m = int((NR + 1) / 2); all = ""
      for (i = 1; i <= NR; i++) all = all sprintf(" %.2f", t[i])
      printf "%s: %d events, %d workers, median of %d: %.2f s (%s ), %.0f k events/s, peak RSS %.0f MiB: %s\n",
        q, n, w, runs, t[m], all, n / t[m] / 1000, rss[m] / 1024, v
    }'
done
