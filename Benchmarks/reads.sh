#!/usr/bin/env bash
# Reads (issue 14), side by side in one run: RaftLite's linearizable GET (ReadIndex) through the leader and spread
# over the three nodes (follower reads), its PUT, its lease and serializable GETs, etcd's linearizable GET, and PUT
# throughput with and without concurrent readers.
#
#   Benchmarks/reads.sh RAFT_LITE_RELEASE_BINARY [OUT_DIR]
#
# OUT_DIR (default docs/results/issue14/reads-TIMESTAMP) gets results.jsonl (one kvbench / raft-lite bench JSON
# line per measurement, with the round, the case and the load average before and after), summary.md (medians over
# the rounds and the ratios), the servers' logs and the load generators' progress lines.
# Environment: ROUNDS (3), SECONDS_PER (10, after a 2-s warm-up), BENCH (../shared/bench next to this checkout: its
# kvbench.py, start_etcd.sh, stop_etcd.sh), BASE_PORT (8281: HTTP BASE_PORT..+2, Raft BASE_PORT+1000..+1002), ETCD_PORTS
# ("2479:2480 22479:22480 32479:32480"), READER_PACE_MS (16: the paced readers, 64 clients at most one GET each per
# 16 ms, at most 4,000 GETs/s), WAIT_IDLE (0: kvbench's --wait-idle before each measurement), PARTS (default
# "etcd reads writers lease": which parts to run, e.g. PARTS=writers ROUNDS=5 for the writers alone and with
# readers only; "spin" is a control not in the default: the writers alone and beside a process spinning on one
# core), SKIP_ETCD=1, SKIP_LEASE=1.
#
# Every round runs, in turn (the order of the two systems alternating between rounds): etcd 3.4 (3 members, its
# defaults) GET at 1, 16, 64 clients over its three members and PUT at 64; then a fresh 3-node `raft-lite serve`
# cluster: GET at 1, 16, 64 clients through the leader and over all three nodes, PUT at 64 over all three,
# serializable GET at 64, GET and serializable GET at 64 with the load generator in two processes, GET at 64 with
# RaftLite's own load generator (`raft-lite bench`), and 16 writers alone / with 64 linearizable readers / with 64
# serializable readers, the readers in a closed loop and paced (the order of those five rotating between rounds); then a fresh cluster started with
# --lease-reads: lease GET at 64 through the leader and over all three. All on loopback, fsync on, 128-byte values,
# 1,000 keys. The script ends only the processes it started, by the pids it recorded.
set -euo pipefail
binary=${1:?usage: reads.sh RAFT_LITE_RELEASE_BINARY [OUT_DIR]}
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH:-$here/../shared/bench}
out=${2:-$here/docs/results/issue14/reads-$(date +%Y%m%d-%H%M%S)}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
READER_PACE_MS=${READER_PACE_MS:-16}
WAIT_IDLE=${WAIT_IDLE:-0}
PARTS=${PARTS:-"etcd reads writers lease"}
BASE_PORT=${BASE_PORT:-8281}
ETCD_PORTS=${ETCD_PORTS:-"2479:2480 22479:22480 32479:32480"}
kvq="$here/Benchmarks/kvbench_query.py"
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }
[ -f "$bench/kvbench.py" ] || { echo "no kvbench.py in $bench (set BENCH)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
results="$out/results.jsonl"
: >"$results"
http_ports=($BASE_PORT $((BASE_PORT + 1)) $((BASE_PORT + 2)))
all="127.0.0.1:${http_ports[0]},127.0.0.1:${http_ports[1]},127.0.0.1:${http_ports[2]}"

cleanup() {
	for pid in $(cat "$work/rl/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
	for pid in $(cat "$work/bg" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
	PORTS="$ETCD_PORTS" bash "$bench/stop_etcd.sh" "$work/etcd" >/dev/null 2>&1 || true
}
trap cleanup EXIT

has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# record ROUND SYSTEM CASE LOAD_BEFORE < json-line: add the fields and append to results.jsonl (and echo a summary).
record() {
	python3 -c '
import json, sys
r, system, case, before, after = sys.argv[1:6]
line = sys.stdin.read().strip().splitlines()
line = [l for l in line if l.startswith("{")]
if not line:
    print("  (no result)", file=sys.stderr); sys.exit(0)
d = json.loads(line[-1])
d.update(round=int(r), system=system, case=case, load_before=before, load_after=after)
open(sys.argv[6], "a").write(json.dumps(d) + "\n")
print("  %-12s %-22s c=%-3s %9.0f ops/s  p50 %7.3f  p99 %7.2f ms  errors %s  load %s" % (system, case,
    d.get("clients"), d.get("ops_per_s") or 0, d.get("p50_ms") or 0, d.get("p99_ms") or 0, d.get("errors"), after))
' "$1" "$2" "$3" "$4" "$(loadavg)" "$results"
}

# kv ROUND SYSTEM CASE KVBENCH_ARGS...: one kvbench measurement.
kv() {
	local r=$1 system=$2 case=$3 before
	shift 3
	before=$(loadavg)
	python3 "$kvq" --kvbench "$bench/kvbench.py" --wait-idle "$WAIT_IDLE" --seconds "$SECONDS_PER" --value-size 128 --label "$system/$case" "$@" \
		2>>"$out/kvbench.log" | record "$r" "$system" "$case" "$before"
}

start_etcd() {
	PORTS="$ETCD_PORTS" bash "$bench/start_etcd.sh" "$work/etcd" >/dev/null
	etcd_eps=$(cat "$work/etcd/endpoints")
	etcd_pids=$(paste -sd, "$work/etcd/pids")
}
stop_etcd() { PORTS="$ETCD_PORTS" bash "$bench/stop_etcd.sh" "$work/etcd" >/dev/null; }

start_raftlite() { # NAME EXTRA_FLAGS...
	local name=$1
	shift
	rm -rf "$work/rl" && mkdir -p "$work/rl"
	python3 - "$work/rl/cluster.json" "$BASE_PORT" <<'PY'
import json, sys
base = int(sys.argv[2])
json.dump({"node%d" % k: {"ip": "127.0.0.1", "port": base + 1000 + k, "http_port": base + k} for k in range(3)},
          open(sys.argv[1], "w"))
PY
	: >"$work/rl/pids"
	for k in 0 1 2; do
		"$binary" serve --config "$work/rl/cluster.json" --id "node$k" --data-dir "$work/rl/node$k" --log-level warning "$@" \
			>>"$out/$name-node$k.log" 2>&1 &
		echo $! >>"$work/rl/pids"
	done
	rl_pids=$(paste -sd, "$work/rl/pids")
	leader=""
	for _ in $(seq 200); do
		leader=$(curl -sf "http://127.0.0.1:$BASE_PORT/v1/status" 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader") or "")' 2>/dev/null || true)
		[ -n "$leader" ] && break
		sleep 0.1
	done
	[ -n "$leader" ] || { echo "no leader after 20 s; see $out/$name-node*.log" >&2; exit 1; }
	# Every node must know the leader (followers forward and ask it for read indexes).
	for port in "${http_ports[@]}"; do
		for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/status" | grep -q '"leader":"node' && break; sleep 0.1; done
	done
	leader_ep="127.0.0.1:$((BASE_PORT + ${leader#node}))"
	echo "  $name: leader $leader ($leader_ep), pids $rl_pids"
}
stop_raftlite() {
	for pid in $(cat "$work/rl/pids"); do kill "$pid" 2>/dev/null || true; done
	for pid in $(cat "$work/rl/pids"); do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
	: >"$work/rl/pids"
}

run_etcd() { # ROUND
	local r=$1
	[ "${SKIP_ETCD:-0}" = 1 ] && return 0
	has etcd || return 0
	start_etcd
	for c in 1 16 64; do
		kv "$r" etcd get-all --target etcd --endpoints "$etcd_eps" --clients "$c" --op get --pids "$etcd_pids"
	done
	kv "$r" etcd put-all --target etcd --endpoints "$etcd_eps" --clients 64 --op put --pids "$etcd_pids"
	stop_etcd
}

# writers ROUND CASE READER_QUERY [PACE_MS]: 16 PUT clients over all nodes; with READER_QUERY set (not "none"), 64 GET
# clients over all nodes at the same time (started first, measured over a window that covers the writers' whole
# window), in a closed loop or, with PACE_MS, each client at most one GET every PACE_MS ms.
writers() {
	local r=$1 case=$2 query=$3 pace=${4:-0} rpid before
	if [ "$query" = spin ]; then
		# A control: no reads at all, one process spinning on a core (what any CPU-hungry neighbour does).
		before=$(loadavg)
		timeout $((SECONDS_PER + 3)) python3 -c 'while True: pass' &
		rpid=$!
		echo "$rpid" >"$work/bg"
	elif [ "$query" != none ]; then
		before=$(loadavg)
		python3 "$kvq" --kvbench "$bench/kvbench.py" --http-query "$query" --pace-ms "$pace" --target http \
			--endpoints "$all" --clients 64 --op get --preload no --warmup 0.5 --seconds $((SECONDS_PER + 3)) \
			--value-size 128 --pids "$rl_pids" --label "raftlite/readers-$case" 2>>"$out/kvbench.log" >"$work/readers.json" &
		rpid=$!
		echo "$rpid" >"$work/bg"
		sleep 0.8
	fi
	kv "$r" raftlite "$case" --target http --endpoints "$all" --clients 16 --op put --pids "$rl_pids"
	if [ "$query" = spin ]; then
		kill "$rpid" 2>/dev/null || true
		wait "$rpid" 2>/dev/null || true
		: >"$work/bg"
	elif [ "$query" != none ]; then
		wait "$rpid" || true
		: >"$work/bg"
		record "$r" raftlite "readers-$case" "$before" <"$work/readers.json"
	fi
}

run_raftlite() { # ROUND
	local r=$1 c i before
	if has reads || has writers || has spin; then
		start_raftlite rl-round$r
		if has reads; then
			for c in 1 16 64; do
				kv "$r" raftlite get-leader --target http --endpoints "$leader_ep" --clients "$c" --op get --pids "$rl_pids"
				kv "$r" raftlite get-all --target http --endpoints "$all" --clients "$c" --op get --pids "$rl_pids"
			done
			kv "$r" raftlite put-all --target http --endpoints "$all" --clients 64 --op put --pids "$rl_pids"
			kv "$r" raftlite serializable-all --http-query consistency=serializable --target http --endpoints "$all" \
				--clients 64 --op get --pids "$rl_pids"
			kv "$r" raftlite get-all-2procs --target http --endpoints "$all" --clients 64 --procs 2 --op get --pids "$rl_pids"
			kv "$r" raftlite serializable-all-2procs --http-query consistency=serializable --target http --endpoints "$all" \
				--clients 64 --procs 2 --op get --pids "$rl_pids"
			for eps in leader all; do
				before=$(loadavg)
				if [ $eps = leader ]; then e=$leader_ep; else e=$all; fi
				"$binary" bench --endpoints "$e" --clients 64 --seconds "$SECONDS_PER" --warmup 2 --op get --json - \
					2>>"$out/raft-lite-bench.log" | record "$r" raftlite "swiftgen-get-$eps" "$before"
			done
		else
			# The readers below do not preload: write every key once (a short GET run that preloads, not recorded).
			python3 "$kvq" --kvbench "$bench/kvbench.py" --target http --endpoints "$all" --clients 1 --op get \
				--seconds 0.5 --warmup 0 >/dev/null 2>>"$out/kvbench.log"
		fi
		if has spin; then
			# Writers alone and beside a process spinning on one core, in turn (the order alternating).
			if [ $((r % 2)) -eq 1 ]; then
				writers "$r" w-alone none; writers "$r" w-with-spinner spin
			else
				writers "$r" w-with-spinner spin; writers "$r" w-alone none
			fi
		fi
		if has writers; then
			# Writers alone and with readers; the order rotates with the round.
			local cases=("w-alone:none:0" "w-with-linearizable:consistency=linearizable:0"
				"w-with-serializable:consistency=serializable:0"
				"w-with-linearizable-paced:consistency=linearizable:$READER_PACE_MS"
				"w-with-serializable-paced:consistency=serializable:$READER_PACE_MS")
			for i in 0 1 2 3 4; do
				local item=${cases[$(((i + r) % 5))]} name query
				name=${item%%:*}
				query=${item#*:}
				writers "$r" "$name" "${query%:*}" "${query##*:}"
			done
		fi
		stop_raftlite
	fi
	if [ "${SKIP_LEASE:-0}" != 1 ] && has lease; then
		start_raftlite rl-lease-round$r --lease-reads
		kv "$r" raftlite-lease lease-leader --http-query consistency=lease --target http --endpoints "$leader_ep" \
			--clients 64 --op get --pids "$rl_pids"
		kv "$r" raftlite-lease lease-all --http-query consistency=lease --target http --endpoints "$all" \
			--clients 64 --op get --pids "$rl_pids"
		kv "$r" raftlite-lease get-leader --target http --endpoints "$leader_ep" --clients 64 --op get --pids "$rl_pids"
		stop_raftlite
	fi
}

{
	echo "reads.sh: $(date -u +%FT%TZ) binary $binary"
	echo "  git: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')  rounds $ROUNDS  seconds $SECONDS_PER"
	echo "  machine: $(nproc) cores, load $(loadavg); etcd: $(etcd --version 2>/dev/null | head -1)"
} | tee "$out/run.txt"
for r in $(seq "$ROUNDS"); do
	echo "round $r (load $(loadavg))" | tee -a "$out/run.txt"
	if [ $((r % 2)) -eq 1 ]; then
		run_etcd "$r" | tee -a "$out/run.txt"
		run_raftlite "$r" | tee -a "$out/run.txt"
	else
		run_raftlite "$r" | tee -a "$out/run.txt"
		run_etcd "$r" | tee -a "$out/run.txt"
	fi
done
echo "done: $(date -u +%FT%TZ), load $(loadavg)" | tee -a "$out/run.txt"
python3 "$here/Benchmarks/reads_summary.py" "$results" | tee "$out/summary.md"
