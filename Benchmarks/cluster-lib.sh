# Shared by the benchmark scripts (source it): a 3-node `raft-lite serve` cluster on loopback.
#
#   start_cluster BINARY DIR HTTP_BASE PEER_BASE [SERVE_ARGS...]   nodes node0..node2 on HTTP_BASE+K, PEER_BASE+K;
#                                                                  their pids in the array `pids`
#   cluster_leader HTTP_BASE                                       the leader's name, waiting up to 20 s ("" if none)
#   stop_cluster                                                   ends the nodes started, by pid, and waits
#
# A script that sources this should end the nodes on exit too:
#   trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT
pids=()

start_cluster() {
	local binary=$1 dir=$2 http=$3 peer=$4 k
	shift 4
	rm -rf "$dir" && mkdir -p "$dir"
	printf '{"node0": {"ip": "127.0.0.1", "port": %d, "http_port": %d},\n "node1": {"ip": "127.0.0.1", "port": %d, "http_port": %d},\n "node2": {"ip": "127.0.0.1", "port": %d, "http_port": %d}}\n' \
		"$peer" "$http" $((peer + 1)) $((http + 1)) $((peer + 2)) $((http + 2)) >"$dir/cluster.json"
	pids=()
	for k in 0 1 2; do
		"$binary" serve --config "$dir/cluster.json" --id "node$k" --data-dir "$dir/node$k" --log-level warning "$@" \
			>"$dir/node$k.log" 2>&1 &
		pids+=($!)
	done
}

cluster_leader() {
	local http=$1 leader="" _
	for _ in $(seq 100); do
		leader=$(curl -sf "http://127.0.0.1:$http/v1/status" |
			python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader") or "")' 2>/dev/null || true)
		[ -n "$leader" ] && break
		sleep 0.2
	done
	echo "$leader"
}

stop_cluster() {
	local pid
	for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]:-}"; do [ -n "$pid" ] && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
	pids=()
}
