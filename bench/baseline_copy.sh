#!/usr/bin/env bash
# baseline_copy.sh: the ceiling for the postgres-sink (bench scenario 2).
#
#   baseline_copy.sh CONNINFO SRC_SCHEMA DST_SCHEMA WORKDIR
#
# Takes the rows a postgres-sink run wrote into SRC_SCHEMA (every column the
# sink itself sends or sets: id, doc, source, modified, the typed columns it
# writes; the generated text columns are computed by the server, as for the sink),
# exports them to WORKDIR (untimed), creates DST_SCHEMA with the same table
# layout (CREATE TABLE ... (LIKE src INCLUDING ALL): generated columns,
# defaults, primary keys and every index), then times one psql session that
# COPYs all 18 tables in one transaction over the same loopback TCP
# connection kind the sink uses.
# Prints: rows seconds
set -euo pipefail
PG=$1 SRC=$2 DST=$3 WORK=$4
mkdir -p "$WORK"
q() { psql "$PG" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

mapfile -t TABLES < <(q -c "select table_name from information_schema.tables
    where table_schema='$SRC' and table_name not like 'skolsync\_%' order by 1")
{
    echo "DROP SCHEMA IF EXISTS \"$DST\" CASCADE; CREATE SCHEMA \"$DST\";"
    for t in "${TABLES[@]}"; do
        echo "CREATE TABLE \"$DST\".\"$t\" (LIKE \"$SRC\".\"$t\" INCLUDING ALL);"
    done
} | q >/dev/null
script=$WORK/copy.sql
echo "BEGIN;" > "$script"
rows=0
for t in "${TABLES[@]}"; do
    cols=$(q -c "select string_agg(quote_ident(column_name), ',' order by ordinal_position)
        from information_schema.columns where table_schema='$SRC' and table_name='$t'
        and is_generated='NEVER' and column_name not in ('updated_at','deleted_at')")
    q -c "\\copy (select $cols from \"$SRC\".\"$t\") to '$WORK/$t.tsv'"
    n=$(wc -l < "$WORK/$t.tsv")
    rows=$((rows + n))
    echo "\\copy \"$DST\".\"$t\"($cols) from '$WORK/$t.tsv'" >> "$script"
done
echo "COMMIT;" >> "$script"
psql "$PG" -X -q -c 'checkpoint' >/dev/null
t0=$(date +%s.%N)
q -f "$script" >/dev/null
t1=$(date +%s.%N)
awk -v r="$rows" -v a="$t0" -v b="$t1" 'BEGIN{printf "%d %.3f\n", r, b - a}'
q -c "DROP SCHEMA \"$DST\" CASCADE" >/dev/null
rm -f "$WORK"/*.tsv "$script"
