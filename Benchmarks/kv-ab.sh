#!/usr/bin/env bash
# Two builds of the key-value store side by side, in one run, driven by the same load generator: for telling
# whether a change costs or buys anything.
#
#   Benchmarks/kv-ab.sh BINARY_A BINARY_B [BENCH_DIR]
#
# BINARY_A and BINARY_B are two `raft-lite` release binaries (say, .build/release/raft-lite of two checkouts);
# BENCH_DIR holds kvbench.py (default: ../shared/bench next to this checkout). For each of ROUNDS rounds (default 3)
# the two take turns (their order alternating between rounds); each runs a 3-node cluster on loopback with fsync on
# and PUTs VALUE_SIZE-byte values (default 128) with each of CLIENTS (default "1 64") for SECONDS_PER seconds (default 10). It prints
# every result, then the medians and B's ratio to A.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [BENCH_DIR]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
binary_a=$1
binary_b=$2
bench=${3:-$here/../shared/bench}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-"1 64"}
VALUE_SIZE=${VALUE_SIZE:-128}
work=$(mktemp -d)
out="$work/results.jsonl"
pids=()
# On exit, end only the servers this script started, by pid.
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT

run() { # label binary
	local label=$1 binary=$2
	rm -rf "$work/rl" && mkdir -p "$work/rl"
	printf '{"node0": {"ip": "127.0.0.1", "port": 9181, "http_port": 8181},\n "node1": {"ip": "127.0.0.1", "port": 9182, "http_port": 8182},\n "node2": {"ip": "127.0.0.1", "port": 9183, "http_port": 8183}}\n' >"$work/rl/cluster.json"
	pids=()
	for k in 0 1 2; do
		"$binary" serve --config "$work/rl/cluster.json" --id "node$k" --data-dir "$work/rl/node$k" --log-level warning \
			>"$work/rl/node$k.log" 2>&1 &
		pids+=($!)
	done
	for port in 8181 8182 8183; do
		for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/status" | grep -q '"leader":"node' && break; sleep 0.1; done
	done
	# Values over 4 KiB are made quickly (kvbench makes them a byte at a time): see kvbench_query.py.
	local generator=("$bench/kvbench.py")
	[ "$VALUE_SIZE" -gt 4096 ] && generator=("$here/Benchmarks/kvbench_query.py" --kvbench "$bench/kvbench.py" --fast-values)
	for clients in $CLIENTS; do
		python3 "${generator[@]}" --target http --endpoints 127.0.0.1:8181,127.0.0.1:8182,127.0.0.1:8183 \
			--clients "$clients" --seconds "$SECONDS_PER" --value-size "$VALUE_SIZE" --op put \
			--pids "$(IFS=,; echo "${pids[*]}")" --label "$label" 2>/dev/null | tee -a "$out"
	done
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
	pids=()
	# Peer queues that overflowed (the transport logs the first message dropped of each overflow).
	echo "# $label: $(cat "$work"/rl/node*.log | grep -c 'peer queue full' || true) peer-queue overflows logged" >&2
}

for round in $(seq "$ROUNDS"); do
	if [ $((round % 2)) -eq 1 ]; then run a "$binary_a"; run b "$binary_b"; else run b "$binary_b"; run a "$binary_a"; fi
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(label, clients, key):
    return statistics.median([r[key] for r in rows if r["label"] == label and r["clients"] == clients])
print(f"\nmedians over rounds (3 nodes, loopback, fsync on, PUT of {rows[0]['value_size']}-byte values):")
print("| clients | A ops/s | B ops/s | B/A | A p50 / p99 ms | B p50 / p99 ms | server CPU us/op A / B |")
print("|---|---|---|---|---|---|---|")
for c in sorted({r["clients"] for r in rows}):
    a, b = med("a", c, "ops_per_s"), med("b", c, "ops_per_s")
    print(f"| {c} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {med('a', c, 'p50_ms'):.3f} / {med('a', c, 'p99_ms'):.2f} "
          f"| {med('b', c, 'p50_ms'):.3f} / {med('b', c, 'p99_ms'):.2f} "
          f"| {med('a', c, 'server_cpu_us_per_op'):.0f} / {med('b', c, 'server_cpu_us_per_op'):.0f} |")
PY
echo "raw results: $out"
