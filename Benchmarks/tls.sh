#!/usr/bin/env bash
# What TLS costs, in one run: the same release binary as a plain cluster, and as a cluster with mutual TLS between
# the peers and HTTPS for the clients (and, third, with a bearer token on every request as well).
#
#   Benchmarks/tls.sh BINARY [OUT_DIR]
#
# For each of ROUNDS rounds (default 3) the configurations take turns, their order rotating between rounds; each
# runs a 3-node cluster on loopback with fsync on, and `raft-lite bench` PUTs 128-byte values through all three
# nodes with each of CLIENTS (default "1 64") for SECONDS_PER seconds (default 10) after a 2-s warm-up. The same
# load generator drives every configuration (it speaks HTTPS to the TLS ones), so its TLS cost is in the figures
# too. It prints every result, then the medians and each configuration's ratio to plain. Results go to OUT_DIR
# (default: a new temporary directory) as JSON lines.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [OUT_DIR]" >&2; exit 2; }
binary=$1
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-"1 64"}
work=$(mktemp -d)
out_dir=${2:-$work}
mkdir -p "$out_dir"
out="$out_dir/tls.jsonl"
: >"$out"
pids=()
# On exit, end only the servers this script started, by pid.
trap 'for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done' EXIT

cluster="$work/cluster.json"
printf '{"node0": {"ip": "127.0.0.1", "port": 9281, "http_port": 8281},\n "node1": {"ip": "127.0.0.1", "port": 9282, "http_port": 8282},\n "node2": {"ip": "127.0.0.1", "port": 9283, "http_port": 8283}}\n' >"$cluster"
"$binary" certs --cluster "$cluster" --out "$work/certs" >/dev/null
"$binary" tokens add --tokens-file "$work/tokens" >"$work/token" 2>/dev/null
endpoints=127.0.0.1:8281,127.0.0.1:8282,127.0.0.1:8283

run() { # label
	local label=$1 k extra client=()
	rm -rf "$work/data" && mkdir -p "$work/data"
	pids=()
	for k in 0 1 2; do
		extra=()
		if [ "$label" != plain ]; then
			extra=(--peer-cert "$work/certs/node$k.pem" --peer-key "$work/certs/node$k-key.pem" --peer-ca "$work/certs/ca.pem"
				--tls-cert "$work/certs/node$k.pem" --tls-key "$work/certs/node$k-key.pem" --tls-ca "$work/certs/ca.pem")
		fi
		if [ "$label" = tls+token ]; then extra+=(--tokens-file "$work/tokens"); fi
		"$binary" serve --config "$cluster" --id "node$k" --data-dir "$work/data/node$k" --log-level warning "${extra[@]}" \
			>"$work/data/node$k.log" 2>&1 &
		pids+=($!)
	done
	[ "$label" != plain ] && client+=(--cacert "$work/certs/ca.pem")
	[ "$label" = tls+token ] && client+=(--token-file "$work/token")
	for _ in $(seq 100); do
		"$binary" status --endpoints "$endpoints" "${client[@]}" 2>/dev/null | grep -q ' leader ' && break
		sleep 0.2
	done
	for clients in $CLIENTS; do
		local before after
		before=$(for pid in "${pids[@]}"; do awk '{print $14+$15}' "/proc/$pid/stat"; done | paste -sd+ | bc)
		"$binary" bench --endpoints "$endpoints" "${client[@]}" --op put --clients "$clients" --seconds "$SECONDS_PER" \
			--warmup 2 --value-size 128 --json "$work/one.json" >/dev/null 2>&1
		after=$(for pid in "${pids[@]}"; do awk '{print $14+$15}' "/proc/$pid/stat"; done | paste -sd+ | bc)
		python3 - "$work/one.json" "$label" "$clients" "$before" "$after" "$SECONDS_PER" <<'PY' | tee -a "$out"
import json, os, sys
report = json.load(open(sys.argv[1]))
label, clients, before, after, seconds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
ticks = os.sysconf("SC_CLK_TCK")
ops = report["ops_per_s"]
# Server CPU over the warm-up and the measured seconds, per operation measured (an upper bound: the warm-up's CPU
# is counted too).
cpu_us = (after - before) / ticks * 1e6 / max(1.0, ops * seconds)
print(json.dumps({"label": label, "clients": clients, "ops_per_s": ops, "p50_ms": report["p50_ms"],
                  "p99_ms": report["p99_ms"], "errors": report["errors"], "server_cpu_us_per_op_max": cpu_us}))
PY
	done
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
	pids=()
}

configs=(plain tls tls+token)
for round in $(seq "$ROUNDS"); do
	for k in 0 1 2; do run "${configs[$(((k + round - 1) % 3))]}"; done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(label, clients, key):
    return statistics.median([r[key] for r in rows if r["label"] == label and r["clients"] == clients])
print("\nmedians over rounds (3 nodes, loopback, fsync on, PUT of 128-byte values, raft-lite bench over all nodes):")
print("| clients | configuration | ops/s | vs plain | p50 ms | p99 ms | server CPU us/op (max) |")
print("|---|---|---|---|---|---|---|")
for c in sorted({r["clients"] for r in rows}):
    base = med("plain", c, "ops_per_s")
    for label in ["plain", "tls", "tls+token"]:
        ops = med(label, c, "ops_per_s")
        print(f"| {c} | {label} | {ops:,.0f} | {ops / base:.2f}x | {med(label, c, 'p50_ms'):.3f} "
              f"| {med(label, c, 'p99_ms'):.2f} | {med(label, c, 'server_cpu_us_per_op_max'):.0f} |")
PY
echo "raw results: $out"
