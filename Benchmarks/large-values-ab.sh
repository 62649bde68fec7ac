#!/usr/bin/env bash
# Two builds (or two settings of one build) with large values, side by side in one run: each round starts a fresh
# 3-node cluster for each of A and B (their order alternating between rounds) and PUTs 64 KiB values, then 1 MiB
# values to the same cluster, so the second phase runs on a log and a state the first one left behind — the case in
# which the value-size runs of kv-vs-etcd.sh stalled.
#
#   Benchmarks/large-values-ab.sh BINARY_A BINARY_B [BENCH_DIR]
#
# A binary may be a wrapper script that adds flags to `serve` (say `exec raft-lite "$@" --compaction-margin-bytes 0`).
# BENCH_DIR holds kvbench.py (default: ../shared/bench next to this checkout). ROUNDS (default 3), SECONDS_PER
# (default 8), CLIENTS (default 16), SIZES (default "65536 1048576"). Prints one JSON line per phase (label a or b),
# then the medians over the rounds.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [BENCH_DIR]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
binary_a=$1
binary_b=$2
bench=${3:-$here/../shared/bench}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-8}
CLIENTS=${CLIENTS:-16}
SIZES=${SIZES:-"65536 1048576"}
work=$(mktemp -d)
out="$work/results.jsonl"
# shellcheck source=cluster-lib.sh
. "$here/Benchmarks/cluster-lib.sh"
# On exit, end only the servers this script started, by pid.
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT

run() { # label binary
	local label=$1 binary=$2 size
	start_cluster "$binary" "$work/rl" 8181 9181
	[ -n "$(cluster_leader 8181)" ] || echo "# $label: no leader after 20 s" >&2
	for size in $SIZES; do
		python3 "$here/Benchmarks/kvbench_query.py" --kvbench "$bench/kvbench.py" --fast-values --target http \
			--endpoints 127.0.0.1:8181,127.0.0.1:8182,127.0.0.1:8183 --clients "$CLIENTS" --seconds "$SECONDS_PER" \
			--value-size "$size" --op put --pids "$(IFS=,; echo "${pids[*]}")" --label "$label" 2>/dev/null |
			tail -1 | tee -a "$out"
	done
	stop_cluster
}

for round in $(seq "$ROUNDS"); do
	if [ $((round % 2)) -eq 1 ]; then run a "$binary_a"; run b "$binary_b"; else run b "$binary_b"; run a "$binary_a"; fi
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(label, size, key):
    return statistics.median([r[key] for r in rows if r["label"] == label and r["value_size"] == size])
print("\nmedians over rounds (3 nodes, loopback, fsync on, each size in turn on one cluster):")
print("| value bytes | A ops/s | B ops/s | B/A | A p99 ms | B p99 ms | A / B errors (all rounds) | server CPU us/op A / B |")
print("|---|---|---|---|---|---|---|---|")
for size in sorted({r["value_size"] for r in rows}):
    a, b = med("a", size, "ops_per_s"), med("b", size, "ops_per_s")
    errors = {l: sum(r["errors"] for r in rows if r["label"] == l and r["value_size"] == size) for l in "ab"}
    print(f"| {size} | {a:,.1f} | {b:,.1f} | {b / a:.2f}x | {med('a', size, 'p99_ms'):.0f} | {med('b', size, 'p99_ms'):.0f} "
          f"| {errors['a']} / {errors['b']} "
          f"| {med('a', size, 'server_cpu_us_per_op'):.0f} / {med('b', size, 'server_cpu_us_per_op'):.0f} |")
PY
echo "raw results: $out"
