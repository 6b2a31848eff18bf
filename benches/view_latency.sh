#!/usr/bin/env bash
# Point-lookup latency of a view under load: `eddy run` (release) on a paced generator feeding a
# `users` view (count, sum, last per account) served on 127.0.0.1, while wrk GETs
# /views/users/{key} for random keys. Prints the events/s the job ingested during the wrk run
# (from /metrics), the lookups/s, and the lookup latency p50/p99 as wrk measures them.
#
#   benches/view_latency.sh [RATE] [SECONDS] [CONNECTIONS] [WORKERS]
#                           (default 100000 events/s, 20 s, 16 connections, 1 worker)
# ACCOUNTS sets the number of keys (default 10000). Needs wrk (apt-get install wrk) and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rate=${1:-100000}
seconds=${2:-20}
connections=${3:-16}
workers=${4:-1}
accounts=${ACCOUNTS:-10000}
target=${CARGO_TARGET_DIR:-$here/target}
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "view_latency.sh: needs $tool" >&2; exit 1; }
done

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin eddy
eddy=$target/release/eddy
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/job.toml" <<JOB
[job]
name = "view-latency"

[[sources]]
name = "transactions"
kind = "generator"
partitions = 2
rate = $rate
accounts = $accounts
paced = true
event_time = "ts"
out_of_orderness = "1s"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[views]]
name = "users"
source = "transactions"
key = "account_id"
columns = { n = "count", spent = "sum(amount_cents)", last_ts = "last(ts)" }

[server]
listen = "127.0.0.1:0"
JOB
cat > "$work/keys.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/views/users/" .. math.random(0, $accounts - 1))
end
LUA

"$eddy" run "$work/job.toml" -w "$workers" 2> "$work/eddy.log" &
pid=$!
# The server's address, from the line `eddy run` prints once it listens.
addr=
for _ in $(seq 300); do
  addr=$(sed -n 's|.*serving views, /metrics and /health at http://\([0-9.:]*\).*|\1|p' "$work/eddy.log")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/eddy.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "view_latency.sh: the server did not start" >&2; exit 1; }
# Warm up until every key has a row, so the lookups find rows rather than 404s.
for _ in $(seq 600); do
  rows=$(curl -sf "http://$addr/metrics" | awk '$1 == "eddy_view_rows{view=\"users\"}" { print $2 }')
  [ "${rows:-0}" -ge "$accounts" ] && break
  sleep 0.1
done

events_in() { curl -sf "http://$addr/metrics" | awk '$1 == "eddy_events_in_total" { print $2 }'; }
e0=$(events_in); t0=$(date +%s.%N)
wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/keys.lua" "http://$addr" > "$work/wrk.txt"
e1=$(events_in); t1=$(date +%s.%N)
cat "$work/wrk.txt"
awk -v e0="$e0" -v e1="$e1" -v t0="$t0" -v t1="$t1" -v rate="$rate" -v w="$workers" '
  $1 == "50%" { p50 = $2 }
  $1 == "99%" { p99 = $2 }
  $1 == "Requests/sec:" { rps = $2 }
  /Non-2xx/ { non2xx = $NF }
  END {
    printf "\n| workers | paced rate | events/s ingested | lookups/s | p50 | p99 | non-2xx |\n"
    printf "|---|---|---|---|---|---|---|\n"
    printf "| %d | %d | %.0f | %.0f | %s | %s | %d |\n", w, rate, (e1 - e0) / (t1 - t0), rps, p50, p99, non2xx
  }' "$work/wrk.txt"
