#!/usr/bin/env python3
"""bench/peers.py: one measured run of the peers scenario (bench/connect.sh):
skolsync or Kafka Connect moving N records, watched from outside.

  peers.py --csv FILE --row "path,rep,side,variant" --count N
           (--topic T --brokers B [--partitions 3] | --pg CONNINFO --table S.T [--app NAME])
           [--until-exit] [--timeout S] -- CMD ARGS...

Starts CMD (its pid is the measured process: exec a JVM directly, not through
a shell) and polls every --interval s:
  - the process: VmRSS / VmHWM from /proc/PID/status, CPU from /proc/PID/stat;
  - progress: the sum of the high watermarks of T's partitions (kcat -Q), or
    count(*) of the table over one psql session;
  - with --app: the CPU of the PostgreSQL backends whose application_name is
    NAME (the server runs on this machine: /proc/PID/stat of each backend).
first = the first poll that sees a record; end = the process exits (with
--until-exit: skolsync `run --once`, CPU then from wait4's rusage) or the first
poll that sees N records (Kafka Connect never exits by itself: it is stopped
with SIGTERM after that, CPU read at that poll).
Appends one CSV line: path,rep,side,variant,records,total_s,first_s,cpu_s,
peak_kb,steady_kb,backend_cpu_s (steady_kb = median VmRSS between first and
end). Exits non-zero (and writes nothing) when N is not reached in --timeout.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import Psql  # noqa: E402  (one psql session, line protocol)

TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_mem(pid):
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def kafka_count(brokers, topic, partitions):
    args = ["kcat", "-Q", "-b", brokers]
    for p in range(partitions):
        args += ["-t", f"{topic}:{p}:-1"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=20)
    n = 0
    for line in r.stdout.splitlines():   # "topic [p] offset N"
        parts = line.split()
        if len(parts) >= 4 and parts[-2] == "offset" and int(parts[-1]) > 0:
            n += int(parts[-1])
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--row", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--topic")
    ap.add_argument("--brokers")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--pg")
    ap.add_argument("--table")
    ap.add_argument("--app")
    ap.add_argument("--until-exit", action="store_true")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--log", default=os.devnull)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd or not ((a.topic and a.brokers) or (a.pg and a.table)):
        ap.error("a command and --topic/--brokers or --pg/--table are required")

    psql = Psql(a.pg) if a.pg else None
    backends = {}                        # pid -> last CPU seconds seen

    table_seen = [False]                 # the sink may create its table itself

    def progress():
        if psql is None:
            return kafka_count(a.brokers, a.topic, a.partitions)
        if not table_seen[0]:
            rows = psql.query(f"select to_regclass('{a.table}') is not null")
            table_seen[0] = bool(rows) and rows[0][0] == "t"
        sql = f"select count(*) from {a.table}" if table_seen[0] else "select 0"
        if a.app:
            sql += (f"; select coalesce(string_agg(pid::text, ' '), '') from pg_stat_activity "
                    f"where application_name = '{a.app}'")
        rows = psql.query(sql)
        if a.app and len(rows) > 1:
            for pid in rows[1][0].split():
                c = proc_cpu(int(pid))
                if c is not None:
                    backends[int(pid)] = c
        return int(rows[0][0])

    logf = open(a.log, "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    first = end = cpu = None
    peak = 0
    samples = []                         # (t, rss_kb)
    n = 0
    exited = None
    try:
        while True:
            now = time.monotonic() - t0
            if now > a.timeout:
                print(f"peers.py: {a.row}: {n} of {a.count} records after {a.timeout:.0f} s",
                      file=sys.stderr)
                return 1
            rss, hwm = proc_mem(p.pid)
            c = proc_cpu(p.pid)
            if hwm:
                peak = max(peak, hwm)
            if rss:
                samples.append((now, rss))
            n = progress()
            now = time.monotonic() - t0
            if first is None and n > 0:
                first = now
            if not a.until_exit and n >= a.count:
                end, cpu = now, c
                break
            w = os.wait4(p.pid, os.WNOHANG)
            if w[0] == p.pid:
                exited = w
                end = time.monotonic() - t0
                cpu = w[2].ru_utime + w[2].ru_stime
                p.returncode = os.waitstatus_to_exitcode(w[1])
                break
            time.sleep(a.interval)
        if exited is not None:
            if p.returncode != 0:
                print(f"peers.py: {a.row}: the command exited with {p.returncode}", file=sys.stderr)
                return 1
            n = progress()               # the last rows, and the backends' last CPU
            if first is None and n > 0:
                first = end
            if n < a.count:
                print(f"peers.py: {a.row}: {n} of {a.count} records at exit", file=sys.stderr)
                return 1
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if psql:
            psql.close()
        logf.close()
    steady = [r for t, r in samples if first is not None and first <= t <= end]
    steady_kb = int(statistics.median(steady)) if steady else (samples[-1][1] if samples else 0)
    bcpu = sum(backends.values()) if a.app else ""
    with open(a.csv, "a") as fh:
        fh.write(f"{a.row},{a.count},{end:.3f},{first:.3f},{cpu:.2f},{peak},{steady_kb},"
                 f"{'' if bcpu == '' else f'{bcpu:.2f}'}\n")
    print(f"{a.row}: {a.count} in {end:.2f} s (first at {first:.2f} s), CPU {cpu:.2f} s, "
          f"peak {peak / 1024:.0f} MB, steady {steady_kb / 1024:.0f} MB"
          + (f", backends {bcpu:.2f} s" if bcpu != "" else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
