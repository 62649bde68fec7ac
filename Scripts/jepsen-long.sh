#!/usr/bin/env bash
# A long Jepsen-style run to leave going: real raft-lite serve processes, every fault kind, a linearizability check.
#
#   Scripts/jepsen-long.sh [SECONDS] [SEED] [NODES]     (defaults: 3600 s, a random seed, 3 nodes)
#
# The seed is printed first; a run with the same seed makes the same choices of operations and faults (the timing of
# real processes still varies). The history is written to /tmp/jepsen-history-SEED.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
seed=${2:-$(( (RANDOM << 30) | (RANDOM << 15) | RANDOM ))}
nodes=${3:-3}
echo "jepsen: $seconds s on $nodes nodes, seed $seed"
JEPSEN_SECONDS=$seconds JEPSEN_SEED=$seed JEPSEN_NODES=$nodes JEPSEN_HISTORY=/tmp/jepsen-history-$seed.txt \
  swift test -c release --filter jepsenLongRun 2>&1 | grep -vE '^(\[|Build|Compiling|Write|Test Suite|Executed|◇|↳ Testing)'
