#!/usr/bin/env bash
# rss.sh PID [INTERVAL_S]: samples VmRSS and VmHWM of PID from /proc/PID/status
# (and its CPU time from /proc/PID/stat) until the process is gone. CSV lines:
#   t_s,rss_kb,hwm_kb,cpu_s      (t_s = seconds since the first sample)
set -u
pid=$1 iv=${2:-0.2}
tck=$(getconf CLK_TCK)
t0=$(date +%s.%N)
echo "t_s,rss_kb,hwm_kb,cpu_s"
while [[ -r /proc/$pid/status ]]; do
    rss= hwm=
    while read -r k v _; do
        case $k in VmRSS:) rss=$v ;; VmHWM:) hwm=$v ;; esac
    done < "/proc/$pid/status" 2>/dev/null
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
    stat=${stat##*) }            # fields after "(comm) "; utime/stime are 12th/13th here
    read -r -a f <<<"$stat"
    # an exited process not yet reaped has no VmRSS either, and never will
    [[ ${f[0]} == [ZX] ]] && break
    # a read can miss (the process between fork and exec has no VmRSS yet):
    # try again while it lives; one miss ended the samples of a whole run
    if [[ -z $rss || -z $hwm ]]; then
        sleep "$iv"
        continue
    fi
    now=$(date +%s.%N)
    awk -v n="$now" -v z="$t0" -v r="$rss" -v h="$hwm" -v c="$(( f[11] + f[12] ))" -v k="$tck" \
        'BEGIN{printf "%.2f,%s,%s,%.2f\n", n - z, r, h, c / k}'
    sleep "$iv"
done
