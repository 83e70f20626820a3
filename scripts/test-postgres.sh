#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests: its own cluster in a temporary folder,
# listening on 127.0.0.1 only, trust authentication (nothing but the tests reaches it).
# Usage: scripts/test-postgres.sh start   -> prints the URL to connect with
#        scripts/test-postgres.sh status  -> running | stopped
#        scripts/test-postgres.sh stop
set -euo pipefail

dir=${RAMPART_PG_DIR:-/tmp/rampart-test-postgres}
port=${RAMPART_PG_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "PostgreSQL server binaries not found; run scripts/install-deps.sh" >&2; exit 1; }

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      rm -rf "$dir"
      mkdir -p "$dir"
      [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
      as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/../rampart-test-postgres-initdb.log" 2>&1 \
        || { cat "$dir/../rampart-test-postgres-initdb.log" >&2; exit 1; }
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  status)
    as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 && echo running || echo stopped
    ;;
  stop)
    [ -d "$dir/data" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|status|stop" >&2
    exit 2
    ;;
esac
