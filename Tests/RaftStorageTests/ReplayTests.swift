import RaftCore
import Testing

@testable import RaftStorage

/// The pure replay (`Replay.recover`): segment bytes in, the state they hold and where the log goes on out — no files.
@Suite struct ReplayTests {
    static let wal = "/node/wal"
    static let salt = Records.Salt(0x1234_5678_9ABC_DEF0)

    /// Builds segments as the writer does: each write's records carry the offset at which the write began.
    struct SegmentBuilder {
        var bytes: [UInt8] = []
        /// Where each write began.
        var writes: [Int] = []

        init(sequence: UInt64, salt: Records.Salt = ReplayTests.salt) {
            Records.appendSegmentHeader(sequence: sequence, salt: salt, to: &bytes)
        }

        mutating func write(_ entries: [Entry], _ hardState: HardState? = nil, salt: Records.Salt = ReplayTests.salt) {
            let batch = UInt64(bytes.count)
            writes.append(bytes.count)
            if !entries.isEmpty { Records.append(entries: entries, batch: batch, salt: salt, to: &bytes) }
            if let hardState { Records.append(.hardState(hardState), batch: batch, salt: salt, to: &bytes) }
        }

        /// The segment as it is on disk: preallocated, so zeros after the records.
        func preallocated(to size: Int = 4096) -> [UInt8] {
            bytes + [UInt8](repeating: 0, count: max(0, size - bytes.count))
        }
    }

    static func segmentPath(_ sequence: UInt64) -> String { wal + "/" + DataDirectory.segmentName(sequence) }

    @Test func aCleanLogIsReadBackWhole() throws {
        var segment = SegmentBuilder(sequence: 1)
        segment.write(entries(1...3, term: 1), HardState(term: Term(1), votedFor: NodeID(2)))
        segment.write(entries(4...5, term: 1), HardState(term: Term(1), votedFor: NodeID(2), commit: LogIndex(3)))
        segment.write([], HardState(term: Term(2)))
        let end = segment.bytes.count
        let recovered = try #require(try Replay.recover([(1, segment.preallocated())], walDirectory: Self.wal))
        #expect(
            recovered.state == PersistentState(hardState: HardState(term: Term(2)), entries: entries(1...5, term: 1)))
        #expect(recovered.segments == 1)
        #expect(recovered.records == 5)
        #expect(recovered.resume == .append(sequence: 1, end: end, salt: Self.salt, cut: nil))
    }

    @Test func aLogOverSeveralSegmentsWithAConflictIsReadBackWhole() throws {
        var first = SegmentBuilder(sequence: 1)
        first.write(entries(1...4, term: 1), HardState(term: Term(1)))
        let otherSalt = Records.Salt(99)
        var second = SegmentBuilder(sequence: 2, salt: otherSalt)
        // A new leader's entries replace 3 and 4.
        second.write(entries(3...3, term: 2), HardState(term: Term(2)), salt: otherSalt)
        let recovered = try #require(
            try Replay.recover([(1, first.bytes), (2, second.preallocated())], walDirectory: Self.wal))
        #expect(recovered.state.entries == entries(1...2, term: 1) + entries(3...3, term: 2))
        #expect(recovered.state.hardState == HardState(term: Term(2)))
        #expect(recovered.resume == .append(sequence: 2, end: second.bytes.count, salt: otherSalt, cut: nil))
    }

    @Test func aTornLastWriteIsCut() throws {
        var segment = SegmentBuilder(sequence: 1)
        segment.write(entries(1...2, term: 1), HardState(term: Term(1)))
        segment.write(entries(3...6, term: 1, size: 300))
        let torn = segment.writes[1]
        // The power went out during the last write: its end never reached the disk.
        var bytes = segment.preallocated()
        let lastNonZero = segment.bytes.count - 40
        for k in lastNonZero..<segment.bytes.count { bytes[k] = 0 }
        let recovered = try #require(try Replay.recover([(1, bytes)], walDirectory: Self.wal))
        #expect(
            recovered.state == PersistentState(hardState: HardState(term: Term(1)), entries: entries(1...2, term: 1)))
        #expect(recovered.resume == .append(sequence: 1, end: torn, salt: Self.salt, cut: torn..<lastNonZero))
    }

    @Test func aLastWriteWhosePagesLandedOutOfOrderIsCut() throws {
        var segment = SegmentBuilder(sequence: 1)
        segment.write(entries(1...2, term: 1))
        segment.write(entries(3...6, term: 1, size: 300), HardState(term: Term(1), commit: LogIndex(2)))
        let torn = segment.writes[1]
        // The middle of the last write's entries never reached the disk, its hard state (a later page) did: it is
        // still that write's, so the write is torn, not damage before a later write.
        var bytes = segment.preallocated()
        for k in (torn + 100)..<(torn + 200) { bytes[k] = 0 }
        // The hard state's last bytes are zeros (the high bytes of its commit index).
        let lastNonZero = bytes.withUnsafeBytes { Replay.lastNonZero($0) }
        #expect(lastNonZero > torn + 200 && lastNonZero <= segment.bytes.count)
        let recovered = try #require(try Replay.recover([(1, bytes)], walDirectory: Self.wal))
        #expect(recovered.state == PersistentState(entries: entries(1...2, term: 1)))
        #expect(recovered.resume == .append(sequence: 1, end: torn, salt: Self.salt, cut: torn..<lastNonZero))
    }

    @Test func damageInTheMiddleIsRefused() throws {
        var segment = SegmentBuilder(sequence: 1)
        segment.write(entries(1...2, term: 1))
        segment.write(entries(3...4, term: 1))
        segment.write(entries(5...6, term: 1), HardState(term: Term(1)))
        let damaged = segment.writes[1]
        var bytes = segment.preallocated()
        // A byte of the second write's payload flips, and a later write, which was synced after it, follows.
        bytes[damaged + 30] ^= 0x40
        let error = #expect(throws: StorageFailure.self) {
            try Replay.recover([(1, bytes)], walDirectory: Self.wal)
        }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == Self.segmentPath(1))
        #expect(error?.offset == damaged)
    }

    @Test func damageInAnEarlierSegmentIsRefusedEvenAtItsEnd() throws {
        var first = SegmentBuilder(sequence: 1)
        first.write(entries(1...2, term: 1))
        first.write(entries(3...4, term: 1))
        var bytes = first.bytes
        bytes[bytes.count - 1] ^= 0x01
        var second = SegmentBuilder(sequence: 2)
        second.write(entries(5...5, term: 1))
        let error = #expect(throws: StorageFailure.self) {
            try Replay.recover([(1, bytes), (2, second.preallocated())], walDirectory: Self.wal)
        }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == Self.segmentPath(1))
        #expect(error?.offset == first.writes[1])
    }

    @Test func anEmptyOnlySegmentIsMadeAgain() throws {
        for bytes in [[], [UInt8](repeating: 0, count: 4096)] {
            let recovered = try #require(try Replay.recover([(1, bytes)], walDirectory: Self.wal))
            #expect(recovered.state == PersistentState())
            #expect(recovered.resume == .remake(sequence: 1, bytes: bytes.count))
        }
    }

    @Test func anEmptyLastSegmentIsDroppedForTheOneBefore() throws {
        var first = SegmentBuilder(sequence: 1)
        first.write(entries(1...2, term: 1), HardState(term: Term(1)))
        let recovered = try #require(
            try Replay.recover(
                [(1, first.preallocated()), (2, [UInt8](repeating: 0, count: 10))], walDirectory: Self.wal))
        #expect(recovered.state.entries == entries(1...2, term: 1))
        #expect(
            recovered.resume == .dropEmpty(empty: 2, bytes: 10, sequence: 1, end: first.bytes.count, salt: Self.salt))
    }

    @Test func anEmptyFirstSegmentThatIsNotTheFirstEverIsRefused() {
        let error = #expect(throws: StorageFailure.self) {
            try Replay.recover([(3, [])], walDirectory: Self.wal)
        }
        #expect(error?.kind == .missingSegment)
    }

    @Test func aMissingSegmentIsRefused() {
        var first = SegmentBuilder(sequence: 1)
        first.write(entries(1...1, term: 1))
        var third = SegmentBuilder(sequence: 3)
        third.write(entries(2...2, term: 1))
        let error = #expect(throws: StorageFailure.self) {
            try Replay.recover([(1, first.bytes), (3, third.bytes)], walDirectory: Self.wal)
        }
        #expect(error?.kind == .missingSegment)
        #expect(error?.file == Self.segmentPath(2))
    }

    @Test func noSegmentsHoldNothing() throws {
        #expect(try Replay.recover([], walDirectory: Self.wal) == nil)
    }
}
