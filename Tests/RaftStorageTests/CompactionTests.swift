import Foundation
import NIOConcurrencyHelpers
import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// Waits for an asynchronous storage call and returns the error its completion gave.
func waitFor(_ call: (@escaping @Sendable ((any Error)?) -> Void) -> Void) -> (any Error)? {
    let done = DispatchSemaphore(value: 0)
    let outcome = NIOLockedValueBox<(any Error)?>(nil)
    call { error in
        outcome.withLockedValue { $0 = error }
        done.signal()
    }
    done.wait()
    return outcome.withLockedValue { $0 }
}

/// The write-ahead log's compaction without blocking, and its reset to a snapshot.
@Suite struct CompactionTests {
    static func smallSegments() -> WriteAheadLog.Options {
        var options = WriteAheadLog.Options()
        options.segmentBytes = 2048
        return options
    }

    @Test func aQueuedCompactionKeepsTheRetainedEntriesAndTheWritesAfterIt() throws {
        let dir = TemporaryDirectory()
        let hs = HardState(term: Term(1), votedFor: NodeID(2), commit: LogIndex(280))
        let usageBefore: UInt64
        let usageAfter: UInt64
        do {
            let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
            defer { log.close() }
            for k in UInt64(0)..<29 {
                try log.persist(entries: entries(k * 10 + 1...k * 10 + 10, term: 1, size: 40), hardState: nil)
            }
            usageBefore = log.diskUsage
            #expect(usageBefore >= UInt64(dir.segments.count) * 2048)
            let completions = NIOLockedValueBox<[Int]>([])
            let errors = NIOLockedValueBox<[(Int, any Error)]>([])
            let done = DispatchSemaphore(value: 0)
            func record(_ k: Int) -> @Sendable ((any Error)?) -> Void {
                { error in
                    completions.withLockedValue { $0.append(k) }
                    if let error { errors.withLockedValue { $0.append((k, error)) } }
                    done.signal()
                }
            }
            // Queued without waiting: the last entries and the hard state may still be being written when the
            // compaction is queued; it comes after them, and the writes queued after it come after it.
            log.persist(entries: entries(291...300, term: 1, size: 40), hardState: hs, completion: record(0))
            log.compact(
                through: LogIndex(250), term: Term(1), retaining: entries(251...300, term: 1, size: 40),
                completion: record(1))
            log.persist(entries: entries(301...310, term: 2), hardState: nil, completion: record(2))
            for _ in 0..<3 { done.wait() }
            #expect(completions.withLockedValue { $0 } == [0, 1, 2])
            #expect(errors.withLockedValue { $0.isEmpty }, "\(errors.withLockedValue { $0.map { "\($0.1)" } })")
            usageAfter = log.diskUsage
        }
        #expect(usageAfter < usageBefore, "the old segments are deleted: \(usageBefore) then \(usageAfter) bytes")
        // The base segment (holding the retained entries, more than a segment's size), then the one the writes
        // after it went to.
        #expect(dir.segments.count == 2)
        let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
        defer { log.close() }
        let state = log.initialState()
        #expect(state.snapshotIndex == LogIndex(250))
        #expect(state.snapshotTerm == Term(1))
        #expect(state.entries == entries(251...300, term: 1, size: 40) + entries(301...310, term: 2))
        #expect(state.hardState == hs)
    }

    @Test func aCompactionThatDoesNotRetainTheLogsEndIsRefusedAndChangesNothing() throws {
        let dir = TemporaryDirectory()
        let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
        defer { log.close() }
        try log.persist(entries: entries(1...20, term: 1), hardState: nil)
        let short = waitFor {
            log.compact(through: LogIndex(10), term: Term(1), retaining: entries(11...15, term: 1), completion: $0)
        }
        #expect((short as? StorageFailure)?.kind == .invalidAppend)
        let gap = waitFor {
            log.compact(through: LogIndex(10), term: Term(1), retaining: entries(12...20, term: 1), completion: $0)
        }
        #expect((gap as? StorageFailure)?.kind == .invalidAppend)
        // The log still works and holds everything.
        try log.persist(entries: entries(21...21, term: 1), hardState: nil)
        log.close()
        let reopened = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
        defer { reopened.close() }
        #expect(reopened.initialState().snapshotIndex == .zero)
        #expect(reopened.initialState().entries == entries(1...21, term: 1))
    }

    @Test func aResetEmptiesTheLogAfterItsIndexEvenOfEntriesBeyondIt() throws {
        let dir = TemporaryDirectory()
        let reset = HardState(term: Term(3), votedFor: nil, commit: LogIndex(150))
        let usageBefore: UInt64
        do {
            let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
            defer { log.close() }
            for k in UInt64(0)..<30 {
                try log.persist(
                    entries: entries(k * 10 + 1...k * 10 + 10, term: 1, size: 40),
                    hardState: HardState(term: Term(1), commit: LogIndex(k * 10)))
            }
            #expect(dir.segments.count > 3)
            usageBefore = log.diskUsage
            // The log runs to 300; the snapshot is at 150, in a later term: 151...300 conflict with it.
            let error = waitFor {
                log.reset(to: LogIndex(150), term: Term(3), hardState: reset, completion: $0)
            }
            #expect(error == nil, "\(String(describing: error))")
            #expect(log.diskUsage < usageBefore)
            // An append into what the snapshot covers is refused; after it, taken.
            #expect(throws: StorageFailure.self) {
                try log.persist(entries: entries(150...150, term: 3), hardState: nil)
            }
        }
        #expect(dir.segments.count == 1)
        do {
            let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
            defer { log.close() }
            let state = log.initialState()
            #expect(state == PersistentState(hardState: reset, snapshotIndex: LogIndex(150), snapshotTerm: Term(3)))
            try log.persist(entries: entries(151...152, term: 3), hardState: nil)
        }
        let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
        defer { log.close() }
        #expect(log.initialState().entries == entries(151...152, term: 3))
        #expect(log.initialState().hardState == reset)
    }

    @Test func aResetBelowAnEarlierCompactionAndBeyondTheLogsEndBothTakeEffect() throws {
        let dir = TemporaryDirectory()
        let hs = HardState(term: Term(5), votedFor: NodeID(1), commit: LogIndex(40))
        do {
            let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
            defer { log.close() }
            try log.persist(entries: entries(1...50, term: 1), hardState: nil)
            try log.compact(
                through: LogIndex(30), term: Term(1), hardState: HardState(), retaining: entries(31...50, term: 1))
            // Below the compaction: what the log held is gone all the same.
            #expect(waitFor { log.reset(to: LogIndex(20), term: Term(4), hardState: hs, completion: $0) } == nil)
        }
        do {
            let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
            defer { log.close() }
            #expect(
                log.initialState() == PersistentState(hardState: hs, snapshotIndex: LogIndex(20), snapshotTerm: Term(4))
            )
            // Beyond the end.
            #expect(waitFor { log.reset(to: LogIndex(500), term: Term(6), hardState: hs, completion: $0) } == nil)
            try log.persist(entries: entries(501...501, term: 6), hardState: nil)
        }
        let log = try WriteAheadLog(directory: dir.path, options: Self.smallSegments())
        defer { log.close() }
        let state = log.initialState()
        #expect(state.snapshotIndex == LogIndex(500))
        #expect(state.snapshotTerm == Term(6))
        #expect(state.entries == entries(501...501, term: 6))
    }

    // MARK: - Power cuts

    enum Operation: CaseIterable {
        case compaction, reset
    }

    /// A cut at every file-system operation of a compaction or a reset, with several ways of keeping unsynced
    /// writes: the log comes back as it was before, or as it is after (and as after if it had completed).
    @Test(arguments: Operation.allCases)
    func aCutDuringACompactionOrResetLeavesTheOldLogOrTheNew(operation: Operation) throws {
        let before = HardState(term: Term(1), votedFor: NodeID(1), commit: LogIndex(35))
        let resetState = HardState(term: Term(2), votedFor: nil, commit: LogIndex(25))
        let old = PersistentState(hardState: before, entries: entries(1...40, term: 1, size: 60))
        let new: PersistentState
        switch operation {
        case .compaction:
            new = PersistentState(
                hardState: before, snapshotIndex: LogIndex(20), snapshotTerm: Term(1),
                entries: entries(21...40, term: 1, size: 60))
        case .reset:
            new = PersistentState(hardState: resetState, snapshotIndex: LogIndex(25), snapshotTerm: Term(2))
        }
        var step = 1
        var sawOld = false
        var sawNew = false
        while true {
            var finishedAll = true
            for seed in UInt64(1)...5 {
                let fs = SimulatedFileSystem()
                do {
                    let log = try WriteAheadLog(directory: "/node", options: Self.smallSegments(), fileSystem: fs)
                    defer { log.close() }
                    for k in UInt64(0)..<4 {
                        try log.persist(entries: entries(k * 10 + 1...k * 10 + 10, term: 1, size: 60), hardState: nil)
                    }
                    try log.persist(entries: [], hardState: before)
                    fs.failAtOperation = fs.operationCount + step
                    let error = waitFor { completion in
                        switch operation {
                        case .compaction:
                            log.compact(
                                through: LogIndex(20), term: Term(1), retaining: entries(21...40, term: 1, size: 60),
                                completion: completion)
                        case .reset:
                            log.reset(to: LogIndex(25), term: Term(2), hardState: resetState, completion: completion)
                        }
                    }
                    if error != nil { finishedAll = false }
                    var rng = SplitMix64(seed: seed &* 7919 &+ UInt64(step))
                    let survivor = fs.powerCut(using: &rng)
                    let reopened = try WriteAheadLog(
                        directory: "/node", options: Self.smallSegments(), fileSystem: survivor)
                    defer { reopened.close() }
                    let state = reopened.initialState()
                    let isNew = state == new
                    #expect(isNew || state == old, "cut at step \(step), seed \(seed): \(state)")
                    if error == nil { #expect(isNew, "completed, then lost (step \(step), seed \(seed))") }
                    if isNew { sawNew = true } else if state == old { sawOld = true }
                }
            }
            if finishedAll { break }
            step += 1
        }
        #expect(step > 3, "the \(operation) took only \(step) operations")
        #expect(sawOld && sawNew)
    }
}
