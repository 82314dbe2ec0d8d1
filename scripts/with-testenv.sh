#!/usr/bin/env bash
# Run a command inside the test environment:
#
#   scripts/with-testenv.sh CMD [ARGS...]
#
# Starts Kafka + PostgreSQL (scripts/testenv.sh start), exports SK_TEST_BROKERS,
# SK_TEST_PG and SK_TESTENV_DIR, runs CMD, and always stops the environment
# afterwards -- also when CMD fails or the wrapper gets SIGINT/SIGTERM/SIGHUP --
# unless it was running already: an environment someone else started (and
# others may be using) is theirs to stop.
# Exits with CMD's exit status (128+N if killed by signal N), or 1 if the
# environment could not be started.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TESTENV_DIR=${SK_TESTENV_DIR:-$ROOT/build/testenv}
case $TESTENV_DIR in /*) ;; *) TESTENV_DIR=$PWD/$TESTENV_DIR ;; esac
export SK_TESTENV_DIR=$TESTENV_DIR

if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

child=
# (handlers are ':' rather than '': ignored signals would be inherited by
# testenv.sh and make the stop itself unkillable)
reused=0
cleanup() {
    trap ':' INT TERM HUP
    [[ $reused == 1 ]] || "$HERE/testenv.sh" stop >&2 || true
}
on_signal() {
    local sig=$1 num=$2
    trap ':' INT TERM HUP
    if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
        kill -s "$sig" "$child" 2>/dev/null || true
        # SIGINT is ignored by background children of a script: follow up
        [[ $sig == INT ]] && kill -s TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    exit $((128 + num))
}
"$HERE/testenv.sh" status >/dev/null 2>&1 && reused=1
trap cleanup EXIT
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP

"$HERE/testenv.sh" start >/dev/null || exit 1
# shellcheck disable=SC1091
. "$TESTENV_DIR/env"

# run CMD in the background so signals reach this shell at once
"$@" <&0 &
child=$!
wait "$child"
rc=$?
child=
exit $rc
