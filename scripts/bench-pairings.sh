#!/usr/bin/env bash
# The pairing benchmark (`just bench-pairings`): issue 3, item 5 and its targets.
#
#  1. builds the release binaries (voice-proxy, voice-proxy-bench);
#  2. creates and migrates a database ($DB, default vp_bench) and seeds it with SQL
#     (scripts/bench/seed.sql): 10,000 pool numbers in two countries (US, GB) and 1,000,000 active
#     pairings; and a small one ($DB_small): 10 pool numbers, 100 pairings;
#  3. runs pgbench's built-in TPC-B-like script (scale 10, 32 clients, 30 s) in a database of its
#     own ($DB_pgbench), for the database server's ceiling in transactions/s;
#  4. times the answer webhook's route lookup in SQL (pgbench, a script of ours) on both datasets;
#     then serves both with `voice-proxy serve` (release) and calls the answer webhook with the
#     same paced load on each, in turns, for answer latency small vs 1M;
#  5. creates pairings over HTTP on the 1M dataset: 32 clients, 30 s;
#  6. runs the same create as SQL alone (pgbench, scripts/bench/create-path.pgbench), for the
#     database's share; then checks the invariants over the whole participants table
#     (scripts/bench/check.sql);
#  7. prints the figures and the targets, stops the server and drops the databases.
#
# Needs Postgres on 127.0.0.1:5432 (user postgres, trust), psql and pgbench (on PATH or in the
# newest /usr/lib/postgresql/*/bin), curl, and cargo.
#
# Settings (environment):
#   KEEP=1                  keep the databases afterwards
#   REUSE=1                 reuse $DB if it is already seeded (with KEEP=1 before): skips seeding
#   BENCH_DB=vp_bench           name of the big database (also $DB_small, $DB_pgbench)
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432      the server, without a database
#   POOL_PER_COUNTRY=5000 PAIRINGS=1000000 DRIVERS_PER_COUNTRY=50000     the big dataset
#   CLIENTS=32 DURATION=30 WARMUP=2                 the create load (seconds)
#   PGBENCH_SCALE=10 PGBENCH_CLIENTS=32 PGBENCH_THREADS=2 PGBENCH_DURATION=30
#   LOOKUP_DURATION=5       the SQL route lookup, per dataset and round
#   ANSWER_CLIENTS=4 ANSWER_RATE=200 ANSWER_DURATION=8 ANSWER_ROUNDS=2   the answer load: per
#                           round, each dataset for ANSWER_DURATION s
#   CREATE_SQL_DURATION=15  the create path in SQL alone (0 skips it)
#   VOICE_PROXY_BIN=path    use this voice-proxy binary instead of building one
#   SERVER_ENV="K=V ..."    extra settings for the server (e.g. DATABASE_MAX_CONNECTIONS=32)
#   BENCH_OUT=target/bench       where the summary and the server's log go
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP="${KEEP:-0}"
REUSE="${REUSE:-0}"
DB="${BENCH_DB:-vp_bench}"
SMALL_DB="${DB}_small"
PGB_DB="${DB}_pgbench"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
POOL_PER_COUNTRY="${POOL_PER_COUNTRY:-5000}"
PAIRINGS="${PAIRINGS:-1000000}"
DRIVERS_PER_COUNTRY="${DRIVERS_PER_COUNTRY:-50000}"
CLIENTS="${CLIENTS:-32}"
DURATION="${DURATION:-30}"
WARMUP="${WARMUP:-2}"
PGBENCH_SCALE="${PGBENCH_SCALE:-10}"
PGBENCH_CLIENTS="${PGBENCH_CLIENTS:-32}"
PGBENCH_THREADS="${PGBENCH_THREADS:-2}"
PGBENCH_DURATION="${PGBENCH_DURATION:-30}"
ANSWER_CLIENTS="${ANSWER_CLIENTS:-4}"
ANSWER_RATE="${ANSWER_RATE:-200}"
ANSWER_DURATION="${ANSWER_DURATION:-8}"
ANSWER_ROUNDS="${ANSWER_ROUNDS:-2}"
OUT="${BENCH_OUT:-target/bench}"
ADMIN_TOKEN_BENCH="bench-admin-token-$(date +%s)-0123456789"
# Settings every voice-proxy process of the benchmark gets (secrets it requires, for a throwaway
# database). Webhook signatures stay off: Vonage is not in the loop.
SERVICE_ENV=(ADMIN_TOKEN="$ADMIN_TOKEN_BENCH" RETENTION_HASH_KEY="bench-retention-key-$(date +%s)-0123456789"
    ALLOW_UNSIGNED_WEBHOOKS=true
    LOG_FORMAT=json RUST_LOG=warn)

say() { printf '\n== %s\n' "$*"; }
die() {
    printf 'bench-pairings: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Postgres client tools: PATH first, else the newest server version's.
if ! command -v pgbench >/dev/null 2>&1; then
    pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$pgbin" ] && PATH="$PATH:$pgbin"
fi
for tool in psql pgbench curl cargo awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
psql_admin=(psql -X -q -w -v ON_ERROR_STOP=1 -d "$PG_URL/postgres")
"${psql_admin[@]}" -tAc "SELECT 1" >/dev/null 2>&1 || die "no Postgres answers at $PG_URL"
db_url() { printf '%s/%s' "$PG_URL" "$1"; }
psql_db() {
    local db="$1"
    shift
    psql -X -q -w -v ON_ERROR_STOP=1 -d "$(db_url "$db")" "$@"
}

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/pairings-summary.txt"
SERVER_LOG="$OUT/server.log"
: >"$SERVER_LOG"
rm -f "$OUT"/*.env "$OUT"/pairs-*.txt "$OUT"/lookup-*.txt

SERVER_PIDS=()
stop_server() { # pid
    local pid="$1"
    if kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        stop_server "$pid"
    done
    SERVER_PIDS=()
}
cleanup() {
    local rc=$?
    stop_servers
    if [ "$KEEP" != 1 ]; then
        for db in "$DB" "$SMALL_DB" "$PGB_DB"; do
            "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
    else
        echo "bench-pairings: kept databases $DB, $SMALL_DB, $PGB_DB (KEEP=1)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free port"
}

start_server() {
    local db="$1"
    PORT="$(free_port)"
    BASE_URL="http://127.0.0.1:$PORT"
    # shellcheck disable=SC2086 # SERVER_ENV is a list of words on purpose
    env -u VONAGE_SIGNATURE_SECRET -u PUBLIC_BASE_URL \
        DATABASE_URL="$(db_url "$db")" LISTEN_ADDR="127.0.0.1:$PORT" SPOOL_DIR="$OUT/spool-$db" \
        "${SERVICE_ENV[@]}" ${SERVER_ENV:-} \
        "$VOICE_PROXY" serve >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    for _ in $(seq 300); do
        if curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; then
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "voice-proxy serve exited; see $SERVER_LOG"
        sleep 0.1
    done
    die "voice-proxy serve not ready after 30 s; see $SERVER_LOG"
}

# The service loads every active route into memory in the background after start-up (its
# fallback for database outages). Measuring while that load runs would measure the load, so wait
# for it, when the service reports it (GET /metrics, routes_in_memory), for at most 120 s.
wait_for_route_mirror() { # expected routes
    local t0 routes
    t0="$(now)"
    for _ in $(seq 1200); do
        routes="$(curl -fsS "$BASE_URL/metrics" 2>/dev/null | awk '$1 == "routes_in_memory" { print int($2) }' || true)"
        if [ -z "$routes" ] && ! curl -fsS -o /dev/null "$BASE_URL/metrics" 2>/dev/null; then
            return # no metrics endpoint: nothing to wait for
        fi
        if [ -n "$routes" ] && [ "$routes" -ge "$1" ]; then
            echo "routes in memory: $routes, $(secs_since "$t0") s after ready"
            return
        fi
        sleep 0.1
    done
    echo "warning: the service did not report $1 routes in memory within 120 s" >&2
}

# CPU time (in clock ticks) used so far by: the server, the load generator, every process of the
# postgres user (other databases' sessions included), and the whole machine (busy, total).
cpu_ticks() { # server_pid bench_pid
    local s b p=0 pid
    s="$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0)"
    b="$(awk '{ print $14 + $15 }' "/proc/$2/stat" 2>/dev/null || echo 0)"
    for pid in $(pgrep -u postgres 2>/dev/null); do
        p=$((p + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    awk -v s="$s" -v b="$b" -v p="$p" '/^cpu / { print s, b, p, $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}

# KEY=value lines of a summary file, prefixed, into this shell.
load_summary() { # file
    # shellcheck disable=SC1090
    . "$1"
}

say "machine"
{
    echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:     $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates migrations 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "cpu:        $(nproc) x $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
    echo "memory:     $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB" }')"
    echo "postgres:   $("${psql_admin[@]}" -tAc 'SHOW server_version')"
    echo "autovacuum: $("${psql_admin[@]}" -tAc 'SHOW autovacuum')"
    echo "load avg:   $(cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)"
} | tee "$SUMMARY"

say "build (release)"
if [ -n "${VOICE_PROXY_BIN:-}" ]; then
    VOICE_PROXY="$VOICE_PROXY_BIN"
    cargo build --release -p voice-proxy-bench
else
    cargo build --release -p voice-proxy-server -p voice-proxy-bench
    VOICE_PROXY="target/release/voice-proxy"
fi
BENCH="target/release/voice-proxy-bench"

seeded_pairings() { psql_db "$1" -tAc "SELECT count(*) FROM pairings" 2>/dev/null || echo 0; }

create_and_seed() { # db pool_per_country pairings drivers_per_country
    local db="$1"
    "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    "${psql_admin[@]}" -c "CREATE DATABASE \"$db\"" >/dev/null
    env DATABASE_URL="$(db_url "$db")" "${SERVICE_ENV[@]}" \
        "$VOICE_PROXY" migrate >/dev/null
    local t0
    t0="$(now)"
    psql_db "$db" -v pool_per_country="$2" -v pairings="$3" -v drivers_per_country="$4" \
        -f scripts/bench/seed.sql
    SEED_SECONDS="$(secs_since "$t0")"
}

say "seed: $SMALL_DB (10 pool numbers, 100 pairings)"
create_and_seed "$SMALL_DB" 5 100 10
SMALL_SEED_SECONDS="$SEED_SECONDS"
echo "seeded in $SMALL_SEED_SECONDS s"

if [ "$REUSE" = 1 ] && [ "$(seeded_pairings "$DB")" -ge "$PAIRINGS" ]; then
    say "seed: reusing $DB ($(seeded_pairings "$DB") pairings; REUSE=1)"
    SEED_SECONDS="reused"
else
    say "seed: $DB ($((2 * POOL_PER_COUNTRY)) pool numbers, $PAIRINGS pairings)"
    create_and_seed "$DB" "$POOL_PER_COUNTRY" "$PAIRINGS" "$DRIVERS_PER_COUNTRY"
    echo "seeded in $SEED_SECONDS s"
fi

say "check the seeded data"
t0="$(now)"
psql_db "$DB" -x -f scripts/bench/check.sql
echo "checked in $(secs_since "$t0") s"

# Every measurement starts from vacuumed tables: the load counter updates of pool_numbers are not
# HOT (active_load is indexed), and the server may run with autovacuum off.
say "vacuum (analyze) $DB"
t0="$(now)"
psql_db "$DB" -c "VACUUM (ANALYZE) pool_numbers, pairings, participants"
echo "vacuumed in $(secs_since "$t0") s"

say "pgbench: TPC-B-like, scale $PGBENCH_SCALE, $PGBENCH_CLIENTS clients, $PGBENCH_THREADS threads, ${PGBENCH_DURATION} s"
"${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$PGB_DB\" WITH (FORCE)" >/dev/null
"${psql_admin[@]}" -c "CREATE DATABASE \"$PGB_DB\"" >/dev/null
pgbench -q -i -s "$PGBENCH_SCALE" "$(db_url "$PGB_DB")" 2>&1 | tail -n 1
pgbench -c "$PGBENCH_CLIENTS" -j "$PGBENCH_THREADS" -T "$PGBENCH_DURATION" "$(db_url "$PGB_DB")" \
    2>&1 | tee "$OUT/pgbench.txt" | grep -E '^(number of transactions actually processed|latency average|tps)'
PGBENCH_TPS="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/pgbench.txt")"
[ -n "$PGBENCH_TPS" ] || die "could not read pgbench's tps; see $OUT/pgbench.txt"
"${psql_admin[@]}" -c "DROP DATABASE IF EXISTS \"$PGB_DB\" WITH (FORCE)" >/dev/null

# The route lookup alone, in SQL, on both datasets: the answer webhook's statement for random
# active (caller, proxy number) pairs, 4 clients, prepared, for LOOKUP_DURATION s each.
LOOKUP_DURATION="${LOOKUP_DURATION:-5}"
route_lookup_ms() { # db -> mean latency of the lookup statement, ms
    local db="$1" n
    psql_db "$db" -c "DROP TABLE IF EXISTS bench_route_sample" \
        -c "CREATE TABLE bench_route_sample AS
              SELECT row_number() OVER () AS k, number, proxy_number
                FROM (SELECT number, proxy_number FROM participants WHERE active_during @> now()
                       ORDER BY random() LIMIT 20000) s" \
        -c "ALTER TABLE bench_route_sample ADD PRIMARY KEY (k)" -c "ANALYZE bench_route_sample"
    n="$(psql_db "$db" -tAc "SELECT count(*) FROM bench_route_sample")"
    pgbench -n -M prepared -r -c 4 -j 2 -T "$LOOKUP_DURATION" -D npairs="$n" \
        -f scripts/bench/route-lookup.pgbench "$(db_url "$db")" >"$OUT/lookup-$db.txt" 2>&1
    psql_db "$db" -c "DROP TABLE bench_route_sample"
    awk '/SELECT pairing_id/ { print $1 }' "$OUT/lookup-$db.txt"
}
say "route lookup in SQL (pgbench, 4 clients, ${LOOKUP_DURATION} s per dataset, small then big then small then big)"
LOOKUP_SMALL_1="$(route_lookup_ms "$SMALL_DB")"
LOOKUP_BIG_1="$(route_lookup_ms "$DB")"
LOOKUP_SMALL_2="$(route_lookup_ms "$SMALL_DB")"
LOOKUP_BIG_2="$(route_lookup_ms "$DB")"
echo "lookup ms, small: $LOOKUP_SMALL_1, $LOOKUP_SMALL_2; big: $LOOKUP_BIG_1, $LOOKUP_BIG_2"

answer_args=(--clients "$ANSWER_CLIENTS" --rate "$ANSWER_RATE" --duration "$ANSWER_DURATION" --warmup "$WARMUP")

# Both datasets are served at once, by two processes, and called in turns (small, big, small,
# big, ...) with the same paced load, so that the machine's noise falls on both alike.
say "answer webhook: $SMALL_DB (10 numbers, 100 pairings) vs $DB ($PAIRINGS pairings), $ANSWER_ROUNDS rounds"
start_server "$SMALL_DB"
SMALL_PID="$SERVER_PID"
SMALL_URL="$BASE_URL"
wait_for_route_mirror 200
start_server "$DB"
BIG_PID="$SERVER_PID"
BIG_URL="$BASE_URL"
wait_for_route_mirror "$(psql_db "$DB" -tAc "SELECT count(*) FROM participants WHERE active_during @> now()")"
psql_db "$SMALL_DB" -tAc "SELECT number, proxy_number FROM participants WHERE active_during @> now()" \
    | tr '|' ' ' >"$OUT/pairs-small.txt"
psql_db "$DB" -tAc "SELECT number, proxy_number FROM participants WHERE active_during @> now()
                     ORDER BY random() LIMIT 20000" | tr '|' ' ' >"$OUT/pairs-big.txt"
for round in $(seq "$ANSWER_ROUNDS"); do
    "$BENCH" answer --base-url "$SMALL_URL" --pairs-file "$OUT/pairs-small.txt" \
        --label "small, round $round" "${answer_args[@]}" --summary "$OUT/answer-small-$round.env"
    "$BENCH" answer --base-url "$BIG_URL" --pairs-file "$OUT/pairs-big.txt" \
        --label "$PAIRINGS, round $round" "${answer_args[@]}" --summary "$OUT/answer-big-$round.env"
done
for pid in "$SMALL_PID" "$BIG_PID"; do
    kill -0 "$pid" 2>/dev/null || die "a voice-proxy server (pid $pid) is gone after the answer load; see $SERVER_LOG"
done
stop_server "$SMALL_PID"

say "pairing creates: $DB, $CLIENTS clients, ${DURATION} s"
"$BENCH" pairings --base-url "$BIG_URL" --token "$ADMIN_TOKEN_BENCH" --clients "$CLIENTS" \
    --duration "$DURATION" --warmup "$WARMUP" --summary "$OUT/pairings.env" &
bench_pid=$!
# CPU use over the measured window but its last second (so that the load generator still runs).
CPU_WINDOW="$(awk -v d="$DURATION" 'BEGIN { print (d > 2) ? d - 1 : d / 2 }')"
sleep "$WARMUP"
read -r s0 b0 p0 busy0 total0 < <(cpu_ticks "$BIG_PID" "$bench_pid")
sleep "$CPU_WINDOW"
read -r s1 b1 p1 busy1 total1 < <(cpu_ticks "$BIG_PID" "$bench_pid")
wait "$bench_pid"
kill -0 "$BIG_PID" 2>/dev/null || die "the voice-proxy server (pid $BIG_PID) is gone after the create load; see $SERVER_LOG"
stop_servers
CPU_SPLIT="$(awk -v hz="$(getconf CLK_TCK)" -v cores="$(nproc)" -v d="$CPU_WINDOW" \
    -v s=$((s1 - s0)) -v b=$((b1 - b0)) -v p=$((p1 - p0)) -v busy=$((busy1 - busy0)) -v total=$((total1 - total0)) \
    'BEGIN { printf "of %.0f CPU-s (%d cores x %s s): server %.1f, postgres %.1f, load generator %.1f, everything else %.1f, idle %.1f",
             total / hz, cores, d, s / hz, p / hz, b / hz, (busy - s - p - b) / hz, (total - busy) / hz }')"
echo "CPU during the measured creates: $CPU_SPLIT"
if grep -q '"level":"ERROR"' "$SERVER_LOG"; then
    echo "the server logged errors; the first ones:"
    grep '"level":"ERROR"' "$SERVER_LOG" | head -n 5
fi

# The same create, as SQL statements alone (scripts/bench/create-path.pgbench): the database's
# ceiling for this transaction on this machine, without HTTP or the service.
CREATE_SQL_DURATION="${CREATE_SQL_DURATION:-15}"
CREATE_SQL_TPS="skipped"
if [ "$CREATE_SQL_DURATION" != 0 ]; then
    say "the create path in SQL alone (pgbench, $CLIENTS clients, ${CREATE_SQL_DURATION} s)"
    CREATE_SQL_START="$(psql_db "$DB" -tAc "SELECT now()")"
    pgbench -n -M prepared -r -c "$CLIENTS" -j 2 -T "$CREATE_SQL_DURATION" \
        -f scripts/bench/create-path.pgbench "$(db_url "$DB")" >"$OUT/create-path.txt" 2>&1 ||
        echo "warning: pgbench create path failed; see $OUT/create-path.txt" >&2
    grep -E '^(number of (transactions|failed)|latency average|tps)' "$OUT/create-path.txt" || true
    CREATE_SQL_TPS="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/create-path.txt")"
    # The script writes no load counters, as the service writes none per create (its flusher
    # writes them in batches): add this run's pairings to them in one statement, as one flush.
    psql_db "$DB" -c "UPDATE pool_numbers n SET active_load = n.active_load + c.n
        FROM (SELECT t.proxy_number, count(*) AS n FROM pairings p JOIN participants t ON t.pairing_id = p.id
               WHERE p.reference LIKE 'sqlbench-%' AND p.created_at >= '$CREATE_SQL_START'
               GROUP BY t.proxy_number) c
       WHERE n.number = c.proxy_number" >/dev/null
fi

say "invariant check over the whole participants table"
t0="$(now)"
psql_db "$DB" -x -f scripts/bench/check.sql | tee "$OUT/check.txt"
echo "checked in $(secs_since "$t0") s"
INVARIANT_BAD="$(awk -F'|' '/^active_routes_bad/ { gsub(/ /, "", $2); print $2 }' "$OUT/check.txt")"
ALL_BAD="$(awk -F'|' '/_bad/ { gsub(/ /, "", $2); s += $2 } END { print s + 0 }' "$OUT/check.txt")"

# Figures.
load_summary "$OUT/pairings.env"
[ "$CREATE_OK" -gt 0 ] || die "no pairing was created; see $OUT and $SERVER_LOG"
# Answer latency per dataset: the mean over rounds of p50, p99 and mean; and the spread of p50
# between rounds of the same dataset, the noise the comparison is judged against.
answer_figures() { # small|big -> "p50 p99 mean p50_spread outcomes"
    local f
    for f in "$OUT"/answer-"$1"-*.env; do
        awk -F= '$1 == "ANSWER_P50_MS" { p50 = $2 } $1 == "ANSWER_P99_MS" { p99 = $2 }
                 $1 == "ANSWER_MEAN_MS" { mean = $2 } END { print p50, p99, mean }' "$f"
    done | awk '{ n++; a += $1; b += $2; c += $3; if (n == 1 || $1 < lo) lo = $1; if (n == 1 || $1 > hi) hi = $1 }
                END { printf "%.3f %.3f %.3f %.3f\n", a / n, b / n, c / n, hi - lo }'
}
read -r SMALL_P50 SMALL_P99 SMALL_MEAN SMALL_SPREAD < <(answer_figures small)
read -r BIG_P50 BIG_P99 BIG_MEAN BIG_SPREAD < <(answer_figures big)
SMALL_OUT="$(cat "$OUT"/answer-small-*.env | sed -n "s/^ANSWER_OUTCOMES=//p" | tr -d "'" | paste -sd ',' -)"
BIG_OUT="$(cat "$OUT"/answer-big-*.env | sed -n "s/^ANSWER_OUTCOMES=//p" | tr -d "'" | paste -sd ',' -)"
RATIO="$(awk -v c="$CREATE_OK_PER_SEC" -v t="$PGBENCH_TPS" 'BEGIN { printf "%.3f", c / t }')"
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }

say "summary"
{
    echo "seed ($((2 * POOL_PER_COUNTRY)) numbers, $PAIRINGS pairings): $SEED_SECONDS s (small: $SMALL_SEED_SECONDS s)"
    echo "pgbench tps (TPC-B-like, $PGBENCH_CLIENTS clients):   $PGBENCH_TPS"
    echo "creates/s ($CLIENTS clients, ${DURATION} s):            $CREATE_OK_PER_SEC  ($CREATE_OK created of $CREATE_REQUESTS; $CREATE_OUTCOMES)"
    echo "creates/s / pgbench tps:                  $RATIO"
    echo "the create path in SQL alone, tx/s:       $CREATE_SQL_TPS (pgbench, $CLIENTS clients; no HTTP, no service)"
    echo "create latency ms: p50 $CREATE_P50_MS  p90 $CREATE_P90_MS  p99 $CREATE_P99_MS  max $CREATE_MAX_MS"
    echo "CPU during the creates: $CPU_SPLIT"
    echo "answer latency ms, small: p50 $SMALL_P50  p99 $SMALL_P99  mean $SMALL_MEAN  (mean of $ANSWER_ROUNDS rounds; p50 spread $SMALL_SPREAD; $SMALL_OUT)"
    echo "answer latency ms, big:   p50 $BIG_P50  p99 $BIG_P99  mean $BIG_MEAN  (mean of $ANSWER_ROUNDS rounds; p50 spread $BIG_SPREAD; $BIG_OUT)"
    echo "route lookup in SQL, ms:  small $LOOKUP_SMALL_1, $LOOKUP_SMALL_2; big $LOOKUP_BIG_1, $LOOKUP_BIG_2 (pgbench, 4 clients)"
    echo "invariant (active routes held twice):     $INVARIANT_BAD; all checks' bad rows: $ALL_BAD"
    echo "target creates/s >= 50% of pgbench tps:  $(verdict "$RATIO >= 0.5")"
    echo "target p99 create < 50 ms:                $(verdict "$CREATE_P99_MS < 50")"
    echo "target answer latency unchanged (p50 big - small <= max(0.5 ms, 25%, spread between rounds)): $(verdict "($BIG_P50 - $SMALL_P50) <= 0.5 || ($BIG_P50 - $SMALL_P50) <= 0.25 * $SMALL_P50 || ($BIG_P50 - $SMALL_P50) <= ($SMALL_SPREAD > $BIG_SPREAD ? $SMALL_SPREAD : $BIG_SPREAD)")"
    echo "target seed well under a minute:          $(if [ "$SEED_SECONDS" = reused ]; then echo 'n/a (reused)'; else verdict "$SEED_SECONDS < 45"; fi)"
} | tee -a "$SUMMARY"
echo
echo "summary: $SUMMARY; server log: $SERVER_LOG"
[ "$INVARIANT_BAD" = 0 ] || die "the invariant is broken: $INVARIANT_BAD (person, proxy number) pairs are held twice"
