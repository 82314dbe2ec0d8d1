#!/usr/bin/env python3
"""End-to-end latency (bench scenario 3): a mutation on the SS 12000 test
server -> the row visible in PostgreSQL.

Each change patches one person's givenName to a unique value through the
test server's control API (which bumps meta.modified and sends the webhook
callback); t0 is taken just before the POST. One psql session polls the
postgres-sink's table every --poll-ms for every pending change (persons.given_name
is a generated column of doc, so it is visible exactly when the sink's
transaction committed); t1 is the first poll that sees the new value.

  latency.py --server http://127.0.0.1:PORT --pg CONNINFO --schema S
             --mode steady|burst --count N [--rate 1] [--burst 20]
             [--tag T] [--csv FILE]

steady: one change every 1/rate s. burst: --burst changes back to back,
then wait until all are visible plus 2 s, repeated until --count changes.
Prints one line: n p50_ms p95_ms p99_ms max_ms lost
"""
import argparse
import http.client
import json
import subprocess
import sys
import time
import urllib.parse


class Psql:
    def __init__(self, conninfo):
        self.p = subprocess.Popen(["psql", conninfo, "-X", "-q", "-At", "-F", "|"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __END__\n")
        self.p.stdin.flush()
        rows = []
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == "__END__":
                return rows
            rows.append(line.split("|"))
        raise RuntimeError("psql exited")

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--pg", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--mode", choices=["steady", "burst"], default="steady")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--poll-ms", type=float, default=5)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--tag", default="L")
    ap.add_argument("--csv")
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.server)
    http_conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    db = Psql(a.pg)
    ids = [r[0] for r in db.query(
        f'select id from "{a.schema}".persons order by id limit {a.count}')]
    if len(ids) < a.count:
        sys.exit(f"latency.py: only {len(ids)} persons in {a.schema}.persons")

    def mutate(i):
        name = f"{a.tag}{i}x{int(time.time() * 1000) % 100000}"
        body = json.dumps({"collection": "persons", "id": ids[i], "patch": {"givenName": name}})
        t0 = time.monotonic()
        http_conn.request("POST", "/_control/update", body, {"Content-Type": "application/json"})
        r = http_conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"latency.py: update answered {r.status}")
        return ids[i], name, t0

    pending = {}  # id -> (name, t0, i)
    lat = {}
    lost = 0

    def check():
        nonlocal lost
        if not pending:
            return
        idlist = ",".join(f"'{x}'" for x in pending)
        now = time.monotonic()
        for pid, gname in db.query(
                f'select id, given_name from "{a.schema}".persons where id in ({idlist})'):
            want = pending.get(pid)
            if want and gname == want[0]:
                lat[want[2]] = (now - want[1]) * 1000.0
                del pending[pid]
        for pid in [p for p, w in pending.items() if now - w[1] > a.timeout]:
            lost += 1
            del pending[pid]

    i = 0
    if a.mode == "steady":
        gap = 1.0 / a.rate
        next_t = time.monotonic()
        while i < a.count or pending:
            if i < a.count and time.monotonic() >= next_t:
                pid, name, t0 = mutate(i)
                pending[pid] = (name, t0, i)
                i += 1
                next_t += gap
            check()
            time.sleep(a.poll_ms / 1000.0)
    else:
        while i < a.count:
            n = min(a.burst, a.count - i)
            for _ in range(n):
                pid, name, t0 = mutate(i)
                pending[pid] = (name, t0, i)
                i += 1
            while pending:
                check()
                time.sleep(a.poll_ms / 1000.0)
            time.sleep(2.0)
    db.close()
    xs = [lat[k] for k in sorted(lat)]
    if a.csv:
        with open(a.csv, "a") as f:
            for k in sorted(lat):
                f.write(f"{a.tag},{a.mode},{k},{lat[k]:.1f}\n")
    print(len(xs), *(f"{pct(xs, q):.0f}" for q in (0.5, 0.95, 0.99)),
          f"{max(xs) if xs else float('nan'):.0f}", lost)


if __name__ == "__main__":
    main()
