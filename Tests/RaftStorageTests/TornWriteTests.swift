import RaftCore
import RaftStorage
import RaftWire
import StorageTesting
import Testing

/// Torn writes made by a power cut (over the simulated file system), as opposed to damage made on purpose.
@Suite struct TornWriteTests {
    static func appendLE<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    /// A well-formed hard-state record, as anyone can compute it: with the format-1 framing (plain CRC-32C) when
    /// `salt` is nil, else with the format-2 framing and checksums seeded with `salt` (a guess), claiming to belong
    /// to a write that began at `batch`.
    static func forgedRecord(salt: UInt64?, batch: UInt64 = 1 << 40) -> [UInt8] {
        var body: [UInt8] = []
        if salt != nil { appendLE(batch, to: &body) }
        body.append(2)  // a hard state
        appendLE(UInt64(99), to: &body)
        body.append(1)
        appendLE(UInt64(7), to: &body)
        appendLE(UInt64(0), to: &body)
        let seed: UInt32 =
            salt.map { s in
                var bytes: [UInt8] = []
                appendLE(s, to: &bytes)
                return CRC32C.checksum(bytes)
            } ?? 0
        var length: [UInt8] = []
        appendLE(UInt32(body.count), to: &length)
        var record = length
        appendLE(length.withUnsafeBytes { CRC32C.checksum($0, continuing: seed) }, to: &record)
        appendLE(body.withUnsafeBytes { CRC32C.checksum($0, continuing: seed) }, to: &record)
        return record + body
    }

    /// A value a key-value client could put: 12 KiB whose later pages hold well-formed records.
    static func valueEmbeddingRecords() -> [UInt8] {
        var value = [UInt8](repeating: 0x41, count: 12_000)
        for (offset, record) in [
            (5000, forgedRecord(salt: nil)), (7000, forgedRecord(salt: 0)),
            (9000, forgedRecord(salt: 0, batch: 0)),
        ] {
            value.replaceSubrange(offset..<(offset + record.count), with: record)
        }
        return value
    }

    static let options = {
        var options = WriteAheadLog.Options()
        options.segmentBytes = 1 << 20
        return options
    }()

    /// Opens a log on a fresh file system with ten entries and a hard state written and acknowledged.
    static func logWithTenEntries() throws -> (SimulatedFileSystem, WriteAheadLog) {
        let fs = SimulatedFileSystem()
        let log = try WriteAheadLog(directory: "/node", options: options, fileSystem: fs)
        try log.persist(
            entries: entries(1...10, term: 1), hardState: HardState(term: Term(1), votedFor: nil, commit: LogIndex(5)))
        return (fs, log)
    }

    /// The next write goes through but its sync fails: the power is cut between the two. Keeps all of the unsynced
    /// write but its first page.
    static func tearTheNextWrite(
        _ fs: SimulatedFileSystem, _ log: WriteAheadLog, entries: [Entry], hardState: HardState?
    ) throws -> SimulatedFileSystem {
        fs.failAtOperation = fs.operationCount + 2
        #expect(throws: (any Error).self) { try log.persist(entries: entries, hardState: hardState) }
        log.close()
        return fs.powerCut(writes: { write in .pages(Set(1..<max(1, write.pages))) })
    }

    @Test func aTornValueThatEmbedsWellFormedRecordsIsCutNotTakenForCorruption() throws {
        let (fs, log) = try Self.logWithTenEntries()
        let value = Entry(term: Term(1), index: LogIndex(11), data: Self.valueEmbeddingRecords())
        let after = try Self.tearTheNextWrite(fs, log, entries: [value], hardState: nil)
        let reopened = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: after)
        defer { reopened.close() }
        let state = reopened.initialState()
        #expect(state.entries == entries(1...10, term: 1))
        #expect(state.hardState == HardState(term: Term(1), votedFor: nil, commit: LogIndex(5)))
        #expect(reopened.report.tornBytesCut > 0)
    }

    @Test func aFirstOpenCutAtAnyOperationLeavesADirectoryThatOpens() throws {
        var operations = 0
        do {
            let fs = SimulatedFileSystem()
            let log = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
            operations = fs.operationCount
            log.close()
        }
        for k in 1...operations {
            let fs = SimulatedFileSystem()
            fs.failAtOperation = k
            #expect(throws: StorageFailure.self) {
                try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
            }
            // Every name made so far survives (the files' unsynced writes do not): an initialisation stopped anywhere.
            let after = fs.powerCut(writes: { _ in .nothing })
            let log = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: after)
            try log.persist(entries: entries(1...1, term: 1), hardState: nil)
            log.close()
        }
    }

    @Test func aTornWriteWhoseLaterRecordsReachedTheDiskIsCutNotTakenForCorruption() throws {
        let (fs, log) = try Self.logWithTenEntries()
        // One write of two records: a 10 KiB entry, then a hard state in the write's last page.
        let big = Entry(term: Term(2), index: LogIndex(11), data: [UInt8](repeating: 0x42, count: 10_000))
        let after = try Self.tearTheNextWrite(
            fs, log, entries: [big], hardState: HardState(term: Term(2), votedFor: NodeID(1), commit: LogIndex(10)))
        let reopened = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: after)
        defer { reopened.close() }
        #expect(reopened.initialState().entries == entries(1...10, term: 1))
        #expect(reopened.initialState().hardState.term == Term(1))
        #expect(reopened.report.tornBytesCut > 0)
    }
}
