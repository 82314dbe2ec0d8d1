"""bench/hub_report.py: scenario 9 of RESULTS.md (the hub sink serving a full
listing of persons next to the Python test server), from hub.csv and
hub_fill.csv as bench/hub.sh writes them. Used by bench/report.py; and by
bench/hub.sh as

    hub_report.py summarize RUNS HUB_RSS HUB_T0 PY_RSS PY_T0 OUT_CSV

which adds each server's RSS and CPU around each run (from bench/rss.sh's
samples, t_s relative to the T0 given) to the runs and writes hub.csv."""
import csv
import sys
from collections import defaultdict


def _samples(path, t0):
    rows = []
    for r in csv.DictReader(open(path)):
        if r.get("rss_kb") and r.get("cpu_s"):
            rows.append((float(t0) + float(r["t_s"]), int(r["rss_kb"]), float(r["cpu_s"])))
    return rows


def summarize(runs, hub_rss, hub_t0, py_rss, py_t0, out):
    """RSS before a run, peak during it, 2 s after; CPU seconds during it. A value
    the samples do not cover (the sampler stopped early) is left empty."""
    samples = {"hub": _samples(hub_rss, hub_t0), "python": _samples(py_rss, py_t0)}
    keys = ("rep", "server", "clients", "seconds", "records", "pages", "bytes", "p50_ms",
            "p99_ms", "max_ms", "failed")
    with open(out, "w") as fh:
        fh.write(",".join(keys) + ",rss_before_kb,rss_peak_kb,rss_after_kb,cpu_s\n")
        for r in csv.DictReader(open(runs)):
            xs = samples[r["server"]]
            t0, t1 = float(r["t_start"]), float(r["t_end"])
            before = [x for x in xs if x[0] <= t0]
            during = [x for x in xs if t0 <= x[0] <= t1]
            after = [x for x in xs if t1 + 1.5 <= x[0] <= t1 + 2.5]
            covered = bool(before) and any(x[0] >= t1 - 0.5 for x in xs)
            b = before[-1] if before else None
            a = after[-1] if after else None
            end = ([x for x in xs if x[0] >= t1 - 0.5] or [None])[0]
            peak = max([x[1] for x in during] + ([b[1]] if b else [])) if covered else None
            cpu = f"{end[2] - b[2]:.2f}" if covered and end else ""
            fh.write(",".join([r[k] for k in keys] + [str(b[1]) if b else "",
                                                      str(peak) if peak else "",
                                                      str(a[1]) if a else "", cpu]) + "\n")


def _by_clients(rows):
    """clients -> rep -> server -> row"""
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by[int(r["clients"])][r["rep"]][r["server"]] = r
    return by


def _rate(r):
    return int(r["records"]) / float(r["seconds"])


def section(rows, fill, f, med):
    by = _by_clients(rows)
    persons = int(fill[0]["persons"]) if fill else int(rows[0]["records"]) // int(rows[0]["clients"])
    out = []
    w = out.append
    w("## 9. The hub (ss12000-api-sink) serving a full listing of persons (bench/hub.sh)\n")
    w(f"{f(persons)} persons (the first lines of `persons.jsonl` of `ss12000_gen.py --seed 1`) are "
      "put into Kafka by a jsonl-source `run --once`; then a daemon with only the "
      "ss12000-api-sink (`entities: [Person]`, plain HTTP on 127.0.0.1, one bearer-token "
      "client, `max_limit: 1000`, the default 4 HTTP threads) consumes them. The baseline is "
      "`tests/fixtures/ss12000_server.py --data` with the same `persons.jsonl` (bearer auth, "
      "`ThreadingHTTPServer`), running beside it. `bench/hub_load` (C, libcurl, one thread and "
      "one kept-alive connection per client, all started at once) lets every client walk the "
      "full listing of `/persons` with `limit=1000`, following `pageToken`; every answer must be "
      "200 and every walk must return exactly all persons (counted in the answers). "
      "records/s = all clients' records / the time until the last walk ended. Latency = each "
      "page request (p50/p99 over all pages of all clients). RSS of the server process "
      "(`bench/rss.sh`, every 0.2 s): before the run, peak during it, 2 s after; CPU = its "
      "user+sys seconds during the run (sampled, so ±0.2 s) and CPU µs per record = those seconds / the records served. Both servers run back to back per client count "
      "(the order alternates between repetitions); ratios are hub / Python per repetition.\n")
    if fill:
        fs = float(fill[0]["fill_seconds"])
        w(f"Filling the hub: from the daemon's start until its sink had applied all "
          f"{f(persons)} persons (Kafka already holding them): {f(fs, 1)} s "
          f"({f(persons / fs if fs else None)} records/s, start-up and group join included); "
          f"state database {f(int(fill[0]['state_bytes']) / 1048576, 1)} MiB.\n")
    w("| clients | reps | hub records/s | hub MB/s | Python records/s | **hub / Python** | "
      "hub p50 / p99 ms | Python p50 / p99 ms | hub RSS MiB before → peak → after | "
      "Python RSS MiB before → peak → after | CPU s hub / Python | CPU µs per record hub / Python |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda kb: f(int(kb) / 1024, 1) if kb else "–"
    for c in sorted(by):
        reps = by[c]
        hub = [x["hub"] for x in reps.values() if "hub" in x]
        py = [x["python"] for x in reps.values() if "python" in x]
        ratios = [_rate(x["hub"]) / _rate(x["python"]) for x in reps.values()
                  if "hub" in x and "python" in x]
        m = lambda xs, k: med([float(x[k]) for x in xs if x[k] not in ("", None)])
        rss = lambda xs: " → ".join(mib(m(xs, k)) for k in ("rss_before_kb", "rss_peak_kb",
                                                             "rss_after_kb"))
        us = lambda xs: med([float(x["cpu_s"]) * 1e6 / int(x["records"]) for x in xs
                             if x["cpu_s"] and int(x["records"])])
        hub_mbs = med([int(x["bytes"]) / float(x["seconds"]) / 1e6 for x in hub])
        w(f"| {c} | {len(reps)} | {f(med([_rate(x) for x in hub]))} | {f(hub_mbs, 1)} | "
          f"{f(med([_rate(x) for x in py]))} | **{f(med(ratios), 2)}** "
          f"({', '.join(f(r, 2) for r in sorted(ratios))}) | {f(m(hub, 'p50_ms'), 1)} / "
          f"{f(m(hub, 'p99_ms'), 1)} | {f(m(py, 'p50_ms'), 1)} / {f(m(py, 'p99_ms'), 1)} | "
          f"{rss(hub)} | {rss(py)} | {f(m(hub, 'cpu_s'), 1)} / {f(m(py, 'cpu_s'), 1)} | "
          f"{f(us(hub), 1)} / {f(us(py), 1)} |")
    peak = max((int(r["rss_peak_kb"]) for r in rows if r["server"] == "hub" and r["rss_peak_kb"]),
               default=0)
    w(f"\nThe hub daemon's peak RSS while serving: **{f(peak / 1024, 1)} MiB** (all runs). "
      "The load generator, both servers, the Kafka broker and other jobs share the 2 vCPUs, "
      "so at 8 and 32 clients the figures show the servers on a full machine rather than "
      "their ceiling; the CPU time per record served is the figure that depends least on "
      "what else runs.\n")
    return "\n".join(out)


def plot_rows(rows, med):
    """[(clients, hub records/s, python records/s, hub p99, python p99)]"""
    by = _by_clients(rows)
    res = []
    for c in sorted(by):
        hub = [x["hub"] for x in by[c].values() if "hub" in x]
        py = [x["python"] for x in by[c].values() if "python" in x]
        res.append((c, med([_rate(x) for x in hub]) or 0, med([_rate(x) for x in py]) or 0,
                    med([float(x["p99_ms"]) for x in hub]) or 0,
                    med([float(x["p99_ms"]) for x in py]) or 0))
    return res


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "summarize":
    summarize(*sys.argv[2:])
