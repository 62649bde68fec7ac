#!/usr/bin/env bash
# Do the load generators agree? One 3-node cluster, driven in turn by the shared Python generator (kvbench.py, one
# process and two) and by `raft-lite bench` (one event-loop thread and two), with the same workload: closed-loop
# keep-alive clients spread over the three nodes, PUTs of 128-byte values to 1,000 keys, no client sessions.
# Every figure comes with the generator's own CPU, the servers' CPU and server CPU per operation: where two
# generators disagree, the one near a core of its own is the limit, not the server.
#
#   Benchmarks/generators.sh BINARY [OUT_DIR] [BENCH_DIR]
#
# BINARY is a `raft-lite` release binary; BENCH_DIR holds kvbench.py (default: ../shared/bench next to this
# checkout; `pip install uvloop` makes it cheaper, and it uses uvloop when it is there). For each of ROUNDS rounds
# (default 3) and each of CLIENTS (default "1 16 64 256") the four generators take turns, their order rotating
# between rounds, SECONDS_PER seconds each (default 10) after a 2-s warm-up. Results go to OUT_DIR (default: a new
# temporary directory) as JSON lines; the medians are printed as a table.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [OUT_DIR] [BENCH_DIR]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
work=$(mktemp -d)
out_dir=${2:-$work}
bench=${3:-$here/../shared/bench}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-"1 16 64 256"}
OP=${OP:-put}
mkdir -p "$out_dir"
out="$out_dir/generators.jsonl"
: >"$out"
. "$here/Benchmarks/cluster-lib.sh"
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT
start_cluster "$binary" "$work/cluster" 8381 9381
endpoints=127.0.0.1:8381,127.0.0.1:8382,127.0.0.1:8383
[ -n "$(cluster_leader 8381)" ] || { echo "no leader" >&2; exit 1; }
server_pids=$(IFS=,; echo "${pids[*]}")
uvloop=$(python3 -c 'import uvloop' 2>/dev/null && echo yes || echo no)

one() { # generator clients
	local generator=$1 clients=$2
	case $generator in
	kvbench | kvbench-2procs)
		local procs=1
		[ "$generator" = kvbench-2procs ] && procs=2
		python3 "$bench/kvbench.py" --target http --endpoints "$endpoints" --clients "$clients" --procs "$procs" \
			--seconds "$SECONDS_PER" --warmup 2 --value-size 128 --op "$OP" --pids "$server_pids" 2>/dev/null
		;;
	bench | bench-2threads)
		local threads=1
		[ "$generator" = bench-2threads ] && threads=2
		"$binary" bench --endpoints "$endpoints" --clients "$clients" --threads "$threads" --no-sessions \
			--seconds "$SECONDS_PER" --warmup 2 --value-size 128 --op "$OP" --pids "$server_pids" --json - 2>/dev/null |
			grep '^{'
		;;
	esac | python3 -c '
import json, sys
row = json.loads(sys.stdin.readline())
row.update(generator=sys.argv[1], clients=int(sys.argv[2]), uvloop=sys.argv[3])
print(json.dumps(row))' "$generator" "$clients" "$uvloop" | tee -a "$out"
}

generators=(kvbench kvbench-2procs bench bench-2threads)
for round in $(seq "$ROUNDS"); do
	for clients in $CLIENTS; do
		for k in 0 1 2 3; do one "${generators[$(((k + round) % 4))]}" "$clients"; done
	done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(g, c, key):
    vals = [r[key] for r in rows if r["generator"] == g and r["clients"] == c and r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
print("\nmedians over rounds (3 nodes, loopback, fsync on, PUT of 128-byte values, uvloop: %s):" % rows[0]["uvloop"])
print("| clients | generator | ops/s | p50 / p99 ms | generator CPU % of a core | server CPU µs/op |")
print("|---|---|---|---|---|---|")
for c in sorted({r["clients"] for r in rows}):
    for g in ["kvbench", "kvbench-2procs", "bench", "bench-2threads"]:
        print(f"| {c} | {g} | {med(g, c, 'ops_per_s'):,.0f} | {med(g, c, 'p50_ms'):.3f} / {med(g, c, 'p99_ms'):.2f} "
              f"| {med(g, c, 'client_cpu_pct'):.0f} | {med(g, c, 'server_cpu_us_per_op'):.0f} |")
PY
echo "raw results: $out"
