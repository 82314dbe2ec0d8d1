#!/usr/bin/env bash
# bench/hub.sh: the hub sink (ss12000-api-sink) serving a full listing of
# persons to 1, 8 and 32 concurrent clients, next to the Python SS 12000
# test server serving the same persons (project issue 18). Run by
# bench/run.sh (scenario "hub") on its broker, or alone:
#
#   bench/hub.sh SKOLSYNC OUT_DIR WORK_DIR [PERSONS [REPS]]
#
#   HUB_BROKERS      the Kafka broker list (run.sh sets it); unset: the script
#                    starts its own Kafka (scripts/kafka.sh, state in
#                    build/bench-hub-env) and stops it again
#   HUB_DATA_DIR     the persons set (default build-bench/data/hub-pPERSONS,
#                    generated there when missing)
#   HUB_CLIENTS      the concurrency levels (default "1 8 32")
#   BENCH_QUICK=1    defaults PERSONS 10000, REPS 1; otherwise 100000, REPS 2
#   HUB_LOAD_LATENCIES=FILE  bench/hub_load writes every page request of the
#                    last run there ("client page start_s ms"), to look into stalls
#
# Data: tests/fixtures/ss12000_gen.py --seed 1 with enough students, of which
# the first PERSONS lines of persons.jsonl are kept. The hub is filled the
# way a deployment fills it: a jsonl-source `run --once` into Kafka (a fresh
# topic prefix), then a daemon with only the ss12000-api-sink (entities:
# [Person], plain HTTP on 127.0.0.1, one bearer-token client) until its
# /metrics count PERSONS records. The baseline is
# tests/fixtures/ss12000_server.py --data (the same persons.jsonl, bearer
# auth, page tokens without expiry), started beside it.
#
# Per repetition and per client count, both servers are measured back to
# back (the order alternates between repetitions): bench/hub_load (C,
# libcurl, one thread and one kept-alive connection per client, all started
# at once) lets every client walk the full listing of /persons with
# limit = the hub's max_limit, following pageToken; every answer must be 200
# and every walk must return exactly PERSONS records. Measured: records/s
# served (all clients' records / the time until the last walk ended), p50,
# p99 and max latency per page request, and the server process's RSS
# (bench/rss.sh every 0.2 s): before, peak while serving, 2 s after; and its
# CPU seconds. Writes OUT_DIR/hub.csv and OUT_DIR/hub_fill.csv.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SK=${1:?skolsync binary}
OUT=${2:?output directory}
WORK=${3:?work directory}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then def_p=10000 def_reps=1; else def_p=100000 def_reps=2; fi
PERSONS=${4:-$def_p}
REPS=${5:-$def_reps}
CLIENTS=${HUB_CLIENTS:-1 8 32}
DATA=${HUB_DATA_DIR:-$ROOT/build-bench/data/hub-p$PERSONS}
LIMIT=1000                      # the hub's max_limit below, and the page size asked of both
TOKEN=bench-hub-token-0123456789abcdef
T_START=$(date +%s)
mkdir -p "$OUT" "$WORK"

log() { printf '[hub %4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------ cleanup ---
# shellcheck source=bench/env.sh
. "$HERE/env.sh"
cleanup() {
    trap ':' INT TERM HUP
    bench_stop_pids
    bench_env_stop
}
bench_traps

# ------------------------------------------------------ load generator ---
cc -O2 -Wall -o "$WORK/hub_load" "$HERE/hub_load.c" $(pkg-config --cflags --libs libcurl) -lpthread ||
    die "cannot build hub_load (libcurl development files: scripts/deps.sh)"

# -------------------------------------------------------- environment ---
BROKERS=${HUB_BROKERS:-}
bench_kafka_start bench-hub-env

# --------------------------------------------------------------- data ---
if [[ ! -f $DATA/.complete ]]; then
    students=$(( PERSONS * 2 / 5 + 500 ))   # ~2.5 persons per student (guardians, staff)
    log "generating ss12000_gen.py --seed 1 --students $students, keeping $PERSONS persons"
    rm -rf "$DATA" "$DATA.gen"
    python3 "$ROOT/tests/fixtures/ss12000_gen.py" --seed 1 --students "$students" --quiet \
        --out "$DATA.gen" || die "generator failed"
    mkdir -p "$DATA"
    head -n "$PERSONS" "$DATA.gen/persons.jsonl" > "$DATA/persons.jsonl"
    rm -rf "$DATA.gen"
    n=$(wc -l < "$DATA/persons.jsonl")
    [[ $n -eq $PERSONS ]] || die "the generator gave $n persons, not $PERSONS"
    touch "$DATA/.complete"
fi
TAG=hub$$x$(date +%s)
PFX="$TAG."

# ------------------------------------------------------ configuration ---
HUB_PORT=$(free_port) ADMIN=$(free_port)
kafka_yaml() {
    cat <<EOF
kafka:
  brokers: $BROKERS
  topic_prefix: $PFX
  deployment: $TAG
  partitions: 3
log:
  level: warn
admin:
  listen: 127.0.0.1:$ADMIN
EOF
}
# The hub's whole configuration, in one place (the client config format is
# the sink's: docs/ss12000-api-sink.md).
hub_yaml() {
    kafka_yaml
    cat <<EOF
sinks:
  hub:
    type: ss12000-api-sink
    entities: [Person]
    listen: 127.0.0.1:$HUB_PORT
    state_dir: $WORK/hub-state
    clients:
      bench: {token: $TOKEN, entities: all}
    max_limit: $LIMIT
EOF
}

log "filling $PFX* with $PERSONS persons (jsonl-source, run --once)"
{ kafka_yaml; cat <<EOF
sources:
  files:
    type: jsonl-source
    path: $DATA
EOF
} > "$WORK/fill.yaml"
"$SK" run --once -c "$WORK/fill.yaml" > "$WORK/fill.log" 2>&1 || die "fill failed: $(tail -5 "$WORK/fill.log")"

metric() { # CONNECTOR: skolsync_records_total of a connector
    curl -s "http://127.0.0.1:$ADMIN/metrics" 2>/dev/null |
        sed -n "s/^skolsync_records_total{connector=\"$1\".*} \([0-9]*\)$/\1/p"
}

rm -rf "$WORK/hub-state"
hub_yaml > "$WORK/hub.yaml"
t_hub=$(date +%s.%N)
"$SK" run -c "$WORK/hub.yaml" > "$WORK/hub.log" 2>&1 &
HUB_PID=$!
PIDS+=("$HUB_PID")
"$HERE/rss.sh" "$HUB_PID" 0.2 > "$WORK/hub.rss" &
PIDS+=($!)
for i in $(seq 1 2400); do
    v=$(metric hub)
    [[ -n $v && $v -ge $PERSONS ]] && break
    kill -0 "$HUB_PID" 2>/dev/null || die "the hub daemon died: $(tail -5 "$WORK/hub.log")"
    sleep 0.25
done
[[ -n $v && $v -ge $PERSONS ]] || die "the hub did not reach $PERSONS records in 600 s"
# It serves once its driver saw it caught up (503 catching_up until then).
for i in $(seq 1 200); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$HUB_PORT/persons?limit=1")
    [[ $code != 503 ]] && break
    sleep 0.05
done
[[ $code == 200 ]] || die "the hub answers $code after the fill"
t_filled=$(date +%s.%N)
fill_s=$(awk -v a="$t_hub" -v b="$t_filled" 'BEGIN{printf "%.2f", b - a}')
db_bytes=$(cat "$WORK/hub-state"/hub.db* 2>/dev/null | wc -c)
log "hub holds $PERSONS persons after ${fill_s} s (state ${db_bytes} bytes)"

log "starting the Python test server with the same persons"
python3 "$ROOT/tests/fixtures/ss12000_server.py" --port 0 --base /v2.0 --data "$DATA" \
    --page-token-ttl 0 --auth bearer --token "$TOKEN" > "$WORK/py.out" 2> "$WORK/py.err" </dev/null &
PY_PID=$!
PIDS+=("$PY_PID")
"$HERE/rss.sh" "$PY_PID" 0.2 > "$WORK/py.rss" &
PIDS+=($!)
t_py=$(date +%s.%N)
for i in $(seq 1 600); do
    [[ -s $WORK/py.out ]] && break
    kill -0 "$PY_PID" 2>/dev/null || die "the test server died: $(tail -3 "$WORK/py.err")"
    sleep 0.5
done
PY=$(sed -n 's/^LISTENING //p' "$WORK/py.out")
[[ -n $PY ]] || die "the test server did not start"
echo "persons,fill_seconds,state_bytes,hub_start,py_start" > "$OUT/hub_fill.csv"
echo "$PERSONS,$fill_s,$db_bytes,$t_hub,$t_py" >> "$OUT/hub_fill.csv"
sleep 2

RES=$WORK/runs.csv
echo "rep,server,clients,seconds,records,pages,bytes,p50_ms,p99_ms,max_ms,failed,t_start,t_end" > "$RES"
load() { # REP SERVER URL CLIENTS
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$("$WORK/hub_load" "$3" "$TOKEN" "$4" "$LIMIT" "$PERSONS" 2>"$WORK/load.err") ||
        die "$2, $4 clients: $(head -3 "$WORK/load.err")"
    t1=$(date +%s.%N)
    read -r _ secs recs pages bytes p50 p99 mx failed <<<"$out"
    echo "$1,$2,$4,$secs,$recs,$pages,$bytes,$p50,$p99,$mx,$failed,$t0,$t1" >> "$RES"
    log "  rep $1 $2 $4 clients: $recs records in ${secs} s, p50 $p50 ms, p99 $p99 ms"
    sleep 2                     # the "after" RSS sample
}
for rep in $(seq 1 "$REPS"); do
    if (( rep % 2 )); then order="hub python"; else order="python hub"; fi
    for c in $CLIENTS; do
        for s in $order; do
            if [[ $s == hub ]]; then load "$rep" hub "http://127.0.0.1:$HUB_PORT" "$c"
            else load "$rep" python "http://$PY/v2.0" "$c"; fi
        done
    done
done
kill "$HUB_PID" "$PY_PID" 2>/dev/null
wait "$HUB_PID" "$PY_PID" 2>/dev/null

# RSS and CPU of each server around each run -> hub.csv
python3 "$HERE/hub_report.py" summarize "$RES" "$WORK/hub.rss" "$t_hub" "$WORK/py.rss" "$t_py" \
    "$OUT/hub.csv" || die "summarising the runs failed"
rm -rf "$WORK/hub-state"
cat "$OUT/hub.csv" >&2
