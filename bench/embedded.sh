#!/usr/bin/env bash
# bench/embedded.sh: what the embedded broker costs, kept on disk or not
# (docs/architecture.md §5.8). Run by bench/run.sh (scenario "embedded"), or
# alone:
#
#   bench/embedded.sh SKOLSYNC OUT_DIR WORK_DIR "LABEL:STUDENTS ..."
#
# Per dataset (tests/fixtures/ss12000_gen.py, seed 1): jsonl-source ->
# embedded broker -> sqlite-sink with `run --once`, three times:
#   memory  kafka.embedded_dir: off (nothing on disk)
#   first   kafka.embedded_dir set, empty: the sync plus the journal
#   restart the same directory again: the restore, then nothing to do
# and records wall time, peak RSS (VmHWM), the store's size on disk and the
# restore time the daemon logs. Writes OUT_DIR/embedded.csv and
# OUT_DIR/embedded.md (with figures per entity). Needs no Kafka.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SK=${1:?skolsync binary}
OUT=${2:?output directory}
WORK=${3:?work directory}
SIZES=${4:-"10k:215 100k:2440"}
mkdir -p "$OUT" "$WORK"
CSV=$OUT/embedded.csv
echo "label,entities,mode,seconds,peak_rss_kb,store_bytes,restore_ms" > "$CSV"

peak_of() { # rss.sh output -> the largest VmHWM (kB)
    awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$1"
}

run_once() { # CONFIG LOG -> "seconds peak_kb"
    local t0 t1 pid rpid
    t0=$(date +%s.%N)
    "$SK" run --once -c "$1" >"$2" 2>&1 &
    pid=$!
    "$HERE/rss.sh" "$pid" 0.1 >"$2.rss" &
    rpid=$!
    wait "$pid" || { echo "skolsync failed: $(tail -3 "$2")" >&2; exit 1; }
    t1=$(date +%s.%N)
    wait "$rpid" 2>/dev/null
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') $(peak_of "$2.rss")"
}

for size in $SIZES; do
    label=${size%%:*} students=${size##*:}
    data=$WORK/data-$students
    if [[ ! -f $data/.complete ]]; then
        rm -rf "$data"
        python3 "$ROOT/tests/fixtures/ss12000_gen.py" --seed 1 --students "$students" --quiet \
            --out "$data" || exit 1
        touch "$data/.complete"
    fi
    entities=$(cat "$data"/*.jsonl | wc -l)
    for mode in memory first restart; do
        dir=$WORK/store-$label
        [[ $mode == restart ]] || rm -rf "$dir" "$WORK/$label.db"*
        [[ $mode == memory ]] && edir=off || edir=$dir
        cat > "$WORK/$label.yaml" <<EOF
kafka:
  brokers: embedded
  embedded_dir: $edir
log:
  level: info
admin:
  listen: off
sources:
  files:
    type: jsonl-source
    path: $data
    batch_size: 1000
sinks:
  db:
    type: sqlite-sink
    path: $WORK/$label.db
    batch_size: 1000
EOF
        read -r secs peak < <(run_once "$WORK/$label.yaml" "$WORK/$label-$mode.log")
        bytes=0
        [[ $mode != memory ]] && bytes=$(cat "$dir"/embedded.db* 2>/dev/null | wc -c)
        restore=$(sed -n 's/.*embedded broker restored from .*: [0-9]* records in \([0-9]*\) ms.*/\1/p' \
            "$WORK/$label-$mode.log")
        echo "$label,$entities,$mode,$secs,$peak,$bytes,${restore:-0}" >> "$CSV"
        echo "[embedded] $label ($entities entities) $mode: ${secs} s, peak RSS ${peak} kB," \
            "store ${bytes} B, restore ${restore:-0} ms" >&2
    done
done

# Figures per entity: the difference between the two largest sets (what the
# data adds, without the fixed cost of the process), and the file per entity.
awk -F, '
NR == 1 { next }
{ key = $3; n[key]++; ent[key, n[key]] = $2; rss[key, n[key]] = $5; st[key, n[key]] = $6;
  line[NR] = $0 }
END {
  print "| set | entities | mode | seconds | peak RSS MiB | store MiB | restore ms |"
  print "|---|---|---|---|---|---|---|"
  for (i = 2; i <= NR; i++) {
    split(line[i], f, ",")
    printf "| %s | %d | %s | %s | %.1f | %.1f | %s |\n", f[1], f[2], f[3], f[4], f[5] / 1024,
      f[6] / 1048576, f[7]
  }
  print ""
  for (m = 1; m <= 3; m++) {
    key = m == 1 ? "memory" : m == 2 ? "first" : "restart"
    k = n[key]
    if (k < 2) continue
    de = ent[key, k] - ent[key, k - 1]
    printf "- %s: %.2f KiB of RSS per entity", key, (rss[key, k] - rss[key, k - 1]) / de
    if (key != "memory") printf ", %.2f KiB of store per entity", st[key, k] / ent[key, k] / 1024
    print ""
  }
}' "$CSV" > "$OUT/embedded.md"
cat "$OUT/embedded.md"
