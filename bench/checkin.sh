#!/usr/bin/env bash
# Check-in load benchmark of the Rampart management server (see bench/README.md).
#
# For each store (embedded SQLite; PostgreSQL in the throw-away cluster of
# scripts/test-postgres.sh) and each fleet size, starts a fresh `rampart server` on 127.0.0.1,
# runs bench/checkin-load against it, stops it, and prints Markdown tables at the end.
#
# Usage: bench/checkin.sh                 full run: 1k, 10k, 50k agents at 60 s, events 1k × 1000
#        QUICK=1 bench/checkin.sh         smoke test: 1k agents, 10 s interval, 20 s; events 100 × 200
# Settings (environment):
#   AGENTS="1000 10000 50000"   fleet sizes of the check-in runs ("" skips them)
#   INTERVAL=60                 check-in interval, seconds
#   DURATION=                   seconds per check-in run, warm-up included (default interval + 10)
#   WARMUP=10                   seconds not counted at the start
#   EVENT_AGENTS=1000 EVENTS_PER_AGENT=1000   the events run (EVENTS_PER_AGENT=0 skips it)
#   STORES="sqlite postgres"    stores to run on
#   CONNECTIONS=64              connections the simulated agents share
#   BENCH_ARGS=                 more options for rampart-bench-checkin, e.g. --new-connection-per-checkin
#   OUT=target/bench-checkin/DATE   where results and server logs are kept
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  AGENTS=${AGENTS-1000}
  INTERVAL=${INTERVAL:-10}
  DURATION=${DURATION:-20}
  EVENT_AGENTS=${EVENT_AGENTS:-100}
  EVENTS_PER_AGENT=${EVENTS_PER_AGENT:-200}
else
  AGENTS=${AGENTS-1000 10000 50000}
  INTERVAL=${INTERVAL:-60}
  DURATION=${DURATION:-}
  EVENT_AGENTS=${EVENT_AGENTS:-1000}
  EVENTS_PER_AGENT=${EVENTS_PER_AGENT:-1000}
fi
WARMUP=${WARMUP:-10}
STORES=${STORES:-sqlite postgres}
CONNECTIONS=${CONNECTIONS:-64}
BENCH_ARGS=${BENCH_ARGS:-}
OUT=${OUT:-target/bench-checkin/$(date +%Y%m%d-%H%M%S)}

rampart=target/release/rampart
bench=target/release/rampart-bench-checkin
pg_port=${RAMPART_PG_PORT:-55432}

server_pid=
sim_pid=
root=
db_name=
pg_url=
pg_started_here=0
failures=0
run_no=0

log() { printf '%s\n' "bench: $*" >&2; }

stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
  if [ -n "$root" ]; then
    rm -rf "$root"
    root=
  fi
  if [ -n "$db_name" ] && [ -n "$pg_url" ]; then
    psql "$pg_url" -qAt -c "DROP DATABASE IF EXISTS $db_name" >/dev/null 2>&1 || true
    db_name=
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$sim_pid" ]; then
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  stop_server
  if [ "$pg_started_here" = 1 ]; then
    log "stopping the throw-away PostgreSQL this script started"
    scripts/test-postgres.sh stop || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# $1: store; $2: database URL or empty. Sets server_pid, root, addr, password.
start_server() {
  root=$(mktemp -d /tmp/rampart-bench.XXXXXX)
  local args=(--root "$root" server --listen 127.0.0.1:0)
  [ -n "$2" ] && args+=(--database "$2")
  RAMPART_LOG=${RAMPART_LOG:-info} "$rampart" "${args[@]}" >"$root/server.out" 2>"$root/server.log" &
  server_pid=$!
  local data="$root/var/lib/rampart/server"
  for _ in $(seq 1 600); do
    if grep -q 'one-time password' "$root/server.out" 2>/dev/null \
      && grep -q ':[0-9]' "$data/listen-address" 2>/dev/null; then
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      cat "$root/server.log" >&2
      log "the server exited at start"
      return 1
    fi
    sleep 0.1
  done
  addr=$(head -n 1 "$data/listen-address")
  password=$(sed -n 's/.*one-time password \([^[:space:]]*\).*/\1/p' "$root/server.out" | head -n 1)
  case "$addr" in
    127.0.0.1:*) ;;
    *) log "the server listens on $addr, not on 127.0.0.1"; return 1 ;;
  esac
  [ -n "$password" ] || { log "no one-time password in the server's output"; return 1; }
  ca="$data/ca.pem"
}

# $1: store; $2: run name; then options for the simulator.
run_one() {
  local store=$1 name=$2
  shift 2
  run_no=$((run_no + 1))
  local url=
  if [ "$store" = postgres ]; then
    db_name="rampart_bench_$$_$run_no"
    psql "$pg_url" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE $db_name" >/dev/null
    url="${pg_url%/*}/$db_name"
  fi
  start_server "$store" "$url"
  log "run $run_no: $store, $name (server pid $server_pid on $addr)"
  local base="$OUT/$run_no-$store-$name"
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of options
  RAMPART_BENCH_ADMIN_PASSWORD=$password "$bench" \
    --server "https://$addr" --ca "$ca" --label "$store" \
    --server-pid "$server_pid" --server-log "$root/server.log" \
    --connections "$CONNECTIONS" "$@" $BENCH_ARGS >"$base.txt" &
  sim_pid=$!
  if wait "$sim_pid"; then :; else
    failures=$((failures + 1))
    log "run $run_no ($store, $name) FAILED"
  fi
  sim_pid=
  cat "$base.txt"
  grep '^RESULT ' "$base.txt" >>"$OUT/results.jsonl" || true
  cp "$root/server.log" "$base.server.log" 2>/dev/null || true
  stop_server
}

command -v psql >/dev/null || case " $STORES " in *" postgres "*)
  log "psql is missing (scripts/install-deps.sh installs PostgreSQL)"; exit 1 ;; esac

log "building release binaries"
cargo build --release -p rampart-cli -p rampart-bench-checkin

# many agents share few connections, but the server and the simulator both want headroom
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 1048576 2>/dev/null || true
log "open files limit: $(ulimit -n)"

mkdir -p "$OUT"
: >"$OUT/results.jsonl"
duration_args=()
[ -n "$DURATION" ] && duration_args=(--duration "$DURATION")

for store in $STORES; do
  case "$store" in
    sqlite) ;;
    postgres)
      if [ -z "$pg_url" ]; then
        if psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -qAt -c 'select 1' >/dev/null 2>&1; then
          pg_started_here=0
        else
          pg_started_here=1
        fi
        pg_url=$(scripts/test-postgres.sh start)
        case "$pg_url" in
          postgres://*@127.0.0.1:*) ;;
          *) log "unexpected PostgreSQL URL: $pg_url"; exit 1 ;;
        esac
      fi
      ;;
    *) log "unknown store $store (sqlite or postgres)"; exit 2 ;;
  esac
  for n in $AGENTS; do
    run_one "$store" "$n-agents" --agents "$n" --interval "$INTERVAL" --warmup "$WARMUP" \
      "${duration_args[@]}"
  done
  if [ "$EVENTS_PER_AGENT" -gt 0 ]; then
    run_one "$store" "events" --agents "$EVENT_AGENTS" --no-checkins \
      --events-per-agent "$EVENTS_PER_AGENT"
  fi
done

if [ ! -s "$OUT/results.jsonl" ]; then
  log "no run produced results; see the output above and $OUT"
  exit 1
fi
{
  echo "Rampart check-in benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), simulator and server on the same machine over 127.0.0.1"
  echo
  "$bench" table "$OUT/results.jsonl"
  echo
  echo "fleet @ 60 s = achieved check-ins/s × 60: the fleet whose check-ins at a 60 s interval the server answered during the run (a lower bound of its capacity unless the run was saturated: see late, errors and server CPU)."
} | tee "$OUT/table.md"
log "results in $OUT"
[ "$failures" -eq 0 ] || { log "$failures run(s) failed"; exit 1; }
