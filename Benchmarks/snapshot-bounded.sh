#!/usr/bin/env bash
# Is a node's memory and disk bounded under sustained writes, now that snapshots compact the log? And how long does
# a restart take, from a snapshot versus replaying the whole log?
#
#   Benchmarks/snapshot-bounded.sh [OUT_DIR]
#
# For each run in RUNS (default "snap:5000000 nosnap:1000000 snap:1000000"; a run is MODE:WRITES), a fresh 3-node
# `raft-lite serve` cluster (release build, loopback, fsync on, data directories in a temp dir) takes WRITES PUTs of
# VALUE_SIZE-byte values (default 128) over KEYS keys (default 100000) from `raft-lite bench` with CLIENTS clients
# (default 64) spread over the three nodes, in back-to-back rounds of CHUNK_SECONDS (default 20) until WRITES are
# done. MODE snap runs the nodes with `serve`'s defaults (or SNAP_FLAGS); nosnap with `--snapshot-entries 0
# --snapshot-bytes 0` (no snapshot, no compaction: the log as it was before issue 12).
#
# While the load runs, every SAMPLE_SECONDS (default 5) it records per node: applied index, VmRSS, VmHWM, the data
# directory's size (`du -sb`) and separately wal/ and snapshots/, the latest snapshot's index (/metrics
# raft_snapshot_index) and the 1-minute load average. After the load it stops one follower (SIGTERM), starts it
# again and times how long until its /v1/status answers and until its applied index is back to what it was, RESTARTS
# times (default 3).
#
# Output in OUT_DIR (default: a new temp dir): samples.csv, load.jsonl (one line per load round), restarts.csv,
# summary.txt (the curve's figures at start, 25%, 50%, 75% and end of the writes, the growth per write, whether
# it levels off, the restart times) and the nodes' logs. Quick try: RUNS="snap:200000 nosnap:200000".
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
RUNS=${RUNS:-"snap:5000000 nosnap:1000000 snap:1000000"}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-128}
CLIENTS=${CLIENTS:-64}
CHUNK_SECONDS=${CHUNK_SECONDS:-20}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-5}
RESTARTS=${RESTARTS:-3}
SNAP_FLAGS=${SNAP_FLAGS:-}
NOSNAP_FLAGS=${NOSNAP_FLAGS:-"--snapshot-entries 0 --snapshot-bytes 0"}
# Ports of their own, so that this can run next to the other benchmarks (which use 818x/918x).
BASE_HTTP=${BASE_HTTP:-8281}
BASE_PEER=${BASE_PEER:-9281}
work=$(mktemp -d)
pids=("" "" "")
sampler=""
# On exit, end only the processes this script started, by pid.
cleanup() {
	[ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
	for pid in "${pids[@]}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

swift build -c release --package-path "$here" --product raft-lite >/dev/null
raftlite=${RAFTLITE:-$here/.build/release/raft-lite}
http_port() { echo $((BASE_HTTP + $1)); }
endpoints="127.0.0.1:$(http_port 0),127.0.0.1:$(http_port 1),127.0.0.1:$(http_port 2)"
for k in 0 1 2; do
	for port in $((BASE_HTTP + k)) $((BASE_PEER + k)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
	done
done

if [ -z "${SUMMARY_ONLY:-}" ]; then
	echo "mode,writes_target,t_s,node,role,applied_index,rss_kib,hwm_kib,dir_bytes,wal_bytes,snapshots_bytes,snapshot_index,load1" >"$out/samples.csv"
	echo "mode,writes_target,attempt,node,applied_before,stop_s,status_s,caught_up_s,wal_bytes,snapshots_bytes,started_line,load1" >"$out/restarts.csv"
	: >"$out/load.jsonl"
fi

status() { curl -sf --max-time 2 "http://127.0.0.1:$(http_port "$1")/v1/status" 2>/dev/null || true; }
field() { # name: a field of the JSON object on standard input (a number, or a string without quotes)
	{ cat; echo; } | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" # (the body ends without a newline)
}
load1() { cut -d' ' -f1 /proc/loadavg; }

start_node() { # k flags...
	local k=$1
	shift
	# shellcheck disable=SC2086
	"$raftlite" serve --config "$work/rl/cluster.json" --id "node$k" --data-dir "$work/rl/node$k" --log-level info \
		"$@" >>"$work/rl/node$k.log" 2>&1 &
	pids[k]=$!
}

stop_node() { # k
	local pid=${pids[$1]}
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	pids[$1]=""
}

sample_loop() { # mode writes t0
	local mode=$1 writes=$2 t0=$3
	while [ ! -e "$work/stop-sampling" ]; do
		local now t
		now=$EPOCHREALTIME
		t=$(python3 -c "print(round($now - $t0, 1))")
		for k in 0 1 2; do
			local pid=${pids[$k]} s role applied rss hwm dir wal snaps snapidx
			[ -n "$pid" ] || continue
			s=$(status "$k")
			role=$(printf '%s' "$s" | field role)
			applied=$(printf '%s' "$s" | field applied_index)
			rss=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
			hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
			dir=$(du -sb "$work/rl/node$k" 2>/dev/null | cut -f1 || true)
			wal=$(du -sb "$work/rl/node$k/wal" 2>/dev/null | cut -f1 || true)
			snaps=$(du -sb "$work/rl/node$k/snapshots" 2>/dev/null | cut -f1 || true)
			snapidx=$(curl -sf --max-time 2 "http://127.0.0.1:$(http_port "$k")/metrics" 2>/dev/null |
				awk '$1 ~ /^raft_snapshot_index/ {v=$2} END {print v}' || true)
			echo "$mode,$writes,$t,node$k,$role,$applied,$rss,$hwm,$dir,$wal,$snaps,$snapidx,$(load1)" >>"$out/samples.csv"
		done
		sleep "$SAMPLE_SECONDS"
	done
}

wait_leader() {
	for _ in $(seq 300); do
		for k in 0 1 2; do status "$k" | grep -q '"role":"leader"' && return 0; done
		sleep 0.1
	done
	echo "no leader after 30 s" >&2
	return 1
}

run() { # mode writes
	local mode=$1 writes=$2 flags
	if [ "$mode" = snap ]; then flags=$SNAP_FLAGS; else flags=$NOSNAP_FLAGS; fi
	rm -rf "$work/rl" "$work/stop-sampling" && mkdir -p "$work/rl"
	for k in 0 1 2; do
		printf '"node%d": {"ip": "127.0.0.1", "port": %d, "http_port": %d}' "$k" $((BASE_PEER + k)) $((BASE_HTTP + k))
		if [ "$k" -lt 2 ]; then printf ",\n"; fi
	done | { echo "{"; cat; echo "}"; } >"$work/rl/cluster.json"
	# shellcheck disable=SC2086
	for k in 0 1 2; do start_node "$k" $flags; done
	wait_leader
	echo "== $mode: $writes writes ($(uptime))"
	local t0=$EPOCHREALTIME
	sample_loop "$mode" "$writes" "$t0" &
	sampler=$!
	local done_ops=0 rate=0 round=0 zero=0
	while [ "$done_ops" -lt "$writes" ]; do
		local secs=$CHUNK_SECONDS left=$((writes - done_ops))
		if [ "$rate" -gt 0 ] && [ "$left" -lt $((rate * CHUNK_SECONDS)) ]; then
			secs=$(python3 -c "print(max(0.5, round($left / $rate, 2)))")
		fi
		round=$((round + 1))
		# bench seeds its clients the same way every time: a key count that changes with the round gives each
		# round other keys (all below KEYS), so that the rounds together cover the key space.
		"$raftlite" bench --endpoints "$endpoints" --clients "$CLIENTS" --seconds "$secs" --warmup 0 \
			--keys $((KEYS - round % 100)) \
			--value-size "$VALUE_SIZE" --op put --json "$work/round.json" >/dev/null 2>"$work/round.err" || true
		local ops
		ops=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["ops"])
except Exception: print(0)' "$work/round.json")
		python3 - "$work/round.json" "$mode" "$writes" "$round" "$secs" "$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")" "$(load1)" >>"$out/load.jsonl" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    r = {"ops": 0, "failed": str(e)}
r.update(mode=sys.argv[2], writes_target=int(sys.argv[3]), round=int(sys.argv[4]), round_seconds=float(sys.argv[5]),
         t_end_s=float(sys.argv[6]), load1=float(sys.argv[7]))
print(json.dumps(r, sort_keys=True))
PY
		rm -f "$work/round.json"
		done_ops=$((done_ops + ops))
		rate=$(python3 -c "print(int($ops / $secs))")
		if [ "$ops" -eq 0 ]; then
			zero=$((zero + 1))
			echo "round $round: no write succeeded ($(tail -2 "$work/round.err" | tr '\n' ' '))" >&2
			[ "$zero" -ge 3 ] && { echo "giving up: 3 rounds without a write" >&2; break; }
		else
			zero=0
		fi
		echo "  round $round: $ops writes in $secs s, $done_ops of $writes, load $(load1)"
	done
	# One last sample once the cluster is idle and every node has applied everything.
	local target
	target=$(for k in 0 1 2; do status "$k" | field commit_index; done | sort -n | tail -1)
	for _ in $(seq 600); do
		local low
		low=$(for k in 0 1 2; do status "$k" | field applied_index; done | sort -n | head -1)
		[ -n "$low" ] && [ "$low" -ge "$target" ] && break
		sleep 0.1
	done
	sleep "$SAMPLE_SECONDS"
	touch "$work/stop-sampling"
	wait "$sampler" || true
	sampler=""

	# Restarts: a follower, stopped gracefully and started again on its directory.
	local victim=""
	for k in 2 1 0; do status "$k" | grep -q '"role":"follower"' && { victim=$k; break; }; done
	[ -n "$victim" ] || victim=2
	for attempt in $(seq "$RESTARTS"); do
		local before walb snapb t_stop t_start t_status="" t_caught="" s applied
		before=$(status "$victim" | field applied_index)
		walb=$(du -sb "$work/rl/node$victim/wal" 2>/dev/null | cut -f1 || true)
		snapb=$(du -sb "$work/rl/node$victim/snapshots" 2>/dev/null | cut -f1 || true)
		t_stop=$EPOCHREALTIME
		stop_node "$victim"
		t_stop=$(python3 -c "print(round($EPOCHREALTIME - $t_stop, 3))")
		local lines
		lines=$(wc -l <"$work/rl/node$victim.log")
		t_start=$EPOCHREALTIME
		# shellcheck disable=SC2086
		start_node "$victim" $flags
		for _ in $(seq 12000); do
			s=$(status "$victim")
			if [ -n "$s" ]; then
				[ -z "$t_status" ] && t_status=$EPOCHREALTIME
				applied=$(printf '%s' "$s" | field applied_index)
				if [ -n "$applied" ] && [ "$applied" -ge "$before" ]; then t_caught=$EPOCHREALTIME; break; fi
			fi
			sleep 0.01
		done
		local started
		started=$(tail -n +"$((lines + 1))" "$work/rl/node$victim.log" | grep -m1 '\] started' | sed 's/.*raftlite: //; s/,/;/g' || true)
		echo "$mode,$writes,$attempt,node$victim,$before,$t_stop,$(python3 -c "print(round(${t_status:-0} - $t_start, 3))"),$(python3 -c "print(round(${t_caught:-0} - $t_start, 3) if '${t_caught}' else '')"),$walb,$snapb,$started,$(load1)" >>"$out/restarts.csv"
		echo "  restart $attempt of node$victim: $(tail -1 "$out/restarts.csv")"
	done
	for k in 0 1 2; do stop_node "$k"; done
	for k in 0 1 2; do cp "$work/rl/node$k.log" "$out/$mode-$writes-node$k.log"; done
	rm -rf "$work/rl"
}

# SUMMARY_ONLY=1: only the summary, of the results already in OUT_DIR.
[ -n "${SUMMARY_ONLY:-}" ] || for spec in $RUNS; do run "${spec%%:*}" "${spec##*:}"; done

python3 - "$out" <<'PY' | tee "$out/summary.txt"
import csv, json, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
loads = [json.loads(l) for l in open(f"{out}/load.jsonl") if l.strip()]
restarts = list(csv.DictReader(open(f"{out}/restarts.csv")))
MiB = 1 << 20
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
runs = []
for r in rows:
    key = (r["mode"], int(r["writes_target"]))
    if key not in runs: runs.append(key)
print("Snapshots and compaction under sustained load (3 nodes, loopback, fsync on)")
for mode, writes in runs:
    lr = [l for l in loads if l["mode"] == mode and l["writes_target"] == writes]
    ops = sum(l.get("ops", 0) for l in lr)
    secs = sum(l["round_seconds"] for l in lr)
    errors = sum(l.get("errors", 0) for l in lr)
    p99s = [l["p99_ms"] for l in lr if "p99_ms" in l and l.get("ops")]
    print(f"\n== {mode}, {writes:,} writes: {ops:,} PUTs acknowledged in {secs:.0f} s of load "
          f"({ops / max(secs, 1e-9):,.0f}/s), {errors} errors; p99 per round median {statistics.median(p99s) if p99s else float('nan'):.2f} ms, "
          f"worst {max(p99s) if p99s else float('nan'):.2f} ms; load average during the rounds {min(l['load1'] for l in lr):.1f}-{max(l['load1'] for l in lr):.1f}")
    for node in sorted({r["node"] for r in rows if r["mode"] == mode and int(r["writes_target"]) == writes}):
        s = [r for r in rows if r["mode"] == mode and int(r["writes_target"]) == writes and r["node"] == node and num(r["applied_index"]) is not None]
        if not s: continue
        top = max(num(r["applied_index"]) for r in s)
        def at(frac):
            return min(s, key=lambda r: abs(num(r["applied_index"]) - frac * top))
        print(f"  {node} (applied index at the end {int(top):,}; snapshot index at the end {s[-1]['snapshot_index'] or '-'}):")
        print("    metric              start      25%      50%      75%      end   | growth per write, 1st half / 2nd half | median (max) 25-50% -> 75-100%")
        for col, label in (("rss_kib", "RSS MiB"), ("dir_bytes", "disk MiB"), ("wal_bytes", "  wal/ MiB"), ("snapshots_bytes", "  snapshots/ MiB")):
            scale = 1024 / MiB if col.endswith("kib") else 1 / MiB
            vals = [at(f) for f in (0, .25, .5, .75, 1)]
            fig = "  ".join(f"{(num(v[col]) or 0) * scale:7.1f}" for v in vals)
            def slope(lo, hi):
                pts = [(num(r["applied_index"]), num(r[col])) for r in s if lo * top <= num(r["applied_index"]) <= hi * top and num(r[col]) is not None]
                if len(pts) < 3: return float("nan")
                mx = statistics.fmean(p[0] for p in pts); my = statistics.fmean(p[1] for p in pts)
                den = sum((p[0] - mx) ** 2 for p in pts)
                b = sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else float("nan")
                return b * (1024 if col.endswith("kib") else 1)
            def window(lo, hi):
                v = [num(r[col]) * scale for r in s if lo * top <= num(r["applied_index"]) <= hi * top and num(r[col]) is not None]
                return (statistics.median(v), max(v)) if v else (float("nan"), float("nan"))
            (a, amax), (b, bmax) = window(.25, .5), window(.75, 1.0)
            # Judged on the medians: a sample can catch a snapshot or a WAL segment while its predecessor still exists.
            verdict = "levels off" if b <= a * 1.1 + 1 else "GROWS"
            print(f"    {label:17s} {fig} | {slope(0, .5):8.1f} / {slope(.5, 1):8.1f} B/write | {a:6.1f} ({amax:6.1f}) -> {b:6.1f} ({bmax:6.1f}) {verdict}")
            if verdict == "GROWS" and top < 5e6:
                whole = slope(0, 1)
                end = num(vals[-1][col]) * scale
                print(f"    {'':17s} at {whole:.0f} B/write, 5,000,000 writes would take it to about {end + whole * (5e6 - top) / MiB:,.0f} MiB")
    rs = [r for r in restarts if r["mode"] == mode and int(r["writes_target"]) == writes]
    if rs:
        st = [float(r["status_s"]) for r in rs]
        cu = [float(r["caught_up_s"]) for r in rs if r["caught_up_s"]]
        print(f"  restart of {rs[0]['node']} (applied index {rs[0]['applied_before']}, wal/ {int(rs[0]['wal_bytes'] or 0) / MiB:.1f} MiB, "
              f"snapshots/ {int(rs[0]['snapshots_bytes'] or 0) / MiB:.1f} MiB): /v1/status answers after "
              + ", ".join(f"{v:.2f}" for v in st) + " s; applied index back after "
              + (", ".join(f"{v:.2f}" for v in cu) if cu else "never") + f" s (median {statistics.median(cu) if cu else float('nan'):.2f} s)")
        print(f"    log line: {rs[0]['started_line']}")
PY
echo "raw results: $out"
