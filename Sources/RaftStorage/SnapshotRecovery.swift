import RaftCore

/// What a node starts from when it has both a log and a snapshot: pure, so that every case can be tested.
public enum SnapshotRecovery {
    /// Reconciles the write-ahead log's state with the latest snapshot's metadata at start-up.
    ///
    /// - The snapshot's index is beyond the log's last entry, or the log's entry there is of another term: the log
    ///   after the snapshot cannot be trusted — what a crash leaves after a received snapshot was put in place but
    ///   before the log was reset. The log is taken as empty after the snapshot (`snapshotIndex`/`snapshotTerm`
    ///   the snapshot's, no entries, the commit index the snapshot's), and `needsReset` is true: the caller resets
    ///   the storage to the snapshot (`NodeStorage.reset`) before it starts.
    /// - Otherwise the log is kept as it is (its `snapshotIndex` may be below the snapshot's: the entries between
    ///   are still there, and harmless), with the commit index raised to at least the snapshot's index (a
    ///   snapshot holds only committed entries).
    ///
    /// - Throws: `StorageFailure(.missingSegment)` if the log is compacted past the snapshot (or compacted with no
    ///   snapshot at all): the entries between the snapshot and the log are gone, so neither can rebuild the state
    ///   machine — the snapshot the log was compacted to was lost or removed.
    public static func reconcile(
        log: PersistentState, snapshot: SnapshotMetadata?
    ) throws(StorageFailure) -> (state: PersistentState, needsReset: Bool) {
        guard let snapshot else {
            guard log.snapshotIndex == .zero else {
                throw StorageFailure(
                    .missingSegment,
                    "the log is compacted through \(log.snapshotIndex) but there is no snapshot to start from")
            }
            return (log, false)
        }
        if snapshot.index < log.snapshotIndex {
            throw StorageFailure(
                .missingSegment,
                "the log is compacted through \(log.snapshotIndex) but the latest snapshot is at \(snapshot.index): "
                    + "the entries between them are gone")
        }
        if snapshot.index > log.lastIndex || log.term(at: snapshot.index) != snapshot.term {
            var hardState = log.hardState
            // Every entry of the old log after the snapshot is dropped, so nothing beyond it can count as
            // committed here (and a commit index beyond the log's end would be no log at all).
            hardState.commit = snapshot.index
            let state = PersistentState(
                hardState: hardState, snapshotIndex: snapshot.index, snapshotTerm: snapshot.term, entries: [])
            return (state, true)
        }
        var state = log
        state.hardState.commit = max(state.hardState.commit, snapshot.index)
        return (state, false)
    }
}
