#!/usr/bin/env bash
# Throw-away SCIM 2.0 server for the scim-sink tests: scim2-server (PyPI),
# an in-memory RFC 7643/7644 service provider, on a free loopback port.
#
#   scripts/scim.sh start    create the venv (once), start the server, wait
#                            until it answers, write $SK_TESTENV_DIR/scim.env
#   scripts/scim.sh stop     stop it (its data is in memory: gone)
#   scripts/scim.sh status   exit 0 and print the env line if running
#
# $SK_TESTENV_DIR/scim.env (source it) exports
#   SK_TEST_SCIM=http://127.0.0.1:PORT/v2
#
# Environment:
#   SK_TESTENV_DIR  state dir (default <repo>/build/testenv); the venv is
#                   $SK_TESTENV_DIR/scim-venv, the server's files $SK_TESTENV_DIR/scim
#   SK_SCIM_PORT    port (default: a free loopback port)
#
# The server runs with --precis: userNames are checked against the PRECIS
# UsernameCaseMapped profile (RFC 8265), so a userName with a space is
# refused with 400, which the tests use as a real server-side rejection.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTENV_DIR=${SK_TESTENV_DIR:-$ROOT/build/testenv}
case $TESTENV_DIR in /*) ;; *) TESTENV_DIR=$PWD/$TESTENV_DIR ;; esac
VENV=$TESTENV_DIR/scim-venv
STATE=$TESTENV_DIR/scim
# Pinned: the server and everything it imports (pip freeze of a working venv).
PINS=(scim2-server==0.8.3 scim2-models==0.12.3 precis_i18n==1.1.2 pydantic==2.14.4
      pydantic_core==2.50.5 email-validator==2.4.0 dnspython==2.9.2 idna==3.20 lark==1.3.1
      annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0)

log() { printf 'scim.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

url() { echo "http://127.0.0.1:$(cat "$STATE/port")/v2"; }

answers() {
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/ServiceProviderConfig", timeout=2).read()
EOF
}

is_running() {
    [[ -f $STATE/pid && -f $STATE/port ]] || return 1
    kill -0 "$(cat "$STATE/pid")" 2>/dev/null || return 1
    answers "$(url)"
}

ensure_venv() {
    if [[ -x $VENV/bin/scim2-server ]] && "$VENV/bin/pip" freeze 2>/dev/null | grep -qx 'scim2-server==0.8.3'; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 missing"
    log "creating $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" \
        || die "pip install scim2-server failed"
}

write_env() {
    printf 'export SK_TEST_SCIM=%s\n' "$(url)" > "$TESTENV_DIR/scim.env.tmp"
    mv "$TESTENV_DIR/scim.env.tmp" "$TESTENV_DIR/scim.env"
    cat "$TESTENV_DIR/scim.env"
}

start() {
    mkdir -p "$STATE"
    if is_running; then
        log "already running"
        write_env
        return 0
    fi
    ensure_venv
    local port=${SK_SCIM_PORT:-$(free_port)} pid i
    echo "$port" > "$STATE/port"
    # setsid: its own process group, so stop can end it and nothing else
    setsid "$VENV/bin/scim2-server" --hostname 127.0.0.1 --port "$port" --precis \
        >"$STATE/server.log" 2>&1 < /dev/null 9>&- &
    pid=$!
    echo "$pid" > "$STATE/pid"
    for i in $(seq 1 100); do
        if answers "$(url)"; then
            log "scim2-server 0.8.3 up on $(url) (pid $pid)"
            write_env
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$STATE/server.log" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$STATE/pid"
    die "scim2-server did not answer on port $port"
}

stop() {
    rm -f "$TESTENV_DIR/scim.env"
    if [[ -f $STATE/pid ]]; then
        local pid
        pid=$(cat "$STATE/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped"
        fi
    fi
    rm -rf "$STATE"
    return 0
}

status() {
    if is_running; then
        printf 'export SK_TEST_SCIM=%s\n' "$(url)"
        return 0
    fi
    log "not running"
    return 1
}

case ${1:-} in
    start)  start ;;
    stop)   stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
