#!/usr/bin/env bash
# Mutation check: break one Raft rule at a time in Sources/RaftCore/Raft.swift and make sure the simulator notices.
#
#   Scripts/mutation-check.sh            # every mutation, 10,000 schedules each (release build)
#   SCHEDULES=2000 Scripts/mutation-check.sh commit-rule
#
# Each mutation is applied in place, the simulation test runs, and the original file is put back (also on Ctrl-C).
# A mutation the simulator does not catch makes the script fail. Run it on a clean Raft.swift.
set -euo pipefail
cd "$(dirname "$0")/.."
file=Sources/RaftCore/Raft.swift
schedules=${SCHEDULES:-10000}
git diff --quiet -- "$file" || { echo "error: $file has uncommitted changes; commit or stash them first" >&2; exit 2; }
backup=$(mktemp)
cp "$file" "$backup"
trap 'cp "$backup" "$file"; rm -f "$backup"' EXIT

survivors=0
# mutate NAME "WHAT IT BREAKS" 'TEXT TO FIND' 'TEXT TO PUT INSTEAD'
mutate() {
  local name=$1 what=$2 find=$3 replace=$4
  if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]]; then return 0; fi
  cp "$backup" "$file"
  FIND="$find" REPLACE="$replace" python3 - "$file" <<'PY'
import os, sys
path = sys.argv[1]
text = open(path).read()
find, replace = os.environ["FIND"], os.environ["REPLACE"]
if text.count(find) != 1:
    sys.exit(f"mutation target not found exactly once in {path}: {find!r}")
open(path, "w").write(text.replace(find, replace))
PY
  echo "== $name: $what"
  local log
  log=$(mktemp)
  if RAFT_SIM_SCHEDULES=$schedules RAFT_SIM_MAX_FAILURES=1 swift test -c release --filter randomizedSchedulesKeepEveryInvariant >"$log" 2>&1; then
    echo "   NOT caught in $schedules schedules"
    survivors=$((survivors + 1))
  elif grep -q "simulation failed" "$log"; then
    echo "   caught: $(grep -m1 'simulation failed' "$log" | sed 's/^.*simulation failed: //' | cut -c1-160)"
    echo "   $(grep -m1 'replay:' "$log" | sed 's/^ *//')"
  else
    echo "   the build or test run failed for another reason:"
    tail -20 "$log"
    survivors=$((survivors + 1))
  fi
  rm -f "$log"
}
selected=("$@")

mutate commit-rule "count replicas of an old-term entry (Raft §5.4.2, Figure 8)" \
  'guard index > log.committed, log.term(at: index) == term else { return }' \
  'guard index > log.committed else { return }'
mutate double-vote "grant a second vote in a term when no leader is known (Raft §5.2)" \
  '|| (votedFor == nil && leader == nil)' \
  '|| leader == nil'
mutate leader-self-durability "count the leader's own log before it is durable (thesis §10.2.1)" \
  'peer == id ? log.stable :' \
  'peer == id ? log.lastIndex :'
mutate ack-before-persist "acknowledge entries before they are durable" \
  'send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID)' \
  'send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID, immediately: true)'

cp "$backup" "$file"
[ "$survivors" -eq 0 ] && echo "every mutation was caught" || { echo "$survivors mutation(s) survived"; exit 1; }
