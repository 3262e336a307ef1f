#!/usr/bin/env bash
# The callbacks benchmark (`just bench-callbacks`): issue 14.
#
#  1. builds the release binaries; installs wrk (Debian package) if it is missing;
#  2. creates and migrates a database ($BENCH_DB, default vp_bench_callbacks), seeds 100,000 active
#     pairings with scripts/bench/seed.sql and samples 20,000 (caller, proxy number) pairs;
#  3. starts three callback receivers (`voice-proxy-bench receiver`): two that answer 204 at once
#     and one that accepts requests and never answers (a dead endpoint: every attempt to it waits
#     the whole WEBHOOK_TIMEOUT_MS), and serves voice-proxy with an endpoint for each, subscribed
#     to every event type;
#  4. in $ROUNDS rounds, alternately: the answer webhook with the endpoints disabled (no message
#     is written: the baseline) and with them enabled (every call writes a call.started message
#     for three endpoints and the dispatcher sends them meanwhile), each time twice: at saturation
#     under wrk, and at a fixed $RATE answers/s (`voice-proxy-bench answer --rate`, latency from
#     each request's scheduled time);
#  5. after each enabled phase, lets the dispatcher work through the backlog for $DRAIN s with
#     no load and counts the deliveries that succeeded: callbacks delivered per second;
#  6. prints each phase, the medians and the ratios (enabled / disabled).
#
# Settings: BENCH_DB, BENCH_PG_URL (server without a database), CONNECTIONS=64, DURATION=15,
# RATE=1000, DRAIN=20, ROUNDS=2, WRK_THREADS=2, KEEP=1 (keep the database), SERVER_ENV="K=V".
set -euo pipefail
cd "$(dirname "$0")/.."

DB="${BENCH_DB:-vp_bench_callbacks}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-15}"
DRAIN="${DRAIN:-20}"
RATE="${RATE:-1000}"
ROUNDS="${ROUNDS:-2}"
WRK_THREADS="${WRK_THREADS:-2}"
OUT="${BENCH_OUT:-target/bench-callbacks}"
TOKEN=bench-admin-token-0123456789
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "building the release binaries"
cargo build --release --quiet --bin voice-proxy --bin voice-proxy-bench
BIN=target/release/voice-proxy
BENCH=target/release/voice-proxy-bench

psql_db postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
DATABASE_URL="$PG_URL/$DB" RETENTION_DAYS=0 "$BIN" migrate >/dev/null
say "seeding 100,000 pairings"
psql_db "$DB" -v pool_per_country=1000 -v pairings=100000 -v drivers_per_country=10000 \
    -f scripts/bench/seed.sql >/dev/null
psql_db "$DB" -c "CREATE TABLE bench_pairs AS
    SELECT row_number() OVER () AS id, number AS caller, proxy_number AS proxy
      FROM (SELECT number, proxy_number FROM participants
             WHERE upper(active_during) > now() + interval '1 hour'
             ORDER BY random() LIMIT 20000) s;
    ALTER TABLE bench_pairs ADD PRIMARY KEY (id); ANALYZE bench_pairs;" >/dev/null
psql_db "$DB" -tAc "SELECT caller || ' ' || proxy FROM bench_pairs" > "$OUT/pairs.txt"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
receivers=()
for mode in live live dead; do
    rport=$(free_port)
    if [ "$mode" = dead ]; then
        "$BENCH" receiver --listen "127.0.0.1:$rport" --hang > "$OUT/receiver-$rport.log" 2>&1 &
    else
        "$BENCH" receiver --listen "127.0.0.1:$rport" > "$OUT/receiver-$rport.log" 2>&1 &
    fi
    pids+=($!)
    receivers+=("$mode:$rport")
done

port=$(free_port)
rm -rf "$OUT/spool"
# shellcheck disable=SC2086
env DATABASE_URL="$PG_URL/$DB" ADMIN_TOKEN="$TOKEN" RETENTION_DAYS=0 ALLOW_UNSIGNED_WEBHOOKS=true \
    WEBHOOK_ALLOW_HTTP=true LISTEN_ADDR="127.0.0.1:$port" LOG_FORMAT=json RUST_LOG=warn \
    SPOOL_DIR="$OUT/spool" ${SERVER_ENV:-} "$BIN" serve > "$OUT/server.log" 2>&1 &
server=$!
pids+=("$server")
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fs "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "$base/readyz" >/dev/null || { say "the service did not get ready"; cat "$OUT/server.log"; exit 1; }
for _ in $(seq 300); do
    curl -fs "$base/metrics" | grep -q '^routes_in_memory [1-9]' && break
    sleep 0.1
done

api() { # method, path, body
    curl -fsS -X "$1" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        "$base$2" ${3:+-d "$3"}
}
endpoints=()
for r in "${receivers[@]}"; do
    id=$(api POST /v1/webhook-endpoints "{\"url\": \"http://127.0.0.1:${r#*:}/hooks\", \"description\": \"${r%%:*}\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    endpoints+=("$id")
done
set_enabled() { # true|false
    for id in "${endpoints[@]}"; do
        api PATCH "/v1/webhook-endpoints/$id" "{\"disabled\": $([ "$1" = true ] && echo false || echo true)}" >/dev/null
    done
}
succeeded() {
    psql_db "$DB" -tAc "SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'"
}
wait_spool() {
    for _ in $(seq 1200); do
        depth=$(curl -fs "$base/metrics" | awk '/^spool_depth /{print $2}')
        [ "${depth:-1}" = 0 ] && return
        sleep 0.1
    done
}

run_wrk() { # name
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s scripts/bench/answer.lua "$base" \
        > "$OUT/$1.txt"
    python3 - "$OUT/$1.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0}")
PY
}

export VP_PAIRS="$OUT/pairs.txt"
: > "$OUT/phases.txt"
for round in $(seq "$ROUNDS"); do
    for phase in off on; do
        export VP_RUN="$round$phase$(date +%s)"
        if [ "$phase" = on ]; then set_enabled true; else set_enabled false; fi
        wait_spool
        psql_db "$DB" -qc "CHECKPOINT"
        say "round $round: answer webhook, callbacks $phase"
        read -r rps p99 bad < <(run_wrk "answer-$round-$phase")
        wait_spool
        "$BENCH" answer --base-url "$base" --pairs-file "$OUT/pairs.txt" --clients 64 \
            --rate "$RATE" --duration "$DURATION" --warmup 2 --timeout 10 \
            --summary "$OUT/rate-$round-$phase.env" > "$OUT/rate-$round-$phase.txt"
        rate_p99=$(awk -F= '/^ANSWER_P99_MS=/{print $2}' "$OUT/rate-$round-$phase.env")
        rate_p50=$(awk -F= '/^ANSWER_P50_MS=/{print $2}' "$OUT/rate-$round-$phase.env")
        rate_bad=$(awk -F= '/^ANSWER_NOT_OK=/{print $2}' "$OUT/rate-$round-$phase.env")
        delivered="-"
        if [ "$phase" = on ]; then
            wait_spool
            # The backlog now outruns the dispatcher: count what it delivers in $DRAIN s.
            start=$(succeeded)
            sleep "$DRAIN"
            end=$(succeeded)
            delivered=$(( (end - start) / DRAIN ))
        fi
        written=$(psql_db "$DB" -tAc "SELECT count(*) FROM webhook_deliveries")
        echo "$round $phase $rps $p99 $bad $delivered $written $rate_p50 $rate_p99 $rate_bad" |
            tee -a "$OUT/phases.txt" >&2
        [ "$bad" = 0 ] && [ "$rate_bad" = 0 ] || say "warning: some answers were not 200"
    done
done
pending=$(curl -fs "$base/metrics" | awk '/^callback_deliveries_pending /{print $2}')
oldest=$(curl -fs "$base/metrics" | awk '/^callback_oldest_overdue_seconds /{print $2}')
per_result=$(curl -fs "$base/metrics" | grep '^callback_deliveries_total' | tr '\n' ' ')

python3 - "$OUT/phases.txt" "${pending:-?}" "${oldest:-?}" "$per_result" <<PY | tee "$OUT/summary.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
off = [r for r in rows if r[1] == "off"]
on = [r for r in rows if r[1] == "on"]
med = lambda rs, i: statistics.median(float(r[i]) for r in rs)
print("voice-proxy callbacks benchmark: 100,000 active pairings; endpoints: 2 answering 204, 1 never answering")
print(f"machine: $(nproc) cores; wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s on the answer webhook; drain window ${DRAIN} s")
print(f"{'':17}{'-- saturation (wrk) --':>29}{'-- at $RATE/s --':>20}")
print(f"{'round':>6}{'callbacks':>11}{'answers/s':>11}{'p99 ms':>9}{'non-2xx':>9}{'p50 ms':>10}{'p99 ms':>10}{'delivered/s':>13}")
for r in rows:
    print(f"{r[0]:>6}{r[1]:>11}{float(r[2]):>11.0f}{float(r[3]):>9.2f}{r[4]:>9}{float(r[7]):>10.2f}{float(r[8]):>10.2f}{r[5]:>13}")
print(f"median answers/s: off {med(off, 2):.0f}, on {med(on, 2):.0f}; ratio on/off {med(on, 2) / med(off, 2):.3f}")
print(f"median answer p99 ms at saturation: off {med(off, 3):.2f}, on {med(on, 3):.2f}")
print(f"median answer p50 / p99 ms at $RATE/s: off {med(off, 7):.2f} / {med(off, 8):.2f}, on {med(on, 7):.2f} / {med(on, 8):.2f}")
print(f"median callbacks delivered/s (two live endpoints, with a backlog): {med(on, 5):.0f}")
print(f"at the end: pending deliveries {sys.argv[2]}, oldest overdue {sys.argv[3]} s; {sys.argv[4]}")
PY
if [ "${KEEP:-0}" != 1 ]; then
    cleanup
    trap - EXIT
    psql_db postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
fi
