import Foundation
import RaftCore

#if canImport(Glibc)
    import Glibc
#endif

/// A node's durable storage: an append-only write-ahead log in segment files, in a data directory of its own.
///
/// ```
/// DIR/FORMAT            "raftlite-data 2": the format version (written last when the directory is set up)
/// DIR/IDENTITY          whose directory it is (`DataDirectoryIdentity`), checked on every open
/// DIR/LOCK              held (flock) while a process has the directory open; holds its pid
/// DIR/wal/00000000000000000001.log, ...   segments, each up to `Options.segmentBytes` (format: `Records`)
/// ```
///
/// Every write goes through one writer thread, which takes everything queued since its last sync, writes it in one
/// `pwrite`, and makes it durable with one `fdatasync` before completing any of it: **group commit** — the more
/// writers wait, the more each sync covers. Writes complete in the order they were made. Every record says at which
/// offset of its segment its write began, and its checksums are seeded with its segment's random salt.
///
/// On open the log is replayed. Writes are synced one after another, so a crash can tear only the last one, in
/// any of its pages. At a damaged record in the last segment: if no sound record follows it, or only records of a
/// write that began at or before it, it is inside that last write, which was never acknowledged: it is cut off
/// (kept aside in `wal/torn-*.bin`, then zeroed). If a sound record of a later write follows, or the damage is in
/// an earlier segment, a missing segment, or an unknown format, `init` throws a `StorageFailure` naming the file
/// and offset and changes nothing: never silent loss.
public final class WriteAheadLog: NodeStorage, LogStorage, @unchecked Sendable {
    // @unchecked Sendable: `queue`, `closing`, `failure`, `counters` and `writerDone` are only touched with
    // `condition` locked; the segment state (`segment*`, `unsynced`, `lastIndex`, `snapshotIndex`, `buffer`,
    // `lastWrittenHardState`) only by the writer thread once it runs (and by `init` before it starts); `recovered`,
    // `report` and `identity` are written only in `init`.

    public struct Options: Sendable, Hashable {
        /// A segment is closed and a new one started once it exceeds this size.
        public var segmentBytes = 64 << 20
        /// Whether every write is synced before it completes. Turning it off loses Raft's guarantees on power loss or
        /// kernel crash; it exists for tests and benchmarks that measure something else.
        public var sync = true
        /// How long the writer keeps looking for new work after a batch before it sleeps, in microseconds (0: never).
        public var spinMicroseconds = 0

        public init() {}
    }

    /// What opening the log found.
    public struct RecoveryReport: Sendable, Hashable {
        public var segments = 0
        public var records = 0
        /// Bytes of a torn record cut from the end of the last segment (0 if the log ended cleanly).
        public var tornBytesCut = 0
        public var tornRecordAt: (file: String, offset: Int)? {
            get { tornFile.map { ($0, tornOffset) } }
            set {
                tornFile = newValue?.file
                tornOffset = newValue?.offset ?? 0
            }
        }
        private var tornFile: String?
        private var tornOffset = 0
        public var seconds = 0.0
        /// What went wrong without keeping the log from opening (on a full disk: the torn bytes could not be kept
        /// aside, the last segment could not be preallocated).
        public var warnings: [String] = []
    }

    /// What the writer has done since the log was opened.
    public struct Statistics: Sendable, Hashable {
        /// Calls to `persist` completed.
        public var writes = 0
        /// `fdatasync` calls: with group commit, far fewer than writes under load.
        public var syncs = 0
        public var bytes = 0
        public var segmentsStarted = 0
    }

    public var statistics: Statistics {
        condition.lock()
        defer { condition.unlock() }
        return counters
    }

    public static let formatVersion = 2
    public let directory: String
    public let options: Options
    /// Where the files are: the real file system, or a test's.
    public let fileSystem: any FileSystem
    /// Whose directory this must be (nil: anyone's, for tools and benchmarks).
    public let expectedIdentity: DataDirectoryIdentity?
    /// Whose directory it is, as its IDENTITY file says (nil if it has none).
    public private(set) var identity: DataDirectoryIdentity?
    public private(set) var report = RecoveryReport()

    private struct Request {
        var entries: [Entry]
        var hardState: HardState?
        /// A compaction: start a new segment at this base, holding the entries after it, and delete the older ones.
        var compaction: (index: LogIndex, term: Term, hardState: HardState)?
        var completion: @Sendable ((any Error)?) -> Void
    }

    private let condition = NSCondition()
    private var queue: [Request] = []
    private var closing = false
    /// Set once the writer thread exists: a log whose `init` failed has none to wait for.
    private var writerStarted = false
    private var writerDone = false
    private var failure: StorageFailure?
    private var counters = Statistics()
    private var lockFile: OpenFile?
    private var recovered = PersistentState()

    private let walDirectory: String
    private var segmentFile: OpenFile?
    private var segmentPath = ""
    private var segmentSequence: UInt64 = 0
    private var segmentSize = 0
    private var segmentSalt = Records.Salt(0)
    /// Whether the current segment was written since its last sync.
    private var unsynced = false
    private var lastIndex = LogIndex.zero
    private var snapshotIndex = LogIndex.zero
    private var buffer: [UInt8] = []
    private var lastWrittenHardState: HardState?

    /// Opens (creating if needed) the data directory and replays its log.
    /// - Parameters:
    ///   - fileSystem: where the files are (the real file system unless a test gives its own).
    ///   - expectedIdentity: whose directory it must be: a new directory is created for it, an existing one must
    ///     have been (one set up without an identity is claimed). Nil: no check.
    /// - Throws: `StorageFailure`: `.locked` if another process has it open, `.identityMismatch` (naming both
    ///   identities), `.unsupportedFormat`, `.corrupt` or `.missingSegment` (with the file and offset), `.noSpace`,
    ///   `.io`.
    public convenience init(
        directory: String, options: Options = Options(), fileSystem: any FileSystem = PosixFileSystem(),
        expectedIdentity: DataDirectoryIdentity? = nil
    ) throws(StorageFailure) {
        try self.init(directory: directory, options: options, fileSystem: fileSystem, expectedIdentity: expectedIdentity,
                      heldLock: nil)
    }

    /// `heldLock`: the directory's lock, taken already (by `LogRepair`, which hands it over); the log releases it
    /// when it closes. With it, a directory left without segments by a repair is given a new first one.
    init(
        directory: String, options: Options, fileSystem: any FileSystem, expectedIdentity: DataDirectoryIdentity?,
        heldLock: OpenFile?
    ) throws(StorageFailure) {
        self.directory = directory
        self.options = options
        self.fileSystem = fileSystem
        self.expectedIdentity = expectedIdentity
        self.walDirectory = directory + "/wal"
        let started = ContinuousClock.now
        if let heldLock {
            lockFile = heldLock
        } else {
            _ = try fileSystem.makeDirectory(directory)
            lockFile = try Self.lock(directory, fileSystem)
        }
        do {
            let initialised = try checkFormat()
            if !initialised {
                // The directory's own name must be durable before anything in it is acknowledged.
                try fileSystem.syncDirectory(Self.parent(of: directory))
            }
            // Before anything is changed: whose directory is it?
            try checkIdentity(initialised: initialised)
            _ = try fileSystem.makeDirectory(walDirectory)
            try fileSystem.syncDirectory(directory)
            if !initialised { try discardUnfinishedInitialisation() }
            try recover(requireSegments: initialised && heldLock == nil)
            // FORMAT is written last: its presence says the directory was fully set up.
            if !initialised {
                try fileSystem.writeAtomically(Array("raftlite-data \(Self.formatVersion)\n".utf8),
                                               to: directory + "/FORMAT", directory: directory)
            }
        } catch {
            releaseLock()
            if let segmentFile { fileSystem.close(segmentFile) }
            throw error
        }
        let elapsed = (ContinuousClock.now - started).components
        report.seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        let thread = Thread { [self] in self.runWriter() }
        thread.name = "raftlite-wal"
        writerStarted = true
        thread.start()
    }

    deinit {
        close()
    }

    /// The directory that holds `path`.
    static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        let parent = trimmed[..<slash]
        return parent.isEmpty ? "/" : String(parent)
    }

    /// Everything the log held when it was opened.
    public func initialState() -> PersistentState { recovered }

    // MARK: - Writing

    /// Queues `entries` and then `hardState`; `completion` runs on the writer thread once they are durable (or with
    /// the error that stopped them). Completions run in the order of the calls.
    public func persist(
        entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        enqueue(Request(entries: entries, hardState: hardState, completion: completion))
    }

    private func enqueue(_ request: Request) {
        let completion = request.completion
        condition.lock()
        if closing || failure != nil {
            let error = failure ?? StorageFailure(.closed, "the log is closed", file: directory)
            condition.unlock()
            completion(error)
            return
        }
        queue.append(request)
        condition.signal()
        condition.unlock()
    }

    /// Writes `entries` and then `hardState` and waits until they are durable (the core's `LogStorage` protocol).
    public func persist(entries: [Entry], hardState: HardState?) throws(StorageFailure) {
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        persist(entries: entries, hardState: hardState) { error in
            outcome.error = error
            done.signal()
        }
        done.wait()
        if let error = outcome.error {
            throw error as? StorageFailure ?? StorageFailure(.io, "\(error)", file: directory)
        }
    }

    /// Stops the writer once everything queued is written, and releases the directory. Safe to call twice.
    public func close() {
        condition.lock()
        if closing && writerDone {
            condition.unlock()
            return
        }
        closing = true
        condition.broadcast()
        while writerStarted && !writerDone { condition.wait() }
        writerDone = true
        condition.unlock()
        if let segmentFile {
            fileSystem.close(segmentFile)
            self.segmentFile = nil
        }
        releaseLock()
    }

    private func runWriter() {
        var batch: [Request] = []
        while true {
            // A sleeping thread takes tens of microseconds to wake, about as long as a sync: after a batch, keep
            // looking for the next one for a moment before going to sleep (only when idle; under load the queue
            // is never empty).
            if options.spinMicroseconds > 0 { spinForWork() }
            condition.lock()
            while queue.isEmpty && !closing { condition.wait() }
            if queue.isEmpty {
                writerDone = true
                condition.broadcast()
                condition.unlock()
                return
            }
            swap(&batch, &queue)
            let failedBefore = failure
            condition.unlock()

            var errors = [StorageFailure?](repeating: failedBefore, count: batch.count)
            if failedBefore == nil {
                do {
                    errors = try write(batch)
                } catch {
                    fail(error)
                    errors = Array(repeating: error, count: batch.count)
                }
            }
            condition.lock()
            counters.writes += batch.count
            condition.unlock()
            // Nothing is completed before it is durable: one data sync covers the whole batch (group commit).
            if let error = syncWritten() { errors = Array(repeating: error, count: batch.count) }
            for (request, error) in zip(batch, errors) { request.completion(error) }
            batch.removeAll(keepingCapacity: true)
        }
    }

    private func spinForWork() {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        while true {
            condition.lock()
            let ready = !queue.isEmpty || closing
            condition.unlock()
            if ready { return }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = (now.tv_sec - start.tv_sec) * 1_000_000 + (now.tv_nsec - start.tv_nsec) / 1000
            if elapsed >= options.spinMicroseconds { return }
            sched_yield()
        }
    }

    /// Makes the log refuse every later write with `error`.
    private func fail(_ error: StorageFailure) {
        condition.lock()
        if failure == nil { failure = error }
        condition.unlock()
    }

    /// Writes a batch with one write (a compaction, or a segment filling up, adds a flush point before it). Returns,
    /// per request, the error that refused it, if any (an append that would leave a hole); throws when the disk
    /// fails, which fails the whole log. The last write is synced by `syncWritten`.
    private func write(_ batch: [Request]) throws(StorageFailure) -> [StorageFailure?] {
        buffer.removeAll(keepingCapacity: true)
        var refused = [StorageFailure?](repeating: nil, count: batch.count)
        for (k, request) in batch.enumerated() {
            if let compaction = request.compaction {
                try flushBuffer()
                try syncSegment()
                guard request.entries.first.map({ $0.index == compaction.index.next }) ?? true,
                    (request.entries.last?.index ?? compaction.index) >= lastIndex
                else {
                    refused[k] = StorageFailure(
                        .invalidAppend, "a compaction through \(compaction.index) must retain the entries after it, "
                            + "up to \(lastIndex)", file: directory)
                    continue
                }
                try compact(compaction.index, compaction.term, compaction.hardState, retaining: request.entries)
                continue
            }
            if let first = request.entries.first {
                guard first.index <= lastIndex.next, first.index > snapshotIndex else {
                    refused[k] = StorageFailure(
                        .invalidAppend,
                        "append at \(first.index) does not follow the log, which ends at \(lastIndex) "
                            + "(compacted through \(snapshotIndex))", file: directory)
                    continue
                }
            }
            // Records carry the salt of the segment they land in and the offset their write begins at, so the
            // segment is chosen before they are encoded: if this request would overfill a segment that holds
            // something, what came before it is written and synced, and a new segment takes it.
            let mark = buffer.count
            encode(request)
            if segmentSize + buffer.count > options.segmentBytes && (segmentSize > Records.segmentHeaderSize || mark > 0) {
                buffer.removeSubrange(mark...)
                try flushBuffer()
                try syncSegment()
                try startSegment(sequence: segmentSequence + 1)
                encode(request)
            }
            if let last = request.entries.last { lastIndex = last.index }
            if let hardState = request.hardState { lastWrittenHardState = hardState }
        }
        try flushBuffer()
        return refused
    }

    /// Appends a request's records to the buffer: its entries, then its hard state.
    private func encode(_ request: Request) {
        let batch = UInt64(segmentSize)
        if !request.entries.isEmpty {
            Records.append(entries: request.entries, batch: batch, salt: segmentSalt, to: &buffer)
        }
        if let hardState = request.hardState {
            Records.append(.hardState(hardState), batch: batch, salt: segmentSalt, to: &buffer)
        }
    }

    /// Writes what the buffer holds at the end of the current segment (one `pwrite`), not yet synced.
    private func flushBuffer() throws(StorageFailure) {
        guard !buffer.isEmpty else { return }
        guard let segmentFile else { throw StorageFailure(.closed, "no segment is open", file: segmentPath) }
        try fileSystem.write(buffer, to: segmentFile, at: segmentSize, path: segmentPath)
        segmentSize += buffer.count
        unsynced = true
        let written = buffer.count
        buffer.removeAll(keepingCapacity: true)
        condition.lock()
        counters.bytes += written
        condition.unlock()
    }

    /// Makes everything written to the current segment durable (one `fdatasync`).
    private func syncSegment() throws(StorageFailure) {
        guard unsynced, let segmentFile else { return }
        if options.sync {
            try fileSystem.syncData(segmentFile, path: segmentPath)
        }
        unsynced = false
        condition.lock()
        counters.syncs += options.sync ? 1 : 0
        condition.unlock()
    }

    /// After a batch: syncs its last write; a failure fails the log and is returned.
    private func syncWritten() -> StorageFailure? {
        do {
            try syncSegment()
            return nil
        } catch {
            fail(error)
            return error
        }
    }

    /// Closes the current segment (it is already durable) and starts the next, durably named in the directory.
    /// A segment is written under a temporary name and renamed into place once durable, so that a segment that
    /// exists under its name always holds its header and first records whole (a compaction's base above all).
    /// `firstRecords` are encoded with the new segment's salt, as a write beginning right after the header.
    private func startSegment(
        sequence: UInt64, firstRecords: (Records.Salt) -> [UInt8] = { _ in [] }
    ) throws(StorageFailure) {
        let path = segmentPath(sequence)
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
                    .noSpace, "no space left on device for a new log segment of \(length) bytes; the log accepts no "
                        + "more writes (everything acknowledged is kept): free space, then restart the node",
                    file: path)
            }
            try fileSystem.write(header, to: file, at: 0, path: temporary)
            try fileSystem.syncData(file, path: temporary)
            try fileSystem.rename(temporary, to: path)
            try fileSystem.syncDirectory(walDirectory)
        } catch {
            fileSystem.close(file)
            // A segment never renamed into place is nothing; if it cannot be removed now, the next open does it.
            try? fileSystem.remove(temporary)
            throw error
        }
        if let segmentFile { fileSystem.close(segmentFile) }
        segmentFile = file
        segmentPath = path
        segmentSequence = sequence
        segmentSalt = salt
        segmentSize = header.count
        unsynced = false
        condition.lock()
        counters.segmentsStarted += 1
        condition.unlock()
    }

    private func segmentPath(_ sequence: UInt64) -> String {
        let digits = String(sequence)
        return walDirectory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    // MARK: - Compaction

    /// Forgets every entry up to `index` (with term `term`), which a snapshot now covers: the log starts a new
    /// segment whose first records say where the log begins, what the hard state is, and the `retained` entries
    /// after `index` (all of them, up to the end of the log); then the older segments are deleted. It is ordered
    /// after every write queued before it, and returns once it is durable.
    public func compact(
        through index: LogIndex, term: Term, hardState: HardState, retaining retained: [Entry]
    ) throws(StorageFailure) {
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        enqueue(Request(entries: retained, hardState: nil, compaction: (index, term, hardState)) { error in
            outcome.error = error
            done.signal()
        })
        done.wait()
        if let error = outcome.error {
            throw error as? StorageFailure ?? StorageFailure(.io, "\(error)", file: directory)
        }
    }

    /// On the writer thread: the compaction itself.
    private func compact(
        _ index: LogIndex, _ term: Term, _ hardState: HardState, retaining retained: [Entry]
    ) throws(StorageFailure) {
        // The latest hard state written wins over the caller's, which may predate writes queued before this.
        let latest = lastWrittenHardState ?? hardState
        let old = segmentSequence
        try startSegment(sequence: old + 1) { salt in
            var first: [UInt8] = []
            let batch = UInt64(Records.segmentHeaderSize)
            Records.append(.base(index: index, term: term), batch: batch, salt: salt, to: &first)
            Records.append(.hardState(latest), batch: batch, salt: salt, to: &first)
            Records.append(entries: retained, batch: batch, salt: salt, to: &first)
            return first
        }
        snapshotIndex = max(snapshotIndex, index)
        lastIndex = retained.last?.index ?? max(lastIndex, index)
        // Oldest first: a crash part way leaves a contiguous run ending at the new base segment, which replay
        // recognises and finishes deleting.
        for sequence in try fileSystem.list(walDirectory).compactMap(Self.sequence(ofSegment:)).sorted() where sequence <= old {
            try fileSystem.remove(segmentPath(sequence))
        }
        try fileSystem.syncDirectory(walDirectory)
    }

    // MARK: - Opening

    /// Takes a data directory's lock (`DIR/LOCK`, which holds the pid of the process that has it).
    static func lock(_ directory: String, _ fileSystem: any FileSystem) throws(StorageFailure) -> OpenFile {
        let path = directory + "/LOCK"
        let file: OpenFile
        do {
            file = try fileSystem.lockExclusively(path)
        } catch let failure where failure.kind == .locked {
            let holder = (try? fileSystem.read(path, upTo: 64)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            throw StorageFailure(
                .locked, "the data directory is in use by another process (pid \(holder.trimmingCharacters(in: .whitespacesAndNewlines)))",
                file: directory)
        }
        // The pid is for the operator reading the error above; failing to write it changes nothing.
        try? fileSystem.truncate(file, to: 0, path: path)
        try? fileSystem.write(Array("\(getpid())\n".utf8), to: file, at: 0, path: path)
        return file
    }

    private func releaseLock() {
        if let lockFile {
            fileSystem.close(lockFile)
            self.lockFile = nil
        }
    }

    /// Refuses a directory of another node, cluster or member set; writes the identity into a new directory (or one
    /// set up without one).
    private func checkIdentity(initialised: Bool) throws(StorageFailure) {
        let path = directory + "/IDENTITY"
        if initialised && fileSystem.exists(path) {
            guard let stored = DataDirectoryIdentity.decode(try fileSystem.read(path, upTo: 1 << 20)) else {
                throw StorageFailure(.corrupt, "the data directory's IDENTITY file cannot be read", file: path)
            }
            identity = stored
            if let expected = expectedIdentity, let why = stored.refusal(toOpenAs: expected) {
                throw StorageFailure(.identityMismatch, why, file: directory)
            }
            return
        }
        guard let expected = expectedIdentity else { return }
        do {
            try fileSystem.writeAtomically(expected.encoded(), to: path, directory: directory)
            identity = expected
        } catch let failure where initialised && failure.kind == .noSpace {
            // Claiming a directory that has none is not worth refusing a restart on a full disk.
            try? fileSystem.remove(path + ".tmp")
            report.warnings.append("the data directory has no IDENTITY and it could not be written: \(failure)")
        }
    }

    /// The text of the FORMAT file this version writes and reads.
    static let formatLine = "raftlite-data \(formatVersion)"

    /// Checks the format version; returns whether the directory was initialised before (it has a FORMAT file).
    private func checkFormat() throws(StorageFailure) -> Bool {
        let path = directory + "/FORMAT"
        guard fileSystem.exists(path) else { return false }
        let found = String(decoding: try fileSystem.read(path, upTo: 4096), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard found == Self.formatLine else {
            if found == "raftlite-data 1" {
                throw StorageFailure(
                    .unsupportedFormat,
                    "this data directory is in RaftLite's data format 1 (\"raftlite-data 1\"), which this version cannot "
                        + "read: it reads only format \(Self.formatVersion), whose records are sealed with a salt per "
                        + "segment so that a torn write is never taken for damage, and there is no migration. Run the "
                        + "version that wrote the directory, or start a new cluster with new, empty data directories",
                    file: path)
            }
            throw StorageFailure(
                .unsupportedFormat,
                "the data directory's format is \"\(found)\"; this version reads only \"\(Self.formatLine)\"",
                file: path)
        }
        return true
    }

    /// In a directory without FORMAT: segments left by an initialisation that a crash interrupted (FORMAT is
    /// written last) hold nothing, since nothing is written before initialisation ends; they are removed. A segment
    /// holding anything else is a log whose FORMAT is missing: refused.
    private func discardUnfinishedInitialisation() throws(StorageFailure) {
        guard fileSystem.exists(walDirectory) else { return }
        let names = try fileSystem.list(walDirectory)
        let segments = names.filter { Self.sequence(ofSegment: $0) != nil }
        guard !segments.isEmpty else { return }
        for name in segments {
            let bytes = try fileSystem.read(walDirectory + "/" + name)
            let holdsNothing = bytes.count <= Records.segmentHeaderSize
                || bytes[Records.segmentHeaderSize...].allSatisfy { $0 == 0 }
            guard holdsNothing else {
                throw StorageFailure(.unsupportedFormat, "the data directory has a log but no FORMAT file",
                                     file: directory + "/FORMAT")
            }
        }
        for name in segments { try fileSystem.remove(walDirectory + "/" + name) }
        try fileSystem.syncDirectory(walDirectory)
    }

    static func sequence(ofSegment name: String) -> UInt64? {
        guard name.hasSuffix(".log"), name.count == 24 else { return nil }
        return UInt64(name.prefix(20))
    }

    /// Replays every segment into `recovered` and opens the last one for appending.
    private func recover(requireSegments: Bool) throws(StorageFailure) {
        // A segment still under its temporary name was never finished: nothing in it was acknowledged.
        for name in try fileSystem.list(walDirectory) where name.hasSuffix(".log.tmp") {
            try fileSystem.remove(walDirectory + "/" + name)
        }
        var sequences = try fileSystem.list(walDirectory).compactMap(Self.sequence(ofSegment:)).sorted()
        guard !sequences.isEmpty else {
            if requireSegments {
                throw StorageFailure(.missingSegment, "the data directory was initialised but its log has no segments",
                                     file: walDirectory)
            }
            try startSegment(sequence: 1)
            return
        }
        // A compaction interrupted while deleting leaves older segments before its base segment: finish the job.
        if let base = sequences.reversed().first(where: { startsWithBase($0) }), base != sequences[0] {
            for sequence in sequences where sequence < base { try fileSystem.remove(segmentPath(sequence)) }
            try fileSystem.syncDirectory(walDirectory)
            sequences.removeAll { $0 < base }
        }
        for (previous, next) in zip(sequences, sequences.dropFirst()) where next != previous + 1 {
            throw StorageFailure(.missingSegment, "segment \(previous + 1) is missing (found \(previous) and \(next))",
                                 file: segmentPath(previous + 1))
        }
        var entries: [Entry] = []
        var state = PersistentState()
        var cut: (offset: Int, through: Int)?
        var lastEnd = Records.segmentHeaderSize
        var lastSalt = Records.Salt(0)
        var lastIsEmpty = false
        var previous: (sequence: UInt64, end: Int, salt: Records.Salt)?
        for (k, sequence) in sequences.enumerated() {
            let path = segmentPath(sequence)
            let isLast = k == sequences.count - 1
            let bytes = try fileSystem.read(path)
            report.segments += 1
            let header = bytes.withUnsafeBytes { Records.readSegmentHeader($0, sequence: sequence) }
            let salt: Records.Salt
            switch header {
            case .success(let found):
                salt = found
            case .failure(.empty) where isLast:
                // A crash while the segment was being created: it holds nothing.
                cut = (0, bytes.count)
                lastIsEmpty = true
                continue
            case .failure(.empty):
                throw StorageFailure(.corrupt, "a segment has no header, and later segments follow it", file: path, offset: 0)
            case .failure(.formatOne):
                throw StorageFailure(.unsupportedFormat, "a segment of data format 1 in a format-\(Self.formatVersion) "
                                         + "directory", file: path, offset: 0)
            case .failure(.damaged(let why)):
                throw StorageFailure(.corrupt, why, file: path, offset: 0)
            }
            let mustStartWithBase = k == 0 && sequence != 1
            var sawFirst = false
            let verdict = bytes.withUnsafeBytes { raw -> Result<(Replay.Scan, Replay.Tail), Replay.Stop> in
                do throws(Replay.Stop) {
                    let scan = try Replay.scan(raw, salt: salt) { (read, offset) throws(Replay.Stop) in
                        if mustStartWithBase && !sawFirst {
                            guard case .base = read.record else {
                                throw Replay.Stop(
                                    kind: .missingSegment,
                                    problem: "the log's first segment is \(sequence) but it does not say where the log begins",
                                    offset: offset)
                            }
                        }
                        sawFirst = true
                        if let problem = Self.apply(read.record, to: &state, entries: &entries) {
                            throw Replay.Stop(kind: .corrupt, problem: problem, offset: offset)
                        }
                    }
                    return .success((scan, Replay.judge(raw, salt: salt, scan: scan, isLast: isLast)))
                } catch {
                    return .failure(error)
                }
            }
            switch verdict {
            case .failure(let stop):
                throw StorageFailure(stop.kind, stop.problem, file: path, offset: stop.offset)
            case .success(let (scan, tail)):
                report.records += scan.recordCount
                switch tail {
                case .clean:
                    if isLast { lastEnd = scan.end }
                    if !isLast { previous = (sequence, scan.end, salt) }
                case .torn(let at, let through):
                    cut = (at, through)
                    lastEnd = at
                case .corrupt(let at, let reason, let later):
                    let after = later.map { "; a later write (at offset \($0)) follows it, so this one had been synced" } ?? ""
                    throw StorageFailure(
                        .corrupt, "the log is damaged before its end: \(reason.text)\(after); refusing to start rather "
                            + "than lose committed entries", file: path, offset: at)
                }
            }
            if isLast { lastSalt = salt }
        }
        state.entries = entries
        recovered = state
        snapshotIndex = state.snapshotIndex
        lastIndex = state.lastIndex
        // Continue the last segment where its records end. Nothing here may need new space, so that a node on a
        // full disk can always restart: preallocating is tried, keeping torn bytes aside is best effort.
        guard var last = sequences.last else { return }
        if lastIsEmpty, let cut {
            // A segment left empty by a crash while it was being created.
            let path = segmentPath(last)
            report.tornBytesCut = cut.through - cut.offset
            report.tornRecordAt = (path, cut.offset)
            if let previous {
                // Go on in the segment before it (no new space needed; the next one is started when that one is full).
                try fileSystem.remove(path)
                try fileSystem.syncDirectory(walDirectory)
                last = previous.sequence
                lastEnd = previous.end
                lastSalt = previous.salt
            } else {
                guard last == 1 else {
                    throw StorageFailure(.missingSegment, "the log's first segment is \(last) but it is empty: it does "
                                             + "not say where the log begins", file: path, offset: 0)
                }
                // The log's only segment: it must be made again, which needs space. The new one replaces it only once
                // it is whole, so that a failure leaves the directory as it was.
                do {
                    try startSegment(sequence: last)
                } catch let failure where failure.kind == .noSpace {
                    throw StorageFailure(
                        .noSpace, "no space left on device to make the log's first segment again (a crash left it "
                            + "empty); nothing is lost: free space, then restart the node", file: path)
                }
                return
            }
        }
        let path = segmentPath(last)
        let file = try fileSystem.open(path, .write)
        segmentFile = file
        segmentPath = path
        segmentSequence = last
        segmentSalt = lastSalt
        segmentSize = lastEnd
        do {
            try fileSystem.preallocate(file, length: options.segmentBytes, path: path)
        } catch {
            report.warnings.append("the last segment could not be preallocated, so it grows as it is written: \(error)")
        }
        if let cut, !lastIsEmpty {
            // Keep the torn bytes aside (for an operator), then zero them, so that the segment again ends in zeros
            // where its records end. Zeroing overwrites bytes the file holds already: it needs no new space.
            report.tornBytesCut = cut.through - cut.offset
            report.tornRecordAt = (path, cut.offset)
            let torn = Array(try fileSystem.read(path).dropFirst(cut.offset).prefix(cut.through - cut.offset))
            let aside = "\(walDirectory)/torn-\(last)-\(cut.offset).bin"
            do {
                try fileSystem.writeAtomically(torn, to: aside, directory: walDirectory)
            } catch {
                try? fileSystem.remove(aside + ".tmp")
                report.warnings.append("the \(torn.count) torn bytes cut at offset \(cut.offset) of \(path) could not "
                                           + "be kept aside in \(aside): \(error)")
            }
            try fileSystem.write([UInt8](repeating: 0, count: cut.through - cut.offset), to: file, at: cut.offset, path: path)
            try fileSystem.syncData(file, path: path)
        }
    }

    /// Whether a segment's first record is a compaction base.
    private func startsWithBase(_ sequence: UInt64) -> Bool {
        let limit = Records.segmentHeaderSize + Records.recordHeaderSize + 64
        guard let head = try? fileSystem.read(segmentPath(sequence), upTo: limit) else { return false }
        return head.withUnsafeBytes { bytes -> Bool in
            guard case .success(let salt) = Records.readSegmentHeader(bytes, sequence: sequence),
                case .success(let read) = Records.read(bytes, at: Records.segmentHeaderSize, salt: salt),
                case .base = read.record
            else { return false }
            return true
        }
    }

    /// Applies one record to the state being rebuilt; returns a problem if the record cannot follow the log so far.
    static func apply(_ record: Records.Record, to state: inout PersistentState, entries: inout [Entry]) -> String? {
        switch record {
        case .entries(let batch):
            guard let first = batch.first?.index else { return nil }
            let last = LogIndex(state.snapshotIndex.rawValue + UInt64(entries.count))
            guard first <= last.next else { return "entries start at \(first) but the log ends at \(last)" }
            var batch = batch[...]
            if first <= state.snapshotIndex {
                batch = batch.drop { $0.index <= state.snapshotIndex }
                guard let firstKept = batch.first?.index else { return nil }
                _ = firstKept
            }
            guard let from = batch.first?.index else { return nil }
            let keep = Int(from.rawValue - state.snapshotIndex.rawValue - 1)
            if keep < entries.count { entries.removeSubrange(keep...) }
            entries.append(contentsOf: batch)
        case .hardState(let hs):
            state.hardState = hs
        case .base(let index, let term):
            let last = LogIndex(state.snapshotIndex.rawValue + UInt64(entries.count))
            if index >= last {
                entries.removeAll()
            } else if index > state.snapshotIndex {
                entries.removeFirst(Int(index.rawValue - state.snapshotIndex.rawValue))
            }
            state.snapshotIndex = index
            state.snapshotTerm = term
        }
        return nil
    }
}

/// Carries an error out of a completion closure to a waiting thread (the semaphore orders the accesses).
private final class OutcomeBox: @unchecked Sendable {
    var error: (any Error)?
}
