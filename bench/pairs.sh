#!/usr/bin/env bash
# bench/pairs.sh: many connectors in one daemon (project issue 17, "many
# connectors per daemon"). Run by bench/run.sh (scenario "pairs") on its
# broker, or alone:
#
#   bench/pairs.sh SKOLSYNC OUT_DIR WORK_DIR [COUNTS]
#
#   COUNTS           pair counts, one daemon each (default "1 10 100";
#                    BENCH_QUICK=1: "1 10")
#   PAIRS_BROKERS    the Kafka broker list (run.sh sets it); unset: the script
#                    starts its own Kafka (scripts/kafka.sh, state in
#                    build/bench-pairs-env) and stops it again
#   PAIRS_PERSONS    persons per pair (default 100)
#   PAIRS_IDLE       seconds of idle sampling once all is applied (default 10)
#   PAIRS_TIMEOUT    seconds a daemon may take to apply everything (default 900)
#
# A pair is one jsonl-source reading its own persons.jsonl (PAIRS_PERSONS
# persons of tests/fixtures/ss12000_gen.py --seed 1, the ids rewritten per
# pair so that no two pairs share an id) and one sqlite-sink (`entities:
# [Person]`, its own database file), the sinks on the node's shared consumer
# (`kafka.shared_consumer: true`, the default, set here all the same).
# Sources cannot be given topics of their
# own: every source of a daemon writes to the one set of entity topics of
# `kafka.topic_prefix` (docs/architecture.md §5). So each sink consumes the
# persons of all pairs: with N pairs every sink applies N × PAIRS_PERSONS
# rows (100 pairs: 10 000 rows per sink, 1 000 000 in all). Each pair count
# gets a fresh topic prefix and deployment.
#
# Per pair count: ONE daemon with all 2 N connectors is started; start-up
# time = until every sink's skolsync_records_total (/metrics, polled every
# 0.5 s) reached N × PAIRS_PERSONS and every source's reached PAIRS_PERSONS.
# Then PAIRS_IDLE s of idle sampling every 0.5 s: VmRSS (median = steady
# RSS), Threads (/proc/PID/status), open fds; VmHWM (peak RSS) and CPU
# seconds at the end; the daemon's threads by name (/proc/PID/task/*/comm)
# go to pairs_threads.csv. Per connector: steady RSS / 2 N and threads / 2 N,
# against the issue's targets (≤ 1 MB, ≤ 1 thread per connector). A daemon
# that fails to start or does not apply everything in time is recorded with
# its status and last log lines (pairs.md), and the next count runs.
# Writes OUT_DIR/pairs.csv, OUT_DIR/pairs_threads.csv and OUT_DIR/pairs.md.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SK=${1:?skolsync binary}
OUT=${2:?output directory}
WORK=${3:?work directory}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then def_counts="1 10"; else def_counts="1 10 100"; fi
COUNTS=${4:-$def_counts}
PERSONS=${PAIRS_PERSONS:-100}
IDLE=${PAIRS_IDLE:-10}
TIMEOUT=${PAIRS_TIMEOUT:-900}
T_START=$(date +%s)
mkdir -p "$OUT" "$WORK"

log() { printf '[pairs %4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------ cleanup ---
# shellcheck source=bench/env.sh
. "$HERE/env.sh"
DPID=
cleanup() {
    trap ':' INT TERM HUP
    bench_stop_pids
    bench_env_stop
}
bench_traps

# -------------------------------------------------------- environment ---
BROKERS=${PAIRS_BROKERS:-}
bench_kafka_start bench-pairs-env

# --------------------------------------------------------------- data ---
max_n=0
for n in $COUNTS; do (( n > max_n )) && max_n=$n; done
BASE=$ROOT/build-bench/data/pairs-p$PERSONS
if [[ ! -f $BASE/.complete ]]; then
    log "generating ss12000_gen.py --seed 1, keeping $PERSONS persons"
    rm -rf "$BASE" "$BASE.gen"
    python3 "$ROOT/tests/fixtures/ss12000_gen.py" --seed 1 --students $(( PERSONS / 2 + 20 )) \
        --quiet --out "$BASE.gen" || die "generator failed"
    mkdir -p "$BASE"
    head -n "$PERSONS" "$BASE.gen/persons.jsonl" > "$BASE/persons.jsonl"
    rm -rf "$BASE.gen"
    [[ $(wc -l < "$BASE/persons.jsonl") -eq $PERSONS ]] || die "the generator gave too few persons"
    touch "$BASE/.complete"
fi
# pair i's file: the same persons, each id's first 8 hex digits replaced by i
python3 - "$BASE/persons.jsonl" "$WORK/data" "$max_n" <<'EOF' || die "writing the pair files failed"
import json, os, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [json.loads(l) for l in open(src) if l.strip()]
for i in range(1, n + 1):
    d = os.path.join(out, f"{i:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "persons.jsonl"), "w") as fh:
        for p in lines:
            p = dict(p, id=f"{i:08x}{p['id'][8:]}")
            fh.write(json.dumps(p, ensure_ascii=False) + "\n")
EOF

# ------------------------------------------------------------ helpers ---
CSV=$OUT/pairs.csv TCSV=$OUT/pairs_threads.csv MD=$OUT/pairs.md
echo "pairs,connectors,status,startup_s,steady_rss_kb,peak_kb,threads,fds,rss_per_connector_kb,threads_per_connector,cpu_s,records_applied" > "$CSV"
echo "pairs,thread_name,count" > "$TCSV"
: > "$WORK/failures.md"

status_field() { # PID FIELD: a /proc/PID/status value (kB or count)
    sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status" 2>/dev/null
}
# sum of skolsync_records_total over the connectors of a kind, and how many
# of them reached a count: "SUM READY"
metrics_of() { # ADMIN KIND AT_LEAST
    curl -s -m 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v kind="$2" -v want="$3" '
            /^skolsync_records_total\{/ && index($0, "kind=\"" kind "\"") {
                s += $NF; if ($NF + 0 >= want) r++ }
            END { printf "%d %d\n", s, r }'
}
stop_daemon() {
    [[ -z $DPID ]] && return
    kill "$DPID" 2>/dev/null
    local i
    for i in $(seq 1 120); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$DPID" 2>/dev/null && { log "  daemon did not stop in 60 s: SIGKILL"; kill -9 "$DPID"; }
    wait "$DPID" 2>/dev/null
    DPID=
}

# ----------------------------------------------------------- one count ---
run_count() { # N
    local n=$1 conns=$(( 2 * $1 )) admin tag i
    admin=$(free_port)
    tag=pairs$n$$x$(date +%s)
    rm -rf "$WORK/db" && mkdir -p "$WORK/db"
    {
        cat <<EOF
kafka:
  brokers: $BROKERS
  topic_prefix: $tag.
  deployment: $tag
  partitions: 3
  shared_consumer: true
log:
  level: warn
admin:
  listen: 127.0.0.1:$admin
sources:
EOF
        for i in $(seq -f %03g 1 "$n"); do
            printf '  src%s:\n    type: jsonl-source\n    path: %s\n' "$i" "$WORK/data/$i"
        done
        echo "sinks:"
        for i in $(seq -f %03g 1 "$n"); do
            printf '  lite%s:\n    type: sqlite-sink\n    entities: [Person]\n    path: %s\n' \
                "$i" "$WORK/db/$i.db"
        done
    } > "$WORK/pairs$n.yaml"
    local want=$(( n * PERSONS )) dlog=$WORK/daemon$n.log
    log "$n pair(s): one daemon with $n jsonl-sources and $n sqlite-sinks (each sink $want rows)"
    local t0 t1 st=ok srcs=0 sinks=0 applied=0
    t0=$(date +%s.%N)
    "$SK" run -c "$WORK/pairs$n.yaml" > "$dlog" 2>&1 &
    DPID=$!
    PIDS+=("$DPID")
    local deadline=$(( $(date +%s) + TIMEOUT )) maxthr=0 maxfds=0 thr fds
    while :; do
        if ! kill -0 "$DPID" 2>/dev/null; then st=died; break; fi
        thr=$(status_field "$DPID" Threads); fds=$(ls "/proc/$DPID/fd" 2>/dev/null | wc -l)
        (( ${thr:-0} > maxthr )) && maxthr=$thr
        (( fds > maxfds )) && maxfds=$fds
        read -r _ srcs <<<"$(metrics_of "$admin" source "$PERSONS")"
        read -r applied sinks <<<"$(metrics_of "$admin" sink "$want")"
        (( ${srcs:-0} == n && ${sinks:-0} == n )) && break
        if (( $(date +%s) >= deadline )); then st=timeout; break; fi
        sleep 0.5
    done
    t1=$(date +%s.%N)
    local startup
    startup=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
    if [[ $st != ok ]]; then
        log "  $st after ${startup} s: $srcs/$n sources, $sinks/$n sinks complete, $applied rows applied; threads max $maxthr, fds max $maxfds"
        {
            echo "**$n pairs: $st** after $startup s ($srcs of $n sources and $sinks of $n sinks complete, $applied of $(( n * want )) rows applied; at most $maxthr threads and $maxfds open fds seen). Last lines of the daemon's log:"
            echo; echo '```'; tail -n 8 "$dlog" | cut -c1-300; echo '```'; echo
        } >> "$WORK/failures.md"
        local peak; peak=$(status_field "$DPID" VmHWM)
        echo "$n,$conns,$st,$startup,,${peak:-},$maxthr,$maxfds,,,,$applied" >> "$CSV"
        stop_daemon
        return
    fi
    log "  all applied after ${startup} s ($applied rows); sampling ${IDLE} s idle"
    local rss=() thrs=() k
    for k in $(seq 1 $(( IDLE * 2 ))); do
        rss+=("$(status_field "$DPID" VmRSS)")
        thrs+=("$(status_field "$DPID" Threads)")
        sleep 0.5
    done
    fds=$(ls "/proc/$DPID/fd" 2>/dev/null | wc -l)
    local peak cpu steady thr_med
    peak=$(status_field "$DPID" VmHWM)
    cpu=$(awk -v k="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); split($0, f, " "); printf "%.1f", (f[12] + f[13]) / k }' "/proc/$DPID/stat")
    steady=$(printf '%s\n' "${rss[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    thr_med=$(printf '%s\n' "${thrs[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    for k in /proc/"$DPID"/task/*/comm; do cat "$k" 2>/dev/null; done |
        sed -E -e 's/^rdk:broker[0-9]+$/rdk:broker<id>/' \
            -e 's/^(src|sink|apply|fetch):.*/\1:<name>/' | sort | uniq -c |
        awk -v n="$n" '{c=$1; $1=""; sub(/^ /, ""); printf "%s,%s,%d\n", n, $0, c}' >> "$TCSV"
    local per_kb per_thr
    per_kb=$(awk -v a="$steady" -v c="$conns" 'BEGIN{printf "%.0f", a / c}')
    per_thr=$(awk -v a="$thr_med" -v c="$conns" 'BEGIN{printf "%.2f", a / c}')
    echo "$n,$conns,ok,$startup,$steady,$peak,$thr_med,$fds,$per_kb,$per_thr,$cpu,$applied" >> "$CSV"
    log "  steady $(( steady / 1024 )) MB, peak $(( peak / 1024 )) MB, $thr_med threads, $fds fds: ${per_kb} kB and $per_thr threads per connector"
    stop_daemon
    rm -rf "$WORK/db"
}

for n in $COUNTS; do run_count "$n"; done

# ------------------------------------------------------------ summary ---
python3 - "$CSV" "$TCSV" "$WORK/failures.md" "$MD" "$PERSONS" "$IDLE" <<'EOF' || die "summary failed"
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1])))
threads = list(csv.DictReader(open(sys.argv[2])))
fail, out, persons, idle = open(sys.argv[3]).read(), sys.argv[4], int(sys.argv[5]), sys.argv[6]
L = []
L.append("| pairs | connectors | rows applied | start-up to all applied s | steady RSS MB | peak RSS MB | threads | open fds "
         "| **RSS / connector MB** | ≤ 1 MB | **threads / connector** | ≤ 1 | CPU s |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|---:|:---|---:|")
for r in rows:
    n = int(r["pairs"])
    if r["status"] != "ok":
        L.append(f"| {n} | {r['connectors']} | {r['records_applied'] or '–'} | **{r['status']}** after {r['startup_s']} | – | "
                 f"{int(r['peak_kb']) / 1024:.1f} | {r['threads']} (max seen) | {r['fds']} (max seen) | – | – | – | – | – |"
                 if r["peak_kb"] else
                 f"| {n} | {r['connectors']} | {r['records_applied'] or '–'} | **{r['status']}** after {r['startup_s']} | – | – | "
                 f"{r['threads']} (max seen) | {r['fds']} (max seen) | – | – | – | – | – |")
        continue
    mb = int(r["rss_per_connector_kb"]) / 1024
    tpc = float(r["threads_per_connector"])
    L.append(f"| {n} | {r['connectors']} | {int(r['records_applied']):,} |".replace(",", " ") + f"  {r['startup_s']} | "
             f"{int(r['steady_rss_kb']) / 1024:.1f} | {int(r['peak_kb']) / 1024:.1f} | {r['threads']} | {r['fds']} | "
             f"**{mb:.2f}** | {'met' if mb <= 1 else f'**missed** ({mb:.1f}×)'} | **{tpc:.2f}** | "
             f"{'met' if tpc <= 1 else f'**missed** ({tpc:.1f}×)'} | {r['cpu_s']} |")
L.append("")
L.append(f"Each pair: one jsonl-source ({persons} persons of its own) and one sqlite-sink (`entities: [Person]`); every "
         f"sink applies the persons of all pairs (the sources share the entity topics). Steady RSS = median VmRSS "
         f"over {idle} s idle after everything was applied; threads = median of /proc/PID/status `Threads` over the "
         f"same window; peak = VmHWM; CPU s = user + system of the daemon from start to the end of the idle window.\n")
if fail:
    L.append(fail)
by = defaultdict(dict)
for t in threads:
    by[t["thread_name"]][int(t["pairs"])] = int(t["count"])
ns = sorted({int(t["pairs"]) for t in threads})
if ns:
    L.append("Threads of the daemon by name (`/proc/PID/task/*/comm`), idle after all was applied. librdkafka names "
             "a broker thread `rdk:broker<id>` once it knows the broker's id; `rdk:broker-1` are the internal broker "
             "thread and the logical coordinator of each client; `src:<name>` and `sink:<name>` are each connector's "
             "own thread, `skolsync` the main thread (runs before 2026-12-05 named every thread of the daemon "
             "`skolsync`: main, lag monitor, HTTP reaper and one per connector):\n")
    L.append("| thread name | " + " | ".join(f"{n} pair(s)" for n in ns) + " | per pair (at the largest count) |")
    L.append("|---|" + "---:|" * len(ns) + "---:|")
    for name in sorted(by, key=lambda k: -by[k].get(ns[-1], 0)):
        L.append(f"| `{name}` | " + " | ".join(str(by[name].get(n, 0)) for n in ns)
                 + f" | {by[name].get(ns[-1], 0) / ns[-1]:.2f} |")
    L.append("")
open(out, "w").write("\n".join(L) + "\n")
EOF
cat "$CSV" >&2
