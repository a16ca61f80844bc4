#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1:54329 for the distributed tests, installing
# Debian's server if it is missing. Prints the URL to export as ARCHSEARCH_TEST_POSTGRES.
set -euo pipefail
PORT=${PGPORT_TEST:-54329}
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
DATA=/tmp/archsearch-pg-$PORT
if ! su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $DATA status" >/dev/null 2>&1; then
  rm -rf "$DATA" && mkdir -p "$DATA" && chown postgres "$DATA"
  su postgres -s /bin/sh -c "$PGBIN/initdb -D $DATA -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $DATA -l $DATA/log -w start -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200'" >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
