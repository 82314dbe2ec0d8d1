#!/usr/bin/env python3
"""check_layers.py: every #include "..." in base/, proto/, connectors/ and
daemon/ stays in its own layer or a lower one (docs/architecture.md):

    base/  <-  proto/ (the model)  <-  connectors/  <-  daemon/

A connector folder sees the interface (connectors/*.h), the shared helpers
(connectors/common/), its own folder and the layers below, never another
connector or daemon/. daemon/ names no connector's own header. Generated
protobuf headers (*.pb-c.h) belong to the layer whose .proto made them.
Prints each violation as FILE:LINE: message and exits 1 if there is any.
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def headers_in(folder):
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            path = os.path.relpath(os.path.join(dirpath, f), ROOT)
            if f.endswith(".h"):
                out.setdefault(f, []).append(path)
            elif f.endswith(".proto"):
                out.setdefault(f[:-6] + ".pb-c.h", []).append(path)
    return out


def layer_of(path):
    """(layer, connector folder or None) of a repository path."""
    parts = path.split(os.sep)
    if parts[0] == "connectors" and len(parts) > 2 and parts[1] != "common":
        return "connectors", parts[1]
    return parts[0], None


RANK = {"base": 0, "proto": 1, "connectors": 2, "daemon": 3}


def main():
    known = {}
    for folder in RANK:
        for name, paths in headers_in(folder).items():
            known.setdefault(name, []).extend(paths)
    bad = 0
    for folder in RANK:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                src = os.path.relpath(os.path.join(dirpath, f), ROOT)
                src_layer, src_conn = layer_of(src)
                with open(os.path.join(ROOT, src), encoding="utf-8") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        inc = m.group(1)
                        if ".." in inc.split("/"):
                            print(f"{src}:{lineno}: \"{inc}\": no relative includes across folders")
                            bad += 1
                            continue
                        cands = [p for p in known.get(os.path.basename(inc), [])
                                 if p.endswith(inc) or p.endswith(inc.replace(".pb-c.h", ".proto"))]
                        if not cands:
                            continue  # a system header or one of the build's own
                        ok = False
                        for cand in cands:
                            inc_layer, inc_conn = layer_of(cand)
                            if RANK[inc_layer] > RANK[src_layer]:
                                continue
                            if inc_conn and inc_conn != src_conn and src_layer != "connectors":
                                continue  # daemon/ never names a connector's header
                            if inc_conn and src_conn and inc_conn != src_conn:
                                continue  # one connector never reaches into another
                            ok = True
                        if not ok:
                            print(f"{src}:{lineno}: \"{inc}\" ({cands[0]}) is above or beside "
                                  f"the {src_layer} layer")
                            bad += 1
    if bad:
        print(f"{bad} include(s) cross the layers (docs/architecture.md)")
        return 1
    print("layers: every include stays in its layer or below")
    return 0


if __name__ == "__main__":
    sys.exit(main())
