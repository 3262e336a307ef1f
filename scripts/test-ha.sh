#!/usr/bin/env bash
# `just test-ha`: voice-proxy on a highly available Postgres cluster, through faults.
#
# Starts the three-node Patroni cluster of scripts/ha-cluster.sh (etcd, HAProxy; synchronous
# replication), two voice-proxy instances pointed at HAProxy (each with its own spool), and
# `voice-proxy-bench failover`: steady calls (an answer and four events each) and pairing creates
# through a crash of the leader's Postgres, a failover (the leader's Patroni and Postgres killed)
# and a planned switchover. It fails unless every caller was connected within a second, every
# answer and event was acknowledged, creates were answered 201 or 503 only, everything
# acknowledged is in Postgres exactly once, nothing was dead-lettered, and the instances are
# ready again without a restart. It prints how long each step took to recover.
#
# Needs root (Patroni's packages are installed if missing, and run as the postgres user).
# Environment: HA_STEADY_SECONDS (steady load between faults, default 20), HA_CALL_RATE (calls/s,
# default 20), HA_CREATE_RATE (creates/s, default 5), HA_KEEP=1 to leave the cluster and the
# instances running at the end. Output and logs: target/test-ha/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=target/test-ha
HA=scripts/ha-cluster.sh
TOKEN="ha-admin-token-$RANDOM$RANDOM-0123456789"
say() { printf 'test-ha: %s\n' "$*" >&2; }

rm -rf "$OUT"
mkdir -p "$OUT"
say "building voice-proxy and voice-proxy-bench"
cargo build --quiet --bin voice-proxy --bin voice-proxy-bench
BIN=target/debug/voice-proxy
BENCH=target/debug/voice-proxy-bench

pids=()
cleanup() {
    local status=$?
    if [ "${HA_KEEP:-0}" = 1 ]; then
        say "HA_KEEP=1: leaving the cluster and the instances (pids ${pids[*]:-none}) running"
        exit "$status"
    fi
    for pid in "${pids[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    "$HA" down >/dev/null 2>&1 || say "ha-cluster.sh down failed; see $HA status"
    exit "$status"
}
trap cleanup EXIT

say "starting the cluster"
"$HA" down >/dev/null 2>&1 || true
"$HA" up
cluster_url="$("$HA" url)"
psql -X -w -q -d "$cluster_url" -c "CREATE DATABASE voice_proxy"
database_url="${cluster_url%/*}/voice_proxy"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
bases=()
spools=()
for n in 1 2; do
    port="$(free_port)"
    spool="$OUT/spool-$n"
    env DATABASE_URL="$database_url" ADMIN_TOKEN="$TOKEN" RETENTION_DAYS=0 \
        ALLOW_UNSIGNED_WEBHOOKS=true LISTEN_ADDR="127.0.0.1:$port" SPOOL_DIR="$spool" \
        HTTP_WORKERS=2 LOG_FORMAT=json RUST_LOG=info,sqlx=warn,actix_server=warn \
        "$BIN" serve >"$OUT/instance-$n.log" 2>&1 &
    pids+=("$!")
    base="http://127.0.0.1:$port"
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
        sleep 0.2
    done
    curl -fsS -o /dev/null "$base/readyz" || {
        say "instance $n did not get ready"
        tail -n 40 "$OUT/instance-$n.log" >&2
        exit 1
    }
    bases+=("$base")
    spools+=("$spool")
done
say "instances: ${bases[*]}"

IFS=,
set +e
"$BENCH" failover --base-urls "${bases[*]}" --token "$TOKEN" --database-url "$database_url" \
    --cluster "$HA" --spool-dirs "${spools[*]}" --steady "${HA_STEADY_SECONDS:-20}" \
    --call-rate "${HA_CALL_RATE:-20}" --create-rate "${HA_CREATE_RATE:-5}" \
    --summary "$OUT/summary.env" | tee "$OUT/failover.log"
status=${PIPESTATUS[0]}
set -e
unset IFS
if [ "$status" != 0 ]; then
    say "FAILED; the instances' logs and the cluster's follow"
    for n in 1 2; do
        say "instance $n (last 30 warnings and errors of $OUT/instance-$n.log)"
        grep -E '"level":"(WARN|ERROR)"' "$OUT/instance-$n.log" | tail -n 30 >&2 || true
    done
    "$HA" logs 20 >&2 || true
    exit "$status"
fi
say "passed; figures in $OUT/summary.env"
