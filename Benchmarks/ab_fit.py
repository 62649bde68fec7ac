#!/usr/bin/env python3
"""Compares two builds' server CPU per operation from kv-ab.sh's JSON lines on a machine whose other load varies:
fits CPU/op = a + b * other_cpu_pct for each build (least squares) and reports each build's CPU/op at the same
other load (the lowest seen), with the spread of the residuals. Rounds run at very different levels of outside load
(steal time on a shared VM) are then compared at one level instead of by a median that mixes them.

    python3 Benchmarks/ab_fit.py RESULTS.jsonl [CLIENTS]
"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 64
rows = [r for r in rows if r["clients"] == clients and r.get("other_cpu_pct") is not None]
at = min(r["other_cpu_pct"] for r in rows)
for label in sorted({r["label"] for r in rows}):
    pts = [(r["other_cpu_pct"], r["server_cpu_us_per_op"]) for r in rows if r["label"] == label]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0
    icpt = my - slope * mx
    resid = statistics.pstdev([y - (icpt + slope * x) for x, y in pts]) if len(pts) > 1 else 0.0
    print(f"{label}: {len(pts)} runs, CPU/op at {at:.0f}% other load {icpt + slope * at:.1f} µs "
          f"(slope {slope:.2f} µs per % of other load, residual spread {resid:.1f} µs)")
