#!/usr/bin/env bash
# How fast does a snapshot of a large state machine reach a follower that needs everything, what does it cost in
# memory on both ends, and what does it do to the leader's write latency?
#
#   Benchmarks/snapshot-transfer.sh [OUT_DIR] [BENCH_DIR]
#
# A 3-node `raft-lite serve` cluster (release build, loopback, fsync on, data directories in a temp dir) runs with
# node2 stopped and its data directory empty. Node0 and node1 take KEYS (default 1000000) PUTs of VALUE_SIZE-byte
# values (default 1024), each key once (a 1 GiB state machine), from LOAD_CLIENTS (default 32) keep-alive
# connections to the leader. The nodes run with TRANSFER_FLAGS (default `--snapshot-entries KEYS --snapshot-bytes 0
# --compaction-margin 1000`): one snapshot once the load is in, and the log compacted to 1000 entries before it, so
# node2 cannot be sent entries. Once the leader's snapshot is written:
#
#   - the disk's sequential write speed: `dd bs=1M count=DD_MIB conv=fdatasync` (default 2048 MiB) in the temp dir,
#     before and after the transfer;
#   - a light PUT load on the leader (LIGHT_CLIENTS, default 8, 128-byte values over 1000 keys) in back-to-back
#     rounds of ROUND_SECONDS (default 2) with `raft-lite bench`: BASELINE_SECONDS (default 30) before node2 starts
#     (the same two nodes, no transfer), then from node2's start until it has installed the snapshot and caught up;
#   - node2 started: every SAMPLE_SECONDS (default 0.5) VmRSS and VmHWM of the leader and node2, node2's snapshots/
#     size (the incoming file) and applied index; the log lines of both ends, stamped on arrival, give the
#     transfer's start ("sending a snapshot"), the file complete ("snapshot received"), the state restored
#     ("snapshot installed", with its own seconds) and the leader's "snapshot delivered" (logged as "snapshot sent"
#     before b315514).
#
# Output in OUT_DIR (default: a new temp dir): summary.json, summary.txt, samples.csv, light-load.jsonl, load.json,
# dd.txt and the nodes' logs (the data directories are removed at the end unless KEEP_DATA=1).
# Quick try: KEYS=100000 DD_MIB=256 BASELINE_SECONDS=6.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
bench=${2:-$here/../shared/bench}
mkdir -p "$out"
KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-1024}
LOAD_CLIENTS=${LOAD_CLIENTS:-32}
LIGHT_CLIENTS=${LIGHT_CLIENTS:-8}
ROUND_SECONDS=${ROUND_SECONDS:-2}
BASELINE_SECONDS=${BASELINE_SECONDS:-30}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-0.5}
DD_MIB=${DD_MIB:-2048}
TRANSFER_TIMEOUT=${TRANSFER_TIMEOUT:-1800}
TRANSFER_FLAGS=${TRANSFER_FLAGS:-"--snapshot-entries $KEYS --snapshot-bytes 0 --compaction-margin 1000"}
BASE_HTTP=${BASE_HTTP:-8291}
BASE_PEER=${BASE_PEER:-9291}
work=$(mktemp -d)
pids=("" "" "")
bg=()
# On exit, end only the processes this script started, by pid.
cleanup() {
	for pid in "${bg[@]:-}" "${pids[@]}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
	rm -f "$work/dd.tmp"
	# The data directories hold several GiB: kept only with KEEP_DATA=1.
	[ -n "${KEEP_DATA:-}" ] || rm -rf "$work/rl"
}
trap cleanup EXIT

swift build -c release --package-path "$here" --product raft-lite >/dev/null
raftlite=${RAFTLITE:-$here/.build/release/raft-lite}
http_port() { echo $((BASE_HTTP + $1)); }
for k in 0 1 2; do
	for port in $((BASE_HTTP + k)) $((BASE_PEER + k)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
	done
done
status() { curl -sf --max-time 2 "http://127.0.0.1:$(http_port "$1")/v1/status" 2>/dev/null || true; }
field() { { cat; echo; } | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; } # (the body ends without a newline)
metric() { # k name
	curl -sf --max-time 5 "http://127.0.0.1:$(http_port "$1")/metrics" 2>/dev/null |
		awk -v m="$2" 'index($1, m) == 1 {v=$2} END {print v}' || true
}
load1() { cut -d' ' -f1 /proc/loadavg; }
now() { echo "$EPOCHREALTIME"; }
proc() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true; } # pid VmRSS|VmHWM (KiB)

start_node() { # k: its output stamped with the time each line arrives
	local k=$1
	# shellcheck disable=SC2086
	"$raftlite" serve --config "$work/rl/cluster.json" --id "node$k" --data-dir "$work/rl/node$k" --log-level info \
		$TRANSFER_FLAGS > >(while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >>"$work/rl/node$k.log") 2>&1 &
	pids[k]=$!
}

stop_node() {
	local pid=${pids[$1]}
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	pids[$1]=""
}

disk_speed() { # label
	sync
	local line
	line=$(dd if=/dev/zero of="$work/dd.tmp" bs=1M count="$DD_MIB" conv=fdatasync 2>&1 | tail -1)
	rm -f "$work/dd.tmp"
	echo "$1: $line (load $(load1))" | tee -a "$out/dd.txt"
}

leader_of() { # among the nodes given
	for _ in $(seq 300); do
		for k in "$@"; do status "$k" | grep -q '"role":"leader"' && { echo "$k"; return 0; }; done
		sleep 0.1
	done
	return 1
}

# Light PUT load on the leader in rounds until the file $1 exists (or for $2 seconds when $1 is "-").
light_load() { # stop_file seconds phase
	local stop=$1 until phase=$3
	until=$(python3 -c "print($EPOCHREALTIME + ${2:-1e9})")
	while :; do
		if [ "$stop" != - ] && [ -e "$stop" ]; then break; fi
		python3 -c "import sys; sys.exit(0 if $EPOCHREALTIME < $until else 1)" || break
		local t=$EPOCHREALTIME
		"$raftlite" bench --endpoints "127.0.0.1:$(http_port "$leader")" --clients "$LIGHT_CLIENTS" \
			--seconds "$ROUND_SECONDS" --warmup 0 --keys 1000 --value-size 128 --op put --json "$work/light-$phase.json" \
			>/dev/null 2>&1 || true
		python3 - "$work/light-$phase.json" "$phase" "$t" "$EPOCHREALTIME" "$(load1)" >>"$out/light-load.jsonl" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    r = {"ops": 0, "failed": str(e)}
r.update(phase=sys.argv[2], t_start=float(sys.argv[3]), t_end=float(sys.argv[4]), load1=float(sys.argv[5]))
print(json.dumps(r, sort_keys=True))
PY
		rm -f "$work/light-$phase.json"
	done
}

rm -rf "$work/rl" && mkdir -p "$work/rl"
for k in 0 1 2; do
	printf '"node%d": {"ip": "127.0.0.1", "port": %d, "http_port": %d}' "$k" $((BASE_PEER + k)) $((BASE_HTTP + k))
	if [ "$k" -lt 2 ]; then printf ",\n"; fi
done | { echo "{"; cat; echo "}"; } >"$work/rl/cluster.json"
: >"$out/light-load.jsonl"
: >"$out/dd.txt"
echo "node,t_s,pid,vmrss_kib,vmhwm_kib,snapshots_bytes,applied_index,load1" >"$out/samples.csv"

echo "== loading $KEYS keys of $VALUE_SIZE bytes into node0 and node1 (node2 stopped, empty); $(uptime)"
start_node 0
start_node 1
leader=$(leader_of 0 1) || { echo "no leader" >&2; exit 1; }
follower=$((1 - leader))
t_load=$(now)
python3 - "$bench" "127.0.0.1" "$(http_port "$leader")" "$KEYS" "$VALUE_SIZE" "$LOAD_CLIENTS" >"$out/load.json" <<'PY'
# Each key once, k000000000000000 .. (kvbench's key format), from N keep-alive connections to the leader.
import asyncio, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from kvbench import RawConn, build_http, make_key
host, port, keys, size, clients = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
values = [os.urandom(size // 2).hex().encode()[:size].ljust(size, b"x") for _ in range(16)]
stats = {"ok": 0, "retries": 0, "failed": 0, "statuses": {}}
async def client(c):
    loop = asyncio.get_running_loop()
    conn = None
    for i in range(c, keys, clients):
        key = make_key(i, 16).decode()
        req = build_http("PUT", "/v1/kv/" + key, "%s:%d" % (host, port), values[i % len(values)], None)
        for attempt in range(20):
            try:
                if conn is None or conn.lost:
                    _, conn = await asyncio.wait_for(loop.create_connection(lambda: RawConn(loop), host, port), 5)
                status, _ = await asyncio.wait_for(conn.request(req), 30)
            except (OSError, ConnectionError, asyncio.TimeoutError):
                status = "conn"
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
                conn = None
            if status == 200:
                stats["ok"] += 1
                break
            stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
            stats["retries"] += 1
            await asyncio.sleep(0.05 * (attempt + 1))
        else:
            stats["failed"] += 1
    if conn is not None and conn.transport is not None:
        conn.transport.close()
async def main():
    t = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    stats["seconds"] = round(time.monotonic() - t, 1)
    stats["puts_per_s"] = round(stats["ok"] / max(stats["seconds"], 1e-9))
asyncio.run(main())
print(json.dumps(stats, sort_keys=True))
PY
echo "  load: $(cat "$out/load.json") ($(uptime))"

# The leader's snapshot of everything: wait until it is written and the log compacted behind it.
t_wait=$(now)
for _ in $(seq 6000); do
	idx=$(metric "$leader" raft_snapshot_index)
	[ -n "$idx" ] && python3 -c "import sys; sys.exit(0 if float('$idx') >= $KEYS else 1)" && break
	sleep 0.2
done
snap_index=$(metric "$leader" raft_snapshot_index)
snap_bytes=$(metric "$leader" raft_snapshot_bytes)
echo "  leader node$leader: snapshot at index $snap_index, $snap_bytes bytes, written $(python3 -c "print(round($(now) - $t_wait, 1))") s after the load; $(grep 'snapshot written' "$work/rl/node$leader.log" | tail -1 | cut -c1-400)"
sleep 2

disk_speed "disk before the transfer"
echo "  baseline: $LIGHT_CLIENTS clients on the leader for $BASELINE_SECONDS s, node2 down ($(uptime))"
light_load - "$BASELINE_SECONDS" baseline
leader_before=$(status "$leader")
hwm_before=$(proc "${pids[$leader]}" VmHWM)
rss_before=$(proc "${pids[$leader]}" VmRSS)

echo "== starting node2 with an empty data directory ($(uptime))"
t_start=$(now)
start_node 2
light_load "$work/transfer-done" "" transfer &
bg+=($!)
(
	while [ ! -e "$work/sampling-done" ]; do
		t=$(python3 -c "print(round($EPOCHREALTIME - $t_start, 2))")
		for k in "$leader" 2; do
			pid=${pids[$k]}
			snaps=$(du -sb "$work/rl/node$k/snapshots" 2>/dev/null | cut -f1 || true)
			applied=$(status "$k" | field applied_index)
			echo "node$k,$t,$pid,$(proc "$pid" VmRSS),$(proc "$pid" VmHWM),$snaps,$applied,$(load1)" >>"$out/samples.csv"
		done
		sleep "$SAMPLE_SECONDS"
	done
) &
bg+=($!)
t_installed=""
for _ in $(seq $((TRANSFER_TIMEOUT * 10))); do
	if grep -q 'snapshot installed' "$work/rl/node2.log" 2>/dev/null; then t_installed=$(now); break; fi
	kill -0 "${pids[2]}" 2>/dev/null || { echo "node2 exited" >&2; break; }
	sleep 0.1
done
[ -n "$t_installed" ] || echo "node2 did not install a snapshot within $TRANSFER_TIMEOUT s" >&2
commit=$(status "$leader" | field commit_index)
t_caught=""
for _ in $(seq 3000); do
	a=$(status 2 | field applied_index)
	if [ -n "$a" ] && [ "$a" -ge "$commit" ]; then t_caught=$(now); break; fi
	sleep 0.1
done
touch "$work/transfer-done"
wait "${bg[0]}" || true
sleep 1
touch "$work/sampling-done"
wait "${bg[1]}" || true
bg=()
hwm_after=$(proc "${pids[$leader]}" VmHWM)
node2_hwm=$(proc "${pids[2]}" VmHWM)
echo "  node2 installed at +$(python3 -c "print(round(${t_installed:-0} - $t_start, 2))") s, caught up at +$(python3 -c "print(round(${t_caught:-0} - $t_start, 2))") s ($(uptime))"
echo "  after: $LIGHT_CLIENTS clients on the leader for $BASELINE_SECONDS s, three nodes up, no transfer"
light_load - "$BASELINE_SECONDS" after
disk_speed "disk after the transfer"
du -sb "$work/rl"/node*/wal "$work/rl"/node*/snapshots >"$out/disk-usage.txt" 2>/dev/null || true
for k in 0 1 2; do stop_node "$k"; done
sleep 0.5
for k in 0 1 2; do cp "$work/rl/node$k.log" "$out/node$k.log"; done

python3 - "$out" "$leader" "$t_start" "${t_installed:-}" "${t_caught:-}" "${hwm_before:-0}" "${hwm_after:-0}" \
	"${rss_before:-0}" "${node2_hwm:-0}" "$snap_index" "$snap_bytes" "$KEYS" "$VALUE_SIZE" <<'PY' | tee "$out/summary.txt"
import csv, json, re, statistics, sys
out, leader = sys.argv[1], int(sys.argv[2])
t_start = float(sys.argv[3])
t_inst = float(sys.argv[4]) if sys.argv[4] else None
t_caught = float(sys.argv[5]) if sys.argv[5] else None
hwm_before, hwm_after, rss_before, node2_hwm = (int(x) for x in sys.argv[6:10])
snap_index, snap_bytes, keys, vsize = sys.argv[10], sys.argv[11], int(sys.argv[12]), int(sys.argv[13])
MiB = 1 << 20
def lines(k, text):
    res = []
    for l in open(f"{out}/node{k}.log", errors="replace"):
        if text in l:
            t = float(l.split(" ", 1)[0])
            meta = dict(re.findall(r"(\w+)=(\S+)", l))
            res.append((t, meta, l.strip()))
    return res
sending = [x for x in lines(leader, "sending a snapshot") if x[0] >= t_start]
sent = [x for x in lines(leader, "snapshot delivered") + lines(leader, "snapshot sent") if x[0] >= t_start]
failed = [x for x in lines(leader, "snapshot transfer failed") if x[0] >= t_start]
received = lines(2, "snapshot received")
installed = lines(2, "snapshot installed")
res = {"keys": keys, "value_size": vsize, "leader": f"node{leader}", "snapshot_index": snap_index,
       "snapshot_bytes": float(snap_bytes or 0), "transfers_started": len(sending), "transfers_failed": len(failed)}
def rel(t): return None if t is None else round(t - t_start, 3)
res["sending_s"] = rel(sending[0][0]) if sending else None
res["received_s"] = rel(received[0][0]) if received else None
res["installed_s"] = rel(installed[0][0]) if installed else None
res["sent_s"] = rel(sent[0][0]) if sent else None
res["caught_up_s"] = rel(t_caught)
if installed:
    m = installed[0][1]
    res["install_restore_seconds"] = float(m.get("seconds", "nan"))
    res["installed_bytes"] = int(m.get("bytes", 0))
if sending and received:
    # The transfer proper: the first chunk read on the leader until the whole file is checked on node2.
    # (A small KEYS lets the light load trigger another snapshot: a second transfer, listed below, may follow.)
    span = received[0][0] - sending[0][0]
    res["transfer_seconds"] = round(span, 3)
    res["transfer_MBps"] = round(res.get("installed_bytes", res["snapshot_bytes"]) / span / 1e6, 1)
res["transfers"] = [{"sending_s": rel(a[0]), "received_s": rel(b[0]) if b else None, "bytes": int(a[1].get("bytes", 0))}
                    for a, b in zip(sending, received + [None] * len(sending))]
dd = [re.search(r"([\d.]+) s, ([\d.]+) ([MG])B/s", l) for l in open(f"{out}/dd.txt")]
res["dd_MBps"] = [float(m.group(2)) * (1000 if m.group(3) == "G" else 1) for m in dd if m]
samples = list(csv.DictReader(open(f"{out}/samples.csv")))
def peak(node, col):
    v = [int(r[col]) for r in samples if r["node"] == node and r[col]]
    return max(v) if v else None
res["leader_rss_before_MiB"] = round(rss_before / 1024, 1)
res["leader_rss_peak_during_MiB"] = round((peak(f"node{leader}", "vmrss_kib") or 0) / 1024, 1)
res["leader_hwm_before_after_MiB"] = [round(hwm_before / 1024, 1), round(hwm_after / 1024, 1)]
res["receiver_rss_peak_MiB"] = round((peak("node2", "vmrss_kib") or 0) / 1024, 1)
res["receiver_hwm_MiB"] = round(node2_hwm / 1024, 1)
light = [json.loads(l) for l in open(f"{out}/light-load.jsonl") if l.strip()]
t_end_transfer = t_inst if t_inst else t_start + 1e9
for phase in ("baseline", "transfer", "after"):
    rs = [r for r in light if r["phase"] == phase and r.get("ops")]
    if phase == "transfer":
        # Only the rounds that ran while the snapshot was on its way or being installed.
        rs = [r for r in rs if r["t_start"] < t_end_transfer]
    if not rs:
        continue
    p99 = [r["p99_ms"] for r in rs]
    res[phase] = {"rounds": len(rs), "seconds": round(sum(r["seconds"] for r in rs), 1),
                  "puts_per_s": round(sum(r["ops"] for r in rs) / sum(r["seconds"] for r in rs)),
                  "p50_ms_median": round(statistics.median(r["p50_ms"] for r in rs), 3),
                  "p99_ms_median": round(statistics.median(p99), 3), "p99_ms_worst_round": round(max(p99), 3),
                  "max_ms": round(max(r["max_ms"] for r in rs), 3), "errors": sum(r.get("errors", 0) for r in rs),
                  "load1": [min(r["load1"] for r in rs), max(r["load1"] for r in rs)]}
json.dump(res, open(f"{out}/summary.json", "w"), indent=1, sort_keys=True)
print(json.dumps(res, indent=1, sort_keys=True))
PY
echo "raw results: $out"
