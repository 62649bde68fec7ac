#!/usr/bin/env bash
# Where a PUT's time goes: a 3-node cluster under kvbench.py load (1 client through the leader, then CLIENTS spread
# over all three nodes), each node sampled by `perf record` for the run, plus system calls and context switches per
# operation from `perf stat`.
#
#   Benchmarks/profile.sh BINARY OUT_DIR [BENCH_DIR]
#
# BINARY is a `raft-lite` release binary; needs perf (apt-get install linux-perf) and the right to use it (root, or
# kernel.perf_event_paranoid <= 1). For each load it writes OUT_DIR/LOAD.json (the kvbench summary),
# OUT_DIR/LOAD-NODE.perf.txt (the flat profile of each node, symbols demangled) and OUT_DIR/LOAD-stat.txt.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BINARY OUT_DIR [BENCH_DIR]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
out=$2
bench=${3:-$here/../shared/bench}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-64}
OP=${OP:-put}
mkdir -p "$out"
work=$(mktemp -d)
. "$here/Benchmarks/cluster-lib.sh"
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT
demangle=$(command -v swift-demangle || echo cat)
start_cluster "$binary" "$work/cluster" 8481 9481
all=127.0.0.1:8481,127.0.0.1:8482,127.0.0.1:8483
leader=$(cluster_leader 8481)
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
leader_endpoint=127.0.0.1:$((8481 + ${leader#node}))
server_pids=$(IFS=,; echo "${pids[*]}")

profile() { # label clients endpoints
	local label=$1 clients=$2 endpoints=$3
	python3 "$bench/kvbench.py" --target http --endpoints "$endpoints" --clients "$clients" --seconds "$SECONDS_PER" \
		--warmup 2 --value-size 128 --op "$OP" --pids "$server_pids" >"$out/$label.json" 2>/dev/null &
	local load=$!
	sleep 2.5
	local recorders=()
	for k in 0 1 2; do
		perf record -q -F 999 -g -p "${pids[$k]}" -o "$work/$label-node$k.data" -- sleep $((SECONDS_PER - 2)) 2>/dev/null &
		recorders+=($!)
	done
	perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$server_pids" -o "$out/$label-stat.txt" \
		-- sleep $((SECONDS_PER - 2)) 2>/dev/null || true
	for r in "${recorders[@]}"; do wait "$r" || true; done
	wait "$load" || true
	for k in 0 1 2; do
		perf report -q -i "$work/$label-node$k.data" --no-children --sort dso,symbol --percent-limit 0.5 --stdio -g none \
			2>/dev/null | "$demangle" --simplified | sed -E 's/ {3,}/  /g; s/[[:space:]]*$//' >"$out/$label-node$k.perf.txt" || true
		perf report -q -i "$work/$label-node$k.data" --children --sort symbol --percent-limit 2 --stdio -g none \
			2>/dev/null | "$demangle" --simplified | sed -E 's/ {3,}/  /g; s/[[:space:]]*$//' | head -200 \
			>"$out/$label-node$k.inclusive.txt" || true
	done
	echo "$label: $(cat "$out/$label.json")"
}

echo "leader: $leader"
profile one-client-leader 1 "$leader_endpoint"
profile "clients-$CLIENTS" "$CLIENTS" "$all"
echo "leader was $leader; results in $out"
