import Logging
import NIOCore
import NIOPosix
import RaftCore
import RaftStorage

/// The runtime's side of snapshots: writing one (on a thread pool, from a frozen view of the state machine, while
/// the loop goes on applying), compacting the log after it, restoring from one at start-up and when one is
/// installed from the leader. Everything here runs on the node's loop except the file I/O it hands to the pool.
extension RaftNode {
    /// Snapshots the state machine now (unless one is being written: then waits for that one), compacts the log
    /// behind it, and returns what the snapshot is of. With nothing applied since the last snapshot, returns that
    /// one.
    /// - Throws: `RaftNodeError.snapshotsUnsupported` without a snapshot store (no data directory) or with a state
    ///   machine that cannot snapshot; `.storage` if the snapshot cannot be written; `.notStarted`, `.stopped`.
    @discardableResult
    public func snapshot() async throws(RaftNodeError) -> SnapshotMetadata {
        do {
            return try await snapshotFuture().get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .storage("\(error)")
        }
    }

    /// `snapshot()` as a future, for code that runs on `eventLoop` (a NIO server sharing the node's loop): it
    /// succeeds once the snapshot is durable, and fails with a `RaftNodeError` (the same ones as `snapshot()`).
    public func snapshotFuture() -> EventLoopFuture<SnapshotMetadata> {
        let promise = eventLoop.makePromise(of: SnapshotMetadata.self)
        let request: @Sendable () -> Void = {
            guard let rt = self.runtime.value else { return promise.fail(RaftNodeError.notStarted) }
            guard !rt.stopped else { return promise.fail(RaftNodeError.stopped) }
            if let unsupported = self.snapshotsUnsupported { return promise.fail(unsupported) }
            rt.snapshotWaiters.append(promise)
            self.startSnapshot(rt, reason: "requested")
        }
        if eventLoop.inEventLoop {
            request()
        } else {
            eventLoop.execute(request)
        }
        return promise.futureResult
    }

    /// Why this node cannot snapshot, if it cannot.
    var snapshotsUnsupported: RaftNodeError? {
        if snapshotStore == nil {
            return .snapshotsUnsupported("the node has no snapshot store (start it with a data directory)")
        }
        if !Machine.supportsSnapshots {
            return .snapshotsUnsupported("the state machine \(Machine.self) does not implement snapshots")
        }
        return nil
    }

    /// Starts writing a snapshot of what is applied now, unless one is being written or there is nothing new.
    func startSnapshot(_ rt: NodeRuntime<Machine>, reason: String) {
        guard let store = snapshotStore, snapshotsUnsupported == nil, !rt.stopped else { return }
        guard !rt.snapshotInProgress else { return }
        // Of what the state machine has applied, which lags the core's mark while readies wait for their writes.
        guard let meta = rt.raft.snapshotCandidate(at: rt.machineApplied) else {
            // Nothing applied since the last one: it is the answer.
            settleSnapshotWaiters(rt, .success(rt.raft.snapshot))
            return
        }
        rt.snapshotInProgress = true
        rt.appliedBytesSinceSnapshot = 0
        let frozen = rt.machine.snapshot()
        let sessions = SnapshotBookkeeping(proposals: rt.sessions, clients: rt.clientSessions).encoded()
        let started = NIODeadline.now()
        metrics.snapshotsStarted.increment()
        logger.info(
            "snapshot started",
            metadata: ["index": "\(meta.index)", "term": "\(meta.term)", "reason": "\(reason)"])
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { () throws -> SnapshotInfo in
            let file = try store.beginSnapshot(meta, sessions: sessions)
            do {
                var writer = SnapshotWriter(file)
                try frozen.write(to: &writer)
                try writer.flush()
                let info = try file.finish()
                // Older snapshots go; one being sent to a follower stays readable through its open file.
                try store.prune(keeping: info)
                return info
            } catch {
                file.abandon()
                throw error
            }
        }.whenComplete { [weak self] result in
            self?.snapshotWritten(result, meta: meta, started: started)
        }
    }

    private func snapshotWritten(
        _ result: Result<SnapshotInfo, any Error>, meta: SnapshotMetadata, started: NIODeadline
    ) {
        guard let rt = runtime.value else { return }
        rt.snapshotInProgress = false
        let took = NIODeadline.now().nanoseconds(since: started)
        switch result {
        case .success(let info):
            metrics.snapshotDuration.recordNanoseconds(took)
            metrics.snapshotBytes.record(Int64(truncatingIfNeeded: info.size))
            metrics.snapshotIndex.record(Int64(truncatingIfNeeded: meta.index.rawValue))
            guard !rt.stopped else {
                // The node stopped while the file was written: it is durable, so those who asked for it have it.
                settleSnapshotWaiters(rt, .success(meta))
                return
            }
            // A snapshot installed from the leader while this one was written may be newer: it stays the latest.
            if meta.index > (rt.latestSnapshot?.metadata.index ?? .zero) { rt.latestSnapshot = info }
            rt.raft.snapshotCreated(meta)
            rt.compactionDue = true
            logger.info(
                "snapshot written",
                metadata: [
                    "index": "\(meta.index)", "bytes": "\(info.size)",
                    "seconds": "\(Double(took) / 1e9)",
                ])
            settleSnapshotWaiters(rt, .success(rt.raft.snapshot ?? meta))
            scheduleProcess()
        case .failure(let error):
            metrics.snapshotsFailed.increment()
            logger.error("snapshot failed", metadata: ["index": "\(meta.index)", "error": "\(error)"])
            settleSnapshotWaiters(rt, .failure(.storage("cannot write a snapshot: \(error)")))
        }
    }

    private func settleSnapshotWaiters(
        _ rt: NodeRuntime<Machine>, _ result: Result<SnapshotMetadata?, RaftNodeError>
    ) {
        let waiters = rt.snapshotWaiters
        rt.snapshotWaiters = []
        for promise in waiters {
            switch result {
            case .success(let meta?): promise.succeed(meta)
            case .success(nil):
                promise.fail(
                    RaftNodeError.snapshotsUnsupported("nothing has been applied yet, so there is nothing to snapshot"))
            case .failure(let error): promise.fail(error)
            }
        }
    }

    /// After entries are applied: snapshot if the log since the last snapshot passed a threshold.
    func snapshotIfDue(_ rt: NodeRuntime<Machine>) {
        guard !rt.snapshotInProgress, snapshotStore != nil, Machine.supportsSnapshots else { return }
        let since = rt.machineApplied.rawValue &- (rt.raft.snapshot?.index.rawValue ?? 0)
        // Not before the writes since the last snapshot are `snapshotStateFactor` times its size.
        if options.snapshotStateFactor > 0, let last = rt.latestSnapshot?.size,
            Double(rt.appliedBytesSinceSnapshot) < Double(last) * options.snapshotStateFactor
        {
            return
        }
        if options.snapshotEntries > 0 && since >= UInt64(options.snapshotEntries) {
            startSnapshot(rt, reason: "\(since) entries since the last snapshot")
        } else if options.snapshotBytes > 0 && rt.appliedBytesSinceSnapshot >= options.snapshotBytes {
            startSnapshot(rt, reason: "\(rt.appliedBytesSinceSnapshot) bytes applied since the last snapshot")
        }
    }

    /// Drops the log up to `compactionMargin` entries (and at most `compactionMarginBytes` of them) before the
    /// latest snapshot, in memory and in storage. Called from `process` once every ready has been taken, so that the
    /// entries storage keeps (everything after the new start, up to what was handed out) are exactly those its
    /// queued writes end with.
    func compactIfDue(_ rt: NodeRuntime<Machine>) {
        guard rt.compactionDue, let snapshot = rt.raft.snapshot else { return }
        rt.compactionDue = false
        let floor = Self.compactionFloor(
            snapshot: snapshot.index, log: rt.raft.log, entries: options.compactionMargin,
            bytes: options.compactionMarginBytes)
        let before = rt.raft.log.snapshotIndex
        let start = rt.raft.compact(through: floor)
        guard start > before else { return }
        let term = rt.raft.log.snapshotTerm
        let retained = rt.raft.log.handedOutEntries(after: start)
        metrics.compactions.increment()
        storage.compact(through: start, term: term, retaining: retained) { [weak self] error in
            guard let self, let error else { return }
            self.eventLoop.execute { self.storageFailed(error) }
        }
    }

    /// Where to compact the log through: `entries` entries before the snapshot at `snapshot` are kept, fewer if
    /// they would hold more than `bytes` bytes (0: no byte bound), none the log no longer has.
    static func compactionFloor(snapshot: LogIndex, log: RaftLog, entries: Int, bytes: Int) -> LogIndex {
        var floor = snapshot
        var kept = 0
        var keptBytes = 0
        while kept < entries, floor > log.snapshotIndex, let entry = log.entry(at: floor) {
            keptBytes += entry.byteSize
            if bytes > 0 && keptBytes > bytes { break }
            floor = floor.previous
            kept += 1
        }
        return floor
    }

    /// Restores the state machine and the sessions table from a snapshot file, on the loop. Reads the whole file,
    /// whose checksum is verified at its end.
    func restore(from info: SnapshotInfo, into rt: NodeRuntime<Machine>) throws {
        guard let store = snapshotStore else {
            throw RaftNodeError.snapshotsUnsupported("the node has no snapshot store")
        }
        let file = try store.open(info)
        var reader = SnapshotReader(file)
        var machine = rt.machine
        try machine.restore(from: &reader)
        guard try reader.isAtEnd() else {
            throw SnapshotFormatError(
                "the state machine stopped reading the snapshot \(info.path) before its end (at byte \(reader.count))")
        }
        // The proposal sessions and the client sessions (a snapshot written before client sessions has the first
        // only).
        let bookkeeping = try SnapshotBookkeeping(decoding: file.sessions)
        rt.machine = machine
        rt.sessions = bookkeeping.proposals
        rt.clientSessions = bookkeeping.clients
        rt.latestSnapshot = info
        metrics.snapshotIndex.record(Int64(truncatingIfNeeded: info.metadata.index.rawValue))
        metrics.snapshotBytes.record(Int64(truncatingIfNeeded: info.size))
    }

    /// The core handed out a snapshot received from the leader, now durable: restore the state machine from it and
    /// settle this node's proposals that it covered. Runs before the ready's committed entries are applied.
    func installReceivedSnapshot(_ meta: SnapshotMetadata, _ rt: NodeRuntime<Machine>) {
        guard let info = rt.received(meta) else {
            storageFailed(
                StorageFailure(.corrupt, "the core installed \(meta), which this node did not receive in full"))
            return
        }
        // This one and every older one are done with: the core never hands an older one out after a newer one.
        rt.receivedSnapshots = rt.receivedSnapshots.filter { $0.key > meta.index }
        let started = NIODeadline.now()
        do {
            try restore(from: info, into: rt)
            rt.machineApplied = meta.index
        } catch {
            // The log is already reset to the snapshot: without its state this node cannot go on.
            storageFailed(StorageFailure(.corrupt, "cannot restore the snapshot received (\(info.path)): \(error)"))
            return
        }
        metrics.snapshotsInstalled.increment()
        metrics.snapshotIndex.record(Int64(truncatingIfNeeded: meta.index.rawValue))
        logger.info(
            "snapshot installed",
            metadata: [
                "index": "\(meta.index)", "term": "\(meta.term)", "bytes": "\(info.size)",
                "seconds": "\(Double(NIODeadline.now().nanoseconds(since: started)) / 1e9)",
            ])
        let sessions = rt.sessions
        let (me, incarnation) = (rt.tracker.proposer, rt.tracker.incarnation)
        let outcome = rt.tracker.snapshotRestored(term: meta.term) { sequence in
            sessions.isApplied(proposer: me, incarnation: incarnation, sequence: sequence)
        }
        for (_, waiter) in outcome.applied { fail(waiter, .appliedResultUnknown, rt) }
        for sequence in outcome.lost { hand(sequence, rt) }
        if let store = snapshotStore {
            NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { try store.prune(keeping: info) }
                .whenFailure { [logger] error in
                    logger.warning("cannot remove older snapshots", metadata: ["error": "\(error)"])
                }
        }
    }
}
