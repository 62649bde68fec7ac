#!/usr/bin/env bash
# Mutation check: break one rule at a time and make sure a test notices.
#
#   Scripts/mutation-check.sh                                  # every mutation
#   SCHEDULES=2000 Scripts/mutation-check.sh commit-rule       # some of them, by name
#   Scripts/mutation-check.sh wal-no-sync wal-complete-before-sync
#   MAX_FAILURES=100000 Scripts/mutation-check.sh commit-rule   # count every schedule that fails
#
# Mutations come in groups, one per target: a source file and the test that must catch a mutation of it (a command,
# and the line it prints when it fails). Each mutation is applied in place, the target's test runs, and the original
# file is put back (also on Ctrl-C). A mutation the test does not catch makes the script fail. Run it on clean files.
#
# To add a mutation: a `mutate` line under the right `target` (or a new `target` line first).
set -euo pipefail
cd "$(dirname "$0")/.."
schedules=${SCHEDULES:-10000}
# MAX_FAILURES=100000 counts every failing schedule instead of stopping at the first (for the README's table).
max_failures=${MAX_FAILURES:-1}
selected=("$@")
survivors=0
declare -A backups=()

restore() {
  for f in "${!backups[@]}"; do cp "${backups[$f]}" "$f"; rm -f "${backups[$f]}"; done
}
trap restore EXIT

# target FILE "LINE A FAILURE PRINTS" COMMAND...: the mutations that follow break FILE, and COMMAND must fail.
target() {
  file=$1
  failure_line=$2
  shift 2
  command=("$@")
}

# mutate NAME "WHAT IT BREAKS" 'TEXT TO FIND' 'TEXT TO PUT INSTEAD'
mutate() {
  local name=$1 what=$2 find=$3 replace=$4
  if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]]; then return 0; fi
  if [ -z "${backups[$file]:-}" ]; then
    git diff --quiet -- "$file" || { echo "error: $file has uncommitted changes; commit or stash them first" >&2; exit 2; }
    backups[$file]=$(mktemp)
    cp "$file" "${backups[$file]}"
  fi
  cp "${backups[$file]}" "$file"
  FIND="$find" REPLACE="$replace" python3 - "$file" <<'PY'
import os, sys
path = sys.argv[1]
text = open(path).read()
find, replace = os.environ["FIND"], os.environ["REPLACE"]
if text.count(find) != 1:
    sys.exit(f"mutation target not found exactly once in {path}: {find!r}")
open(path, "w").write(text.replace(find, replace))
PY
  echo "== $name: $what ($file)"
  local log
  log=$(mktemp)
  if "${command[@]}" >"$log" 2>&1; then
    echo "   NOT caught by: ${command[*]}"
    survivors=$((survivors + 1))
  elif grep -q "$failure_line" "$log"; then
    echo "   caught: $(grep -m1 "$failure_line" "$log" | sed "s/^.*$failure_line: //" | cut -c1-160)"
    if grep -q "of the schedules run failed" "$log"; then echo "   $(grep -m1 'of the schedules run failed' "$log")"; fi
    echo "   $(grep -m1 'replay:' "$log" | sed 's/^ *//')"
  else
    echo "   the build or test run failed for another reason:"
    tail -20 "$log"
    survivors=$((survivors + 1))
  fi
  rm -f "$log"
  cp "${backups[$file]}" "$file"
}

# The Raft rules, against the simulator's 10,000 schedules (release build).
target Sources/RaftCore/Raft.swift "simulation failed" \
  env RAFT_SIM_SCHEDULES="$schedules" RAFT_SIM_MAX_FAILURES="$max_failures" \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant

mutate commit-rule "count replicas of an old-term entry (Raft §5.4.2, Figure 8)" \
  'guard index > log.committed, log.term(at: index) == term else { return }' \
  'guard index > log.committed else { return }'
mutate double-vote "grant a second vote in a term when no leader is known (Raft §5.2)" \
  '|| (votedFor == nil && leader == nil)' \
  '|| leader == nil'
mutate leader-self-durability "count the leader's own log before it is durable (thesis §10.2.1)" \
  'tracker.committedIndex(own: log.stable)' \
  'tracker.committedIndex(own: log.lastIndex)'
mutate ack-before-persist "acknowledge entries before they are durable" \
  'send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID)' \
  'send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID, immediately: true)'

mutate stale-term-messages "keep messages queued in an older term when the term moves" \
  '            messages.removeAll { $0.term < newTerm }
            messagesAfterPersist.removeAll { $0.term < newTerm }' \
  '            _ = newTerm'

mutate snapshot-older-than-commit "a follower installs a snapshot its commit index already covers (moving back)" \
  '        if meta.index <= log.committed {' \
  '        if false, meta.index <= log.committed {'
mutate snapshot-keeps-conflicting-log "a follower keeps its log for a snapshot whose last entry it holds in another term" \
  'if log.matches(index: meta.index, term: meta.term) {' \
  'if meta.index <= log.lastIndex {'

# The write pipeline every shell runs, against the same simulation.
target Sources/RaftCore/ReadyPipeline.swift "simulation failed" \
  env RAFT_SIM_SCHEDULES="$schedules" RAFT_SIM_MAX_FAILURES="$max_failures" \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant

mutate pipeline-overtakes "finish a ready with nothing to write before the writes ahead of it are durable" \
  '        if !hasWrite && waiting.isEmpty {' \
  '        if !hasWrite {'

# Exactly-once proposals, against the same simulation: copies refused at apply time, and "lost" only once proven.
target Sources/RaftCore/Proposals/ProposalSessions.swift "simulation failed" \
  env RAFT_SIM_SCHEDULES="$schedules" RAFT_SIM_MAX_FAILURES="$max_failures" \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant

mutate apply-copies "apply a copy of a proposal that was applied before" \
  '                if applied[k] == sequence { return false }' \
  '                if applied[k] == sequence { return true }'

target Sources/RaftCore/Proposals/ProposalTracker.swift "simulation failed" \
  env RAFT_SIM_SCHEDULES="$schedules" RAFT_SIM_MAX_FAILURES="$max_failures" \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant

mutate lost-too-early "settle a proposal as lost when an entry of its copy's own term is applied" \
  'where p.liveTerm.map({ $0 < entry.term }) == true' \
  'where p.liveTerm.map({ $0 <= entry.term }) == true'

# The simulator's own shell, against the same simulation: its checks must notice a shell that gets snapshots wrong.
target Tests/RaftSimulation/Simulation.swift "simulation failed" \
  env RAFT_SIM_SCHEDULES="$schedules" RAFT_SIM_MAX_FAILURES="$max_failures" \
  swift test -c release --filter randomizedSchedulesKeepEveryInvariant

mutate install-log-before-snapshot "empty the stored log for a received snapshot without keeping the snapshot" \
  '        nodes[k].snapshot = snapshot
    }

    /// A ready that installs' \
  '    }

    /// A ready that installs'

# The write-ahead log's durability, against the power-cut test over the simulated file system (debug build).
target Sources/RaftStorage/WALWriter.swift "power cuts failed" \
  swift test --filter powerCutsLoseNoAcknowledgedWrite

mutate wal-no-sync "never sync the log's data (fdatasync)" \
  '            try fileSystem.syncData(file, path: path)' \
  '            _ = file'

target Sources/RaftStorage/WriteAheadLog.swift "power cuts failed" \
  swift test --filter powerCutsLoseNoAcknowledgedWrite
mutate wal-complete-before-sync "complete a batch's writes before they are synced" \
  '            if let error = syncWritten() { errors = Array(repeating: error, count: batch.count) }
            for (request, error) in zip(batch, errors) { request.completion(error) }' \
  '            for (request, error) in zip(batch, errors) { request.completion(error) }
            _ = syncWritten()'

restore
backups=()
[ "$survivors" -eq 0 ] && echo "every mutation was caught" || { echo "$survivors mutation(s) survived"; exit 1; }
