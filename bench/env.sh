# bench/env.sh: sourced by the bench scenarios that run alone as well as under
# bench/run.sh (ha.sh, connect.sh, hub.sh, pairs.sh). Needs ROOT, WORK, log()
# and die().
#
#   bench_env_start NAME   when BROKERS or PG is empty: starts a throw-away
#                          Kafka + PostgreSQL (scripts/kafka.sh, scripts/pg.sh)
#                          with their state in build/NAME, sets BROKERS, PG and
#                          BENCH_OWN_ENV=1
#   bench_kafka_start NAME the same for Kafka alone (BROKERS empty)
#   bench_env_stop         stops what either started (call it from the EXIT
#                          trap)
#   bench_stop_pids        kills and reaps the processes in PIDS
#   bench_traps            cleanup() on EXIT; INT/TERM/HUP exit with 128+signal
#   free_port              a free TCP port on 127.0.0.1

BENCH_OWN_ENV=0 BENCH_OWN_PG=0
# a PostgreSQL of its own is durable, as under bench/run.sh (BENCH_PG_DURABLE=0: not)
export SK_PG_DURABLE=${BENCH_PG_DURABLE:-1}
PIDS=()

bench_env_start() {
    [[ -n ${BROKERS:-} && -n ${PG:-} ]] && return 0
    export SK_TESTENV_DIR=$ROOT/build/$1
    mkdir -p "$SK_TESTENV_DIR"
    BENCH_OWN_ENV=1 BENCH_OWN_PG=1
    log "starting Kafka + PostgreSQL (SK_TESTENV_DIR=build/$1)"
    "$ROOT/scripts/pg.sh" start >"$WORK/pg.out" 2>"$WORK/pg.err" &
    local pgstart=$!
    BROKERS=$("$ROOT/scripts/kafka.sh" start 2>"$WORK/kafka.err") ||
        die "Kafka did not start: $(tail -3 "$WORK/kafka.err")"
    wait $pgstart || die "PostgreSQL did not start: $(tail -3 "$WORK/pg.err")"
    PG=$(cat "$WORK/pg.out")
}

bench_kafka_start() {
    [[ -n ${BROKERS:-} ]] && return 0
    export SK_TESTENV_DIR=$ROOT/build/$1
    mkdir -p "$SK_TESTENV_DIR"
    BENCH_OWN_ENV=1
    log "starting Kafka (SK_TESTENV_DIR=build/$1)"
    BROKERS=$("$ROOT/scripts/kafka.sh" start 2>"$WORK/kafka.err") ||
        die "Kafka did not start: $(tail -3 "$WORK/kafka.err")"
}

bench_env_stop() {
    [[ $BENCH_OWN_ENV == 1 ]] || return 0
    log "stopping what this scenario started"
    "$ROOT/scripts/kafka.sh" stop >/dev/null 2>&1
    [[ $BENCH_OWN_PG == 1 ]] && "$ROOT/scripts/pg.sh" stop >/dev/null 2>&1
    BENCH_OWN_ENV=0 BENCH_OWN_PG=0
}

bench_stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}

bench_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
