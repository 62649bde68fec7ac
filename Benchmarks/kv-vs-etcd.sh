#!/usr/bin/env bash
# The key-value store side by side with etcd, in one run on one machine, driven by the same load generator.
#
#   Benchmarks/kv-vs-etcd.sh [BENCH_DIR]
#
# BENCH_DIR holds kvbench.py, start_etcd.sh and stop_etcd.sh (default: ../shared/bench next to this checkout); etcd
# comes from Debian's etcd-server package. Both systems run 3 nodes on loopback with fsync on, 128-byte values.
# For each of ROUNDS rounds (default 3), the two systems take turns (their order alternating between rounds); each
# runs PUT and GET with 1, 16 and 64 clients, SECONDS each after a 2-second warm-up, with server CPU measured. It
# prints every result, then the median over the rounds and RaftLite's ratios to etcd. RAFT_LITE=BINARY runs that
# binary instead of building this checkout; OUT=FILE keeps the JSON lines there; VALUE_SIZES (default 128) runs each
# load with each of those value sizes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-$here/../shared/bench}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-"1 16 64"}
OPS=${OPS:-"put get"}
VALUE_SIZES=${VALUE_SIZES:-128}
work=$(mktemp -d)
out=${OUT:-$work/results.jsonl}
# On exit, end only the servers this script started, by the pids it recorded.
trap 'for pid in $(cat "$work/rl/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done; bash "$bench/stop_etcd.sh" "$work/etcd" >/dev/null 2>&1 || true' EXIT

# RAFT_LITE names a release binary to use; without it, this checkout's is built.
raftlite=${RAFT_LITE:-}
if [ -z "$raftlite" ]; then
	swift build -c release --package-path "$here" --product raft-lite >/dev/null
	raftlite="$here/.build/release/raft-lite"
fi
ports=(8181 8182 8183)

start_raftlite() {
	rm -rf "$work/rl" && mkdir -p "$work/rl"
	printf '{"node0": {"ip": "127.0.0.1", "port": 9181, "http_port": 8181},\n "node1": {"ip": "127.0.0.1", "port": 9182, "http_port": 8182},\n "node2": {"ip": "127.0.0.1", "port": 9183, "http_port": 8183}}\n' >"$work/rl/cluster.json"
	: >"$work/rl/pids"
	for k in 0 1 2; do
		"$raftlite" serve --config "$work/rl/cluster.json" --id "node$k" --data-dir "$work/rl/node$k" --log-level warning \
			>"$work/rl/node$k.log" 2>&1 &
		echo $! >>"$work/rl/pids"
	done
	for port in "${ports[@]}"; do
		for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/status" | grep -q '"leader":"node' && break; sleep 0.1; done
	done
}

stop_raftlite() {
	for pid in $(cat "$work/rl/pids"); do kill "$pid" 2>/dev/null || true; done
	for pid in $(cat "$work/rl/pids"); do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}

run_system() { # name
	local name=$1 target endpoints pids
	if [ "$name" = etcd ]; then
		bash "$bench/start_etcd.sh" "$work/etcd" >/dev/null
		target=etcd
		endpoints=$(cat "$work/etcd/endpoints")
		pids=$(paste -sd, "$work/etcd/pids")
	else
		start_raftlite
		target=http
		endpoints=127.0.0.1:8181,127.0.0.1:8182,127.0.0.1:8183
		pids=$(paste -sd, "$work/rl/pids")
	fi
	for size in $VALUE_SIZES; do
		for op in $OPS; do
			for clients in $CLIENTS; do
				# Values over 4 KiB are made quickly (kvbench makes them a byte at a time): see kvbench_query.py.
				generator=("$bench/kvbench.py")
				[ "$size" -gt 4096 ] && generator=("$here/Benchmarks/kvbench_query.py" --kvbench "$bench/kvbench.py" --fast-values)
				python3 "${generator[@]}" --target "$target" --endpoints "$endpoints" --clients "$clients" \
					--seconds "$SECONDS_PER" --value-size "$size" --op "$op" --pids "$pids" --label "$name" 2>/dev/null |
					tee -a "$out"
			done
		done
	done
	if [ "$name" = etcd ]; then bash "$bench/stop_etcd.sh" "$work/etcd" >/dev/null; else stop_raftlite; fi
}

for round in $(seq "$ROUNDS"); do
	if [ $((round % 2)) -eq 1 ]; then order="etcd raftlite"; else order="raftlite etcd"; fi
	for system in $order; do run_system "$system"; done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(label, op, clients, key, size):
    vals = [r[key] for r in rows
            if r["label"] == label and r["op"] == op and r["clients"] == clients and r["value_size"] == size]
    return statistics.median(vals) if vals else float("nan")
print("\nmedians over rounds (3 nodes, loopback, fsync on):")
print("| value bytes | op | clients | RaftLite ops/s | etcd ops/s | ratio | RaftLite MB/s | etcd MB/s | RaftLite p50 / p99 ms | etcd p50 / p99 ms | server CPU us/op RaftLite / etcd |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for v in sorted({r["value_size"] for r in rows}):
    for op in sorted({r["op"] for r in rows}, reverse=True):
        for c in sorted({r["clients"] for r in rows}):
            a, b = med("raftlite", op, c, "ops_per_s", v), med("etcd", op, c, "ops_per_s", v)
            print(f"| {v} | {op} | {c} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {a * v / 1e6:.1f} | {b * v / 1e6:.1f} "
                  f"| {med('raftlite', op, c, 'p50_ms', v):.3f} / {med('raftlite', op, c, 'p99_ms', v):.2f} "
                  f"| {med('etcd', op, c, 'p50_ms', v):.3f} / {med('etcd', op, c, 'p99_ms', v):.2f} "
                  f"| {med('raftlite', op, c, 'server_cpu_us_per_op', v):.0f} / {med('etcd', op, c, 'server_cpu_us_per_op', v):.0f} |")
PY
echo "raw results: $out"
