#!/usr/bin/env python3
"""bench/peers_data.py: the records of the peers scenario (bench/connect.sh).

  peers_data.py DIR [--count 100000] [--students 40000]

Writes, once (DIR/.complete):
  DIR/jsonl/persons.jsonl  the first COUNT persons of
                           tests/fixtures/ss12000_gen.py --seed 1 --students S
                           (40 000 students give 100 515 persons), one JSON
                           object a line: what jsonl-source and Kafka Connect's
                           FileStreamSource both read;
  DIR/flat.json            the same persons for the Debezium JDBC sink, one
                           JsonConverter envelope (schemas.enable=true) a line:
                           {id, doc, modified} for the flat table;
  DIR/doc.json             {id, doc} for skolsync's own table layout (whose
                           modified column is generated from doc).
id is typed io.debezium.data.Uuid (a uuid column), doc io.debezium.data.Json
(jsonb), modified io.debezium.time.ZonedTimestamp (timestamptz): the semantic
types the sink binds to those PostgreSQL types.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fixtures"))
import ss12000_gen  # noqa: E402


def envelope(name, fields, payload):
    return json.dumps({"schema": {"type": "struct", "name": name, "optional": False,
                                  "fields": fields}, "payload": payload},
                      ensure_ascii=False, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--students", type=int, default=40000)
    a = ap.parse_args()
    done = os.path.join(a.dir, ".complete")
    if os.path.exists(done):
        return 0
    os.makedirs(os.path.join(a.dir, "jsonl"), exist_ok=True)
    f_id = {"field": "id", "type": "string", "optional": False, "name": "io.debezium.data.Uuid"}
    f_doc = {"field": "doc", "type": "string", "optional": False, "name": "io.debezium.data.Json"}
    f_mod = {"field": "modified", "type": "string", "optional": True,
             "name": "io.debezium.time.ZonedTimestamp"}
    n = 0
    persons = ss12000_gen.iter_collections(seed=1, students=a.students)["persons"]
    with open(os.path.join(a.dir, "jsonl", "persons.jsonl"), "w") as jl, \
            open(os.path.join(a.dir, "flat.json"), "w") as flat, \
            open(os.path.join(a.dir, "doc.json"), "w") as doc:
        for p in persons:
            if n == a.count:
                break
            line = json.dumps(p, ensure_ascii=False, separators=(",", ":"))
            jl.write(line + "\n")
            mod = (p.get("meta") or {}).get("modified")
            flat.write(envelope("persons_flat", [f_id, f_doc, f_mod],
                                {"id": p["id"], "doc": line, "modified": mod}) + "\n")
            doc.write(envelope("persons", [f_id, f_doc], {"id": p["id"], "doc": line}) + "\n")
            n += 1
    if n < a.count:
        print(f"peers_data.py: only {n} persons for {a.students} students", file=sys.stderr)
        return 1
    open(done, "w").close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
