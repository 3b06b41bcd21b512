#!/usr/bin/env bash
# Runs "$@" with a throwaway PostgreSQL server on loopback and ATELIER_TEST_POSTGRES_URL set.
# Installs Debian's server package when it is missing (CI machines start without it). If no
# server can be had (no apt, not root), the command runs without it and the PostgreSQL tests are
# skipped; CI (CI=true) refuses to skip them.
set -euo pipefail

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

pgbin=$(find_bin || true)
if [ -z "$pgbin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "tests/postgres.sh: installing PostgreSQL from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 || true
  pgbin=$(find_bin || true)
fi
if [ -z "$pgbin" ]; then
  if [ "${CI:-}" = "true" ]; then echo "tests/postgres.sh: no PostgreSQL server available" >&2; exit 1; fi
  echo "tests/postgres.sh: no PostgreSQL server; PostgreSQL tests will be skipped" >&2
  exec "$@"
fi

dir=$(mktemp -d /tmp/atelier-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_pg "$pgbin/initdb" -D "$dir/data" -U atelier --auth=trust -E UTF8 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=200" start >/dev/null
export ATELIER_TEST_POSTGRES_URL="postgresql+asyncpg://atelier@127.0.0.1:$port/postgres"
"$@"
