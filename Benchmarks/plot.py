#!/usr/bin/env python3
"""Turns the JSON lines of Benchmarks/kv-vs-etcd.sh into a Markdown table and an SVG picture.

    python3 Benchmarks/plot.py RESULTS.jsonl OUT_PREFIX [--op put] [--value-size 128]

Writes OUT_PREFIX.md (medians over rounds: ops/s, p50, p99 and server CPU per operation at each client count, for
RaftLite and etcd side by side, with the ratio) and OUT_PREFIX.svg (throughput and p99 against clients, both
systems on the same axes). Needs nothing but Python 3: the SVG is written by hand, so anyone can redo the figures.
"""
import argparse
import json
import statistics
import sys

SYSTEMS = [("raftlite", "RaftLite", "#1f77b4"), ("etcd", "etcd 3.4", "#d62728")]


def medians(rows, op, size):
    """{(label, clients): {key: median}} over the rounds."""
    out = {}
    for label, _, _ in SYSTEMS:
        for clients in sorted({r["clients"] for r in rows}):
            picked = [r for r in rows if r.get("label") == label and r["op"] == op and r["clients"] == clients
                      and r["value_size"] == size]
            if not picked:
                continue
            out[(label, clients)] = {
                key: statistics.median([r[key] for r in picked if r.get(key) is not None] or [float("nan")])
                for key in ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_op")
            } | {"rounds": len(picked)}
    return out


def table(m, clients):
    lines = ["| clients | RaftLite ops/s | etcd ops/s | ratio | RaftLite p50 / p99 ms | etcd p50 / p99 ms "
             "| server CPU µs/op RaftLite / etcd | rounds |", "|---|---|---|---|---|---|---|---|"]
    for c in clients:
        a, b = m.get(("raftlite", c)), m.get(("etcd", c))
        if not a or not b:
            continue
        lines.append(
            f"| {c} | {a['ops_per_s']:,.0f} | {b['ops_per_s']:,.0f} | {a['ops_per_s'] / b['ops_per_s']:.2f}x "
            f"| {a['p50_ms']:.3f} / {a['p99_ms']:.2f} | {b['p50_ms']:.3f} / {b['p99_ms']:.2f} "
            f"| {a['server_cpu_us_per_op']:.0f} / {b['server_cpu_us_per_op']:.0f} | {min(a['rounds'], b['rounds'])} |")
    return "\n".join(lines) + "\n"


def chart(m, clients, key, title, x0, y0, w, h):
    """One line chart (clients on the x axis, evenly spaced) as SVG elements."""
    values = [v[key] for v in m.values() if v[key] == v[key]]
    top = max(values) * 1.1 if values else 1
    parts = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="black"/>',
             f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="black"/>']
    xs = {c: x0 + (k + 0.5) * w / len(clients) for k, c in enumerate(clients)}
    for c, x in xs.items():
        parts.append(f'<text x="{x}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{c}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle" font-size="11">clients</text>')
    for k in range(5):
        v = top * k / 4
        y = y0 + h - h * k / 4
        parts.append(f'<line x1="{x0 - 4}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="10">{v:,.0f}</text>')
    for label, name, colour in SYSTEMS:
        points = [(xs[c], y0 + h - h * m[(label, c)][key] / top) for c in clients if (label, c) in m]
        if not points:
            continue
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                     % (colour, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
    return parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out_prefix")
    ap.add_argument("--op", default="put")
    ap.add_argument("--value-size", type=int, default=128)
    args = ap.parse_args()
    rows = []
    with open(args.results) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                sys.exit(f"{args.results}:{number}: not JSON: {error}")
    m = medians(rows, args.op, args.value_size)
    clients = sorted({c for _, c in m})
    if not clients:
        sys.exit(f"no {args.op} results with {args.value_size}-byte values in {args.results}")
    with open(args.out_prefix + ".md", "w") as f:
        f.write(f"{args.op.upper()} of {args.value_size}-byte values, 3 nodes on loopback, fsync on; medians over "
                f"rounds ({args.results}):\n\n")
        f.write(table(m, clients))
    width, height = 860, 360
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    parts += chart(m, clients, "ops_per_s", f"{args.op.upper()} ops/s ({args.value_size}-byte values)",
                   70, 40, 320, 240)
    parts += chart(m, clients, "p99_ms", "p99 latency, ms", 500, 40, 320, 240)
    for k, (_, name, colour) in enumerate(SYSTEMS):
        parts.append(f'<rect x="{70 + k * 140}" y="{height - 22}" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{90 + k * 140}" y="{height - 16}" font-size="12">{name}</text>')
    parts.append("</svg>")
    with open(args.out_prefix + ".svg", "w") as f:
        f.write("\n".join(parts) + "\n")
    print(open(args.out_prefix + ".md").read())


if __name__ == "__main__":
    main()
