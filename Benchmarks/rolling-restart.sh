#!/usr/bin/env bash
# A rolling restart of a 3-node `raft-lite serve` cluster under a closed-loop writer: every node is stopped with
# SIGTERM and restarted in turn (followers first, then the leader); prints the longest write gap (JSON, last line).
#   Benchmarks/rolling-restart.sh [RAFTLITE_BIN] [ROUNDS]
# Loopback only; ends only the processes it started.
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../.build/release/raft-lite}
rounds=${2:-1}
work=$(mktemp -d /tmp/rolling.XXXX)
pids=()
cleanup() {
  if [ -f "$work/pids" ]; then for p in $(tr ',' ' ' <"$work/pids"); do kill "$p" 2>/dev/null; done; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/cluster.json" <<JSON
{"node0": {"ip": "127.0.0.1", "port": 31661, "http_port": 31761},
 "node1": {"ip": "127.0.0.1", "port": 31662, "http_port": 31762},
 "node2": {"ip": "127.0.0.1", "port": 31663, "http_port": 31763}}
JSON
for n in 0 1 2; do
  (cd "$work" && exec "$bin" serve --config "$work/cluster.json" --id node$n --data-dir "$work/node$n" >"$work/node$n.log" 2>&1) &
  pids+=($!)
done
for i in $(seq 1 100); do curl -fsS http://127.0.0.1:31761/v1/status 2>/dev/null | grep -q '"leader" *: *"node' && break; sleep 0.2; done
python3 "$here/rolling_restart.py" --endpoints 127.0.0.1:31761,127.0.0.1:31762,127.0.0.1:31763 \
  --pids "$(IFS=,; echo "${pids[*]}")" --rounds "$rounds" --log-dir "$work" | tee "$work/out" | tail -n 1
# The restarted nodes have new pids: end those too.
python3 -c 'import json,sys; print(",".join(map(str,json.loads(open(sys.argv[1]).read().splitlines()[-1])["pids"])))' "$work/out" >"$work/pids" 2>/dev/null
