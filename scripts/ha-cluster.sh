#!/usr/bin/env bash
# Starts and controls a small highly-available Postgres cluster on this one machine, for
# failover tests:
#
#   * one etcd member          client 127.0.0.1:23790, peer 127.0.0.1:23800
#   * three Postgres nodes,    node1 127.0.0.1:5441 (Patroni REST API 127.0.0.1:8008)
#     each run by Patroni      node2 127.0.0.1:5442 (Patroni REST API 127.0.0.1:8009)
#                              node3 127.0.0.1:5443 (Patroni REST API 127.0.0.1:8010)
#   * HAProxy                  127.0.0.1:5440 -> the leader (read-write)
#                              127.0.0.1:5444 -> the replicas (read-only, round robin)
#
# Streaming replication with Patroni's synchronous_mode: a commit the leader acknowledged is
# also on one standby, and Patroni only promotes that synchronous standby. Authentication is
# "trust" on 127.0.0.1, so no password is needed:
#
#   postgres://postgres@127.0.0.1:5440/postgres
#
# The machine's own Postgres on 127.0.0.1:5432 is never touched.
#
# Usage: scripts/ha-cluster.sh COMMAND
#   up                 install what is missing (Debian packages), start everything, wait until
#                      healthy and print the URL; on a running cluster it only starts what is
#                      missing and reports that the cluster is up
#   down               stop everything this script started and delete its state
#   status             `patronictl list` and the leader's name
#   url                the DATABASE_URL through HAProxy (leader)
#   replica-url        the URL through HAProxy's read-only port (replicas)
#   env                shell lines to eval: DATABASE_URL, HA_REPLICA_URL, HA_LEADER
#   leader             the name of the current leader node (node1, node2 or node3)
#   crash-leader       kill -9 the leader's postmaster only; its Patroni restarts it
#   kill-leader        kill -9 the leader's Patroni and its postmaster: a real failover
#   revive NODE        start NODE's Patroni again (after kill-leader); it rejoins as a replica
#   switchover         planned switchover to the synchronous standby
#   wait-healthy [S] [M]
#                      wait up to S seconds (default 120) until there is a leader that HAProxy
#                      reaches and at least M (default 3) members run, M - 1 of them
#                      streaming from the leader, one synchronously; else fail and print the
#                      logs' tails. After kill-leader (before revive) use M = 2.
#   check [M]          one health check (as wait-healthy, without waiting): prints what it
#                      found, exit status 0 if healthy
#   logs [N]           the last N (default 40) lines of every log
#
# State, configuration and logs live in target/ha-cluster/ of the repository:
#   logs/              etcd.log, haproxy.log, node1.log .. node3.log (Patroni and its Postgres)
#   pids/              pid files of every process this script started
#   etcd/              etcd's data
#   nodes/nodeN/       patroni.yml and the Postgres data directory (owned by postgres)
#   haproxy.cfg, patronictl.yml
# Patroni and Postgres run as the OS user postgres (initdb refuses root), so postgres must be
# able to enter target/ha-cluster/. If a parent directory of the repository is closed to
# postgres, the state goes to /var/tmp/voice-proxy-ha-<checksum of the repository path>/
# instead, and target/ha-cluster is a symlink to it.
#
# Environment: HA_TIMEOUT (seconds `up` waits, default 120); HA_SYNC_STRICT=true for Patroni's
# synchronous_mode_strict (see below).
set -euo pipefail

# --- Fixed names and ports --------------------------------------------------------------------

SCOPE=voice-proxy-ha
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
HAPROXY_PORT=5440
HAPROXY_REPLICA_PORT=5444
NODES=(node1 node2 node3)
PG_PORTS=(5441 5442 5443)
API_PORTS=(8008 8009 8010)
DEFAULT_TIMEOUT="${HA_TIMEOUT:-120}"
# Patroni's synchronous_mode_strict. false (default): while no standby can be synchronous (a
# few seconds after a failover, or with every standby down), the leader acknowledges commits
# alone. true: commits wait until a standby is synchronous again. Read at the first `up`.
case "${HA_SYNC_STRICT:-false}" in
    true | 1 | on | yes) SYNC_STRICT=true ;;
    *) SYNC_STRICT=false ;;
esac
PACKAGES=(patroni etcd-server etcd-client haproxy)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/target/ha-cluster"
# Where the state goes when postgres cannot enter the repository (see above).
FALLBACK="/var/tmp/voice-proxy-ha-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
# The real directory (symlink resolved); set by find_state or make_state.
REAL=""

# Patroni is a Debian Python program: use Debian's Python for our own JSON parsing too, not
# whatever python3 comes first on PATH.
PY=/usr/bin/python3

log() { printf 'ha-cluster: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- Installation -----------------------------------------------------------------------------

# Installs the Debian packages when one of their programs is missing. Installing may try to
# start system services (etcd on 2379, haproxy with /etc/haproxy/haproxy.cfg): this script
# ignores them, its own processes use other ports and their own configuration.
install_missing() {
    local missing=0 bin
    for bin in patroni patronictl etcd etcdctl haproxy; do
        command -v "$bin" >/dev/null 2>&1 || missing=1
    done
    if [ "$missing" = 1 ]; then
        [ "$(id -u)" = 0 ] || die "patroni/etcd/haproxy are missing; run as root to install: apt-get install ${PACKAGES[*]}"
        log "installing ${PACKAGES[*]} from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq "${PACKAGES[@]}" >/dev/null || die "apt-get install ${PACKAGES[*]} failed"
    fi
    pg_bindir >/dev/null || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; install PostgreSQL (e.g. postgresql-15)"
    id postgres >/dev/null 2>&1 || die "there is no OS user postgres to run Patroni and Postgres as"
}

# The newest Debian PostgreSQL server binary directory.
pg_bindir() {
    local dir
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [ -x "$dir/initdb" ] || return 1
    printf '%s\n' "$dir"
}

# --- State directory --------------------------------------------------------------------------

# Runs a command as the OS user postgres, in place (setpriv execs; no extra process), with a
# clean environment so that no PATRONI_* / PG* variable of the caller leaks in.
as_postgres() {
    setpriv --reuid=postgres --regid=postgres --init-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="${AS_HOME:-/tmp}" "$@"
}

# Sets REAL if a state directory exists (also finds the /var/tmp one if the symlink is gone).
find_state() {
    if [ -L "$STATE" ] || [ -d "$STATE" ]; then
        REAL="$(readlink -f "$STATE")"
        [ -d "$REAL" ] || REAL=""
    fi
    if [ -z "$REAL" ] && [ -d "$FALLBACK" ]; then
        REAL="$FALLBACK"
    fi
    [ -n "$REAL" ]
}

# Creates the state directory, in the repository if postgres can enter it, else in /var/tmp.
make_state() {
    find_state && return 0
    mkdir -p "$ROOT/target"
    if as_postgres test -x "$ROOT/target"; then
        mkdir "$STATE"
        REAL="$STATE"
    else
        log "postgres cannot enter $ROOT/target (see: namei -l $ROOT/target); using $FALLBACK"
        mkdir -p "$FALLBACK"
        ln -sfn "$FALLBACK" "$STATE"
        REAL="$FALLBACK"
    fi
    chmod 755 "$REAL"
}

# Paths inside the state directory (only valid once REAL is set).
logs_dir() { printf '%s/logs\n' "$REAL"; }
pid_file() { printf '%s/pids/%s.pid\n' "$REAL" "$1"; }
node_dir() { printf '%s/nodes/%s\n' "$REAL" "$1"; }
data_dir() { printf '%s/nodes/%s/data\n' "$REAL" "$1"; }
ctl_cfg() { printf '%s/patronictl.yml\n' "$REAL"; }

# Index of a node name in NODES, or failure.
node_index() {
    local i
    for i in "${!NODES[@]}"; do
        if [ "${NODES[$i]}" = "$1" ]; then
            printf '%s\n' "$i"
            return 0
        fi
    done
    return 1
}

# --- Processes --------------------------------------------------------------------------------

# True if pid $1 runs and its command line contains $2 (so a reused pid is never mistaken for
# one of ours).
pid_matches() {
    local pid="$1" needle="$2"
    [ -n "$pid" ] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# The pid recorded for process $1, if that process still runs (and its command line mentions
# our state directory).
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [ -f "$file" ] || return 1
    pid="$(cat "$file" 2>/dev/null || true)"
    pid_matches "$pid" "$REAL" || return 1
    printf '%s\n' "$pid"
}

# The pid of node $1's postmaster, from its postmaster.pid, if it runs.
postmaster_pid() {
    local file pid
    file="$(data_dir "$1")/postmaster.pid"
    [ -f "$file" ] || return 1
    pid="$(head -n 1 "$file" 2>/dev/null || true)"
    pid_matches "$pid" "$(data_dir "$1")" || return 1
    printf '%s\n' "$pid"
}

# Starts a daemon in its own session, stdin from /dev/null, stdout and stderr appended to
# logs/$1.log, and records its pid in pids/$1.pid. The small bash wrapper writes its own pid
# and then execs the program, so the pid file holds the program's pid.
#   spawn NAME WORKDIR COMMAND...
spawn() {
    local name="$1" workdir="$2"
    shift 2
    local pidf
    pidf="$(pid_file "$name")"
    rm -f "$pidf"
    # shellcheck disable=SC2016 # $$, $1, $2 and $@ are the inner bash's, on purpose.
    setsid bash -c 'echo $$ >"$1"; cd "$2"; shift 2; exec "$@"' spawn "$pidf" "$workdir" "$@" \
        </dev/null >>"$(logs_dir)/$name.log" 2>&1 &
    local i
    for i in $(seq 1 50); do
        [ -s "$pidf" ] && return 0
        sleep 0.1
    done
    die "$name did not start; see $(logs_dir)/$name.log"
}

# Fails if something other than our own processes listens on TCP port $1.
check_port_free() {
    if ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; then
        die "port $1 is already in use by another program (ss -ltnp 'sport = :$1'); stop it or run '$0 down'"
    fi
}

# True if pid $1 exists and is not a zombie (an exited process that its parent, here often
# PID 1, has not reaped yet counts as gone).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

# Sends signal $1 to the pids that follow, then waits up to $2 seconds for them to be gone.
# Returns failure if some remain.
kill_and_wait() {
    local sig="$1" secs="$2"
    shift 2
    local pid left i
    for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
    for i in $(seq 1 $((secs * 10))); do
        left=0
        for pid in "$@"; do
            if alive "$pid"; then left=1; fi
        done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# Processes that belong to this cluster although no pid file names them: a Postgres, Patroni,
# etcd or HAProxy program (or initdb, pg_ctl, pg_basebackup, pg_rewind run by Patroni) whose
# command line mentions the state directory or whose working directory is inside it (Postgres
# backends run in their data directory). Other programs (a `tail -f` of a log) are left alone.
stray_pids() {
    local dir pid comm cwd
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        [ "$pid" = "$$" ] && continue
        comm="$(cat "$dir/comm" 2>/dev/null || true)"
        case "$comm" in
            postgres | patroni | python3* | etcd | haproxy | initdb | pg_ctl | pg_basebackup | pg_rewind) ;;
            *) continue ;;
        esac
        if pid_matches "$pid" "$REAL"; then
            printf '%s\n' "$pid"
            continue
        fi
        cwd="$(readlink "$dir/cwd" 2>/dev/null || true)"
        case "$cwd" in
            "$REAL" | "$REAL"/*) printf '%s\n' "$pid" ;;
        esac
    done
}

# --- Configuration files ----------------------------------------------------------------------

write_configs() {
    local bindir i name dir
    bindir="$(pg_bindir)"
    mkdir -p "$REAL/logs" "$REAL/pids" "$REAL/etcd" "$REAL/nodes"
    chmod 700 "$REAL/etcd"
    chmod 755 "$REAL/logs" "$REAL/pids" "$REAL/nodes"

    # patronictl only needs to find the cluster in etcd.
    cat >"$(ctl_cfg)" <<EOF
scope: $SCOPE
namespace: /$SCOPE/
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT_PORT
EOF

    for i in "${!NODES[@]}"; do
        name="${NODES[$i]}"
        dir="$(node_dir "$name")"
        mkdir -p "$dir"
        # ttl 10 / loop_wait 2 / retry_timeout 4: a dead leader's key expires within 10 s, so a
        # failover takes seconds (Patroni wants loop_wait + 2 * retry_timeout <= ttl).
        # maximum_lag_on_failover: a replica more than 1 MiB behind is never promoted.
        # unix_socket_directories '': TCP only, no socket files in /var/run/postgresql next to
        # the system Postgres.
        cat >"$dir/patroni.yml" <<EOF
scope: $SCOPE
namespace: /$SCOPE/
name: $name

log:
  level: INFO
  format: '%(asctime)s $name %(levelname)s: %(message)s'

restapi:
  listen: 127.0.0.1:${API_PORTS[$i]}
  connect_address: 127.0.0.1:${API_PORTS[$i]}

etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT_PORT

bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: $SYNC_STRICT
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      remove_data_directory_on_rewind_failure: true
      remove_data_directory_on_diverged_timelines: true
      parameters:
        max_connections: 200
        wal_level: replica
        hot_standby: 'on'
        wal_log_hints: 'on'
        synchronous_commit: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
    - auth: trust

postgresql:
  listen: 127.0.0.1:${PG_PORTS[$i]}
  connect_address: 127.0.0.1:${PG_PORTS[$i]}
  data_dir: $dir/data
  bin_dir: $bindir
  pgpass: $dir/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: ''
    log_line_prefix: '%m $name [%p] '

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
        chown -R postgres:postgres "$dir"
        chmod 700 "$dir"
    done

    # HAProxy: a server is "up" while its Patroni answers 200 to OPTIONS /primary (or /replica)
    # (OPTIONS: Patroni sends no body, so HAProxy closing the check early logs no traceback),
    # every second; two failed checks mark it down, and then the sessions through it are cut
    # (on-marked-down shutdown-sessions), so clients of a demoted leader reconnect.
    {
        cat <<EOF
global
    maxconn 1000
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s

listen primary
    bind 127.0.0.1:$HAPROXY_PORT
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1 on-marked-down shutdown-sessions
EOF
        for i in "${!NODES[@]}"; do
            printf '    server %s 127.0.0.1:%s check port %s\n' "${NODES[$i]}" "${PG_PORTS[$i]}" "${API_PORTS[$i]}"
        done
        cat <<EOF

listen replicas
    bind 127.0.0.1:$HAPROXY_REPLICA_PORT
    balance roundrobin
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1 on-marked-down shutdown-sessions
EOF
        for i in "${!NODES[@]}"; do
            printf '    server %s 127.0.0.1:%s check port %s\n' "${NODES[$i]}" "${PG_PORTS[$i]}" "${API_PORTS[$i]}"
        done
    } >"$REAL/haproxy.cfg"
}

# --- Starting ---------------------------------------------------------------------------------

start_etcd() {
    if running_pid etcd >/dev/null; then return 0; fi
    check_port_free "$ETCD_CLIENT_PORT"
    check_port_free "$ETCD_PEER_PORT"
    log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
    # env -i: etcd reads ETCD_* variables, and the Debian package's defaults must not apply.
    spawn etcd "$REAL" env -i PATH=/usr/bin:/bin etcd \
        --name ha-etcd \
        --data-dir "$REAL/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "ha-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-token "$SCOPE" \
        --initial-cluster-state new \
        --logger zap --log-outputs stderr
    local i
    for i in $(seq 1 100); do
        if etcd_healthy; then return 0; fi
        running_pid etcd >/dev/null || break
        sleep 0.2
    done
    tail -n 30 "$(logs_dir)/etcd.log" >&2 || true
    die "etcd did not become healthy"
}

etcd_healthy() {
    ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$ETCD_CLIENT_PORT" --dial-timeout=1s \
        --command-timeout=2s endpoint health >/dev/null 2>&1
}

# Starts node $1's Patroni (as postgres) unless it runs. Patroni starts Postgres itself: the
# first node to take the initialize key runs initdb, the others clone it with pg_basebackup.
start_node() {
    local name="$1" i
    i="$(node_index "$name")" || die "no node named $name (nodes: ${NODES[*]})"
    if running_pid "$name" >/dev/null; then return 0; fi
    if ! postmaster_pid "$name" >/dev/null; then
        check_port_free "${PG_PORTS[$i]}"
    fi
    check_port_free "${API_PORTS[$i]}"
    log "starting $name (Postgres 127.0.0.1:${PG_PORTS[$i]}, Patroni API 127.0.0.1:${API_PORTS[$i]})"
    spawn "$name" "$(node_dir "$name")" \
        setpriv --reuid=postgres --regid=postgres --init-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$(node_dir "$name")" \
        /usr/bin/patroni "$(node_dir "$name")/patroni.yml"
}

start_haproxy() {
    if running_pid haproxy >/dev/null; then return 0; fi
    check_port_free "$HAPROXY_PORT"
    check_port_free "$HAPROXY_REPLICA_PORT"
    haproxy -c -q -f "$REAL/haproxy.cfg" || die "invalid $REAL/haproxy.cfg"
    log "starting HAProxy on 127.0.0.1:$HAPROXY_PORT (leader) and 127.0.0.1:$HAPROXY_REPLICA_PORT (replicas)"
    # -db: stay in the foreground (no daemon fork), so the pid file holds HAProxy's pid.
    spawn haproxy "$REAL" haproxy -db -f "$REAL/haproxy.cfg"
}

# --- Queries ----------------------------------------------------------------------------------

url() { printf 'postgres://postgres@127.0.0.1:%s/postgres\n' "$HAPROXY_PORT"; }
replica_url() { printf 'postgres://postgres@127.0.0.1:%s/postgres\n' "$HAPROXY_REPLICA_PORT"; }

# psql through HAProxy's leader port, one value per line, no password prompt.
psql_ha() {
    PGCONNECT_TIMEOUT=3 psql -X -w -q -At -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$HAPROXY_PORT" -U postgres -d postgres "$@"
}

patronictl_() { patronictl -c "$(ctl_cfg)" "$@"; }

# The members as JSON: [{"Member": .., "Role": "Leader"|"Sync Standby"|"Replica",
# "State": "running"|.., "TL": .., "Lag in MB": ..}, ..]
members_json() { patronictl_ list -f json 2>/dev/null; }

# Names of the members with role $1, from members JSON on stdin.
members_with_role() {
    "$PY" -c '
import json, sys
role = sys.argv[1]
for m in json.load(sys.stdin):
    if m.get("Role") == role:
        print(m["Member"])
' "$1"
}

current_leader() {
    local json
    json="$(members_json)" || return 1
    printf '%s' "$json" | members_with_role Leader | head -n 1 | grep .
}

# One line that says whether the cluster is healthy; exit status 0 only if it is. Healthy:
# exactly one leader, at least $1 (default 3) members running, and HAProxy's leader port
# reaches the leader, a writable server that streams to $1 - 1 standbys, one of them
# synchronously (when $1 > 1).
health_check() {
    local want="${1:-3}" json summary leader sql row want_port
    json="$(members_json)" || {
        echo "patronictl cannot read the cluster from etcd"
        return 1
    }
    summary="$(printf '%s' "$json" | "$PY" -c '
import json, sys
want = int(sys.argv[1])
ms = json.load(sys.stdin)
up = ("running", "streaming")
leaders = [m["Member"] for m in ms if m.get("Role") == "Leader" and m.get("State") in up]
running = [m for m in ms if m.get("State") in up]
sync = [m for m in ms if m.get("Role") == "Sync Standby" and m.get("State") in up]
desc = ", ".join("%s=%s/%s" % (m["Member"], m.get("Role"), m.get("State")) for m in ms)
ok = len(leaders) == 1 and len(running) >= want and (want < 2 or len(sync) == 1)
print(("ok " if ok else "no ") + (leaders[0] if leaders else "-") + " " + (desc or "no members"))
' "$want")"
    leader="$(printf '%s' "$summary" | cut -d' ' -f2)"
    case "$summary" in
        ok*) ;;
        *)
            echo "members: ${summary#* * }"
            return 1
            ;;
    esac
    sql="SELECT pg_is_in_recovery(), inet_server_port(),
                (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'),
                (SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync')"
    want_port="${PG_PORTS[$(node_index "$leader")]}"
    row="$(psql_ha -F ' ' -c "$sql" 2>&1 | tr '\n' ' ')" || {
        echo "HAProxy 127.0.0.1:$HAPROXY_PORT does not reach a server yet: $row"
        return 1
    }
    local recovery port streaming syncs
    read -r recovery port streaming syncs _ <<<"$row"
    # More streaming standbys than wanted is fine (a revived node may already be back).
    if [ "$recovery" != f ] || [ "$port" != "$want_port" ] ||
        [ "${streaming:-0}" -lt $((want - 1)) ] || { [ "$want" -gt 1 ] && [ "$syncs" != 1 ]; }; then
        echo "through HAProxy: in_recovery=$recovery port=$port streaming=$streaming sync=$syncs; want f, $want_port (leader $leader), >= $((want - 1)), $((want > 1 ? 1 : 0))"
        return 1
    fi
    echo "healthy: leader $leader (127.0.0.1:$want_port), $((want - 1))+ streaming replicas, $((want > 1 ? 1 : 0)) synchronous; HAProxy 127.0.0.1:$HAPROXY_PORT reaches the leader"
}

show_logs() {
    local lines="${1:-40}" f
    for f in "$(logs_dir)"/*.log; do
        [ -f "$f" ] || continue
        printf '\n===== %s (last %s lines) =====\n' "$f" "$lines"
        tail -n "$lines" "$f"
    done
}

# Waits up to $1 seconds (default 120) for health_check with at least $2 (default 3) members;
# on timeout prints the status and the logs' tails and fails.
wait_healthy() {
    local timeout="${1:-$DEFAULT_TIMEOUT}" want="${2:-3}" start now last=""
    case "$timeout" in '' | *[!0-9]*) die "timeout must be a number of seconds, not '$timeout'" ;; esac
    case "$want" in [1-3]) ;; *) die "members must be 1, 2 or 3, not '$want'" ;; esac
    find_state || die "no cluster under $STATE; run '$0 up'"
    start="$(date +%s)"
    while true; do
        if last="$(health_check "$want")"; then
            now="$(date +%s)"
            log "$last (after $((now - start)) s)"
            return 0
        fi
        now="$(date +%s)"
        if [ $((now - start)) -ge "$timeout" ]; then
            log "not healthy after $timeout s: $last"
            patronictl_ list >&2 2>&1 || true
            show_logs 40 >&2
            die "cluster not healthy after $timeout s (last check: $last); logs are in $(logs_dir); '$0 down' stops it and removes its state"
        fi
        sleep 1
    done
}

# --- Commands ---------------------------------------------------------------------------------

cmd_up() {
    local started all_running=1 name begin msg
    begin="$(date +%s)"
    [ "$(id -u)" = 0 ] || die "run as root (Patroni is started as the postgres user with setpriv)"
    install_missing
    if find_state; then
        for name in etcd "${NODES[@]}" haproxy; do
            running_pid "$name" >/dev/null || all_running=0
        done
        if [ "$all_running" = 1 ] && msg="$(health_check 2>&1)"; then
            log "the cluster is already up: $msg"
            url
            return 0
        fi
        started="existing"
    else
        started="fresh"
    fi
    make_state
    log "state in $REAL ($started)"
    write_configs
    start_etcd
    for name in "${NODES[@]}"; do start_node "$name"; done
    start_haproxy
    wait_healthy "$DEFAULT_TIMEOUT"
    log "up in $(($(date +%s) - begin)) s; DATABASE_URL:"
    url
}

cmd_down() {
    local name pid pids=() pm
    if ! find_state; then
        log "nothing to stop: no state under $STATE"
        rm -f "$STATE" 2>/dev/null || true
        return 0
    fi
    # 1. HAProxy, so no client reaches a node that is going away.
    if pid="$(running_pid haproxy)"; then kill_and_wait TERM 5 "$pid" || kill_and_wait KILL 5 "$pid" || true; fi
    # 2. The Patronis. Stopped all at once, they would wait for each other (a synchronous
    #    standby waits to be released by the leader, the leader looks for the others), which
    #    takes some 15 s. So first pause the cluster (maintenance mode: no failover, and a
    #    stopping Patroni leaves its Postgres running), then stop the Patronis, then (3.) the
    #    postmasters with a fast shutdown. If the pause fails (etcd gone, a half-done `up`),
    #    SIGTERM still makes each Patroni stop its Postgres, only slower.
    for name in "${NODES[@]}"; do
        if pid="$(running_pid "$name")"; then pids+=("$pid"); fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        if running_pid etcd >/dev/null; then
            timeout 20 patronictl -c "$(ctl_cfg)" pause --wait >/dev/null 2>&1 ||
                log "could not pause the cluster (or it was paused already); stopping it anyway"
        fi
        log "stopping Patroni (${NODES[*]})"
        kill_and_wait TERM 40 "${pids[@]}" || kill_and_wait KILL 5 "${pids[@]}" || true
    fi
    # 3. Postgres left running by its paused Patroni, or left without it (kill-leader, a
    #    failed start): SIGINT is a fast shutdown.
    pids=()
    for name in "${NODES[@]}"; do
        if pm="$(postmaster_pid "$name")"; then pids+=("$pm"); fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        log "stopping Postgres (fast shutdown): ${pids[*]}"
        kill_and_wait INT 20 "${pids[@]}" || kill_and_wait KILL 5 "${pids[@]}" || true
    fi
    # 4. etcd.
    if pid="$(running_pid etcd)"; then kill_and_wait TERM 10 "$pid" || kill_and_wait KILL 5 "$pid" || true; fi
    # 5. Anything of ours still there (backends of a killed postmaster, a process whose pid file
    #    was lost): the processes are found by our directory, not by name.
    mapfile -t pids < <(stray_pids)
    if [ "${#pids[@]}" -gt 0 ]; then
        log "killing leftover processes: ${pids[*]}"
        kill_and_wait KILL 10 "${pids[@]}" || die "processes ${pids[*]} survived SIGKILL; state kept in $REAL"
    fi
    # 6. The state, so that the next `up` starts fresh.
    rm -rf "$REAL"
    rm -f "$STATE" 2>/dev/null || true
    [ ! -e "$STATE" ] || rm -rf "$STATE"
    log "down: all processes stopped, state removed"
}

cmd_status() {
    find_state || die "no cluster under $STATE; run '$0 up'"
    patronictl_ list || die "patronictl cannot reach the cluster (is etcd on 127.0.0.1:$ETCD_CLIENT_PORT running?)"
    local leader
    leader="$(current_leader)" || leader="(none)"
    echo "leader: $leader"
    echo "url: $(url)"
}

cmd_leader() {
    find_state || die "no cluster under $STATE; run '$0 up'"
    current_leader || die "the cluster has no leader right now"
}

cmd_crash_leader() {
    find_state || die "no cluster under $STATE"
    local leader pm
    leader="$(current_leader)" || die "the cluster has no leader"
    pm="$(postmaster_pid "$leader")" || die "the postmaster of $leader is not running"
    log "kill -9 the postmaster of $leader (pid $pm); its Patroni restarts it"
    kill -KILL "$pm"
    echo "$leader"
}

cmd_kill_leader() {
    find_state || die "no cluster under $STATE"
    local leader pm pat pids=()
    leader="$(current_leader)" || die "the cluster has no leader"
    if pat="$(running_pid "$leader")"; then pids+=("$pat"); fi
    if pm="$(postmaster_pid "$leader")"; then pids+=("$pm"); fi
    [ "${#pids[@]}" -gt 0 ] || die "neither Patroni nor Postgres of $leader is running"
    log "kill -9 Patroni and the postmaster of $leader (pids ${pids[*]}); a standby takes over once the leader key expires (ttl 10 s)"
    kill_and_wait KILL 10 "${pids[@]}" || die "pids ${pids[*]} survived SIGKILL"
    log "wait for the new leader with: $0 wait-healthy 60 2; bring $leader back with: $0 revive $leader"
    echo "$leader"
}

cmd_revive() {
    local name="${1:-}"
    [ -n "$name" ] || die "usage: $0 revive NODE (one of ${NODES[*]})"
    find_state || die "no cluster under $STATE"
    node_index "$name" >/dev/null || die "no node named $name (nodes: ${NODES[*]})"
    if running_pid "$name" >/dev/null; then
        log "$name's Patroni is already running"
        return 0
    fi
    # A postmaster that survived its Patroni would be adopted by the new Patroni; that is fine.
    start_node "$name"
}

cmd_switchover() {
    find_state || die "no cluster under $STATE"
    local json leader candidate i new=""
    json="$(members_json)" || die "patronictl cannot reach the cluster"
    leader="$(printf '%s' "$json" | members_with_role Leader | head -n 1)"
    candidate="$(printf '%s' "$json" | members_with_role 'Sync Standby' | head -n 1)"
    [ -n "$leader" ] || die "the cluster has no leader"
    [ -n "$candidate" ] || die "the cluster has no synchronous standby to switch over to"
    log "switchover from $leader to $candidate"
    patronictl_ switchover --leader "$leader" --candidate "$candidate" --force >&2 ||
        die "patronictl switchover failed"
    # patronictl exits 0 even when the leader refuses: check that the leadership moved.
    for i in $(seq 1 60); do
        new="$(current_leader 2>/dev/null || true)"
        if [ "$new" = "$candidate" ]; then
            log "$candidate is the leader now"
            echo "$candidate"
            return 0
        fi
        sleep 0.5
    done
    die "the leader is '${new:-none}' 30 s after the switchover, not $candidate"
}

cmd_check() {
    find_state || die "no cluster under $STATE"
    health_check "$1"
}

cmd_logs() {
    find_state || die "no cluster under $STATE"
    show_logs "${1:-40}"
}

cmd_env() {
    local leader
    find_state && leader="$(current_leader 2>/dev/null)" || leader=""
    printf 'DATABASE_URL=%s\n' "$(url)"
    printf 'HA_REPLICA_URL=%s\n' "$(replica_url)"
    printf 'HA_LEADER=%s\n' "$leader"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        url) url ;;
        replica-url) replica_url ;;
        env) cmd_env ;;
        leader) cmd_leader ;;
        crash-leader) cmd_crash_leader ;;
        kill-leader) cmd_kill_leader ;;
        revive) cmd_revive "$@" ;;
        switchover) cmd_switchover ;;
        wait-healthy) wait_healthy "${1:-$DEFAULT_TIMEOUT}" "${2:-3}" ;;
        check) cmd_check "${1:-3}" ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
