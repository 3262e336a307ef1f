#!/usr/bin/env bash
# Property-based test of the admin API against its own OpenAPI document, with schemathesis.
#
# Builds `voice-proxy`, serves it on a free port against a fresh database, seeds a few pool
# numbers, a pairing and a call (with an event and a recording), then runs `schemathesis run` on
# /v1/openapi.json with the admin token and a bounded number of examples per operation. Any 5xx, any response that breaks the
# documented schema (body, status code, content type, headers), or any auth the API ignores is a
# failure, and the script exits non-zero.
#
# Settings (environment):
#   TEST_DATABASE_URL           Postgres server to create the scratch database on
#                               (default postgres://postgres@127.0.0.1:5432/postgres)
#   SCHEMATHESIS_MAX_EXAMPLES   examples per operation and phase (default 100)
#   SCHEMATHESIS_SEED           random seed (default: a fixed one, so runs are reproducible)
#   SCHEMATHESIS_VERSION        the PyPI release to install (default below)
#   SCHEMATHESIS_PROFILE        cargo profile of the binary: dev (default) or release
#
# schemathesis is installed from PyPI into target/schemathesis/venv the first time.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$PWD"
work="$root/target/schemathesis"
venv="$work/venv"
version="${SCHEMATHESIS_VERSION:-4.32.5}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20261124}"
profile="${SCHEMATHESIS_PROFILE:-dev}"
server_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
token="schemathesis-admin-token-$RANDOM$RANDOM$RANDOM"

say() { echo "schemathesis: $*" >&2; }

mkdir -p "$work"

# 1. schemathesis, from PyPI, in a venv of its own.
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $version\$"; then
    command -v python3 >/dev/null || { say "python3 is needed (to install schemathesis from PyPI)"; exit 1; }
    say "installing schemathesis $version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

# 2. The binary.
if [ "$profile" = release ]; then
    cargo build --quiet --release --bin voice-proxy
    binary="$root/target/release/voice-proxy"
else
    cargo build --quiet --bin voice-proxy
    binary="$root/target/debug/voice-proxy"
fi

# 3. A fresh database, dropped on exit.
command -v psql >/dev/null || { say "psql is needed (to create the scratch database)"; exit 1; }
db="vp_schemathesis_$(date +%s)_$$"
psql_admin=(psql -X -w -q -v ON_ERROR_STOP=1 -d "$server_url")
"${psql_admin[@]}" -c "CREATE DATABASE \"$db\"" >/dev/null
database_url="${server_url%/*}/$db"

server_pid=""
fake_pid=""
cleanup() {
    for pid in "$server_pid" "$fake_pid"; do
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work/spool-$db" "$work/vonage-$db"
    "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
        "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 4. Vonage's media API, faked: a static file server with one recording under /v1/files/. The
# service fetches recordings from it (VONAGE_API_BASE_URL) with an application JWT signed by the
# test-only key in crates/server/tests/fixtures/.
fake_port="$(free_port)"
fake_vonage="http://127.0.0.1:$fake_port"
mkdir -p "$work/vonage-$db/v1/files"
head -c 65536 /dev/urandom >"$work/vonage-$db/v1/files/recording.mp3"
python3 -m http.server "$fake_port" --bind 127.0.0.1 --directory "$work/vonage-$db" \
    >"$work/vonage.log" 2>&1 &
fake_pid=$!

# 5. The service, on a free port.
port="$(free_port)"
base="http://127.0.0.1:$port"
env ADMIN_TOKEN="$token" DATABASE_URL="$database_url" LISTEN_ADDR="127.0.0.1:$port" \
    RETENTION_HASH_KEY="schemathesis-retention-key-$RANDOM$RANDOM" SPOOL_DIR="$work/spool-$db" \
    HTTP_WORKERS=2 LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" COOL_OFF_SECONDS=0 \
    ALLOW_UNSIGNED_WEBHOOKS=true PUBLIC_BASE_URL=https://proxy.example.com \
    VONAGE_APPLICATION_ID=schemathesis-application \
    VONAGE_PRIVATE_KEY_PATH="$root/crates/server/tests/fixtures/vonage-test-private-key.pem" \
    VONAGE_API_BASE_URL="$fake_vonage" \
    "$binary" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { say "the service did not start:"; cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
done
curl -fsS -o /dev/null "$base/readyz" || { say "the service is not ready"; exit 1; }
curl -fsS -o /dev/null "$fake_vonage/v1/files/recording.mp3" || { say "the fake Vonage is not serving"; exit 1; }

# 6. Something to read: pool numbers, a pairing, a call with an event and a recording (streamed
# from the fake Vonage).
auth=(-H "Authorization: Bearer $token")
json=(-H "Content-Type: application/json")
for n in 12125550123 12125550124 12125550125 447911123456; do
    curl -fsS -o /dev/null "${auth[@]}" "${json[@]}" -X POST "$base/v1/numbers" -d "{\"number\": \"$n\"}"
done
pairing="$(curl -fsS "${auth[@]}" "${json[@]}" -X POST "$base/v1/pairings" -d '{
    "reference": "schemathesis-ride",
    "participants": [{"number": "16465550101", "label": "driver"},
                     {"number": "16465550102", "label": "passenger"}]}')"
proxy="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["participants"][0]["proxy_number"])' "$pairing")"
curl -fsS -o /dev/null "$base/webhooks/answer?from=16465550101&to=$proxy&uuid=leg-in-1&conversation_uuid=CON-schemathesis-1" || true
curl -fsS -o /dev/null "${json[@]}" -X POST "$base/webhooks/event" -d '{
    "uuid": "leg-in-1", "conversation_uuid": "CON-schemathesis-1", "status": "completed",
    "direction": "inbound", "from": "16465550101", "to": "'"$proxy"'",
    "timestamp": "2026-01-15T10:02:00.000Z", "duration": "115", "price": "0.023"}' || true
curl -fsS -o /dev/null "${json[@]}" -X POST "$base/webhooks/recording" -d '{
    "recording_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "conversation_uuid": "CON-schemathesis-1",
    "recording_url": "'"$fake_vonage"'/v1/files/recording.mp3",
    "size": 12222, "start_time": "2026-01-15T10:00:05Z", "end_time": "2026-01-15T10:02:00Z"}' || true
curl -fsS -o /dev/null "${auth[@]}" "${json[@]}" -X POST "$base/v1/api-keys" \
    -d '{"name": "seeded", "scopes": ["calls:read"]}'
curl -fsS -o /dev/null "${auth[@]}" "${json[@]}" -X POST "$base/v1/api-keys" \
    -d '{"name": "seeded-recordings", "scopes": ["recordings:read"]}'

# 7. The run, with every check but two that do not fit this API by design:
# - positive_data_acceptance: a schema-valid string is not necessarily a valid phone number (or
#   a free pool number, or an unused reference), so a 4xx for it is right;
# - use_after_free: DELETE retires a pool number or revokes an API key, which stay readable (with
#   retired_at / revoked_at) for the audit, so a GET after a DELETE is a 200 by design.
say "running against $base ($max_examples examples per operation, seed $seed)"
rm -f "$work/report/run.ndjson"
set +e
# From target/schemathesis, where it keeps its cache of crashes (.schemathesis/).
(cd "$work" && "$venv/bin/schemathesis" run "$base/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance,use_after_free \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --workers 2 \
    --request-timeout 10 \
    --no-color \
    --generation-database none \
    --report junit,ndjson --report-dir "$work/report" \
    --report-ndjson-path "$work/report/run.ndjson") 2>&1 | tee "$work/run.log"
status=${PIPESTATUS[0]}
set -e

# What the service answered, by status code, and the test cases that passed and failed.
summarise() {
    python3 - "$work/report/run.ndjson" <<'PY'
import collections, json, sys
statuses, passed, failed = collections.Counter(), 0, 0
for line in open(sys.argv[1]):
    recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
    for interaction in recorder.get("interactions", {}).values():
        response = interaction.get("response")
        statuses[response["status_code"] if response else "no response"] += 1
    for checks in recorder.get("checks", {}).values():
        if any(c.get("status") == "failure" for c in checks):
            failed += 1
        else:
            passed += 1
print("schemathesis: %d requests; responses by status: %s" % (
    sum(statuses.values()), ", ".join("%s x%d" % (k, v) for k, v in sorted(statuses.items(), key=str))))
print("schemathesis: %d passed, %d failed" % (passed, failed))
PY
}

# Errors the service logged, other than actix-http's notes on requests too malformed to parse
# (it answers those 400 itself, before the application sees them).
errors="$(grep -E '"level":"ERROR"|panicked' "$work/server.log" | grep -v '"target":"actix_http::' || true)"
if [ -n "$errors" ]; then
    say "the service logged errors during the run (see $work/server.log):"
    echo "$errors" | head -20 >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    say "FAILED (exit $status); log in $work/run.log, service log in $work/server.log"
fi
summarise || true
exit "$status"
