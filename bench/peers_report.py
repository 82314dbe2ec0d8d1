"""bench/peers_report.py: the peers section of RESULTS.md (skolsync side by side
with Kafka Connect, bench/connect.sh) and its two plots, for bench/report.py.

  peers = Peers(rows)          # rows of OUT/peers.csv (csv.DictReader)
  lines = peers.markdown()     # [] without rows
  peers.plots(gp)              # gp(name, script, data) of report.py

Figures are medians over the repetitions; a ratio skolsync / Connect is taken
per repetition (the two sides ran back to back) and its median reported.
"""
import statistics
from collections import defaultdict

# (path, skolsync variant, Connect variant, label, throughput target (start to
# end, after the first record) or None) -- the targets of project issue 17
PAIRS = [
    ("source", "jsonl-source", "file-source",
     "JSON lines → Kafka: jsonl-source vs FileStreamSource", (3.0, 2.0)),
    ("sink", "postgres-sink", "jdbc-flat",
     "Kafka → PostgreSQL: postgres-sink (own layout) vs Debezium JDBC sink, flat table", (1.0, 1.0)),
    ("sink", "postgres-sink", "jdbc-layout",
     "… vs Debezium JDBC sink into skolsync's layout, driver defaults", None),
    ("sink", "postgres-sink", "jdbc-layout-rewrite",
     "… vs Debezium JDBC sink into skolsync's layout, `reWriteBatchedInserts=true`", (1.5, 1.5)),
]
RSS_TARGET = 1 / 20          # skolsync peak RSS ≤ 1/20 of Connect's
ORDER = ["jsonl-source", "file-source", "postgres-sink", "jdbc-flat", "jdbc-layout",
         "jdbc-layout-rewrite"]
WHAT = {
    "jsonl-source": "skolsync jsonl-source",
    "file-source": "Connect FileStreamSource",
    "postgres-sink": "skolsync postgres-sink (own layout)",
    "jdbc-flat": "Debezium JDBC, flat table",
    "jdbc-layout": "Debezium JDBC, skolsync's layout",
    "jdbc-layout-rewrite": "Debezium JDBC, skolsync's layout, reWriteBatchedInserts",
}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(x, d=0):
    return "–" if x is None else f"{x:,.{d}f}".replace(",", " ")


class Run:
    def __init__(self, r):
        self.n = int(r["records"])
        self.total = float(r["total_s"])
        self.first = float(r["first_s"])
        self.cpu = float(r["cpu_s"])
        self.peak = int(r["peak_kb"]) / 1024
        self.steady = int(r["steady_kb"]) / 1024
        self.backend = float(r["backend_cpu_s"]) if r.get("backend_cpu_s") else None

    @property
    def rate(self):
        return self.n / self.total

    @property
    def rate_steady(self):
        span = self.total - self.first
        return self.n / span if span > 0 else None

    def per100k(self, x):
        return None if x is None else x * 100000 / self.n


class Peers:
    def __init__(self, rows):
        self.runs = defaultdict(dict)          # variant -> rep -> Run
        for r in rows:
            self.runs[r["variant"]][r["rep"]] = Run(r)

    def med(self, variant, fn):
        return _med([fn(x) for x in self.runs.get(variant, {}).values()])

    def ratios(self, a, b, fn):
        ra, rb = self.runs.get(a, {}), self.runs.get(b, {})
        out = []
        for rep in ra:
            if rep in rb:
                x, y = fn(ra[rep]), fn(rb[rep])
                if x is not None and y:
                    out.append(x / y)
        return out

    def markdown(self):
        if not self.runs:
            return []
        md = []
        w = md.append
        reps = max(len(v) for v in self.runs.values())
        w("## 10. Peers: skolsync side by side with Kafka Connect (bench/connect.sh)\n")
        w("The same 100 000 SS 12000 persons (`ss12000_gen.py --seed 1 --students 40000`, the "
          "first 100 000 persons) on the same broker and PostgreSQL, the two sides run back to "
          f"back and their order alternating between the {reps} repetition(s). Kafka Connect "
          "4.3.1 standalone (`scripts/connect.sh fetch`: connect-runtime, connect-file, "
          "connect-json from Maven Central; 4.3.1 is the newest connect-file there) talks to the "
          "4.4.0 broker, JVM options of the distribution's `connect-standalone.sh` "
          "(`-Xms256M -Xmx2G`, G1), `plugin.discovery=service_load`. The Debezium JDBC sink "
          "3.6.0.Final (PostgreSQL driver 42.7.8, hibernate 7.2.19.Final) runs with "
          "`insert.mode=upsert`, `primary.key.mode=record_value` on `id`, "
          "`schema.evolution=none`, defaults otherwise (`batch.size` 500, one task); its input "
          "is the same persons as JsonConverter envelopes (`schemas.enable=true`; id "
          "`io.debezium.data.Uuid`, doc `io.debezium.data.Json`, modified "
          "`io.debezium.time.ZonedTimestamp`), produced once beforehand with kcat. "
          "skolsync: `run --once`, jsonl-source (defaults: protobuf, lz4, the batches ready one "
          "after the other in one transaction with the last cursor, up to 50 000 records or "
          "500 ms) and postgres-sink (`entities: [Person]`, its own layout: jsonb doc, "
          "typed columns (text ones generated, the rest written by the sink), indexes, the "
          "stale-update guard) draining the topic that "
          "repetition's source run wrote. The flat table is `(id uuid PRIMARY KEY, doc jsonb, "
          "modified timestamptz)`; skolsync's layout is its `persons` table copied with "
          "`LIKE … INCLUDING ALL` (Connect leaves `source`, `enrolment_school` and, since "
          "migration 4, `birth_date`, which the postgres-sink sets, NULL).\n")
        w("Measured from outside by `bench/peers.py`, polling every 0.2 s: *start to end* = "
          "from the start of the process until the topic's high watermarks (kcat -Q) or "
          "the table's `count(*)` reach 100 000 (skolsync: until `run --once` exits, after its "
          "last commit and shutdown); *after the first record* = from the first poll that saw "
          "a record or row to that end (Connect's JVM start-up, plugin scan and group join "
          "are left out). CPU = user + system of the process (`/proc/PID/stat`; skolsync: "
          "`wait4` rusage), per 100 000 records; backend CPU = the PostgreSQL backends of "
          "that run (by `application_name`). Peak RSS = VmHWM; steady RSS = median VmRSS "
          "between the first record and the end.\n")
        w("| run | reps | rec/s start to end | rec/s after first record | CPU s / 100k | "
          "PostgreSQL backend CPU s / 100k | peak RSS MB | steady RSS MB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for v in [x for x in ORDER if x in self.runs]:
            w(f"| {WHAT[v]} | {len(self.runs[v])} | {_f(self.med(v, lambda r: r.rate))} | "
              f"{_f(self.med(v, lambda r: r.rate_steady))} | "
              f"{_f(self.med(v, lambda r: r.per100k(r.cpu)), 1)} | "
              f"{_f(self.med(v, lambda r: r.per100k(r.backend)), 1)} | "
              f"{_f(self.med(v, lambda r: r.peak), 1)} | {_f(self.med(v, lambda r: r.steady), 1)} |")
        w("")
        w("Ratios skolsync / Connect (per repetition, median; in brackets each repetition) "
          "and the targets of issue 17:\n")
        w("| comparison | start to end | after first record | throughput target | "
          "peak RSS skolsync / Connect | RSS target ≤ 1/20 | CPU skolsync / Connect |")
        w("|---|---:|---:|:---|---:|:---|---:|")
        for path, sk, cn, label, target in PAIRS:
            if sk not in self.runs or cn not in self.runs:
                continue
            rt = self.ratios(sk, cn, lambda r: r.rate)
            rs = self.ratios(sk, cn, lambda r: r.rate_steady)
            rm = self.ratios(sk, cn, lambda r: r.peak)
            rc = self.ratios(sk, cn, lambda r: r.cpu)
            t, s, m, c = _med(rt), _med(rs), _med(rm), _med(rc)
            if target:
                ok = (t is not None and t >= target[0]) and (s is not None and s >= target[1])
                tgt = (f"≥ {target[0]:g}× / ≥ {target[1]:g}×: " + ("met" if ok else "**missed**"))
            else:
                tgt = "–"
            mok = "met" if m is not None and m <= RSS_TARGET else "**missed**"
            w(f"| {label} | **{_f(t, 2)}×** ({', '.join(_f(x, 2) for x in sorted(rt))}) | "
              f"**{_f(s, 2)}×** ({', '.join(_f(x, 2) for x in sorted(rs))}) | {tgt} | "
              f"1/{_f(1 / m if m else None, 1)} | {mok} | {_f(c, 2)} |")
        w("")
        w("The machine is shared (2 vCPUs; the broker, PostgreSQL, both sides and other jobs "
          "run on them): absolute rates vary from run to run, the alternating order gives "
          "both sides the same load on average, compare the ratios. The throughput plot is "
          "`peers_throughput.png`, the memory plot `peers_memory.png`.\n")
        return md

    def plots(self, gp):
        vs = [x for x in ORDER if x in self.runs]
        if not vs:
            return
        data = "".join(
            f"{v} {self.med(v, lambda r: r.rate) or 0:.0f} {self.med(v, lambda r: r.rate_steady) or 0:.0f} "
            f"{self.med(v, lambda r: r.peak) or 0:.1f} {self.med(v, lambda r: r.steady) or 0:.1f}\n"
            for v in vs)
        common = ("set style data histograms\nset style histogram clustered gap 1\n"
                  "set style fill solid 0.8 border -1\nset key below\nset grid ytics\n"
                  "set xtics rotate by -20 font ',8'\n")
        gp("peers_throughput",
           "set title 'skolsync vs Kafka Connect: 100 000 persons (records/s, median)'\n" + common +
           "set ylabel 'records/s'\nset yrange [0:*]\n"
           "plot DATA using 2:xtic(1) title 'start to end', '' using 3 title 'after the first record'\n",
           data)
        gp("peers_memory",
           "set title 'skolsync vs Kafka Connect: RSS (MB, median, log scale)'\n" + common +
           "set ylabel 'MB'\nset logscale y\nset yrange [1:*]\n"
           "plot DATA using 4:xtic(1) title 'peak (VmHWM)', '' using 5 title 'steady (median VmRSS)'\n",
           data)
