#!/usr/bin/env python3
"""write_gap_baseline.py - the longest write gap with no fault at all: the floor under failover.py's figures.

One closed-loop writer through a follower of a running cluster for --seconds, --trials times; prints the longest
stretch with no write acknowledged in each trial (JSON, last line). The same writer and the same measure as
failover.py, without stopping anything.
  write_gap_baseline.py --endpoints 127.0.0.1:31751,... [--seconds 10] [--trials 3]
"""
import argparse, http.client, json, statistics, time


def req(ep, method, path, body=None, timeout=0.5):
    host, port = ep.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


ap = argparse.ArgumentParser()
ap.add_argument("--endpoints", required=True)
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--trials", type=int, default=3)
a = ap.parse_args()
eps = a.endpoints.split(",")
gaps = []
for trial in range(a.trials):
    follower = None
    for ep in eps:
        try:
            st, b = req(ep, "GET", "/v1/status")
            if st == 200 and json.loads(b).get("role") == "follower":
                follower = ep
        except Exception:
            pass
    acks, n = [], 0
    start = time.monotonic()
    while time.monotonic() - start < a.seconds:
        n += 1
        try:
            st, _ = req(follower, "PUT", "/v1/kv/baseline", body=f"v{n}".encode())
            if st == 200:
                acks.append(time.monotonic())
        except Exception:
            time.sleep(0.005)
    points = [start] + acks + [time.monotonic()]
    gaps.append(round(max(b - x for x, b in zip(points, points[1:])) * 1000, 1))
print(json.dumps({"trials": a.trials, "seconds": a.seconds, "longest_gap_ms": gaps,
                  "median_ms": statistics.median(gaps)}))
