#!/usr/bin/env bash
# Single-client PUT latency through the leader against the floor measured in the same run: the median fdatasync
# while three `physlimits.py fdatasync` probes sync at once (three nodes share one disk), plus one loopback round
# trip (`physlimits.py rtt`).
#
#   Benchmarks/floor.sh BINARY [OUT_DIR] [BENCH_DIR]
#
# For each of ROUNDS rounds (default 3): the probes (3 s), then a fresh 3-node cluster and `raft-lite bench` with one
# client through the leader (PUT, 128-byte values, SECONDS_PER seconds, default 10, after a 2-s warm-up). Prints each
# round and the medians: p50 against the floor, and their ratio.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [OUT_DIR] [BENCH_DIR]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
work=$(mktemp -d)
out_dir=${2:-$work}
bench=${3:-$here/../shared/bench}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
mkdir -p "$out_dir"
out="$out_dir/floor.jsonl"
: >"$out"
. "$here/Benchmarks/cluster-lib.sh"
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT

for round in $(seq "$ROUNDS"); do
	# The floor: three probes syncing at once on this disk, and a loopback round trip.
	mkdir -p "$work/probe1" "$work/probe2" "$work/probe3"
	probes=()
	for k in 1 2 3; do
		python3 "$bench/physlimits.py" fdatasync --dir "$work/probe$k" --seconds 3 >"$work/probe$k.json" &
		probes+=($!)
	done
	for p in "${probes[@]}"; do wait "$p"; done
	python3 "$bench/physlimits.py" rtt --seconds 2 >"$work/rtt.json"
	# The cluster, fresh each round.
	start_cluster "$binary" "$work/data" 8781 9781
	leader=$(cluster_leader 8781)
	[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
	"$binary" bench --endpoints "127.0.0.1:$((8781 + ${leader#node}))" --clients 1 --no-sessions --op put \
		--value-size 128 --seconds "$SECONDS_PER" --warmup 2 --pids "$(IFS=,; echo "${pids[*]}")" \
		--json "$work/bench.json" >/dev/null 2>&1
	python3 - "$work" "$round" <<'PY' | tee -a "$out"
import json, statistics, sys
work, rnd = sys.argv[1], int(sys.argv[2])
syncs = [json.load(open(f"{work}/probe{k}.json"))["median_ms"] for k in (1, 2, 3)]
rtt = json.load(open(f"{work}/rtt.json"))["median_us"] / 1000
bench = json.load(open(f"{work}/bench.json"))
floor = statistics.median(syncs) + rtt
print(json.dumps({"round": rnd, "sync_medians_ms": syncs, "rtt_ms": rtt, "floor_ms": round(floor, 4),
                  "p50_ms": bench["p50_ms"], "p99_ms": bench["p99_ms"], "ops_per_s": bench["ops_per_s"],
                  "ratio": round(bench["p50_ms"] / floor, 3), "client_cpu_pct": bench.get("client_cpu_pct"),
                  "server_cpu_us_per_op": bench.get("server_cpu_us_per_op")}))
PY
	stop_cluster
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
f = statistics.median(r["floor_ms"] for r in rows)
p = statistics.median(r["p50_ms"] for r in rows)
print(f"\nmedians over {len(rows)} rounds: single-client PUT p50 through the leader {p:.3f} ms; floor {f:.3f} ms "
      f"(fdatasync with three at once + one loopback round trip); ratio {statistics.median(r['ratio'] for r in rows):.2f}")
PY
