#!/usr/bin/env python3
"""Fetch every page of every collection from an SS 12000 server, discarding
the bodies: the server's own ceiling (what any source could read at most).
Usage: fetch_all.py BASE_URL [PAGE_SIZE]  -> prints "entities bytes seconds"."""
import http.client, json, re, sys, time, urllib.parse

PATHS = ["organisations", "programmes", "syllabuses", "schoolUnitOfferings", "persons",
         "duties", "groups", "placements", "activities", "calendarEvents", "attendances",
         "attendanceEvents", "attendanceSchedule", "absences", "grades", "studyplans",
         "resources", "rooms"]
TOK = re.compile(rb'"pageToken"\s*:\s*(null|"([^"]*)")')

def main():
    u = urllib.parse.urlsplit(sys.argv[1])
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    conn = http.client.HTTPConnection(u.hostname, u.port)
    n = nbytes = 0
    t0 = time.monotonic()
    for p in PATHS:
        q = f"limit={limit}"
        while True:
            conn.request("GET", f"{u.path}/{p}?{q}")
            body = conn.getresponse().read()
            nbytes += len(body)
            n += body.count(b'"meta"') or 0  # every entity has one meta
            m = None
            for m in TOK.finditer(body[-400:]):
                pass
            if not m or m.group(1) == b"null":
                break
            q = "pageToken=" + urllib.parse.quote(m.group(2).decode()) + f"&limit={limit}"
    print(n, nbytes, round(time.monotonic() - t0, 3))

main()
