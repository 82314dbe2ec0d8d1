#!/usr/bin/env bash
# Test environment for skolsync: a Kafka broker and a PostgreSQL cluster.
#
#   scripts/testenv.sh start               start both (reusing running ones),
#                                          write $SK_TESTENV_DIR/env
#   scripts/testenv.sh stop [--keep-data]  stop both (either may be down)
#   scripts/testenv.sh status              exit 0 if both are running
#
# $SK_TESTENV_DIR/env (source it) exports:
#   SK_TEST_BROKERS=127.0.0.1:PORT
#   SK_TEST_PG='host=127.0.0.1 port=N user=postgres dbname=skolsync_test'
#   SK_TESTENV_DIR=<absolute state dir>
#   SK_TEST_SCIM=http://127.0.0.1:PORT/v2   (scripts/scim.sh)
# See scripts/kafka.sh and scripts/pg.sh for the other SK_* knobs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TESTENV_DIR=${SK_TESTENV_DIR:-$ROOT/build/testenv}
case $TESTENV_DIR in /*) ;; *) TESTENV_DIR=$PWD/$TESTENV_DIR ;; esac
export SK_TESTENV_DIR=$TESTENV_DIR

log() { printf 'testenv.sh: %s\n' "$*" >&2; }

mkdir -p "$TESTENV_DIR"
# one start/stop at a time per state dir (fd 9 is closed for the service
# scripts: a broker or postmaster inheriting it would hold the lock forever)
exec 9>"$TESTENV_DIR/.lock"
flock -w 300 9 || { log "error: $TESTENV_DIR/.lock held for 300s"; exit 1; }

start() {
    rm -f "$TESTENV_DIR/env"
    # PostgreSQL starts in the background while the broker boots
    local pgout=$TESTENV_DIR/.pg.start.out pgpid brokers pg scimpid
    "$HERE/pg.sh" start >"$pgout" 9>&- &
    pgpid=$!
    # ... and the SCIM server too (scim2-server from PyPI in a venv)
    "$HERE/scim.sh" start >/dev/null 9>&- &
    scimpid=$!
    if ! brokers=$("$HERE/kafka.sh" start 9>&-); then
        wait "$pgpid" || true
        log "error: Kafka did not start"
        return 1
    fi
    if ! wait "$pgpid"; then
        log "error: PostgreSQL did not start"
        return 1
    fi
    if ! wait "$scimpid"; then
        log "error: the SCIM server did not start"
        return 1
    fi
    pg=$(cat "$pgout"); rm -f "$pgout"
    cat > "$TESTENV_DIR/env.tmp" <<EOT
export SK_TEST_BROKERS=$brokers
export SK_TEST_PG='$pg'
export SK_TESTENV_DIR='$TESTENV_DIR'
$(cat "$TESTENV_DIR/scim.env")
EOT
    mv "$TESTENV_DIR/env.tmp" "$TESTENV_DIR/env"
    cat "$TESTENV_DIR/env"
}

stop() {
    local rc=0
    rm -f "$TESTENV_DIR/env"
    "$HERE/kafka.sh" stop "$@" 9>&- || rc=1
    "$HERE/pg.sh" stop "$@" 9>&- || rc=1
    "$HERE/scim.sh" stop 9>&- || rc=1
    if [[ ${1:-} != --keep-data ]]; then
        # leave the (empty) dir alone if others put things there
        rm -f "$TESTENV_DIR/.lock" "$TESTENV_DIR/.pg.start.out"
        rmdir "$TESTENV_DIR" 2>/dev/null || true
    fi
    return $rc
}

status() {
    local rc=0
    "$HERE/kafka.sh" status >/dev/null 9>&- || rc=1
    "$HERE/pg.sh" status >/dev/null 9>&- || rc=1
    "$HERE/scim.sh" status >/dev/null 9>&- || rc=1
    [[ -f $TESTENV_DIR/env ]] && cat "$TESTENV_DIR/env"
    return $rc
}

case ${1:-} in
    start)  start ;;
    stop)   shift; stop "$@" ;;
    status) status ;;
    *) echo "usage: $0 start|stop [--keep-data]|status" >&2; exit 2 ;;
esac
