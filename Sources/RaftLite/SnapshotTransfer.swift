import NIOCore
import RaftCore

// Moving a snapshot's file from a leader to a follower, in chunks, over the Raft transport.
//
// The protocol (all of it runtime traffic: the core never sees a chunk or an acknowledgement):
//
//     leader (SnapshotSender)                         follower (SnapshotReceiver)
//     chunk(offset 0, no data)          "hello"  →    begin(): opens or resumes the partial file
//                                                ←    ack(accepted, offset = bytes it already holds)
//     chunk(offset o, data) …  (at most `window` bytes beyond the last ack)
//                                                ←    ack(accepted, offset = o + data.count) after each write
//                                                     … at totalSize: complete() (sync, checksum, rename)
//                                                ←    ack(complete) — or ack(rejected) if it failed
//
// Acknowledgements are cumulative: `offset` is how many bytes from the start the follower has written. A chunk the
// follower does not expect (a gap after a loss, a duplicate after a resend) is not written: the follower answers
// with the offset it holds, and the sender resumes from there when it next sends again (after `retransmitTicks`
// without progress). Because the follower's answer to the hello is what it holds, a transfer cut short (the link
// failed, the leader gave up, the follower restarted) resumes where it stopped when a new sender starts with the
// same snapshot.
//
// Both ends are loop-bound classes: every method must be called on the node's event loop, and every completion of
// their I/O closures must be called back on it (run the I/O on a thread pool and hop back with `eventLoop.execute`,
// capturing the completion in a `NIOLoopBound`). A completion may also be called synchronously, from inside the
// I/O call.

/// One snapshot streamed to one follower: reads the snapshot's file a chunk at a time, only when the chunk may be
/// sent, and sends it through the node's transport.
///
/// **Flow control.** At most `Options.window` bytes are sent and not yet acknowledged, and at most one chunk is
/// being read, so the sender holds at most a window plus a chunk of the file in memory, whatever the snapshot's size.
/// The chunks go through the same transport queue as heartbeats and appends (one connection per peer, FIFO): the
/// window keeps the part of that queue that is snapshot bytes short (1 MiB by default, against the transport's 8 MiB
/// per peer), so the other Raft traffic is never queued behind more than a window of snapshot bytes, and a heartbeat
/// is never dropped because a snapshot filled the queue.
///
/// **Ends.** A `complete` acknowledgement finishes it with success; a `rejected` one, a failed read, no progress for
/// `ackTimeoutTicks` ticks (or `completionTimeoutTicks` once every byte is acknowledged and the follower is checking
/// the file), or `cancel()` finish it with failure. `onFinish` is called exactly once, with whether the follower
/// installed the snapshot (the node then calls the core's `reportSnapshot(to:succeeded:)`); nothing is sent after it.
///
/// **Untrusted input.** An acknowledgement of another snapshot, one whose offset goes back before what was
/// acknowledged, or goes beyond what was sent, is ignored.
///
/// **Sending.** `send` is called from `start()`, `receive(_:)`, `tick()` and from read completions, that is from
/// outside the node's processing pass: it must queue the chunk (addressed to `peer`, in the node's term) and see that
/// the transport is flushed.
public final class SnapshotSender {
    public struct Options: Sendable, Hashable {
        /// The most bytes one chunk carries (at least 1).
        public var chunkSize = 256 << 10
        /// The most bytes sent and not yet acknowledged (raised to `chunkSize` if below it).
        public var window = 1 << 20
        /// Ticks without progress after which the sender sends again from the acknowledged offset (the hello, if
        /// nothing was acknowledged yet; a probe, once everything was). At least 1.
        public var retransmitTicks = 10
        /// Ticks without progress after which the transfer fails.
        public var ackTimeoutTicks = 100
        /// Ticks to wait for the follower's verdict once every byte is acknowledged (it syncs and checksums the whole
        /// file, which takes a while for a large snapshot).
        public var completionTimeoutTicks = 3000

        public init() {}
    }

    /// How a transfer ended.
    public enum Outcome: Sendable, Hashable, CustomStringConvertible {
        /// The follower holds the snapshot, checked, and handed it to its core.
        case complete
        /// The follower refused the snapshot.
        case rejected
        /// The follower stopped answering (or stopped making progress).
        case timedOut
        /// The snapshot's file could not be read.
        case readFailed(String)
        /// `cancel()` was called.
        case cancelled

        public var description: String {
            switch self {
            case .complete: "complete"
            case .rejected: "rejected by the follower"
            case .timedOut: "timed out"
            case .readFailed(let why): "cannot read the snapshot: \(why)"
            case .cancelled: "cancelled"
            }
        }
    }

    /// Reads `count` bytes of the snapshot's file at `offset`; completes on the loop with exactly `count` bytes.
    public typealias Read = (
        _ offset: UInt64, _ count: Int, _ completion: @escaping (Result<[UInt8], any Error>) -> Void
    ) -> Void

    public let peer: NodeID
    /// The snapshot sent: the last entry it covers, that entry's term, and its file's size.
    public let index: LogIndex
    public let snapshotTerm: Term
    public let totalSize: UInt64
    public let options: Options

    /// Bytes of the file sent, resends included (the hello and probes carry none).
    public private(set) var bytesSent: UInt64 = 0
    /// Chunk messages sent, the hello and probes included.
    public private(set) var chunksSent = 0
    public private(set) var startedAt: NIODeadline?
    public private(set) var finishedAt: NIODeadline?
    /// How it ended; nil while it runs.
    public private(set) var outcome: Outcome?
    /// The follower's last acknowledged offset: the bytes it holds, from the start.
    public private(set) var acknowledged: UInt64 = 0
    /// Bytes sent beyond the acknowledged offset (at most `options.window`).
    public var inFlight: UInt64 { next > acknowledged ? next - acknowledged : 0 }
    public var isFinished: Bool { outcome != nil }

    private let eventLoop: any EventLoop
    private let read: Read
    private let send: (SnapshotChunk) -> Void
    private let onFinish: (Bool) -> Void
    private let clock: () -> NIODeadline
    private let chunkSize: UInt64
    private let window: UInt64

    private var started = false
    /// The follower answered the hello: `acknowledged` is what it holds.
    private var synced = false
    /// The next offset to read and send (`acknowledged ≤ next ≤ totalSize`).
    private var next: UInt64 = 0
    /// The end of the furthest chunk ever sent, or of what the follower said it held: no acknowledgement beyond it is
    /// believed.
    private var highestSent: UInt64 = 0
    /// A read is in flight (one at a time).
    private var reading = false
    /// Bumped whenever the read in flight stops being wanted (a resend from an earlier offset, an acknowledgement
    /// past it, the end): its bytes are then dropped.
    private var readGeneration: UInt64 = 0
    private var idleTicks = 0
    private var pumping = false
    private var pumpAgain = false

    /// - Parameters:
    ///   - read: reads the snapshot's file (on a thread; completes on `eventLoop`).
    ///   - send: queues a chunk for `peer` (see "Sending" above).
    ///   - onFinish: called once, on `eventLoop`, with whether the follower installed the snapshot.
    ///   - clock: for `startedAt` and `finishedAt`.
    public init(
        peer: NodeID, index: LogIndex, snapshotTerm: Term, totalSize: UInt64, options: Options = Options(),
        eventLoop: any EventLoop, read: @escaping Read, send: @escaping (SnapshotChunk) -> Void,
        onFinish: @escaping (Bool) -> Void, clock: @escaping () -> NIODeadline = { .now() }
    ) {
        self.peer = peer
        self.index = index
        self.snapshotTerm = snapshotTerm
        self.totalSize = totalSize
        self.options = options
        self.eventLoop = eventLoop
        self.read = read
        self.send = send
        self.onFinish = onFinish
        self.clock = clock
        self.chunkSize = UInt64(max(1, options.chunkSize))
        self.window = max(UInt64(max(0, options.window)), self.chunkSize)
    }

    /// Sends the hello; the stream begins when the follower answers it. Does nothing after the first call.
    public func start() {
        eventLoop.assertInEventLoop()
        guard !started, outcome == nil else { return }
        started = true
        startedAt = clock()
        sendEmpty(at: 0)
    }

    /// An acknowledgement from `peer` (the node routes it here by sender).
    public func receive(_ ack: SnapshotChunkAck) {
        eventLoop.assertInEventLoop()
        guard started, outcome == nil, ack.index == index, ack.snapshotTerm == snapshotTerm else { return }
        switch ack.status {
        case .rejected:
            finish(.rejected)
        case .complete:
            guard ack.offset == totalSize else { return }
            finish(.complete)
        case .accepted:
            guard ack.offset <= totalSize else { return }
            if !synced {
                // The answer to the hello: what the follower already holds (from an earlier attempt, perhaps).
                synced = true
                acknowledged = ack.offset
                next = ack.offset
                highestSent = max(highestSent, ack.offset)
                idleTicks = 0
                pump()
                return
            }
            guard ack.offset >= acknowledged, ack.offset <= highestSent else { return }
            if ack.offset > acknowledged {
                acknowledged = ack.offset
                idleTicks = 0
                if next < acknowledged {
                    // The follower holds more than we were about to send (it had it from before a resend).
                    next = acknowledged
                    readGeneration &+= 1
                }
            }
            pump()
        }
    }

    /// One tick of the node's clock: resends after `retransmitTicks` without progress, gives up after the timeout.
    public func tick() {
        eventLoop.assertInEventLoop()
        guard started, outcome == nil else { return }
        idleTicks += 1
        let limit = synced && acknowledged == totalSize ? options.completionTimeoutTicks : options.ackTimeoutTicks
        if idleTicks >= limit {
            finish(.timedOut)
            return
        }
        guard idleTicks % max(1, options.retransmitTicks) == 0 else { return }
        if !synced {
            sendEmpty(at: 0)
        } else if acknowledged == totalSize {
            // Everything arrived; the verdict may have been lost: a follower that installed the snapshot answers
            // `complete` again.
            sendEmpty(at: totalSize)
        } else {
            // What was sent beyond the acknowledged offset may be lost: go back and send it again.
            next = acknowledged
            readGeneration &+= 1
            pump()
        }
    }

    /// Stops the transfer (the node is no longer leader, or the peer left): `onFinish(false)`, unless it had
    /// finished already.
    public func cancel() {
        eventLoop.assertInEventLoop()
        finish(.cancelled)
    }

    private func sendEmpty(at offset: UInt64) {
        chunksSent += 1
        send(SnapshotChunk(index: index, snapshotTerm: snapshotTerm, offset: offset, totalSize: totalSize, data: []))
    }

    /// Starts the next read if the window has room for its chunk; loops rather than recursing when reads complete
    /// synchronously.
    private func pump() {
        guard !pumping else {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            startRead()
        } while pumpAgain
    }

    private func startRead() {
        guard started, synced, outcome == nil, !reading, next < totalSize else { return }
        let count = min(chunkSize, totalSize - next)
        guard next - acknowledged + count <= window else { return }
        reading = true
        let generation = readGeneration
        let offset = next
        read(offset, Int(count)) { [weak self] result in
            self?.readCompleted(result, offset: offset, count: count, generation: generation)
        }
    }

    private func readCompleted(
        _ result: Result<[UInt8], any Error>, offset: UInt64, count: UInt64, generation: UInt64
    ) {
        eventLoop.assertInEventLoop()
        reading = false
        guard outcome == nil else { return }
        guard generation == readGeneration else {
            // Not wanted any more: read what is wanted now.
            pump()
            return
        }
        switch result {
        case .failure(let error):
            finish(.readFailed("\(count) bytes at offset \(offset): \(error)"))
        case .success(let bytes):
            guard UInt64(bytes.count) == count else {
                finish(.readFailed("\(bytes.count) bytes where \(count) were asked for at offset \(offset)"))
                return
            }
            next = offset + count
            highestSent = max(highestSent, next)
            bytesSent += count
            chunksSent += 1
            send(
                SnapshotChunk(
                    index: index, snapshotTerm: snapshotTerm, offset: offset, totalSize: totalSize, data: bytes)
            )
            pump()
        }
    }

    private func finish(_ how: Outcome) {
        guard outcome == nil else { return }
        outcome = how
        finishedAt = clock()
        readGeneration &+= 1
        onFinish(how == .complete)
    }
}

/// Where a follower keeps a snapshot while it arrives: the node implements it with its snapshot store.
///
/// Calls are serialized by the receiver: no call is made while a `write` or `complete` is in flight.
public protocol SnapshotReceiverStorage: AnyObject {
    /// Opens the partial file of this snapshot, or resumes one left by an earlier attempt (of the same snapshot and
    /// size), and returns how many bytes from its start it already holds. Opening one snapshot drops any partial
    /// file of another.
    func begin(index: LogIndex, term: Term, totalSize: UInt64) throws -> UInt64
    /// Writes `bytes` at `offset` of the partial file (on a thread); completes on the node's loop.
    func write(_ bytes: [UInt8], at offset: UInt64, completion: @escaping (Result<Void, any Error>) -> Void)
    /// Every byte is written: syncs the file, checks its checksum and header, puts it in place of the node's
    /// snapshot, and returns the metadata the file holds; completes on the node's loop. Fails if the file does not
    /// check out.
    func complete(completion: @escaping (Result<SnapshotMetadata, any Error>) -> Void)
    /// Drops the partial file (a snapshot that replaced it, or that failed its check).
    func discard()
}

/// The follower's end: takes a leader's chunks in order, writes them one at a time, acknowledges each, and when the
/// file is whole has it checked and hands it to the node (`onComplete`, which steps the core with
/// `installSnapshot`).
///
/// One per node; one transfer at a time. A chunk of another snapshot, or from another leader or term, replaces the
/// transfer in progress (its partial file is discarded) — unless it is from an earlier term, or from the same term
/// and of an older snapshot (a lower index): then it is ignored. A chunk that is not at the offset the receiver is at
/// is not written: the receiver answers with the offset it holds. A snapshot larger than `maxTotalSize`, or a chunk
/// larger than `maxChunkSize`, is answered `rejected`.
///
/// Memory: at most `maxBufferedBytes` of chunks wait for their write (a sender's window of them); chunks beyond it
/// are dropped unanswered, and the sender sends them again.
///
/// Acknowledgements after a write or a check go through the `ack` closure of the latest chunk of the transfer: as for
/// the sender's `send`, it must queue the message (to the leader, in the node's term) and see the transport flushed.
/// The node should drop chunks whose message term is below its core's term before calling `receive`.
public final class SnapshotReceiver {
    public struct Options: Sendable, Hashable {
        /// The largest snapshot accepted.
        public var maxTotalSize: UInt64 = 64 << 30
        /// The largest chunk accepted.
        public var maxChunkSize = 1 << 20
        /// The most bytes of chunks that wait for their write (at least a sender's window).
        public var maxBufferedBytes = 4 << 20

        public init() {}
    }

    public typealias Ack = (SnapshotChunkAck) -> Void

    /// The transfer in progress (or the last one finished), for status and tests.
    public struct Transfer: Sendable, Hashable {
        public var index: LogIndex
        public var snapshotTerm: Term
        public var totalSize: UInt64
        public var leader: NodeID
        public var leaderTerm: Term
        /// Bytes written, from the start.
        public var written: UInt64
        /// The snapshot was checked and handed to the node.
        public var installed: Bool
    }

    public let options: Options
    /// Bytes of chunks written, over every transfer.
    public private(set) var bytesWritten: UInt64 = 0
    /// Snapshots completed and handed over, and refused (too large, not storable, failed the check).
    public private(set) var snapshotsInstalled = 0
    public private(set) var snapshotsRejected = 0

    public var transfer: Transfer? {
        current.map {
            Transfer(
                index: $0.key.index, snapshotTerm: $0.key.snapshotTerm, totalSize: $0.key.totalSize,
                leader: $0.key.leader, leaderTerm: $0.key.leaderTerm, written: $0.durable, installed: $0.installed)
        }
    }

    private struct Key: Hashable {
        var index: LogIndex
        var snapshotTerm: Term
        var totalSize: UInt64
        var leader: NodeID
        var leaderTerm: Term
    }

    private final class Current {
        let key: Key
        var ack: Ack
        /// Bytes written.
        var durable: UInt64
        /// Bytes written or waiting for their write: where the next chunk must begin.
        var expected: UInt64
        var queue: [SnapshotChunk] = []
        var queueHead = 0
        var queuedBytes = 0
        var completing = false
        var installed = false
        /// A chunk of another snapshot arrived while this one's I/O was in flight: drop this one once it returns.
        var superseded = false

        init(key: Key, ack: @escaping Ack, received: UInt64) {
            self.key = key
            self.ack = ack
            self.durable = received
            self.expected = received
        }
    }

    private let eventLoop: any EventLoop
    private let storage: any SnapshotReceiverStorage
    private let onComplete: (SnapshotMetadata, NodeID, Term) -> Void
    private var current: Current?
    /// A write or a `complete` is in flight.
    private var busy = false
    /// The chunk that will replace the current transfer once its I/O in flight returns.
    private var deferred: (chunk: SnapshotChunk, leader: NodeID, term: Term, ack: Ack)?
    private var stopped = false
    private var pumping = false
    private var pumpAgain = false

    /// - Parameter onComplete: called on the loop with the checked snapshot's metadata, the leader that sent it and
    ///   the term it sent it in, before the `complete` acknowledgement is sent.
    public init(
        storage: any SnapshotReceiverStorage, options: Options = Options(), eventLoop: any EventLoop,
        onComplete: @escaping (SnapshotMetadata, NodeID, Term) -> Void
    ) {
        self.storage = storage
        self.options = options
        self.eventLoop = eventLoop
        self.onComplete = onComplete
    }

    /// A chunk from `leader`, sent in `term`; `ack` queues an acknowledgement to it.
    public func receive(_ chunk: SnapshotChunk, from leader: NodeID, term: Term, send ack: @escaping Ack) {
        eventLoop.assertInEventLoop()
        guard !stopped else { return }
        // Malformed (the codec refuses these; another transport might not).
        guard chunk.offset <= chunk.totalSize, UInt64(chunk.data.count) <= chunk.totalSize - chunk.offset else {
            return
        }
        // Older than the transfer in progress (or than the one waiting to replace it): ignored.
        if let current, isOlder(chunk, term, than: current.key.index, current.key.leaderTerm) { return }
        if let deferred, isOlder(chunk, term, than: deferred.chunk.index, deferred.term) { return }
        guard chunk.totalSize <= options.maxTotalSize, chunk.data.count <= options.maxChunkSize else {
            snapshotsRejected += 1
            ack(answer(chunk, 0, .rejected))
            return
        }
        let key = Key(
            index: chunk.index, snapshotTerm: chunk.snapshotTerm, totalSize: chunk.totalSize, leader: leader,
            leaderTerm: term)
        if let current, current.key == key {
            guard !current.superseded else { return }
            current.ack = ack
            take(chunk, into: current)
            return
        }
        // Another snapshot, or another leader's: it replaces the current transfer.
        if busy, let current {
            current.superseded = true
            current.queue = []
            current.queueHead = 0
            current.queuedBytes = 0
            deferred = (chunk, leader, term, ack)
            return
        }
        if let current, !current.installed { storage.discard() }
        current = nil
        let received: UInt64
        do {
            received = try storage.begin(index: chunk.index, term: chunk.snapshotTerm, totalSize: chunk.totalSize)
        } catch {
            snapshotsRejected += 1
            ack(answer(chunk, 0, .rejected))
            return
        }
        guard received <= chunk.totalSize else {
            storage.discard()
            snapshotsRejected += 1
            ack(answer(chunk, 0, .rejected))
            return
        }
        let transfer = Current(key: key, ack: ack, received: received)
        current = transfer
        take(chunk, into: transfer)
    }

    /// Stops: nothing more is written, completed or acknowledged (the partial file stays, for a later resume).
    public func stop() {
        eventLoop.assertInEventLoop()
        stopped = true
        deferred = nil
    }

    /// From an earlier term, or from the same term and of an older snapshot.
    private func isOlder(_ chunk: SnapshotChunk, _ term: Term, than index: LogIndex, _ leaderTerm: Term) -> Bool {
        term < leaderTerm || (term == leaderTerm && chunk.index < index)
    }

    private func answer(_ chunk: SnapshotChunk, _ offset: UInt64, _ status: SnapshotChunkAck.Status) -> SnapshotChunkAck
    {
        SnapshotChunkAck(index: chunk.index, snapshotTerm: chunk.snapshotTerm, offset: offset, status: status)
    }

    private func answer(_ transfer: Current, _ offset: UInt64, _ status: SnapshotChunkAck.Status) -> SnapshotChunkAck {
        SnapshotChunkAck(
            index: transfer.key.index, snapshotTerm: transfer.key.snapshotTerm, offset: offset, status: status)
    }

    private func take(_ chunk: SnapshotChunk, into transfer: Current) {
        if transfer.installed {
            transfer.ack(answer(transfer, transfer.key.totalSize, .complete))
            return
        }
        if transfer.completing {
            transfer.ack(answer(transfer, transfer.durable, .accepted))
            return
        }
        guard chunk.offset == transfer.expected, !chunk.data.isEmpty else {
            // A hello, a probe, a gap or a duplicate: say where we are, write nothing. (A hello that finds every byte
            // already there goes on to the check.)
            transfer.ack(answer(transfer, transfer.durable, .accepted))
            pump()
            return
        }
        guard transfer.queuedBytes + chunk.data.count <= max(options.maxBufferedBytes, options.maxChunkSize) else {
            return  // dropped: the sender sends it again
        }
        transfer.queue.append(chunk)
        transfer.queuedBytes += chunk.data.count
        transfer.expected += UInt64(chunk.data.count)
        pump()
    }

    /// Starts the next write, or the check once every byte is written; loops rather than recursing when I/O
    /// completes synchronously.
    private func pump() {
        guard !pumping else {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            startIO()
        } while pumpAgain
    }

    private func startIO() {
        guard !stopped, !busy else { return }
        if let pending = deferred {
            deferred = nil
            receive(pending.chunk, from: pending.leader, term: pending.term, send: pending.ack)
            return
        }
        guard let transfer = current, !transfer.installed, !transfer.completing, !transfer.superseded else { return }
        if transfer.queueHead < transfer.queue.count {
            let chunk = transfer.queue[transfer.queueHead]
            transfer.queueHead += 1
            if transfer.queueHead == transfer.queue.count {
                transfer.queue = []
                transfer.queueHead = 0
            }
            transfer.queuedBytes -= chunk.data.count
            busy = true
            storage.write(chunk.data, at: chunk.offset) { [weak self] result in
                self?.written(result, chunk.offset + UInt64(chunk.data.count), transfer)
            }
        } else if transfer.durable == transfer.key.totalSize {
            transfer.completing = true
            busy = true
            storage.complete { [weak self] result in self?.completed(result, transfer) }
        }
    }

    private func written(_ result: Result<Void, any Error>, _ end: UInt64, _ transfer: Current) {
        eventLoop.assertInEventLoop()
        busy = false
        guard !stopped, transfer === current else { return }
        if transfer.superseded {
            storage.discard()
            current = nil
        } else {
            switch result {
            case .success:
                bytesWritten += end - transfer.durable
                transfer.durable = end
                transfer.ack(answer(transfer, end, .accepted))
            case .failure:
                // Cannot store it: the leader stops, and tries again later from the start.
                storage.discard()
                current = nil
                snapshotsRejected += 1
                transfer.ack(answer(transfer, 0, .rejected))
            }
        }
        pump()
    }

    private func completed(_ result: Result<SnapshotMetadata, any Error>, _ transfer: Current) {
        eventLoop.assertInEventLoop()
        busy = false
        transfer.completing = false
        guard !stopped, transfer === current else { return }
        // Even if superseded meanwhile: a file that checked out is in place, and the node must know it.
        if case .success(let meta) = result, meta.index == transfer.key.index, meta.term == transfer.key.snapshotTerm {
            transfer.installed = true
            snapshotsInstalled += 1
            onComplete(meta, transfer.key.leader, transfer.key.leaderTerm)
            transfer.ack(answer(transfer, transfer.key.totalSize, .complete))
        } else {
            // The bytes do not check out (or hold another snapshot): the leader starts again from scratch.
            storage.discard()
            current = nil
            snapshotsRejected += 1
            transfer.ack(answer(transfer, 0, .rejected))
        }
        pump()
    }
}
