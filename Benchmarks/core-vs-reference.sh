#!/bin/sh
# The core benchmark side by side with the reference Raft libraries, in one run on one machine.
#
#   sh Benchmarks/core-vs-reference.sh [REFERENCE_DIR]
#
# REFERENCE_DIR holds etcd_core_bench.go and hashicorp_core_bench.go (default: ../shared/bench/core next to this
# checkout). They need Debian's packages: golang-go golang-etcd-server-dev golang-github-hashicorp-raft-dev
# golang-github-hashicorp-raft-boltdb-dev.
#
# For each workload (sequential: 1 proposal in flight; pipelined: 1,000 in flight) it runs RaftLite, etcd raft and
# hashicorp raft in turn, RUNS times (default 5), interleaved so that a noisy stretch of time hurts all of them
# alike; before each run it waits (up to WAITMAX seconds) for the machine to be under MAXBUSY % busy. It prints
# every run, then the median of each and RaftLite's ratio to each reference's median.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ref=${1:-$here/../../shared/bench/core}
RUNS=${RUNS:-5}
N=${N:-200000}
MAXBUSY=${MAXBUSY:-15}
WAITMAX=${WAITMAX:-300}
BIN=${BIN:-${TMPDIR:-/tmp}/raft-core-reference-bin}

mkdir -p "$BIN"
(cd "$ref" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o "$BIN/etcd_core_bench" etcd_core_bench.go &&
	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o "$BIN/hashicorp_core_bench" hashicorp_core_bench.go)
swift build -c release --package-path "$here" --product RaftCoreBench >/dev/null
ours="$here/.build/release/RaftCoreBench"

cpustat() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
waitquiet() {
	waited=0
	while :; do
		s0=$(cpustat)
		sleep 2
		s1=$(cpustat)
		busy=$(echo "$s0 $s1" | awk '{ d = $4 - $2; print (d > 0) ? int(100 * ($3 - $1) / d) : 0 }')
		[ "$busy" -lt "$MAXBUSY" ] && return 0
		waited=$((waited + 2))
		if [ "$waited" -ge "$WAITMAX" ]; then
			echo "note: machine still ${busy}% busy after ${WAITMAX}s; running anyway" >&2
			return 0
		fi
	done
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for k in 1 1000; do
	i=1
	while [ "$i" -le "$RUNS" ]; do
		for lib in raftlite etcd hashicorp; do
			waitquiet
			case $lib in
			raftlite) line=$("$ours" -n "$N" -k "$k" -label "k$k") ;;
			etcd) line=$("$BIN/etcd_core_bench" -n "$N" -k "$k" -label "k$k") ;;
			hashicorp) line=$("$BIN/hashicorp_core_bench" -n "$N" -k "$k" -clients "$k" -label "k$k" 2>/dev/null) || line="lib=hashicorp FAILED" ;;
			esac
			echo "$line" | tee -a "$out"
		done
		i=$((i + 1))
	done
done

echo
echo "medians of $RUNS runs (entries/s; latency from propose to the leader's apply):"
for k in 1 1000; do
	for lib in raftlite etcd-raft-3.4 hashicorp-raft; do
		grep "^lib=$lib" "$out" | grep "label=\"k$k\"" |
			awk -v k="$k" -v lib="$lib" '{
				for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
				print v["entries_per_s"], v["lat_p50_us"], v["lat_p99_us"], v["cpu_us_per_entry"]
			}' | sort -n | awk -v k="$k" -v lib="$lib" '{ l[NR] = $0 } END {
				if (NR == 0) exit
				split(l[int((NR + 1) / 2)], m, " ")
				printf "k=%-5s %-16s entries_per_s=%-8s p50_us=%-7s p99_us=%-8s cpu_us_per_entry=%s\n", k, lib, m[1], m[2], m[3], m[4]
			}'
	done
done | tee "$out.medians"
echo
awk '{ split($3, e, "="); r[$1 " " $2] = e[2] } END {
	for (k in r) {
		split(k, p, " ")
		if (p[2] != "raftlite") continue
		for (o in r) {
			split(o, q, " ")
			if (q[1] == p[1] && q[2] != "raftlite" && r[o] > 0)
				printf "%s raftlite / %s = %.2fx\n", p[1], q[2], r[k] / r[o]
		}
	}
}' "$out.medians" | sort
rm -f "$out.medians"
