import RaftCore
import RaftStorage
import Testing

/// `SnapshotRecovery.reconcile`: the log and the latest snapshot at start-up.
@Suite struct SnapshotRecoveryTests {
    /// A log compacted through `snapshot`, then holding `terms` (one entry each), with commit `commit`.
    static func log(after snapshot: UInt64 = 0, snapshotTerm: UInt64 = 0, terms: [UInt64], commit: UInt64)
        -> PersistentState
    {
        PersistentState(
            hardState: HardState(term: Term(terms.last ?? 1), votedFor: NodeID(2), commit: LogIndex(commit)),
            snapshotIndex: LogIndex(snapshot), snapshotTerm: Term(snapshotTerm),
            entries: terms.enumerated().map { k, term in
                Entry(term: Term(term), index: LogIndex(snapshot + UInt64(k) + 1), data: [UInt8(k)])
            })
    }

    static func snapshot(_ index: UInt64, _ term: UInt64) -> SnapshotMetadata {
        SnapshotMetadata(index: LogIndex(index), term: Term(term), voters: [NodeID(1), NodeID(2), NodeID(3)])
    }

    @Test func withoutASnapshotAnUncompactedLogIsKept() throws {
        let log = Self.log(terms: [1, 1, 2], commit: 2)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: nil)
        #expect(state == log)
        #expect(!needsReset)
    }

    @Test func aSnapshotInsideTheLogKeepsTheLogAndRaisesTheCommitIndex() throws {
        let log = Self.log(terms: [1, 1, 2, 2, 3], commit: 2)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(4, 2))
        #expect(!needsReset)
        var expected = log
        expected.hardState.commit = LogIndex(4)
        #expect(state == expected)
        // The log's own snapshot index stays below the snapshot's: the entries between are harmless.
        #expect(state.snapshotIndex == .zero)
    }

    @Test func aCommitIndexBeyondTheSnapshotIsKept() throws {
        let log = Self.log(after: 2, snapshotTerm: 1, terms: [1, 2, 2], commit: 5)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(3, 1))
        #expect(!needsReset)
        #expect(state == log)
    }

    @Test func aSnapshotAtTheLogsOwnSnapshotIndexKeepsTheLog() throws {
        let log = Self.log(after: 10, snapshotTerm: 3, terms: [3, 4], commit: 11)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(10, 3))
        #expect(!needsReset)
        #expect(state == log)
    }

    @Test func aSnapshotBeyondTheLogsEndEmptiesTheLogAndAsksForAReset() throws {
        let log = Self.log(terms: [1, 1, 2], commit: 3)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(10, 4))
        #expect(needsReset)
        #expect(
            state
                == PersistentState(
                    hardState: HardState(term: Term(2), votedFor: NodeID(2), commit: LogIndex(10)),
                    snapshotIndex: LogIndex(10), snapshotTerm: Term(4)))
    }

    @Test func aLogWhoseTermAtTheSnapshotDiffersIsEmptiedAfterIt() throws {
        // A received snapshot at 4 (term 3) was put in place, then a crash came before the log was reset: the
        // log's entries from 3 on are of a deposed leader's term.
        let log = Self.log(terms: [1, 1, 2, 2, 2, 2], commit: 2)
        let (state, needsReset) = try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(4, 3))
        #expect(needsReset)
        #expect(state.snapshotIndex == LogIndex(4))
        #expect(state.snapshotTerm == Term(3))
        #expect(state.entries.isEmpty)
        #expect(state.hardState.commit == LogIndex(4))
        #expect(state.hardState.term == log.hardState.term)
        #expect(state.hardState.votedFor == log.hardState.votedFor)
    }

    @Test func aLogCompactedPastTheSnapshotOrWithoutOneIsRefused() {
        let log = Self.log(after: 20, snapshotTerm: 2, terms: [2], commit: 21)
        let below = #expect(throws: StorageFailure.self) {
            try SnapshotRecovery.reconcile(log: log, snapshot: Self.snapshot(10, 1))
        }
        #expect(below?.kind == .missingSegment)
        let none = #expect(throws: StorageFailure.self) { try SnapshotRecovery.reconcile(log: log, snapshot: nil) }
        #expect(none?.kind == .missingSegment)
    }
}
