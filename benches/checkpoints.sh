#!/usr/bin/env bash
# What checkpoints cost: Q1 over N generated transactions (a window job, state per account and
# window) and the fraud example over N generated payments (a pattern job, state per account),
# each run without checkpoints and with `[checkpoints]` every 1 s and every 200 ms, in
# alternating runs of one session (the machine's speed drifts between sessions). Reports each
# configuration's median wall time and throughput, and the last run's newest checkpoint (its id
# is how many that run completed, its size what one holds).
#
#   benches/checkpoints.sh [N] [WORKERS]      (default 2000000 events, 2 workers)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${EDDY_BENCH_DIR:-$here/../shared/bench}
n=${1:-2000000}
workers=${2:-2}
runs=${RUNS:-3}
work=${EDDY_WORK_DIR:-$here/target/checkpoints}
mkdir -p "$work"
cd "$work"

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
eddy=${CARGO_TARGET_DIR:-$here/target}/release/eddy

if [ ! -f "txn-$n.jsonl" ]; then
  python3 "$bench/gen.py" "$n" "txn-$n.jsonl" >/dev/null
fi
# The fraud example, unpaced, over N payments, its alerts discarded.
sed -e "s/^count = .*/count = $n/" \
    -e 's/^kind = "stdout"/kind = "discard"/' "$here/examples/jobs/fraud.toml" > fraud.toml

configs="none 1s 200ms"
for job in q1 fraud; do
  case $job in
    q1) base="$here/examples/jobs/q1.toml" ;;
    fraud) base="$work/fraud.toml" ;;
  esac
  for c in $configs; do
    cp "$base" "$job-$c.toml"
    if [ "$c" != none ]; then
      printf '\n[checkpoints]\nstore = "store-%s-%s"\ninterval = "%s"\nkeep = 2\n' "$job" "$c" "$c" \
        >> "$job-$c.toml"
    fi
    : > "times-$job-$c.txt"
  done
  for _ in $(seq "$runs"); do
    for c in $configs; do
      rm -rf "store-$job-$c"
      start=$(date +%s.%N)
      EDDY_INPUT="$work/txn-$n.jsonl" EDDY_OUTPUT="$work/$job-$c.csv" \
        "$eddy" run "$job-$c.toml" -w "$workers" 2>/dev/null
      end=$(date +%s.%N)
      echo "$start $end" | awk '{ printf "%.3f\n", $2 - $1 }' >> "times-$job-$c.txt"
    done
  done
  for c in $configs; do
    taken=""
    if [ "$c" != none ]; then
      # Newest first; ids count from 1 in a fresh store, so the newest's is how many completed.
      newest=$(EDDY_INPUT="$work/txn-$n.jsonl" EDDY_OUTPUT="$work/$job-$c.csv" \
        "$eddy" checkpoints "$job-$c.toml" 2>/dev/null | grep -m 1 '^checkpoint' || true)
      taken="; newest: ${newest:-none}"
    fi
    sort -n "times-$job-$c.txt" | awk -v job="$job" -v c="$c" -v n="$n" -v w="$workers" \
        -v runs="$runs" -v taken="$taken" '
      { t[NR] = $1 }
      END {
        m = int((NR + 1) / 2); all = ""
        for (i = 1; i <= NR; i++) all = all sprintf(" %.2f", t[i])
        printf "%s, checkpoints %s: %d events, %d workers, median of %d: %.2f s (%s ), %.0f k events/s%s\n",
          job, c, n, w, runs, t[m], all, n / t[m] / 1000, taken
      }'
  done
done
