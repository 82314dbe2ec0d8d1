#!/usr/bin/env bash
# bench/connect.sh: skolsync side by side with Kafka Connect (project issue 17),
# the peers scenario of `make bench`. Run by bench/run.sh (scenario "connect")
# on its broker and PostgreSQL, or alone:
#
#   bench/connect.sh SKOLSYNC OUT_DIR WORK_DIR [REPS]
#
#   PEERS_BROKERS, PEERS_PG  the broker list and the PostgreSQL conninfo to use
#                        (run.sh sets them); unset: the script starts its own
#                        Kafka + PostgreSQL (scripts/kafka.sh, scripts/pg.sh,
#                        state in build/bench-peers-env) and stops them again
#   PEERS_DATA_DIR       the records (default build-bench/data/peers100k,
#                        made by bench/peers_data.py when missing)
#   PEERS_COUNT          persons (default 100000)
#   PEERS_CONNECT_HEAP   the Connect JVM's heap (default "-Xms256M -Xmx2G", as
#                        the distribution's connect-standalone.sh)
#   PEERS_TIMEOUT        seconds one run may take (default 600; a run that fails
#                        is logged and left out)
#   BENCH_QUICK=1        REPS defaults to 1 (otherwise 5)
#
# The same 100 000 SS 12000 persons (tests/fixtures/ss12000_gen.py --seed 1
# --students 40000, the first 100 000), per repetition, the order of the two
# sides alternating between repetitions (odd: skolsync first):
#   source  JSON lines -> Kafka. skolsync: `run --once`, jsonl-source over a
#           directory holding persons.jsonl (defaults: parse, validate,
#           protobuf, lz4, grouped transactions with the last cursor), topic
#           <prefix>persons, 3 partitions. Connect: ConnectStandalone with
#           FileStreamSourceConnector (defaults: each line an unkeyed string,
#           StringConverter), topic created by the worker with 3 partitions.
#   sink    Kafka -> PostgreSQL, upsert by id. skolsync: `run --once`,
#           postgres-sink (entities [Person], its own layout: jsonb doc, the
#           typed columns and indexes) draining the topic of the
#           source run of the same repetition. Connect: ConnectStandalone with
#           the Debezium JDBC sink (insert.mode=upsert, primary.key.mode=
#           record_value on id, schema.evolution=none, defaults otherwise)
#           reading JsonConverter envelopes of the same persons (produced once,
#           untimed, with kcat), into
#             jdbc-flat            a flat table (id uuid, doc jsonb, modified timestamptz)
#             jdbc-layout          skolsync's persons table (LIKE ... INCLUDING ALL)
#             jdbc-layout-rewrite  the same with the driver's reWriteBatchedInserts=true
# Each run is measured by bench/peers.py (records/s start to end and after
# the first record, CPU of the process, peak and steady RSS, CPU of the
# PostgreSQL backends). Writes OUT_DIR/peers.csv; report.py (peers_report.py)
# makes the table and the plots.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SK=${1:?skolsync binary}
OUT=${2:?output directory}
WORK=${3:?work directory}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then def_reps=1; else def_reps=5; fi
REPS=${4:-$def_reps}
N=${PEERS_COUNT:-100000}
DATA=${PEERS_DATA_DIR:-$ROOT/build-bench/data/peers$((N / 1000))k}
HEAP=${PEERS_CONNECT_HEAP:--Xms256M -Xmx2G}
TIMEOUT=${PEERS_TIMEOUT:-600}
T_START=$(date +%s)
mkdir -p "$OUT" "$WORK"
CSV=$OUT/peers.csv

log() { printf '[peers %4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=bench/env.sh
. "$HERE/env.sh"
cleanup() {
    trap ':' INT TERM HUP
    bench_env_stop
}
bench_traps

# -------------------------------------------------------- environment ---
BROKERS=${PEERS_BROKERS:-} PG=${PEERS_PG:-}
bench_env_start bench-peers-env
export PGOPTIONS='-c client_min_messages=warning'
q() { psql "$PG" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# The JDBC URL of the same server (pg.sh's conninfo: host= port= user= dbname=)
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$PG"; }
PGHOST=$(kv host) PGPORT=$(kv port) PGUSER_=$(kv user) PGDB=$(kv dbname)
[[ -n $PGHOST && -n $PGPORT && -n $PGDB ]] || die "cannot read host/port/dbname from '$PG'"

# ------------------------------------------------------ Connect, data ---
log "Kafka Connect and the Debezium JDBC sink (scripts/connect.sh fetch)"
CDIR=$("$ROOT/scripts/connect.sh" fetch 2>"$WORK/fetch.err") ||
    die "fetching Kafka Connect failed: $(tail -5 "$WORK/fetch.err")"
CP=$("$ROOT/scripts/connect.sh" classpath)
if [[ ! -f $DATA/.complete ]]; then
    log "generating $N persons (bench/peers_data.py)"
    python3 "$HERE/peers_data.py" "$DATA" --count "$N" || die "peers_data.py failed"
fi
[[ $(wc -l < "$DATA/jsonl/persons.jsonl") -eq $N ]] || die "$DATA holds other than $N persons"

TAG=peers$$x$(date +%s)             # fresh topics, groups and schemas per run

# The Debezium sink's input, produced once (untimed): JsonConverter envelopes.
log "producing the Debezium sink's input topics (kcat, untimed)"
"$ROOT/scripts/connect.sh" create-topics "$BROKERS" 3 "$TAG.flat" "$TAG.doc" \
    >"$WORK/topics.log" 2>&1 || die "creating topics failed: $(tail -3 "$WORK/topics.log")"
for t in flat doc; do
    kcat -P -b "$BROKERS" -t "$TAG.$t" -z lz4 -X queue.buffering.max.kbytes=65536 \
        < "$DATA/$t.json" || die "kcat -P $TAG.$t failed"
    n=$(kcat -Q -b "$BROKERS" -t "$TAG.$t:0:-1" -t "$TAG.$t:1:-1" -t "$TAG.$t:2:-1" |
        awk '$3 == "offset" { n += $4 } END { print n + 0 }')
    [[ $n -eq $N ]] || die "$TAG.$t holds $n records, not $N"
done

# skolsync's persons layout, made once (untimed) by a postgres-sink run over
# one person; the Connect runs into that layout copy it (LIKE ... INCLUDING ALL).
mkdir -p "$WORK/one"
head -n 1 "$DATA/jsonl/persons.jsonl" > "$WORK/one/persons.jsonl"

sk_yaml() { # PREFIX then the connector section on stdin
    cat <<EOF
kafka:
  brokers: $BROKERS
  topic_prefix: $1
  partitions: 3
log:
  level: warn
admin:
  listen: 127.0.0.1:0
EOF
    cat
}
sk_src_yaml() { # PREFIX DIR
    sk_yaml "$1" <<EOF
sources:
  files:
    type: jsonl-source
    path: $2
EOF
}
sk_sink_yaml() { # PREFIX SCHEMA
    sk_yaml "$1" <<EOF
sinks:
  pg:
    type: postgres-sink
    conninfo: "$PG application_name=bench-skolsync"
    schema: $2
    entities: [Person]
EOF
}
LAYOUT=${TAG}_layout
sk_src_yaml "$TAG.tpl." "$WORK/one" > "$WORK/tpl-src.yaml"
sk_sink_yaml "$TAG.tpl." "$LAYOUT" > "$WORK/tpl-sink.yaml"
"$SK" run --once -c "$WORK/tpl-src.yaml" >"$WORK/tpl.log" 2>&1 &&
    "$SK" run --once -c "$WORK/tpl-sink.yaml" >>"$WORK/tpl.log" 2>&1 ||
    die "making skolsync's layout failed: $(tail -3 "$WORK/tpl.log")"

# ------------------------------------------------------ Connect worker ---
# The JVM options of the distribution's connect-standalone.sh/kafka-run-class.sh.
read -r -a JVM <<<"$HEAP"
JVM+=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
     -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true)
connect_files() { # DIR VALUE_CONVERTER_LINES; writes DIR/worker.properties, DIR/log4j2.properties
    mkdir -p "$1"
    cat > "$1/worker.properties" <<EOF
bootstrap.servers=$BROKERS
key.converter=org.apache.kafka.connect.storage.StringConverter
$2
offset.storage.file.filename=$1/offsets
listeners=http://127.0.0.1:$(free_port)
plugin.path=$CDIR/plugins
plugin.discovery=service_load
EOF
    cat > "$1/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $1/connect.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
}
connect_cmd() { # DIR CONNECTOR_PROPERTIES -> the command line in CMD
    CMD=(java "${JVM[@]}" "-Dlog4j2.configurationFile=$1/log4j2.properties" -cp "$CP"
         org.apache.kafka.connect.cli.ConnectStandalone "$1/worker.properties" "$2")
}
FAILED=0
measure() { # ROW then peers.py arguments, then -- CMD
    local row=$1; shift
    # A failed run (say Connect stalls past the timeout) is logged and left
    # out; the others go on (the table shows the repetitions each run has).
    python3 "$HERE/peers.py" --csv "$CSV" --row "$row" --count "$N" --timeout "$TIMEOUT" "$@" ||
        { log "warning: $row failed, left out (logs in $WORK)"; FAILED=$((FAILED + 1)); }
}

# ------------------------------------------------------------ the runs ---
[[ -f $CSV ]] || echo "path,rep,side,variant,records,total_s,first_s,cpu_s,peak_kb,steady_kb,backend_cpu_s" > "$CSV"

sk_source() { # REP
    local pfx="$TAG.sk$1." d=$WORK/sk-src-$1
    mkdir -p "$d"
    sk_src_yaml "$pfx" "$DATA/jsonl" > "$d/cfg.yaml"
    measure "source,$1,skolsync,jsonl-source" --until-exit --topic "${pfx}persons" \
        --brokers "$BROKERS" --log "$d/run.log" -- "$SK" run --once -c "$d/cfg.yaml"
}
cn_source() { # REP
    local d=$WORK/cn-src-$1
    connect_files "$d" "value.converter=org.apache.kafka.connect.storage.StringConverter"
    cat > "$d/connector.properties" <<EOF
name=$TAG-file-source-$1
connector.class=org.apache.kafka.connect.file.FileStreamSourceConnector
tasks.max=1
file=$DATA/jsonl/persons.jsonl
topic=$TAG.cn$1.persons
topic.creation.default.partitions=3
topic.creation.default.replication.factor=1
EOF
    connect_cmd "$d" "$d/connector.properties"
    measure "source,$1,connect,file-source" --topic "$TAG.cn$1.persons" --brokers "$BROKERS" \
        --log "$d/run.log" -- "${CMD[@]}"
}
sk_sink() { # REP
    local d=$WORK/sk-sink-$1 schema=${TAG}_sk$1
    mkdir -p "$d"
    sk_sink_yaml "$TAG.sk$1." "$schema" > "$d/cfg.yaml"
    measure "sink,$1,skolsync,postgres-sink" --until-exit --pg "$PG" --table "$schema.persons" \
        --app bench-skolsync --log "$d/run.log" -- "$SK" run --once -c "$d/cfg.yaml"
    q -c "DROP SCHEMA IF EXISTS $schema CASCADE"
}
cn_sink() { # REP VARIANT (jdbc-flat | jdbc-layout | jdbc-layout-rewrite)
    local rep=$1 variant=$2 d=$WORK/cn-$2-$1 schema=${TAG}_cn$1${2//-/_} topic table url
    connect_files "$d" "value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=true"
    if [[ $variant == jdbc-flat ]]; then
        topic=$TAG.flat table=persons_flat
        q -c "CREATE SCHEMA $schema; CREATE TABLE $schema.$table (id uuid PRIMARY KEY, doc jsonb NOT NULL, modified timestamptz)"
    else
        topic=$TAG.doc table=persons
        q -c "CREATE SCHEMA $schema; CREATE TABLE $schema.$table (LIKE $LAYOUT.persons INCLUDING ALL)"
    fi
    url="jdbc:postgresql://$PGHOST:$PGPORT/$PGDB?currentSchema=$schema&ApplicationName=bench-connect"
    [[ $variant == jdbc-layout-rewrite ]] && url+="&reWriteBatchedInserts=true"
    cat > "$d/connector.properties" <<EOF
name=$TAG-jdbc-$variant-$rep
connector.class=io.debezium.connector.jdbc.JdbcSinkConnector
tasks.max=1
topics=$topic
connection.url=$url
connection.username=${PGUSER_:-postgres}
connection.password=
insert.mode=upsert
primary.key.mode=record_value
primary.key.fields=id
schema.evolution=none
collection.name.format=$table
EOF
    connect_cmd "$d" "$d/connector.properties"
    measure "sink,$rep,connect,$variant" --pg "$PG" --table "$schema.$table" --app bench-connect \
        --log "$d/run.log" -- "${CMD[@]}"
    q -c "DROP SCHEMA $schema CASCADE"
}

for rep in $(seq 1 "$REPS"); do
    log "repetition $rep of $REPS ($N persons; $( ((rep % 2)) && echo skolsync || echo Connect) first)"
    if (( rep % 2 )); then
        sk_source "$rep"; cn_source "$rep"
        sk_sink "$rep"; for v in jdbc-flat jdbc-layout jdbc-layout-rewrite; do cn_sink "$rep" "$v"; done
    else
        cn_source "$rep"; sk_source "$rep"
        for v in jdbc-flat jdbc-layout jdbc-layout-rewrite; do cn_sink "$rep" "$v"; done; sk_sink "$rep"
    fi
done
q -c "DROP SCHEMA IF EXISTS $LAYOUT CASCADE"
log "done: $CSV ($FAILED run(s) failed)"
