import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// A disk that fills up (the simulated file system's capacity): the log fails cleanly, and a node can always restart.
@Suite struct FullDiskTests {
    static func options() -> WriteAheadLog.Options {
        var options = WriteAheadLog.Options()
        options.segmentBytes = 8192
        return options
    }

    static func segments(_ fs: SimulatedFileSystem) -> [String] {
        fs.allFiles().filter { $0.hasPrefix("/node/wal/") && $0.hasSuffix(".log") }
    }

    /// Writes 100-byte entries until a write fails; returns the last acknowledged index and the error.
    static func fillUntilAWriteFails(_ log: WriteAheadLog, from first: UInt64) -> (UInt64, (any Error)?) {
        var index = first
        while index < first + 10_000 {
            do {
                try log.persist(entries: entries(index...index, term: 1, size: 100), hardState: nil)
            } catch {
                return (index - 1, error)
            }
            index += 1
        }
        return (index - 1, nil)
    }

    @Test func aNewSegmentWithoutSpaceFailsTheLogCleanlyAndNothingAcknowledgedIsLost() throws {
        let fs = SimulatedFileSystem()
        let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        try log.persist(entries: entries(1...1, term: 1, size: 100), hardState: nil)
        // Room for what is there and a little more, not for another segment.
        fs.capacity = fs.usedBytes + 100
        let before = Self.segments(fs)
        let (last, error) = Self.fillUntilAWriteFails(log, from: 2)
        let failure = try #require(error as? StorageFailure)
        #expect(failure.kind == .noSpace)
        #expect(failure.description.contains("no space left on device for a new log segment"), "\(failure)")
        #expect(Self.segments(fs) == before, "no segment was half made")
        // Later writes are refused: the log failed.
        #expect(throws: StorageFailure.self) {
            try log.persist(entries: entries(last + 1...last + 1, term: 1), hardState: nil)
        }
        log.close()

        // A restart on the still-full disk opens, with everything acknowledged.
        let reopened = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        #expect(reopened.initialState().lastIndex == LogIndex(last))
        #expect(reopened.initialState().entries == entries(1...last, term: 1, size: 100))
        // Once space is freed, writing works again, into new segments too.
        fs.capacity = nil
        try reopened.persist(entries: entries(last + 1...last + 200, term: 1, size: 100), hardState: nil)
        reopened.close()
        let again = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        defer { again.close() }
        #expect(again.initialState().entries == entries(1...last + 200, term: 1, size: 100))
        #expect(Self.segments(fs).count > before.count)
    }

    /// Makes /node/wal/<sequence> an empty (all-zero) segment, durably, as a crash while creating it could leave.
    static func makeEmptySegment(_ fs: SimulatedFileSystem, _ sequence: Int) throws {
        let path = "/node/wal/" + String(repeating: "0", count: 20 - String(sequence).count) + "\(sequence).log"
        let file = try fs.open(path, .createNew)
        try fs.write([UInt8](repeating: 0, count: 100), to: file, at: 0, path: path)
        try fs.syncData(file, path: path)
        try fs.syncDirectory("/node/wal")
        fs.close(file)
    }

    @Test func aSegmentLeftEmptyByACrashNeedsNoSpaceToRestartAfter() throws {
        let fs = SimulatedFileSystem()
        do {
            let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
            try log.persist(entries: entries(1...10, term: 1, size: 100), hardState: nil)
            log.close()
        }
        try Self.makeEmptySegment(fs, 2)
        fs.capacity = fs.usedBytes
        let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        #expect(log.initialState().entries == entries(1...10, term: 1, size: 100))
        #expect(log.report.tornRecordAt?.offset == 0)
        #expect(Self.segments(fs).count == 1, "the empty segment is gone; the log goes on in the one before")
        fs.capacity = nil
        try log.persist(entries: entries(11...200, term: 1, size: 100), hardState: nil)
        log.close()
        let again = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        defer { again.close() }
        #expect(again.initialState().entries == entries(1...200, term: 1, size: 100))
    }

    @Test func anOnlySegmentLeftEmptyOnAFullDiskIsAClearErrorUntilSpaceIsFreed() throws {
        let fs = SimulatedFileSystem()
        do {
            let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
            log.close()
        }
        fs.setContents(of: "/node/wal/00000000000000000001.log", to: [UInt8](repeating: 0, count: 50))
        fs.capacity = fs.usedBytes
        let error = #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        }
        #expect(error?.kind == .noSpace)
        #expect(error?.description.contains("no space left on device") == true, "\(error.map { "\($0)" } ?? "")")
        fs.capacity = nil
        let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        defer { log.close() }
        try log.persist(entries: entries(1...1, term: 1), hardState: nil)
    }

    @Test func aNodeRestartsOnAFullDiskEvenWithATornTailToCut() throws {
        let fs = SimulatedFileSystem()
        let log = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: fs)
        try log.persist(entries: entries(1...20, term: 1, size: 100), hardState: nil)
        fs.capacity = fs.usedBytes
        // The power is cut while a write is in the page cache: only its last page reaches the disk.
        fs.failAtOperation = fs.operationCount + 2
        #expect(throws: StorageFailure.self) {
            try log.persist(entries: entries(21...40, term: 1, size: 100), hardState: nil)
        }
        log.close()
        let after = fs.powerCut(writes: { write in .pages([write.pages - 1]) })
        #expect(after.capacity == fs.capacity)

        let reopened = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: after)
        #expect(reopened.initialState().entries == entries(1...20, term: 1, size: 100))
        #expect(reopened.report.tornBytesCut > 0)
        #expect(
            reopened.report.warnings.contains { $0.contains("could not be kept aside") }, "\(reopened.report.warnings)")
        after.capacity = nil
        try reopened.persist(entries: entries(21...21, term: 2), hardState: nil)
        reopened.close()
        let again = try WriteAheadLog(directory: "/node", options: Self.options(), fileSystem: after)
        defer { again.close() }
        #expect(again.initialState().lastIndex == LogIndex(21))
    }
}
