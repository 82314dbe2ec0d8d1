# bench/env.sh: sourced by the bench scenarios that run alone as well as under
# bench/run.sh (ha.sh, connect.sh). Needs ROOT, WORK, log() and die().
#
#   bench_env_start NAME   when BROKERS or PG is empty: starts a throw-away
#                          Kafka + PostgreSQL (scripts/kafka.sh, scripts/pg.sh)
#                          with their state in build/NAME, sets BROKERS, PG and
#                          BENCH_OWN_ENV=1
#   bench_env_stop         stops them again if bench_env_start started them
#                          (call it from the EXIT trap)

BENCH_OWN_ENV=0

bench_env_start() {
    [[ -n ${BROKERS:-} && -n ${PG:-} ]] && return 0
    export SK_TESTENV_DIR=$ROOT/build/$1
    mkdir -p "$SK_TESTENV_DIR"
    BENCH_OWN_ENV=1
    log "starting Kafka + PostgreSQL (SK_TESTENV_DIR=build/$1)"
    "$ROOT/scripts/pg.sh" start >"$WORK/pg.out" 2>"$WORK/pg.err" &
    local pgstart=$!
    BROKERS=$("$ROOT/scripts/kafka.sh" start 2>"$WORK/kafka.err") ||
        die "Kafka did not start: $(tail -3 "$WORK/kafka.err")"
    wait $pgstart || die "PostgreSQL did not start: $(tail -3 "$WORK/pg.err")"
    PG=$(cat "$WORK/pg.out")
}

bench_env_stop() {
    [[ $BENCH_OWN_ENV == 1 ]] || return 0
    log "stopping Kafka and PostgreSQL"
    "$ROOT/scripts/kafka.sh" stop >/dev/null 2>&1
    "$ROOT/scripts/pg.sh" stop >/dev/null 2>&1
}
