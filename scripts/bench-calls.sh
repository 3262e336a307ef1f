#!/usr/bin/env bash
# The call-path benchmark (`just bench`): issue 5, item 1.
#
#  1. builds the release binary; installs wrk (Debian package) if it is missing;
#  2. creates and migrates a database ($BENCH_DB, default vp_bench_calls) and seeds 1,000,000
#     active pairings over 10,000 pool numbers with scripts/bench/seed.sql; samples 20,000
#     existing (caller, proxy number) pairs of active pairings;
#  3. serves it with `voice-proxy serve` (release, JSON logs at warn);
#  4. measures, in this order and in one run: the HTTP ceiling (GET /healthz), the answer webhook
#     with random existing pairs (scripts/bench/answer.lua), the event webhook with realistic
#     sequences of both legs and 10% retries (scripts/bench/events.lua), each with wrk at
#     $CONNECTIONS connections for $DURATION s; and the database ceiling: pgbench running the
#     route lookup SQL (scripts/bench/route.pgbench) with the same number of clients;
#  5. prints requests/s, p50 and p99 for each, events stored per second, and the ratios.
#
# Settings: BENCH_DB, BENCH_PG_URL (server without a database), CONNECTIONS=64, DURATION=20,
# WRK_THREADS=2, KEEP=1 (keep the database), REUSE=1 (reuse a seeded $BENCH_DB), SERVER_ENV="K=V".
set -euo pipefail
cd "$(dirname "$0")/.."

DB="${BENCH_DB:-vp_bench_calls}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-20}"
WRK_THREADS="${WRK_THREADS:-2}"
OUT="${BENCH_OUT:-target/bench-calls}"
mkdir -p "$OUT"
say() { echo "bench: $*" >&2; }

for bin in psql pgbench; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1):$PATH"
    fi
done
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (Debian package)"
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
psql_db() { psql -X -q -w -v ON_ERROR_STOP=1 -d "$PG_URL/$1" "${@:2}"; }

say "building the release binary"
cargo build --release --quiet --bin voice-proxy
BIN=target/release/voice-proxy

if [ "${REUSE:-0}" = 1 ] && psql_db "$DB" -tAc "SELECT count(*) FROM bench_pairs" >/dev/null 2>&1; then
    say "reusing the seeded database $DB"
else
    psql_db postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    DATABASE_URL="$PG_URL/$DB" RETENTION_DAYS=0 "$BIN" migrate >/dev/null
    say "seeding 1,000,000 pairings"
    started=$(date +%s.%N)
    psql_db "$DB" -v pool_per_country=5000 -v pairings=1000000 -v drivers_per_country=50000 \
        -f scripts/bench/seed.sql >/dev/null
    say "seeded in $(echo "$(date +%s.%N) - $started" | bc) s"
    psql_db "$DB" -c "CREATE TABLE bench_pairs AS
        SELECT row_number() OVER () AS id, number AS caller, proxy_number AS proxy
          FROM (SELECT number, proxy_number FROM participants
                 WHERE upper(active_during) > now() + interval '1 hour'
                 ORDER BY random() LIMIT 20000) s;
        ALTER TABLE bench_pairs ADD PRIMARY KEY (id); ANALYZE bench_pairs;"
fi
psql_db "$DB" -tAc "SELECT caller || ' ' || proxy FROM bench_pairs" > "$OUT/pairs.txt"
pairs=$(wc -l < "$OUT/pairs.txt")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$OUT/spool"
# shellcheck disable=SC2086
# The load generator calls the webhooks unsigned, as no Vonage is in the loop.
server_started=$(date +%s.%N)
env DATABASE_URL="$PG_URL/$DB" ADMIN_TOKEN=bench-admin-token-0123456789 RETENTION_DAYS=0 ALLOW_UNSIGNED_WEBHOOKS=true \
    LISTEN_ADDR="127.0.0.1:$port" LOG_FORMAT=json RUST_LOG=warn SPOOL_DIR="$OUT/spool" \
    ${SERVER_ENV:-} "$BIN" serve > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { say "the service did not get ready"; cat "$OUT/server.log"; exit 1; }
# Let the in-memory routes load, so that it does not compete with the measurement.
for _ in $(seq 300); do
    grep -q "loaded the routes" "$OUT/server.log" 2>/dev/null && break
    curl -fs "http://127.0.0.1:$port/metrics" | grep -q '^routes_in_memory [1-9]' && break
    sleep 0.1
done
# Start-up at 1M pairings: from the process start until every route is in memory; and the
# process's memory then (sizing: most of it is the route copy).
startup_seconds=$(awk -v a="$server_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
routes_loaded=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^routes_in_memory /{print $2}')
rss_mib=$(awk '/^VmRSS:/{printf "%.0f", $2 / 1024}' "/proc/$server/status")

# wrk's --latency output: requests/s, p50 and p99 in milliseconds.
run_wrk() { # name, extra wrk args...
    local name=$1; shift
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" > "$OUT/$name.txt"
    python3 - "$OUT/$name.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {bad.group(1) if bad else 0} {'yes' if errors else 'no'}")
PY
}

base="http://127.0.0.1:$port"
# Conversation ids of this run, so that a reused database holds none of them yet.
export VP_RUN="$(date +%s)"
# Each phase starts from the same state: a checkpoint first, so that the WAL written before (the
# seed, or the previous phase's records) is not flushed during the measurement.
checkpoint() { psql_db "$DB" -qc "CHECKPOINT" >/dev/null; }
checkpoint
say "HTTP ceiling: GET /healthz"
read -r h_rps h_p50 h_p99 h_bad h_err < <(run_wrk healthz "$base/healthz")
calls_before=$(psql_db "$DB" -tAc "SELECT count(*) FROM calls")
say "answer webhook"
read -r a_rps a_p50 a_p99 a_bad a_err < <(VP_PAIRS="$OUT/pairs.txt" run_wrk answer -s scripts/bench/answer.lua "$base")
a_requests=$(awk '/requests in/{print $1; exit}' "$OUT/answer.txt")
# Answers are acknowledged once their call record is fsynced in the spool; the drainer moves the
# records into Postgres right behind. Wait until the spool is empty and say how long that took.
drain_started=$(date +%s.%N)
for _ in $(seq 1200); do
    depth=$(curl -fs "$base/metrics" | awk '/^spool_depth /{print $2}')
    [ "${depth:-1}" = 0 ] && break
    sleep 0.1
done
drain_seconds=$(awk -v a="$drain_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
calls_after=$(psql_db "$DB" -tAc "SELECT count(*) FROM calls")
# The spool's fsyncs during the answer phase (each acknowledges the answers of its moment).
read -r fsyncs fsync_10ms fsync_100ms < <(curl -fs "$base/metrics" | awk '
    /^spool_fsync_duration_seconds_bucket\{le="0.01"\}/ { le10 = $2 }
    /^spool_fsync_duration_seconds_bucket\{le="0.1"\}/ { le100 = $2 }
    /^spool_fsync_duration_seconds_count / { n = $2 }
    END { printf "%d %d %d\n", n, n - le10, n - le100 }')
routed=$(psql_db "$DB" -tAc "SELECT count(*) FROM calls WHERE outcome = 'routed'")
events_before=$(psql_db "$DB" -tAc "SELECT count(*) FROM call_events")
checkpoint
say "event webhook"
read -r e_rps e_p50 e_p99 e_bad e_err < <(run_wrk events -s scripts/bench/events.lua "$base")
sleep 1
events_after=$(psql_db "$DB" -tAc "SELECT count(*) FROM call_events")
folded=$(psql_db "$DB" -tAc "SELECT count(*) FROM calls WHERE status = 'completed'")
spool_depth=$(curl -fs "$base/metrics" | awk '/^spool_depth /{print $2}')
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT

checkpoint
say "database ceiling: pgbench running the route lookup"
pgbench -n -M prepared -c "$CONNECTIONS" -j "$WRK_THREADS" -T "$DURATION" -D pairs="$pairs" \
    -f scripts/bench/route.pgbench "$PG_URL/$DB" > "$OUT/pgbench.txt" 2>&1
db_tps=$(awk '/^tps = /{print $3; exit}' "$OUT/pgbench.txt")
db_lat=$(awk '/^latency average = /{print $4; exit}' "$OUT/pgbench.txt")

answered=$((calls_after - calls_before))
stored=$((events_after - events_before))
python3 - <<PY | tee "$OUT/summary.txt"
h, a, e, db = $h_rps, $a_rps, $e_rps, $db_tps
print("voice-proxy call-path benchmark: 1,000,000 active pairings, 10,000 pool numbers")
print(f"machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(psql_db postgres -tAc 'SHOW server_version' | cut -d' ' -f1) Postgres; wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s")
print(f"{'':28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
print(f"{'GET /healthz (HTTP ceiling)':28}{h:>10.0f}{$h_p50:>10.2f}{$h_p99:>10.2f}{$h_bad:>10}")
print(f"{'answer webhook':28}{a:>10.0f}{$a_p50:>10.2f}{$a_p99:>10.2f}{$a_bad:>10}")
print(f"{'event webhook':28}{e:>10.0f}{$e_p50:>10.2f}{$e_p99:>10.2f}{$e_bad:>10}")
print(f"{'pgbench route lookup (DB)':28}{db:>10.0f}{'':>10}{'':>10}   (avg latency $db_lat ms)")
print(f"answer requests completed (wrk): $a_requests; call records in Postgres: $answered (spool empty {$drain_seconds} s after the load stopped); routed (connect) in total: $routed")
print(f"spool fsyncs in the answer phase: $fsyncs, of which $fsync_10ms took over 10 ms and $fsync_100ms over 100 ms")
print(f"events stored: $stored new rows in ${DURATION} s = {$stored / $DURATION:.0f} events/s stored; duplicates folded: {e * $DURATION - $stored:.0f} requests stored nothing new; completed calls: $folded; spool depth at the end: ${spool_depth:-?}")
print(f"start-up: every route in memory {$startup_seconds} s after the process started ({int(float('${routes_loaded:-0}'))} routes); resident memory then {$rss_mib} MiB")
print(f"ratio answer / healthz: {a / h:.3f}  (target >= 0.18)")
print(f"ratio answer / pgbench route lookup: {a / db:.3f}")
print(f"answer p99: $a_p99 ms (target < 10 ms); events stored/s target >= 5000")
PY
if [ "${KEEP:-0}" != 1 ]; then
    psql_db postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
fi
