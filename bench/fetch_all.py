#!/usr/bin/env python3
"""Fetch every page of every collection from an SS 12000 server: the server's
own ceiling (what any source could read at most).
Usage: fetch_all.py BASE_URL [PAGE_SIZE] [--save DIR]  -> prints "entities bytes seconds".
--save DIR writes page n of /<path> to DIR/<path>.<n>.json as it came, its
pageToken replaced by "page-<n+1>" (null on the last page): the files
`ss12000_server.py --pages DIR --pages-raw` serves byte for byte."""
import http.client, os, re, sys, time, urllib.parse

PATHS = ["organisations", "programmes", "syllabuses", "schoolUnitOfferings", "persons",
         "duties", "groups", "placements", "activities", "calendarEvents", "attendances",
         "attendanceEvents", "attendanceSchedule", "absences", "grades", "studyplans",
         "resources", "rooms"]
TOK = re.compile(rb'"pageToken"\s*:\s*(null|"([^"]*)")')

def main():
    args = sys.argv[1:]
    save = None
    if "--save" in args:
        i = args.index("--save")
        save = args[i + 1]
        del args[i:i + 2]
        os.makedirs(save, exist_ok=True)
    u = urllib.parse.urlsplit(args[0])
    limit = int(args[1]) if len(args) > 1 else 1000
    conn = http.client.HTTPConnection(u.hostname, u.port)
    n = nbytes = 0
    t0 = time.monotonic()
    for p in PATHS:
        q = f"limit={limit}"
        page = 1
        while True:
            conn.request("GET", f"{u.path}/{p}?{q}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                sys.exit(f"{p} page {page}: HTTP {resp.status}")
            nbytes += len(body)
            n += body.count(b'"meta"') or 0  # every entity has one meta
            m = None
            tail = max(0, len(body) - 400)
            for m in TOK.finditer(body, tail):
                pass
            last = not m or m.group(1) == b"null"
            if save:
                if not m:
                    sys.exit(f"{p} page {page}: no pageToken member in the last 400 bytes")
                mine = b"null" if last else b'"page-%d"' % (page + 1)
                with open(os.path.join(save, f"{p}.{page}.json"), "wb") as f:
                    f.write(body[:m.start(1)] + mine + body[m.end(1):])
            if last:
                break
            q = "pageToken=" + urllib.parse.quote(m.group(2).decode()) + f"&limit={limit}"
            page += 1
    print(n, nbytes, round(time.monotonic() - t0, 3))

main()
