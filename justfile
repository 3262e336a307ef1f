# voice-proxy tasks; `just --list` shows them. A .env file, if present, is loaded first.
set dotenv-load

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build (release) and serve, against the database scripts/dev-db.sh picks
run: (_voice-proxy "serve")

# Apply pending migrations to the database scripts/dev-db.sh picks, then exit
migrate: (_voice-proxy "migrate")

# Format every crate
fmt:
    cargo fmt --all

# Check formatting without changing anything
fmt-check:
    cargo fmt --all -- --check

# Clippy on every crate and target, warnings are errors; no import cycle between modules
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    python3 scripts/module-cycles.py

# fmt-check, lint, then the whole test suite against Postgres on 127.0.0.1:5432
test: fmt-check lint
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
        if command -v pg_ctlcluster >/dev/null 2>&1; then
            echo "test: starting Postgres" >&2
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
            for _ in $(seq 30); do
                pg_isready -q -h 127.0.0.1 -p 5432 && break
                sleep 1
            done
        fi
        pg_isready -q -h 127.0.0.1 -p 5432 || echo "test: warning: no Postgres answers on 127.0.0.1:5432" >&2
    fi
    export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    # Integration tests each create a database vp_test_<hex>; drop those left by earlier runs.
    # Only those created more than 10 minutes ago (when the server lets us read that), and without
    # FORCE, so that a test run in progress next to this one keeps its databases.
    psql_admin=(psql -X -w -q -tA -d "$TEST_DATABASE_URL")
    leftovers="$("${psql_admin[@]}" -c "SELECT datname FROM pg_database
        WHERE left(datname, 8) = 'vp_test_'
          AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - interval '10 minutes'" 2>/dev/null ||
        "${psql_admin[@]}" -c "SELECT datname FROM pg_database WHERE left(datname, 8) = 'vp_test_'" 2>/dev/null || true)"
    for db in $leftovers; do
        "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || echo "test: kept $db (in use)" >&2
    done
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace
    else
        cargo test --workspace
    fi
    # The admin API against its own OpenAPI document (schemathesis, installed from PyPI).
    scripts/schemathesis.sh

# schemathesis against the admin API's OpenAPI document: SCHEMATHESIS_MAX_EXAMPLES, _SEED to vary
schemathesis:
    scripts/schemathesis.sh

# voice-proxy on a three-node Patroni cluster through a crash, a failover and a switchover (needs root)
test-ha:
    scripts/test-ha.sh

# Start the three-node Patroni cluster (etcd, HAProxy on 127.0.0.1:5440) under target/ha-cluster
ha-up:
    scripts/ha-cluster.sh up

# Stop the Patroni cluster and delete its state
ha-down:
    scripts/ha-cluster.sh down

# Everything CI runs
ci: test test-ha

# Fuzz phone-number, event-payload and money parsing, each target for `seconds`; fails on a crash (fuzz/README.md)
fuzz seconds="180" *targets:
    fuzz/fuzz.sh {{ seconds }} {{ targets }}

# Call-path benchmark: 1M pairings; /healthz, answer and event webhooks with wrk; pgbench route lookup
bench:
    scripts/bench-calls.sh

# Callbacks benchmark: deliveries/s to local receivers; answer rate and p99 with 3 endpoints (1 dead) vs none
bench-callbacks:
    scripts/bench-callbacks.sh

# Pairing benchmark: seed 1M pairings, pgbench, creates over HTTP, answer latency; see BENCHMARKS.md
bench-pairings:
    scripts/bench-pairings.sh

# Runs `voice-proxy <command>` with the dev database, pretty logs and a dev admin token if unset.
[private]
_voice-proxy command:
    #!/usr/bin/env bash
    set -euo pipefail
    database_url="$(scripts/dev-db.sh)"
    export DATABASE_URL="$database_url"
    export LOG_FORMAT="${LOG_FORMAT:-pretty}"
    if [ -z "${ADMIN_TOKEN:-}" ]; then
        export ADMIN_TOKEN=dev-admin-token-change-me
        echo "" >&2
        echo "  NOTICE: ADMIN_TOKEN is not set; using the development token" >&2
        echo "          'dev-admin-token-change-me'. Never expose this instance;" >&2
        echo "          set ADMIN_TOKEN (e.g. in .env) for anything real." >&2
        echo "" >&2
    fi
    if [ -z "${VONAGE_SIGNATURE_SECRET:-}" ] && [ -z "${ALLOW_UNSIGNED_WEBHOOKS:-}" ]; then
        export ALLOW_UNSIGNED_WEBHOOKS=true
        echo "  NOTICE: VONAGE_SIGNATURE_SECRET is not set; serving the webhooks UNSIGNED" >&2
        echo "          (ALLOW_UNSIGNED_WEBHOOKS=true) for local development. Anyone who can" >&2
        echo "          reach this instance can read whom a pool number connects to." >&2
        echo "" >&2
    fi
    if [ -z "${RETENTION_HASH_KEY:-}" ] && [ "${RETENTION_DAYS:-90}" != "0" ]; then
        export RETENTION_HASH_KEY=dev-retention-key-change-me
        echo "  NOTICE: RETENTION_HASH_KEY is not set; using a development key." >&2
        echo "" >&2
    fi
    exec cargo run --release --bin voice-proxy -- {{ command }}
