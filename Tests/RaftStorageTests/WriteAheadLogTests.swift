import Foundation
import RaftCore
import RaftStorage
import Testing

/// A fresh directory under the system's temporary directory, removed at the end of the test.
final class TemporaryDirectory {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("raftlite-\(UUID().uuidString)").path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var segments: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path + "/wal")) ?? []).filter { $0.hasSuffix(".log") }
            .sorted().map { path + "/wal/" + $0 }
    }
}

func entries(_ range: ClosedRange<UInt64>, term: UInt64, size: Int = 16) -> [Entry] {
    range.map {
        Entry(term: Term(term), index: LogIndex($0), data: Array(repeating: UInt8(truncatingIfNeeded: $0), count: size))
    }
}

func bytes(of path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

/// The size of a segment's header (data format 2).
let segmentHeaderSize = 32

/// The offsets of the records in a segment, and where the last one ends (segments are preallocated: zeros follow).
func recordOffsets(_ data: [UInt8]) -> (starts: [Int], end: Int) {
    var offset = segmentHeaderSize
    var starts: [Int] = []
    while offset + 12 <= data.count {
        let length =
            Int(data[offset]) | Int(data[offset + 1]) << 8 | Int(data[offset + 2]) << 16 | Int(data[offset + 3]) << 24
        guard length > 0 else { break }
        starts.append(offset)
        offset += 12 + length
    }
    return (starts, offset)
}
func write(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

@Suite struct WriteAheadLogTests {
    @Test func whatIsPersistedIsWhatIsReadBack() throws {
        let dir = TemporaryDirectory()
        let hs = HardState(term: Term(3), votedFor: NodeID(2), commit: LogIndex(7))
        do {
            let log = try WriteAheadLog(directory: dir.path)
            #expect(log.initialState() == PersistentState())
            try log.persist(entries: entries(1...10, term: 1), hardState: nil)
            try log.persist(entries: entries(11...12, term: 3), hardState: hs)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        let state = log.initialState()
        #expect(state.hardState == hs)
        #expect(state.entries == entries(1...10, term: 1) + entries(11...12, term: 3))
        #expect(log.report.tornBytesCut == 0)
        let format = try String(contentsOfFile: dir.path + "/FORMAT", encoding: .utf8)
        #expect(format == "raftlite-data 2\n")
    }

    @Test func anAppendAtOrBelowTheEndCutsTheLogThereAsARepairedFollowerNeeds() throws {
        let dir = TemporaryDirectory()
        do {
            let log = try WriteAheadLog(directory: dir.path)
            try log.persist(entries: entries(1...10, term: 1), hardState: nil)
            try log.persist(entries: entries(6...8, term: 2), hardState: nil)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().entries == entries(1...5, term: 1) + entries(6...8, term: 2))
    }

    @Test func anAppendThatLeavesAHoleIsRefusedAndTheLogGoesOn() throws {
        let dir = TemporaryDirectory()
        let log = try WriteAheadLog(directory: dir.path)
        try log.persist(entries: entries(1...3, term: 1), hardState: nil)
        #expect(throws: StorageFailure.self) { try log.persist(entries: entries(9...9, term: 1), hardState: nil) }
        try log.persist(entries: entries(4...4, term: 1), hardState: nil)
        log.close()
        let reopened = try WriteAheadLog(directory: dir.path)
        defer { reopened.close() }
        #expect(reopened.initialState().lastIndex == LogIndex(4))
    }

    @Test func manyConcurrentWritersShareSyncs() throws {
        let dir = TemporaryDirectory()
        let log = try WriteAheadLog(directory: dir.path)
        let allocator = NSLock()
        nonisolated(unsafe) var next: UInt64 = 1
        let finished = DispatchGroup()
        // 64 threads, each waiting for its own write to be durable before making the next.
        for _ in 0..<64 {
            finished.enter()
            Thread {
                for _ in 0..<50 {
                    let done = DispatchSemaphore(value: 0)
                    allocator.lock()
                    let index = next
                    next += 1
                    log.persist(entries: entries(index...index, term: 1), hardState: nil) { _ in done.signal() }
                    allocator.unlock()
                    done.wait()
                }
                finished.leave()
            }.start()
        }
        finished.wait()
        let stats = log.statistics
        log.close()
        #expect(stats.writes == 3200)
        #expect(stats.syncs < stats.writes / 2, "group commit: \(stats.syncs) syncs for \(stats.writes) writes")
        let reopened = try WriteAheadLog(directory: dir.path)
        defer { reopened.close() }
        #expect(reopened.initialState().entries == entries(1...3200, term: 1))
    }

    @Test func segmentsRotateAndReplayInOrder() throws {
        let dir = TemporaryDirectory()
        var options = WriteAheadLog.Options()
        options.segmentBytes = 4096
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            for k in UInt64(0)..<100 {
                try log.persist(entries: entries(k * 10 + 1...k * 10 + 10, term: 1, size: 40), hardState: nil)
            }
            log.close()
        }
        #expect(dir.segments.count > 10)
        let log = try WriteAheadLog(directory: dir.path, options: options)
        defer { log.close() }
        #expect(log.initialState().entries == entries(1...1000, term: 1, size: 40))
    }

    @Test func compactionDeletesOldSegmentsAndTheLogStartsAfterTheSnapshot() throws {
        let dir = TemporaryDirectory()
        var options = WriteAheadLog.Options()
        options.segmentBytes = 2048
        let hs = HardState(term: Term(1), votedFor: nil, commit: LogIndex(300))
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            for k in UInt64(0)..<30 {
                try log.persist(entries: entries(k * 10 + 1...k * 10 + 10, term: 1, size: 40), hardState: nil)
            }
            let before = dir.segments.count
            try log.compact(
                through: LogIndex(250), term: Term(1), hardState: hs,
                retaining: entries(251...300, term: 1, size: 40))
            #expect(dir.segments.count == 1, "from \(before) segments to one")
            try log.persist(entries: entries(301...310, term: 2), hardState: nil)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        defer { log.close() }
        let state = log.initialState()
        #expect(state.snapshotIndex == LogIndex(250))
        #expect(state.entries == entries(251...300, term: 1, size: 40) + entries(301...310, term: 2))
        #expect(state.hardState == hs)
    }

    @Test func aSecondProcessCannotOpenTheSameDirectory() throws {
        let dir = TemporaryDirectory()
        let log = try WriteAheadLog(directory: dir.path)
        #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        log.close()
        let again = try WriteAheadLog(directory: dir.path)
        again.close()
    }

    @Test func aDirectoryOfAnotherFormatIsRefused() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        try write(Array("raftlite-data 9\n".utf8), to: dir.path + "/FORMAT")
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .unsupportedFormat)
    }

    @Test func aDirectoryOfDataFormatOneIsRefusedSayingWhatToDo() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        try write(Array("raftlite-data 1\n".utf8), to: dir.path + "/FORMAT")
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .unsupportedFormat)
        let text = error.map { "\($0)" } ?? ""
        #expect(
            text.contains("data format 1") && text.contains("cannot read") && text.contains("no migration"), "\(text)")
        #expect(text.contains("new, empty data directories"), "\(text)")
    }

    /// Twenty records of 16-byte entries: 10 entries each, then a hard state each time.
    static func fill(_ dir: TemporaryDirectory, options: WriteAheadLog.Options = .init()) {
        guard let log = try? WriteAheadLog(directory: dir.path, options: options) else { return }
        for k in UInt64(0)..<20 {
            try? log.persist(
                entries: entries(k * 10 + 1...k * 10 + 10, term: 1),
                hardState: HardState(term: Term(1), votedFor: nil, commit: LogIndex(k * 10)))
        }
        log.close()
    }
}

/// The documented outcome of each kind of damage to the files.
@Suite struct FaultInjectionTests {
    @Test func aRecordCutShortAtTheTailIsCutAndEverythingBeforeItIsKept() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        let (starts, end) = recordOffsets(data)
        let last = try #require(starts.last)
        // The last hard-state record, half written: the bytes after its middle never reached the disk.
        for k in (last + (end - last) / 2)..<end { data[k] = 0 }
        try write(data, to: segment)
        let log = try WriteAheadLog(directory: dir.path)
        let state = log.initialState()
        #expect(state.lastIndex == LogIndex(200), "the last entries record is whole")
        #expect(state.hardState.commit == LogIndex(180), "the torn hard state is gone; the one before is kept")
        #expect(log.report.tornBytesCut > 0 && log.report.tornBytesCut <= end - last)
        #expect(log.report.tornRecordAt?.file == segment)
        #expect(log.report.tornRecordAt?.offset == last)
        try log.persist(entries: entries(201...201, term: 1), hardState: nil)
        log.close()
        let reopened = try WriteAheadLog(directory: dir.path)
        defer { reopened.close() }
        #expect(reopened.initialState().lastIndex == LogIndex(201))
        #expect(reopened.report.tornBytesCut == 0)
    }

    @Test func aFileCutShortInTheMiddleOfItsLastRecordIsCut() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        let data = try bytes(of: segment)
        let (starts, _) = recordOffsets(data)
        let last = try #require(starts.last)
        try write(Array(data.prefix(last + 12)), to: segment)  // as if the file had been extended only so far
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().lastIndex == LogIndex(200))
        #expect(log.initialState().hardState.commit == LogIndex(180))
        #expect(log.report.tornRecordAt?.offset == last)
    }

    @Test func zerosAfterTheLastRecordAreTheEndOfTheLog() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        // Segments are preallocated, so they always end in zeros; more of them change nothing.
        try write(try bytes(of: segment) + [UInt8](repeating: 0, count: 4096), to: segment)
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().lastIndex == LogIndex(200))
        #expect(log.initialState().hardState.commit == LogIndex(190))
        #expect(log.report.tornBytesCut == 0)
    }

    @Test func aChecksumFailureInTheLastRecordIsATornWriteAndIsCut() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        let (_, end) = recordOffsets(data)
        data[end - 3] ^= 0x10
        try write(data, to: segment)
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().lastIndex == LogIndex(200))
        #expect(log.initialState().hardState.commit == LogIndex(180))
    }

    @Test func flippedBitsInTheMiddleStopTheNodeWithTheFileAndOffset() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.first)
        var data = try bytes(of: segment)
        // The first record starts right after the header; damage its payload (after its 12-byte header, its batch
        // offset and its type).
        data[segmentHeaderSize + 12 + 9 + 20] ^= 0x01
        try write(data, to: segment)
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == segment)
        #expect(error?.offset == segmentHeaderSize)
        #expect("\(error.map { "\($0)" } ?? "")".contains("checksum"))
        // Nothing was cut: the damaged file is left as it was, for an operator to look at.
        #expect(try bytes(of: segment) == data)
    }

    @Test func aMissingSegmentStopsTheNodeNamingIt() throws {
        let dir = TemporaryDirectory()
        var options = WriteAheadLog.Options()
        options.segmentBytes = 1024
        WriteAheadLogTests.fill(dir, options: options)
        let segments = dir.segments
        #expect(segments.count >= 3)
        try FileManager.default.removeItem(atPath: segments[1])
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path, options: options) }
        #expect(error?.kind == .missingSegment)
        #expect(error?.file == segments[1])
        // Losing the first segment (not after a compaction) is caught too.
        let dir2 = TemporaryDirectory()
        WriteAheadLogTests.fill(dir2, options: options)
        try FileManager.default.removeItem(atPath: try #require(dir2.segments.first))
        let error2 = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir2.path, options: options) }
        #expect(error2?.kind == .missingSegment)
    }

    @Test func damageInAnEarlierSegmentIsNeverTakenForATornTail() throws {
        let dir = TemporaryDirectory()
        var options = WriteAheadLog.Options()
        options.segmentBytes = 1024
        WriteAheadLogTests.fill(dir, options: options)
        let segment = dir.segments[0]
        let data = try bytes(of: segment)
        let (starts, _) = recordOffsets(data)
        let last = try #require(starts.last)
        // Cut short: in the last segment this would be a torn write; here it is damage.
        try write(Array(data.prefix(last + 12)), to: segment)
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path, options: options) }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == segment)
    }

    @Test func damageFollowedByALaterWriteIsDamageNotATornWrite() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        let (starts, _) = recordOffsets(data)
        // The hard state of the second-to-last write fails its checksum; the last write is sound: the damaged one had
        // been synced before it, so the log was damaged in place.
        let victim = starts[starts.count - 3]
        data[victim + 24] ^= 0x04
        try write(data, to: segment)
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == segment)
        #expect(error?.offset == victim)
        #expect("\(error.map { "\($0)" } ?? "")".contains("a later write (at offset \(starts[starts.count - 2]))"))
        #expect(try bytes(of: segment) == data, "nothing was cut or zeroed")
    }

    @Test func damageFollowedOnlyBySoundRecordsOfTheSameWriteIsATornWrite() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        let (starts, _) = recordOffsets(data)
        // The last write holds two records, its entries and its hard state: a crash kept the hard state's page but
        // not the entries'. Nothing of that write was acknowledged.
        let victim = starts[starts.count - 2]
        data[victim + 30] ^= 0x04
        try write(data, to: segment)
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().lastIndex == LogIndex(190))
        #expect(log.initialState().hardState.commit == LogIndex(180))
        #expect(log.report.tornRecordAt?.offset == victim)
    }

    @Test func aDamagedLengthIsDamageNotAnInvitationToCutTheWholeLog() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        // A high bit of the first record's length: it claims to run past everything.
        data[segmentHeaderSize + 3] ^= 0x08
        try write(data, to: segment)
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .corrupt)
        #expect(error?.offset == segmentHeaderSize)
        #expect("\(error.map { "\($0)" } ?? "")".contains("header"))
        #expect(try bytes(of: segment) == data, "nothing was cut or zeroed")
    }

    @Test func aWriteTornAcrossPagesIsCutEvenIfALaterPageReachedTheDisk() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        let segment = try #require(dir.segments.last)
        var data = try bytes(of: segment)
        let (starts, end) = recordOffsets(data)
        let last = try #require(starts.last)
        // The last record's first bytes never reached the disk, but some later bytes (of an unfinished write) did.
        for k in last..<(last + 8) { data[k] = 0 }
        for k in (end + 200)..<(end + 260) { data[k] = 0xAB }
        try write(data, to: segment)
        let log = try WriteAheadLog(directory: dir.path)
        defer { log.close() }
        #expect(log.initialState().lastIndex == LogIndex(200))
        #expect(log.initialState().hardState.commit == LogIndex(180))
        #expect(log.report.tornRecordAt?.offset == last)
        // The torn bytes were kept aside for an operator.
        let kept = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/wal").filter {
            $0.hasPrefix("torn-")
        }
        #expect(kept.count == 1)
    }

    @Test func aCompactionInterruptedWhileDeletingIsFinishedOnRestart() throws {
        let dir = TemporaryDirectory()
        var options = WriteAheadLog.Options()
        options.segmentBytes = 2048
        let hs = HardState(term: Term(1), votedFor: nil, commit: LogIndex(300))
        WriteAheadLogTests.fill(dir, options: options)
        let before = dir.segments
        let saved = try before.map { ($0, try bytes(of: $0)) }
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            try log.compact(
                through: LogIndex(150), term: Term(1), hardState: hs, retaining: entries(151...200, term: 1))
            log.close()
        }
        // Put the old segments back, as if the crash came before they were all deleted.
        for (path, data) in saved.prefix(saved.count - 1) { try write(data, to: path) }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        defer { log.close() }
        #expect(log.initialState().snapshotIndex == LogIndex(150))
        #expect(log.initialState().entries == entries(151...200, term: 1))
        #expect(dir.segments.count == 1)
    }

    @Test func anInitialisedDirectoryWhoseSegmentsVanishedIsRefused() throws {
        let dir = TemporaryDirectory()
        WriteAheadLogTests.fill(dir)
        for segment in dir.segments { try FileManager.default.removeItem(atPath: segment) }
        let error = #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir.path) }
        #expect(error?.kind == .missingSegment)
    }
}
