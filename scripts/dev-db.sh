#!/usr/bin/env bash
# Prints the DATABASE_URL for a local run of voice-proxy, and nothing else on stdout.
#
# The first of these that works:
#   1. $DATABASE_URL, if set (a .env file loaded by `just` counts);
#   2. the Postgres server on 127.0.0.1:5432, database voice_proxy (created if missing; user
#      postgres, trust authentication);
#   3. a private cluster under target/dev-pg/ on 127.0.0.1:55432, created and started from the
#      Postgres binaries on PATH (or the newest /usr/lib/postgresql/*/bin).
#      Stop it with: pg_ctl -D target/dev-pg/data stop
#
# Everything else this script says goes to stderr.
set -euo pipefail

DB_NAME=voice_proxy
PRIVATE_PORT=55432

log() { printf 'dev-db: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# 1. An explicit URL wins.
if [ -n "${DATABASE_URL:-}" ]; then
    log "using DATABASE_URL from the environment"
    printf '%s\n' "$DATABASE_URL"
    exit 0
fi

# Debian keeps the server binaries off PATH.
if ! command -v initdb >/dev/null 2>&1; then
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$newest" ]; then
        PATH="$newest:$PATH"
        export PATH
    fi
fi

# Creates database $DB_NAME on the server at 127.0.0.1:$1 unless it exists.
ensure_database() {
    local port="$1" exists
    local psql=(psql -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
    exists="$("${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ||
        die "cannot connect to Postgres on 127.0.0.1:$port as user postgres; set DATABASE_URL instead"
    if [ "$exists" != "1" ]; then
        log "creating database $DB_NAME on 127.0.0.1:$port"
        # Tolerate a concurrent creation: check again if CREATE fails.
        if ! "${psql[@]}" -c "CREATE DATABASE $DB_NAME" >&2; then
            exists="$("${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")"
            [ "$exists" = "1" ] || die "could not create database $DB_NAME on 127.0.0.1:$port"
        fi
    fi
}

# 2. The machine's own server.
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    ensure_database 5432
    log "using the Postgres server on 127.0.0.1:5432"
    printf 'postgres://postgres@127.0.0.1:5432/%s\n' "$DB_NAME"
    exit 0
fi

# 3. A private cluster in target/dev-pg/.
command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 ||
    die "no Postgres answers on 127.0.0.1:5432 and initdb/pg_ctl are not installed; install PostgreSQL or set DATABASE_URL"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/target/dev-pg"
data="$dir/data"
logfile="$dir/log"
mkdir -p "$dir"

# Postgres refuses to run as root: run it as the postgres user then.
run_as_owner() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run the private cluster"
    chown postgres: "$dir"
    if [ -e "$logfile" ]; then chown postgres: "$logfile"; fi
    if command -v runuser >/dev/null 2>&1; then
        run_as_owner() { runuser -u postgres -- "$@"; }
    else
        run_as_owner() { sudo -u postgres -- "$@"; }
    fi
fi

if [ ! -s "$data/PG_VERSION" ]; then
    log "initialising a private cluster in $data"
    run_as_owner initdb -D "$data" -U postgres --auth=trust >&2
fi

if ! run_as_owner pg_ctl -D "$data" status >/dev/null 2>&1; then
    log "starting the private cluster on 127.0.0.1:$PRIVATE_PORT (log: $logfile)"
    run_as_owner pg_ctl -D "$data" -w \
        -o "-p $PRIVATE_PORT -k /tmp -c listen_addresses=127.0.0.1" \
        -l "$logfile" start >&2 ||
        die "the private cluster did not start; see $logfile"
fi

ensure_database "$PRIVATE_PORT"
log "using the private cluster on 127.0.0.1:$PRIVATE_PORT (stop it with: pg_ctl -D $data stop)"
printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$PRIVATE_PORT" "$DB_NAME"
