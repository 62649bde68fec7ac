#!/usr/bin/env bash
# A long simulation run to leave going: 1,000,000 schedules by default (about an hour on 2 cores, release build),
# starting from a random seed that is printed first, so that each long run explores new schedules.
#
#   Scripts/simulate-long.sh [SCHEDULES] [FIRST_SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
schedules=${1:-1000000}
first=${2:-$(( (RANDOM << 30) | (RANDOM << 15) | RANDOM ))}
echo "simulating $schedules schedules from seed $first (replay one with RAFT_SIM_SEED=<seed> swift test --filter replaysOneSeed)"
RAFT_SIM_SCHEDULES=$schedules RAFT_SIM_FIRST_SEED=$first RAFT_SIM_MAX_FAILURES=${MAX_FAILURES:-10} \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant 2>&1 | grep -E '^(simulation|↳ simulation|    (options|replay))'
