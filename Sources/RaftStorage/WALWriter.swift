import NIOConcurrencyHelpers
import RaftCore

/// One call to `WriteAheadLog.persist` (or `compact`), queued for the writer thread.
struct WriteRequest {
    var entries: [Entry]
    var hardState: HardState?
    /// A compaction: start a new segment at this base, holding the entries after it, and delete the older ones.
    var compaction: Compaction?
    var completion: @Sendable ((any Error)?) -> Void

    init(
        entries: [Entry], hardState: HardState?, compaction: Compaction? = nil,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        self.entries = entries
        self.hardState = hardState
        self.compaction = compaction
        self.completion = completion
    }
}

/// What a compaction request asks for.
struct Compaction {
    var index: LogIndex
    var term: Term
    /// The hard state the new segment records: nil for the latest one written (or recovered). For a compaction
    /// given one, the latest written still wins (the caller's may predate writes queued before it); a reset's is
    /// recorded as given (it is the newest: nothing queued before it can be later).
    var hardState: HardState?
    /// A reset (a snapshot installed): the log becomes empty after `index`, whatever it held, the entries beyond
    /// `index` included; nothing is retained. A compaction keeps the entries after `index` (the request's).
    var reset: Bool
}

/// The writing half of a `WriteAheadLog`: the segment being appended to, and how a batch of requests reaches it —
/// encoded into one buffer, written with one `pwrite`, synced with one `fdatasync` (group commit).
///
/// Not thread-safe: only the log's writer thread uses it, and `init` before that thread starts.
final class SegmentWriter {
    let layout: DataDirectory
    let options: WriteAheadLog.Options
    /// The log's counters, which other threads read.
    let counters: NIOLockedValueBox<WriteAheadLog.Statistics>
    var fileSystem: any FileSystem { layout.fileSystem }

    private(set) var file: OpenFile?
    private(set) var path = ""
    private(set) var sequence: UInt64 = 0
    private var size = 0
    private var salt = Records.Salt(0)
    /// Whether the current segment was written since its last sync.
    private var unsynced = false
    var lastIndex = LogIndex.zero
    var snapshotIndex = LogIndex.zero
    private var buffer: [UInt8] = []
    private var lastWrittenHardState: HardState?
    /// The hard state the log held when it was opened.
    var recoveredHardState = HardState()
    /// The hard state the log holds now.
    private var latestHardState: HardState { lastWrittenHardState ?? recoveredHardState }

    init(layout: DataDirectory, options: WriteAheadLog.Options, counters: NIOLockedValueBox<WriteAheadLog.Statistics>) {
        self.layout = layout
        self.options = options
        self.counters = counters
    }

    /// Goes on appending to an existing segment, open as `file`, whose records end at `size`.
    func resume(_ file: OpenFile, path: String, sequence: UInt64, size: Int, salt: Records.Salt) {
        self.file = file
        self.path = path
        self.sequence = sequence
        self.size = size
        self.salt = salt
    }

    /// Closes the segment's file.
    func close() {
        if let file {
            fileSystem.close(file)
            self.file = nil
        }
    }

    /// Writes a batch with one write (a compaction, or a segment filling up, adds a flush point before it). Returns,
    /// per request, the error that refused it, if any (an append that would leave a hole); throws when the disk
    /// fails, which fails the whole log. The last write is synced by `syncSegment`.
    func write(_ batch: [WriteRequest]) throws(StorageFailure) -> [StorageFailure?] {
        buffer.removeAll(keepingCapacity: true)
        var refused = [StorageFailure?](repeating: nil, count: batch.count)
        for (k, request) in batch.enumerated() {
            if let compaction = request.compaction {
                try flushBuffer()
                try syncSegment()
                if compaction.reset {
                    try reset(compaction.index, compaction.term, compaction.hardState ?? latestHardState)
                    continue
                }
                // Compacted through there already (a snapshot was installed since): nothing to do.
                if compaction.index <= snapshotIndex && compaction.hardState == nil { continue }
                guard request.entries.first.map({ $0.index == compaction.index.next }) ?? true,
                    (request.entries.last?.index ?? compaction.index) >= lastIndex
                else {
                    refused[k] = StorageFailure(
                        .invalidAppend,
                        "a compaction through \(compaction.index) must retain the entries after it, "
                            + "up to \(lastIndex)", file: layout.path)
                    continue
                }
                try compact(
                    compaction.index, compaction.term, lastWrittenHardState ?? compaction.hardState ?? latestHardState,
                    retaining: request.entries)
                continue
            }
            if let first = request.entries.first {
                guard first.index <= lastIndex.next, first.index > snapshotIndex else {
                    refused[k] = StorageFailure(
                        .invalidAppend,
                        "append at \(first.index) does not follow the log, which ends at \(lastIndex) "
                            + "(compacted through \(snapshotIndex))", file: layout.path)
                    continue
                }
            }
            // Records carry the salt of the segment they land in and the offset their write begins at, so the
            // segment is chosen before they are encoded: if this request would overfill a segment that holds
            // something, what came before it is written and synced, and a new segment takes it.
            let mark = buffer.count
            encode(request)
            if size + buffer.count > options.segmentBytes && (size > Records.segmentHeaderSize || mark > 0) {
                buffer.removeSubrange(mark...)
                try flushBuffer()
                try syncSegment()
                try startSegment(sequence: sequence + 1)
                encode(request)
            }
            if let last = request.entries.last { lastIndex = last.index }
            if let hardState = request.hardState { lastWrittenHardState = hardState }
        }
        try flushBuffer()
        return refused
    }

    /// Appends a request's records to the buffer: its entries, then its hard state.
    private func encode(_ request: WriteRequest) {
        let batch = UInt64(size)
        if !request.entries.isEmpty {
            Records.append(entries: request.entries, batch: batch, salt: salt, to: &buffer)
        }
        if let hardState = request.hardState {
            Records.append(.hardState(hardState), batch: batch, salt: salt, to: &buffer)
        }
    }

    /// Writes what the buffer holds at the end of the current segment (one `pwrite`), not yet synced.
    private func flushBuffer() throws(StorageFailure) {
        guard !buffer.isEmpty else { return }
        guard let file else { throw StorageFailure(.closed, "no segment is open", file: path) }
        try fileSystem.write(buffer, to: file, at: size, path: path)
        size += buffer.count
        unsynced = true
        let written = buffer.count
        buffer.removeAll(keepingCapacity: true)
        counters.withLockedValue { $0.bytes += written }
    }

    /// Makes everything written to the current segment durable (one `fdatasync`).
    func syncSegment() throws(StorageFailure) {
        guard unsynced, let file else { return }
        if options.sync {
            try fileSystem.syncData(file, path: path)
        }
        unsynced = false
        let synced = options.sync ? 1 : 0
        counters.withLockedValue { $0.syncs += synced }
    }

    /// Closes the current segment (it is already durable) and starts the next, durably named in the directory.
    /// A segment is written under a temporary name and renamed into place once durable, so that a segment that
    /// exists under its name always holds its header and first records whole (a compaction's base above all).
    /// `firstRecords` are encoded with the new segment's salt, as a write beginning right after the header.
    func startSegment(
        sequence: UInt64, firstRecords: (Records.Salt) -> [UInt8] = { _ in [] }
    ) throws(StorageFailure) {
        let path = layout.segmentPath(sequence)
        let temporary = path + ".tmp"
        let salt = Records.Salt.random()
        try fileSystem.remove(temporary)
        let file = try fileSystem.open(temporary, .createNew)
        var header: [UInt8] = []
        Records.appendSegmentHeader(sequence: sequence, salt: salt, to: &header)
        header.append(contentsOf: firstRecords(salt))
        do throws(StorageFailure) {
            // Preallocated: a segment always ends in zeros, which replay reads as its end. Without the space for a
            // whole segment the log stops here, cleanly, rather than run out in the middle of a write.
            let length = max(options.segmentBytes, header.count)
            do {
                try fileSystem.preallocate(file, length: length, path: temporary)
            } catch let failure where failure.kind == .noSpace {
                throw StorageFailure(
                    .noSpace,
                    "no space left on device for a new log segment of \(length) bytes; the log accepts no "
                        + "more writes (everything acknowledged is kept): free space, then restart the node",
                    file: path)
            }
            try fileSystem.write(header, to: file, at: 0, path: temporary)
            try fileSystem.syncData(file, path: temporary)
            try fileSystem.rename(temporary, to: path)
            try fileSystem.syncDirectory(layout.walDirectory)
        } catch {
            fileSystem.close(file)
            // A segment never renamed into place is nothing; if it cannot be removed now, the next open does it.
            try? fileSystem.remove(temporary)
            throw error
        }
        if let current = self.file { fileSystem.close(current) }
        self.file = file
        self.path = path
        self.sequence = sequence
        self.salt = salt
        size = header.count
        unsynced = false
        counters.withLockedValue { $0.segmentsStarted += 1 }
    }

    /// The compaction itself: forgets every entry up to `index`, which a snapshot now covers, by starting a new
    /// segment whose first records say where the log begins, what the hard state is, and the `retained` entries
    /// after `index`; then deletes the older segments.
    private func compact(
        _ index: LogIndex, _ term: Term, _ hardState: HardState, retaining retained: [Entry]
    ) throws(StorageFailure) {
        try startBaseSegment(index, term, hardState, retaining: retained)
        snapshotIndex = max(snapshotIndex, index)
        lastIndex = retained.last?.index ?? max(lastIndex, index)
        lastWrittenHardState = hardState
        try deleteSegments(before: sequence)
    }

    /// A reset: the log becomes empty after `index` (whatever it held before, beyond `index` too), with
    /// `hardState`. The same new base segment as a compaction's, with no entries: replay begins at the latest
    /// segment that starts with a base (older ones are deleted, here or, after a crash, on the next open), so no
    /// entry of the old segments survives it.
    private func reset(_ index: LogIndex, _ term: Term, _ hardState: HardState) throws(StorageFailure) {
        try startBaseSegment(index, term, hardState, retaining: [])
        snapshotIndex = index
        lastIndex = index
        lastWrittenHardState = hardState
        try deleteSegments(before: sequence)
    }

    /// Starts the next segment, durably, with a base record, the hard state and `retained` as its first write.
    private func startBaseSegment(
        _ index: LogIndex, _ term: Term, _ hardState: HardState, retaining retained: [Entry]
    ) throws(StorageFailure) {
        try startSegment(sequence: sequence + 1) { salt in
            var first: [UInt8] = []
            let batch = UInt64(Records.segmentHeaderSize)
            Records.append(.base(index: index, term: term), batch: batch, salt: salt, to: &first)
            Records.append(.hardState(hardState), batch: batch, salt: salt, to: &first)
            Records.append(entries: retained, batch: batch, salt: salt, to: &first)
            return first
        }
    }

    /// Deletes every segment before `current` (the new base segment), and makes that durable.
    private func deleteSegments(before current: UInt64) throws(StorageFailure) {
        // Oldest first: a crash part way leaves a contiguous run ending at the new base segment, which replay
        // recognises and finishes deleting.
        for sequence in try fileSystem.list(layout.walDirectory).compactMap(DataDirectory.sequence(ofSegment:)).sorted()
        where sequence < current {
            try fileSystem.remove(layout.segmentPath(sequence))
        }
        try fileSystem.syncDirectory(layout.walDirectory)
    }
}
