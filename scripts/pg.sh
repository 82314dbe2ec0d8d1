#!/usr/bin/env bash
# Throw-away PostgreSQL cluster for the skolsync test suite.
#
#   scripts/pg.sh start               initdb (once) + start, print the conninfo
#   scripts/pg.sh stop [--keep-data]  pg_ctl stop -m fast; remove the cluster
#                                     unless --keep-data
#   scripts/pg.sh status              exit 0 and print the conninfo if running
#
# Environment:
#   SK_TESTENV_DIR  state dir (default <repo>/build/testenv); the cluster lives
#                   in $SK_TESTENV_DIR/pg
#   SK_PG_PORT      port (default: a free loopback port; a kept cluster reuses
#                   its previous port)
#   SK_PG_BINDIR    PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   SK_PG_DB        database to create (default skolsync_test)
#   SK_PG_DURABLE   1: a cluster with PostgreSQL's own durability (fsync,
#                   synchronous_commit, full_page_writes on); default off,
#                   for speed: test data is thrown away
#
# Root cannot run postgres: as root the cluster is owned by and run as the
# 'postgres' user (created by Debian's postgresql-common). If that user cannot
# reach $SK_TESTENV_DIR (e.g. the checkout is under /root, mode 700), the data
# dir goes to a private directory under /tmp, recorded in $SK_TESTENV_DIR/pg/datadir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTENV_DIR=${SK_TESTENV_DIR:-$ROOT/build/testenv}
case $TESTENV_DIR in /*) ;; *) TESTENV_DIR=$PWD/$TESTENV_DIR ;; esac
STATE=$TESTENV_DIR/pg
DB=${SK_PG_DB:-skolsync_test}
PGUSER_NAME=postgres   # database superuser name (initdb -U)

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

bindir() {
    if [[ -n ${SK_PG_BINDIR:-} ]]; then echo "$SK_PG_BINDIR"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [[ -n $d && -x $d/initdb ]] || die "PostgreSQL server not installed (run scripts/deps.sh test)"
    echo "$d"
}

# run a command as the cluster owner
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p _
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
}

datadir() {
    if [[ -f $STATE/datadir ]]; then cat "$STATE/datadir"; else echo "$STATE/data"; fi
}

conninfo() {
    echo "host=127.0.0.1 port=$(cat "$STATE/port") user=$PGUSER_NAME dbname=$DB"
}

is_running() {
    [[ -f $STATE/port ]] || return 1
    local d
    d=$(datadir)
    [[ -d $d ]] || return 1
    as_owner "$(bindir)/pg_ctl" status -D "$d" >/dev/null 2>&1
}

start() {
    local bin d port
    bin=$(bindir)
    if is_running; then
        log "already running"
        conninfo
        return 0
    fi
    mkdir -p "$STATE"
    d=$(datadir)
    if [[ ! -f $d/PG_VERSION ]]; then
        # fresh cluster
        if [[ -f $STATE/datadir ]]; then rm -rf "$(cat "$STATE/datadir")"; rm -f "$STATE/datadir"; fi
        rm -rf "$STATE/data"
        d=$STATE/data
        mkdir -p "$d"
        if [[ $(id -u) -eq 0 ]]; then
            id postgres >/dev/null 2>&1 || die "user 'postgres' missing (install postgresql: scripts/deps.sh test)"
            chown postgres: "$d"
            if ! runuser -u postgres -- test -w "$d"; then
                # postgres cannot traverse to $STATE (e.g. a checkout under /root)
                rmdir "$d"
                d=$(mktemp -d /tmp/skolsync-pg.XXXXXX)
                chown postgres: "$d"
                echo "$d" > "$STATE/datadir"
            fi
        fi
        chmod 700 "$d"
        port=${SK_PG_PORT:-$(free_port)}
        echo "$port" > "$STATE/port"
        if ! as_owner "$bin/initdb" -D "$d" -U "$PGUSER_NAME" -A trust -E UTF8 \
                --locale=C.UTF-8 --no-sync >"$STATE/initdb.log" 2>&1; then
            cat "$STATE/initdb.log" >&2
            die "initdb failed"
        fi
        # loopback only, socket inside the data dir, no durability (test
        # data) unless SK_PG_DURABLE=1
        local durability="fsync = off
synchronous_commit = off
full_page_writes = off"
        [[ ${SK_PG_DURABLE:-0} == 1 ]] && durability="# durable: PostgreSQL's defaults (SK_PG_DURABLE=1)"
        cat >> "$d/postgresql.conf" <<EOF

# --- skolsync test cluster (scripts/pg.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d'
$durability
max_connections = 100
shared_buffers = 64MB
logging_collector = off
log_min_messages = warning
EOF
        # trust for local socket and loopback TCP only
        cat > "$d/pg_hba.conf" <<EOF
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
host    all   all   ::1/128       trust
EOF
        local fresh=1
    else
        port=$(cat "$STATE/port")
        if [[ -n ${SK_PG_PORT:-} && $SK_PG_PORT != "$port" ]]; then
            die "kept cluster uses port $port but SK_PG_PORT=$SK_PG_PORT; run 'stop' first"
        fi
        local kept_durable=1
        grep -q '^fsync = off' "$d/postgresql.conf" && kept_durable=0
        if [[ ${SK_PG_DURABLE:-0} != "$kept_durable" ]]; then
            die "kept cluster has SK_PG_DURABLE=$kept_durable, asked for ${SK_PG_DURABLE:-0}; run 'stop' first"
        fi
        log "restarting kept cluster on port $port"
    fi
    password_rule "$d/pg_hba.conf"
    # the log file must be writable by the owner: keep it in the data dir
    if ! as_owner "$bin/pg_ctl" start -D "$d" -l "$d/server.log" -w -t 60 >/dev/null 2>&1; then
        tail -n 30 "$d/server.log" >&2 2>/dev/null || true
        die "postgres did not start (log: $d/server.log)"
    fi
    if [[ ${fresh:-0} == 1 ]]; then
        "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U "$PGUSER_NAME" -d postgres \
            -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null \
            || die "CREATE DATABASE $DB failed"
    fi
    log "PostgreSQL $("$bin/postgres" -V | awk '{print $3}') up on 127.0.0.1:$port (data $d)"
    conninfo
}

# Members of the group role sk_password_login log in over TCP with a password
# (scram), ahead of the trust lines: test_check_connect needs a login that a
# wrong password fails. Nobody else is a member, so the rest stays trust. Also
# added to a kept cluster's file (a running one: SELECT pg_reload_conf()).
password_rule() {
    grep -q sk_password_login "$1" ||
        sed -i '1i host    all   +sk_password_login   127.0.0.1/32  scram-sha-256' "$1"
}

stop() {
    local keep=0
    [[ ${1:-} == --keep-data ]] && keep=1
    local d bin
    d=$(datadir)
    if [[ -f $d/postmaster.pid ]]; then
        bin=$(bindir)
        as_owner "$bin/pg_ctl" stop -D "$d" -m fast -w -t 60 >/dev/null 2>&1 \
            || as_owner "$bin/pg_ctl" stop -D "$d" -m immediate -w -t 30 >/dev/null 2>&1 \
            || true
        log "stopped"
    fi
    if (( ! keep )); then
        [[ -f $STATE/datadir ]] && rm -rf "$(cat "$STATE/datadir")"
        rm -rf "$STATE"
    fi
    return 0
}

status() {
    if is_running; then
        conninfo
        return 0
    fi
    log "not running"
    return 1
}

case ${1:-} in
    start)  start ;;
    stop)   shift; stop "$@" ;;
    status) status ;;
    *) echo "usage: $0 start|stop [--keep-data]|status" >&2; exit 2 ;;
esac
