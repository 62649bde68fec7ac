import Foundation
import NIOConcurrencyHelpers
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
/// DIR/snapshots/        the node's snapshots (`SnapshotStore`), beside the log
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
public final class WriteAheadLog: NodeStorage, @unchecked Sendable {
    // @unchecked Sendable: `queue`, `closing`, `failure`, `writerStarted` and `writerDone` are only touched with
    // `condition` locked; `writer` (the segment state) only by the writer thread once it runs (and by `init` before
    // it starts, and by `close` after it ended); `counters` has its own lock; `recovered`, `report` and `identity`
    // are written only in `init`.
    //
    // The jobs are in separate files: `DataDirectory` (lock, FORMAT, IDENTITY, names), `SegmentWriter` (encoding,
    // writing and syncing batches, starting segments, compaction), `Replay` (pure: segment bytes to the state they
    // hold, and where the log goes on) and `recover` (the file operations of opening). This file has the queue, the
    // writer thread and the public API.

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
        counters.withLockedValue { $0 }
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

    private let condition = NSCondition()
    private var queue: [WriteRequest] = []
    private var closing = false
    /// Set once the writer thread exists: a log whose `init` failed has none to wait for.
    private var writerStarted = false
    private var writerDone = false
    private var failure: StorageFailure?
    private let counters = NIOLockedValueBox(Statistics())
    private var lockFile: OpenFile?
    private var recovered = PersistentState()
    private let layout: DataDirectory
    private let writer: SegmentWriter

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
        try self.init(
            directory: directory, options: options, fileSystem: fileSystem, expectedIdentity: expectedIdentity,
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
        layout = DataDirectory(directory, fileSystem: fileSystem)
        writer = SegmentWriter(layout: layout, options: options, counters: counters)
        let started = ContinuousClock.now
        if let heldLock {
            lockFile = heldLock
        } else {
            _ = try fileSystem.makeDirectory(directory)
            lockFile = try DataDirectory.lock(directory, fileSystem)
        }
        do {
            let initialised = try layout.checkFormat()
            if !initialised {
                // The directory's own name must be durable before anything in it is acknowledged.
                try fileSystem.syncDirectory(DataDirectory.parent(of: directory))
            }
            // Before anything is changed: whose directory is it?
            let (identity, warning) = try layout.checkIdentity(initialised: initialised, expected: expectedIdentity)
            self.identity = identity
            if let warning { report.warnings.append(warning) }
            _ = try fileSystem.makeDirectory(layout.walDirectory)
            try fileSystem.syncDirectory(directory)
            if !initialised { try layout.discardUnfinishedInitialisation() }
            recovered = try Self.recover(
                layout, writer: writer, requireSegments: initialised && heldLock == nil,
                report: &report)
            // FORMAT is written last: its presence says the directory was fully set up.
            if !initialised { try layout.writeFormat() }
        } catch {
            releaseLock()
            writer.close()
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

    /// Everything the log held when it was opened.
    public func initialState() -> PersistentState { recovered }

    // MARK: - Writing

    /// Queues `entries` and then `hardState`; `completion` runs on the writer thread once they are durable (or with
    /// the error that stopped them). Completions run in the order of the calls.
    public func persist(
        entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        enqueue(WriteRequest(entries: entries, hardState: hardState, completion: completion))
    }

    private func enqueue(_ request: WriteRequest) {
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

    /// Writes `entries` and then `hardState` and waits until they are durable: `persist` for a caller that blocks.
    public func persist(entries: [Entry], hardState: HardState?) throws(StorageFailure) {
        try wait(for: WriteRequest(entries: entries, hardState: hardState, completion: { _ in }))
    }

    /// Forgets every entry up to `index` (with term `term`), which a snapshot now covers: the log starts a new
    /// segment whose first records say where the log begins, what the hard state is, and the `retained` entries
    /// after `index` (all of them, up to the end of the log); then the older segments are deleted. It is ordered
    /// after every write queued before it, and returns once it is durable.
    public func compact(
        through index: LogIndex, term: Term, hardState: HardState, retaining retained: [Entry]
    ) throws(StorageFailure) {
        try wait(
            for: WriteRequest(
                entries: retained, hardState: nil,
                compaction: Compaction(index: index, term: term, hardState: hardState, reset: false),
                completion: { _ in }))
    }

    /// Forgets every entry up to `index` (with term `term`), which a snapshot now covers, without blocking: queued
    /// like `persist`, ordered after every write queued before it; `completion` runs on the writer thread once it is
    /// durable. `retained` are the entries after `index` up to the end of the log, as the caller handed them out
    /// for writing (writes queued before this may still be writing some of them): the new segment holds them, and
    /// the latest hard state written. A compaction through an index the log is compacted through already (a
    /// snapshot installed since, say) does nothing. Refused (`.invalidAppend`) if `retained` does not start right
    /// after `index` or does not reach the end of the log.
    public func compact(
        through index: LogIndex, term: Term, retaining retained: [Entry],
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        enqueue(
            WriteRequest(
                entries: retained, hardState: nil,
                compaction: Compaction(index: index, term: term, hardState: nil, reset: false),
                completion: completion))
    }

    /// Empties the log after `index` (with term `term`), whatever it held before — entries beyond `index` too,
    /// which conflict with the snapshot a follower installs — and records `hardState`: a new segment starting with
    /// a base record and the hard state, then the older segments are deleted. Ordered after every write queued
    /// before it (so `hardState` is recorded as given: it is the newest); `completion` runs once it is durable.
    /// A crash leaves the old log or the new one: the new segment counts only once it is durable under its name.
    public func reset(
        to index: LogIndex, term: Term, hardState: HardState, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        enqueue(
            WriteRequest(
                entries: [], hardState: nil,
                compaction: Compaction(index: index, term: term, hardState: hardState, reset: true),
                completion: completion))
    }

    /// The bytes the log's segment files take (segments are preallocated, so a new one counts whole). Lists and
    /// measures the files: for metrics, not for a hot path; 0 if they cannot be listed.
    public var diskUsage: UInt64 {
        guard let names = try? fileSystem.list(layout.walDirectory) else { return 0 }
        var total: UInt64 = 0
        for name in names where DataDirectory.sequence(ofSegment: name) != nil {
            if let size = try? fileSystem.size(layout.walDirectory + "/" + name) { total += UInt64(size) }
        }
        return total
    }

    /// Queues a request and blocks until it completes.
    private func wait(for request: WriteRequest) throws(StorageFailure) {
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        var request = request
        request.completion = { error in
            outcome.error = error
            done.signal()
        }
        enqueue(request)
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
        writer.close()
        releaseLock()
    }

    private func releaseLock() {
        if let lockFile {
            fileSystem.close(lockFile)
            self.lockFile = nil
        }
    }

    // MARK: - The writer thread

    private func runWriter() {
        var batch: [WriteRequest] = []
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
                    errors = try writer.write(batch)
                } catch {
                    fail(error)
                    errors = Array(repeating: error, count: batch.count)
                }
            }
            let written = batch.count
            counters.withLockedValue { $0.writes += written }
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

    /// After a batch: syncs its last write; a failure fails the log and is returned.
    private func syncWritten() -> StorageFailure? {
        do {
            try writer.syncSegment()
            return nil
        } catch {
            fail(error)
            return error
        }
    }
}

/// Carries an error out of a completion closure to a waiting thread (the semaphore orders the accesses).
private final class OutcomeBox: @unchecked Sendable {
    var error: (any Error)?
}
