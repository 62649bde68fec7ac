#!/usr/bin/env python3
"""Summarise Benchmarks/reads.sh's results.jsonl: medians over the rounds, and ratios taken within each round
(then their median), as Markdown.

    python3 Benchmarks/reads_summary.py results.jsonl
"""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]


def pick(system, case, clients=None):
    return [r for r in rows if r["system"] == system and r["case"] == case
            and (clients is None or r.get("clients") == clients)]


def val(r, key):
    v = r.get(key)
    if v is None and key == "server_cpu_us_per_op":
        return None
    return v


def med(system, case, clients, key):
    vals = [val(r, key) for r in pick(system, case, clients)]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def rng(system, case, clients, key="ops_per_s"):
    vals = [val(r, key) for r in pick(system, case, clients)]
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def load(system, case, clients):
    vals = []
    for r in pick(system, case, clients):
        for k in ("load_before", "load_after"):
            try:
                vals.append(float(str(r.get(k, "")).split()[0]))
            except (ValueError, IndexError):
                pass
    return "%.1f–%.1f" % (min(vals), max(vals)) if vals else "?"


def ratio_per_round(a, b):
    """a, b: (system, case, clients). Median over rounds of a/b, and the per-round ratios."""
    rs = []
    for r in sorted({x["round"] for x in rows}):
        x = [y["ops_per_s"] for y in pick(*a) if y["round"] == r]
        z = [y["ops_per_s"] for y in pick(*b) if y["round"] == r]
        if x and z and z[0]:
            rs.append(x[0] / z[0])
    return (statistics.median(rs) if rs else None), rs


def f(v, fmt="{:,.0f}"):
    return "—" if v is None else fmt.format(v)


rounds = sorted({x["round"] for x in rows})
print("Rounds: %d. Medians over the rounds (range of ops/s in brackets); load average (1 min) before/after each "
      "measurement, lowest–highest.\n" % len(rounds))
print("| system | case | clients | ops/s (range) | p50 ms | p99 ms | server CPU µs/op | generator CPU % | errors | load |")
print("|---|---|---|---|---|---|---|---|---|---|")
seen = []
for r in rows:
    k = (r["system"], r["case"], r.get("clients"))
    if k not in seen:
        seen.append(k)
order = {"etcd": 0, "raftlite": 1, "raftlite-lease": 2}
for system, case, clients in sorted(seen, key=lambda k: (order.get(k[0], 9), k[1], k[2] or 0)):
    lo, hi = rng(system, case, clients)
    errs = sum(r.get("errors") or 0 for r in pick(system, case, clients))
    print("| %s | %s | %s | %s (%s–%s) | %s | %s | %s | %s | %d | %s |" % (
        system, case, clients, f(med(system, case, clients, "ops_per_s")), f(lo), f(hi),
        f(med(system, case, clients, "p50_ms"), "{:.3f}"), f(med(system, case, clients, "p99_ms"), "{:.2f}"),
        f(med(system, case, clients, "server_cpu_us_per_op")), f(med(system, case, clients, "client_cpu_pct"), "{:.0f}"),
        errs, load(system, case, clients)))

print("\nRatios, taken within each round (median of the rounds; the rounds' values in brackets):\n")
print("| ratio | median | per round | goal |")
print("|---|---|---|---|")


def line(name, a, b, goal):
    m, rs = ratio_per_round(a, b)
    print("| %s | %s | %s | %s |" % (name, f(m, "{:.2f}x"), ", ".join("%.2f" % x for x in rs), goal))


for c in (1, 16, 64):
    line("RaftLite GET leader / etcd GET, %d clients" % c, ("raftlite", "get-leader", c), ("etcd", "get-all", c),
         "≥ 3x at 64" if c == 64 else "")
    line("RaftLite GET all nodes / etcd GET, %d clients" % c, ("raftlite", "get-all", c), ("etcd", "get-all", c),
         "≥ 3x at 64" if c == 64 else "")
line("RaftLite GET leader 64 / RaftLite PUT 64", ("raftlite", "get-leader", 64), ("raftlite", "put-all", 64), "≥ 5x")
line("RaftLite GET all 64 / RaftLite PUT 64", ("raftlite", "get-all", 64), ("raftlite", "put-all", 64), "≥ 5x")
line("RaftLite serializable 64 / RaftLite PUT 64", ("raftlite", "serializable-all", 64), ("raftlite", "put-all", 64), "")
line("RaftLite GET all 64 / serializable 64 (cost of ReadIndex)", ("raftlite", "get-all", 64),
     ("raftlite", "serializable-all", 64), "")
line("RaftLite PUT 64 / etcd PUT 64", ("raftlite", "put-all", 64), ("etcd", "put-all", 64), "")
line("16 writers with 64 linearizable readers / alone", ("raftlite", "w-with-linearizable", 16),
     ("raftlite", "w-alone", 16), "≥ 0.90")
line("16 writers with 64 serializable readers / alone", ("raftlite", "w-with-serializable", 16),
     ("raftlite", "w-alone", 16), "")
line("16 writers with 64 paced linearizable readers / alone", ("raftlite", "w-with-linearizable-paced", 16),
     ("raftlite", "w-alone", 16), "≥ 0.90")
line("16 writers with 64 paced serializable readers / alone", ("raftlite", "w-with-serializable-paced", 16),
     ("raftlite", "w-alone", 16), "")
line("16 writers beside one spinning process / alone", ("raftlite", "w-with-spinner", 16), ("raftlite", "w-alone", 16),
     "")
