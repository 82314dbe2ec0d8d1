#!/usr/bin/env bash
# bench/ha.sh: one postgres-sink split over 1, 2 and 3 daemons of one
# deployment (docs/architecture.md §5.10, project issue 12). Run by
# bench/run.sh (scenario "ha") on its broker and PostgreSQL, or alone:
#
#   bench/ha.sh SKOLSYNC OUT_DIR WORK_DIR [STUDENTS [REPS]]
#
#   HA_BROKERS, HA_PG    the broker list and the PostgreSQL conninfo to use
#                        (run.sh sets them); unset: the script starts its own
#                        Kafka + PostgreSQL (scripts/kafka.sh, scripts/pg.sh,
#                        state in build/bench-ha-env) and stops them again
#   HA_DATA_DIR          the data set (default build-bench/data/sSTUDENTS, the
#                        cache run.sh uses; generated there when missing)
#   BENCH_QUICK=1        defaults STUDENTS 215 (~10k entities), REPS 2;
#                        otherwise 2440 (~100k entities), REPS 3
#   HA_TIMEOUT           seconds a round may take to fill PostgreSQL (default 300,
#                        quick 120)
#
# The entity topics are filled once (jsonl-source, `run --once`, a fresh
# topic prefix, 3 partitions per topic: 54 partitions). Then, per repetition
# and per k in 1 2 3 (the order alternates between repetitions), k daemons
# are started at once with one configuration (same kafka.topic_prefix, a
# kafka.deployment of the round's own, so a fresh consumer group reading the
# topics from the beginning; only a postgres-sink `pg` into a fresh schema;
# admin on 127.0.0.1:0; the files differ only in node.name n1..nk). Measured:
# the time from the start until PostgreSQL holds all N rows (row counts
# polled every 0.2 s over one psql session), each daemon's peak RSS (VmHWM),
# the partitions each node owns (`skolsync lag -c CFG --json`, "owner" of
# each partition of the group <deployment>-pg) and the records each node
# applied and the rebalances it saw (its /metrics). Then the daemons are
# stopped (SIGTERM, SIGKILL after 30 s). Writes OUT_DIR/ha.csv,
# OUT_DIR/ha_nodes.csv and OUT_DIR/ha.md.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SK=${1:?skolsync binary}
OUT=${2:?output directory}
WORK=${3:?work directory}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then def_st=215 def_reps=2 def_to=120; else def_st=2440 def_reps=3 def_to=300; fi
STUDENTS=${4:-$def_st}
REPS=${5:-$def_reps}
TIMEOUT=${HA_TIMEOUT:-$def_to}
DATA=${HA_DATA_DIR:-$ROOT/build-bench/data/s$STUDENTS}
KS="1 2 3"
T_START=$(date +%s)
mkdir -p "$OUT" "$WORK"

log() { printf '[ha %4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------ cleanup ---
DPIDS=() RPIDS=() PSQL_PID=
# shellcheck source=bench/env.sh
. "$HERE/env.sh"
stop_daemons() {
    local p i
    for p in "${DPIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${DPIDS[@]}"; do
        for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for p in "${RPIDS[@]}"; do wait "$p" 2>/dev/null; done
    DPIDS=() RPIDS=()
}
cleanup() {
    trap ':' INT TERM HUP
    stop_daemons
    [[ -n $PSQL_PID ]] && kill "$PSQL_PID" 2>/dev/null
    bench_env_stop
}
bench_traps

# -------------------------------------------------------- environment ---
BROKERS=${HA_BROKERS:-} PG=${HA_PG:-}
bench_env_start bench-ha-env
export PGOPTIONS='-c client_min_messages=warning'

# --------------------------------------------------------------- data ---
if [[ ! -f $DATA/.complete ]]; then
    log "generating ss12000_gen.py --seed 1 --students $STUDENTS"
    rm -rf "$DATA"
    python3 "$ROOT/tests/fixtures/ss12000_gen.py" --seed 1 --students "$STUDENTS" --quiet \
        --out "$DATA" || die "generator failed"
    touch "$DATA/.complete"
fi
N=$(cat "$DATA"/*.jsonl | wc -l)
TAG=ha$$x$(date +%s)            # fresh topics, deployments and schemas per run
PFX="$TAG."

kafka_yaml() { # DEPLOYMENT NODE
    cat <<EOF
kafka:
  brokers: $BROKERS
  topic_prefix: $PFX
  deployment: $1
  partitions: 3
node:
  name: $2
log:
  level: info
admin:
  listen: 127.0.0.1:0
EOF
}

log "filling $PFX* with $N entities (jsonl-source, run --once)"
{ kafka_yaml "${TAG}fill" fill; cat <<EOF
sources:
  files:
    type: jsonl-source
    path: $DATA
EOF
} > "$WORK/fill.yaml"
timeout 600 "$SK" run --once -c "$WORK/fill.yaml" > "$WORK/fill.log" 2>&1 ||
    die "fill run failed: $(tail -5 "$WORK/fill.log")"
stored=$(sed -n 's/.*: \([0-9]*\) records stored.*/\1/p' "$WORK/fill.log" | tail -1)
[[ $stored == "$N" ]] || log "warning: the source stored ${stored:-?} records, the data has $N"

# ------------------------------------------------------ row count poll ---
coproc PSQL { exec psql "$PG" -X -q -At 2>/dev/null; }
# rows SCHEMA: the rows of the entity tables (not skolsync_*) of SCHEMA, 0 before they exist
rows() {
    local n
    printf '%s\n' "select coalesce(sum((xpath('/row/c/text()', query_to_xml(format(
  'select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint), 0)
  from information_schema.tables where table_schema = '$1' and table_name not like 'skolsync\_%';" \
        >&"${PSQL[1]}" || return 1
    read -r -t 10 n <&"${PSQL[0]}" || return 1
    echo "$n"
}
rows "pg_catalog" >/dev/null || die "psql session failed"

peak_of() { awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$1"; }
port_of() { sed -n 's#.*HTTP server on http://127.0.0.1:\([0-9]*\).*#\1#p' "$1" | head -1; }
metric() { # PORT NAME: NAME{connector="pg"...} from /metrics
    curl -s -m 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        sed -n "s/^$2{connector=\"pg\".*} \([0-9]*\)$/\1/p" | head -1
}

CSV=$OUT/ha.csv CSVN=$OUT/ha_nodes.csv
echo "k,rep,entities,rows,seconds,partitions_total,status" > "$CSV"
echo "k,rep,node,partitions,applied,rebalances,peak_rss_kb" > "$CSVN"

round() { # K REP
    local k=$1 rep=$2 i dep="${TAG}k$1r$2" schema="${TAG}_k$1r$2"
    local dir=$WORK/k${k}r$rep
    mkdir -p "$dir"
    for i in $(seq 1 "$k"); do
        { kafka_yaml "$dep" "n$i"; cat <<EOF
sinks:
  pg:
    type: postgres-sink
    conninfo: "$PG"
    schema: $schema
EOF
        } > "$dir/n$i.yaml"
    done
    psql "$PG" -X -q -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null
    local t0 t1 n=0 status=ok secs
    t0=$(date +%s.%N)
    for i in $(seq 1 "$k"); do
        "$SK" run -c "$dir/n$i.yaml" >"$dir/n$i.log" 2>&1 &
        DPIDS+=($!)
        "$HERE/rss.sh" "$!" 0.2 >"$dir/n$i.rss" &
        RPIDS+=($!)
    done
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while :; do
        n=$(rows "$schema") || { status=psql; break; }
        [[ $n -ge $N ]] && break
        for i in "${!DPIDS[@]}"; do
            kill -0 "${DPIDS[$i]}" 2>/dev/null ||
                { status="n$((i + 1))-died"; break 2; }
        done
        (( $(date +%s) < deadline )) || { status=timeout; break; }
        sleep 0.2
    done
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')
    [[ $status == ok ]] || log "  k=$k rep $rep: $status after ${secs}s with $n of $N rows"
    # who owns what (a rebalance may still settle: up to 5 tries)
    local owners="" try total=0
    for try in 1 2 3 4 5; do
        timeout 30 "$SK" lag -c "$dir/n1.yaml" --json --timeout 10s >"$dir/lag.json" 2>"$dir/lag.err"
        owners=$(python3 - "$dir/lag.json" "$dep-pg" "$k" <<'EOF'
import json, sys
from collections import Counter
try:
    j = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
c = Counter()
for g in j.get("groups", []):
    if g.get("group") == sys.argv[2]:
        for p in g.get("partitions") or []:
            c[p.get("owner") or "-"] += 1
k = int(sys.argv[3])
ok = c and "-" not in c and all(c.get(f"n{i}", 0) > 0 for i in range(1, k + 1))
print(("ok " if ok else "unsettled ") + " ".join(f"{o}={n}" for o, n in sorted(c.items())))
EOF
)
        [[ $owners == ok* ]] && break
        sleep 1
    done
    [[ $owners == ok* ]] || log "  k=$k rep $rep: partitions not split over n1..n$k: ${owners:-no lag JSON}"
    # per node: partitions, records applied and rebalances (/metrics), then stop
    local -a applied rebal
    for i in $(seq 1 "$k"); do
        local port; port=$(port_of "$dir/n$i.log")
        applied[$i]=$( [[ -n $port ]] && metric "$port" skolsync_records_total)
        rebal[$i]=$( [[ -n $port ]] && metric "$port" skolsync_kafka_rebalances_total)
    done
    stop_daemons
    local sum=0 parts
    for i in $(seq 1 "$k"); do
        parts=$(sed -n "s/.*\bn$i=\([0-9]*\).*/\1/p" <<<"$owners")
        total=$(( total + ${parts:-0} ))
        sum=$(( sum + ${applied[$i]:-0} ))
        echo "$k,$rep,n$i,${parts:-},${applied[$i]:-},${rebal[$i]:-},$(peak_of "$dir/n$i.rss")" >> "$CSVN"
    done
    [[ $owners == ok* ]] || status="$status;split:${owners// /_}"
    echo "$k,$rep,$N,$n,$secs,$total,$status" >> "$CSV"
    log "  k=$k rep $rep: $n rows in ${secs}s; partitions ${owners#* }; applied $sum"
    psql "$PG" -X -q -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null
}

log "postgres-sink over 1, 2, 3 daemons: $N entities, $REPS repetition(s)"
for rep in $(seq 1 "$REPS"); do
    if (( rep % 2 )); then order=$KS; else order=$(tr ' ' '\n' <<<"$KS" | tac | tr '\n' ' '); fi
    for k in $order; do round "$k" "$rep"; done
done

# ------------------------------------------------------------- summary ---
python3 - "$CSV" "$CSVN" > "$OUT/ha.md" <<'EOF' || die "summary failed"
import csv, statistics, sys
from collections import defaultdict
runs = list(csv.DictReader(open(sys.argv[1])))
nodes = list(csv.DictReader(open(sys.argv[2])))
med = statistics.median
fmt = lambda x: f"{x:,.0f}".replace(",", " ")
rate = {}   # (k, rep) -> records/s, complete rounds only
for r in runs:
    if r["status"] == "ok":
        rate[(r["k"], r["rep"])] = int(r["entities"]) / float(r["seconds"])
ks = sorted({r["k"] for r in runs}, key=int)
n = runs[0]["entities"] if runs else "?"
print("| daemons | reps | seconds (median) | records/s (median) | ratio to 1 daemon | "
      "partitions per node (54 in all) | records applied per node | rebalances per node | "
      "peak RSS per daemon MiB | all N rows | applied sum = N |")
print("|---:|---:|---:|---:|---:|---|---|---|---|:---|:---|")


def once(rs):  # rounds whose nodes' applied records add up to exactly N
    good = 0
    for r in rs:
        xs = [x["applied"] for x in nodes if x["k"] == r["k"] and x["rep"] == r["rep"]]
        good += all(xs) and sum(int(x) for x in xs) == int(r["entities"])
    return good



for k in ks:
    rs = [r for r in runs if r["k"] == k]
    ok = [r for r in rs if r["status"] == "ok"]
    secs = med([float(r["seconds"]) for r in ok]) if ok else None
    rps = med([rate[(k, r["rep"])] for r in ok]) if ok else None
    # ratio per repetition (k and 1 daemon of the same repetition), then the median
    ratios = [rate[(k, r["rep"])] / rate[("1", r["rep"])] for r in ok if ("1", r["rep"]) in rate]
    cell = lambda field, f=str: " / ".join(
        "·".join(f(x[field]) if x[field] else "–" for x in nodes if x["k"] == k and x["rep"] == r["rep"])
        for r in rs)
    peak = defaultdict(list)
    for x in nodes:
        if x["k"] == k and x["peak_rss_kb"]:
            peak[x["node"]].append(int(x["peak_rss_kb"]) / 1024)
    rt = (f"{med(ratios):.2f} ({', '.join(f'{x:.2f}' for x in sorted(ratios))})"
          if ratios else "–")
    print(f"| {k} | {len(rs)} | {secs:.2f} | {fmt(rps)} | {rt} | "
          if ok else f"| {k} | {len(rs)} | – | – | – | ", end="")
    print(f"{cell('partitions')} | {cell('applied')} | {cell('rebalances')} | "
          f"{' · '.join(f'{p}: {med(v):.1f}' for p, v in sorted(peak.items()))} | "
          f"{len(ok)}/{len(rs)} | {once(rs)}/{len(rs)} |")
print()
print(f"N = {n} entities (all 18 collections) in 18 topics × 3 partitions. Per-node cells "
      "are n1·n2·n3 of each repetition, repetitions separated by ` / `; peak RSS is the "
      "median per node over the repetitions. Rebalances: librdkafka's `rebalance_cnt` as "
      "the daemon's statistics last reported it (a round shorter than their interval may "
      "show 0). Incomplete rounds: "
      + (", ".join(f"k={r['k']} rep {r['rep']}: {r['status']}" for r in runs if r["status"] != "ok")
         or "none") + ".")
EOF
cat "$OUT/ha.md"
