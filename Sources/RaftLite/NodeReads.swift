import NIOCore
import RaftCore

/// How fresh a read must be.
public enum ReadConsistency: String, Sendable, Hashable, CaseIterable {
    /// Linearizable, confirmed by a quorum (ReadIndex, thesis §6.4): the read sees every write that completed before
    /// it began. On a follower, the follower asks the leader for the read index and serves the read itself.
    case linearizable
    /// Linearizable on the leader without a round trip while its lease holds (thesis §6.4.1), if the node was
    /// started with `Options.leaseReads`; otherwise the same as `linearizable`. Rests on a clock assumption: see
    /// `Options.leaseReads`. On a follower, the same as `linearizable`.
    case lease
    /// This node's own copy, however far behind the leader it is (never waits for anyone, only for `atLeast`).
    case serializable
}

/// How a read was served (the `path` of `raft_reads_served_total`).
enum ReadPath: String, CaseIterable {
    case readIndex = "read_index"
    case lease
    case local
    /// Testing only: `Options.unsafeReadsWithoutConfirmation`.
    case unconfirmed
}

/// The answer to a read: what the read body returned, and the state it read.
public struct ReadResult<Value: Sendable>: Sendable {
    public var value: Value
    /// The last entry the state machine had applied when it was read.
    public var appliedIndex: LogIndex
}

/// A read waiting for its read index or for the state machine to reach it. Its body and promise are type-erased.
struct PendingRead {
    var serve: (LogIndex) -> Void
    var fail: (RaftNodeError) -> Void
    /// The index the state machine must reach (the read index, or the caller's `atLeast`, the larger).
    var atLeast: LogIndex
    var deadline: Scheduled<Void>?
    /// When the core was first asked for this read's index, and in which term; nil until it was asked.
    var firstAsked: NIODeadline?
    var askedTerm: Term?
    /// Ticks since the core was last asked for it (a follower's request may be lost on the way to the leader).
    var ticksSinceAsked = 0
    /// The core said it will not answer (it stopped leading, or the leader refused): ask again at the next tick.
    var dropped = false
}

/// The node's reads: those waiting for a read index (by context), those waiting for the state machine to apply up to
/// their index, and the leader's lease.
struct NodeReads {
    /// The next read's context, from a random start: the core takes a leader's answer for whichever read of this
    /// node has its context, so a late answer to a read of an earlier run of this node (the same contexts, had they
    /// started from 0 again) would be taken for one of this run's — with a read index from before the restart.
    /// The simulator found it (seed 18 of `ReadCheckTests`).
    var nextContext = UInt64.random(in: 0...UInt64.max)
    var waitingIndex: [UInt64: PendingRead] = [:]
    /// Reads whose index is known, waiting for the state machine to reach it, by context.
    var waitingApply: [UInt64: PendingRead] = [:]
    /// The lease (with `Options.leaseReads`), on the monotonic clock (`NIODeadline` nanoseconds).
    var lease: ReadLease?
    /// Contexts asked only to renew the lease (no read waits for them).
    var renewals: [UInt64: (asked: NIODeadline, term: Term)] = [:]

    mutating func context() -> UInt64 {
        nextContext &+= 1
        return nextContext
    }
}

extension RaftNode {
    /// The leader's lease (see `ReadLease`): what a voter that answered is sure to wait before it takes part in
    /// another election, less the clock-drift allowance. Nil if that is not positive.
    var emptyLease: ReadLease? {
        ReadLease(
            tickLength: options.tickInterval.nanoseconds, electionTick: options.electionTicks,
            drift: options.leaseClockDrift.nanoseconds)
    }

    /// Reads this node's state machine with the given consistency, once it has applied at least `atLeast`.
    ///
    /// - `linearizable` (the default): ReadIndex — the leader confirms it still leads with one heartbeat round
    ///   (shared by every read that arrives while one is in flight), then the read is served here once the state
    ///   machine has applied up to the leader's commit index. No log entry, no disk write. On a follower the
    ///   follower asks the leader for the index and serves the read itself: reads spread over the cluster.
    /// - `lease`: on a leader with `Options.leaseReads`, no round at all while its lease holds.
    /// - `serializable`: this node's copy as it is (after `atLeast`).
    ///
    /// `body` runs on the node's event loop and must be quick.
    /// - Throws: `RaftNodeError.readUnavailable` (not confirmed within `Options.readTimeout`: no leader, or a
    ///   partition), `paused`, `stopped`, `notStarted`. A read changes nothing: every error may be retried.
    public func read<T: Sendable>(
        _ consistency: ReadConsistency = .linearizable, atLeast: LogIndex = .zero,
        _ body: @escaping @Sendable (Machine) -> T
    ) async throws(RaftNodeError) -> ReadResult<T> {
        do {
            return try await readFuture(consistency, atLeast: atLeast, body).get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .stopped
        }
    }

    /// `read(_:atLeast:_:)` as a future, for code on the node's loop.
    public func readFuture<T: Sendable>(
        _ consistency: ReadConsistency = .linearizable, atLeast: LogIndex = .zero,
        _ body: @escaping @Sendable (Machine) -> T
    ) -> EventLoopFuture<ReadResult<T>> {
        let promise = eventLoop.makePromise(of: ReadResult<T>.self)
        if eventLoop.inEventLoop {
            submitRead(consistency, atLeast: atLeast, body, promise)
        } else {
            eventLoop.execute { self.submitRead(consistency, atLeast: atLeast, body, promise) }
        }
        return promise.futureResult
    }

    private func submitRead<T: Sendable>(
        _ consistency: ReadConsistency, atLeast: LogIndex, _ body: @escaping @Sendable (Machine) -> T,
        _ promise: EventLoopPromise<ReadResult<T>>
    ) {
        guard let rt = runtime.value else { return promise.fail(RaftNodeError.notStarted) }
        guard !rt.stopped else { return promise.fail(RaftNodeError.stopped) }
        guard !rt.paused else { return promise.fail(RaftNodeError.paused) }
        metrics.reads[consistency]?.increment()
        // Served from what this node holds: its own copy; a leader's within its lease (the lease promises that no
        // other leader exists, so its commit index holds every completed write); or — testing only — a leader's
        // commit index, unconfirmed: the bug the Jepsen-style suite must catch (a deposed leader that does not know
        // it is one serves stale values).
        let path: ReadPath
        if consistency == .serializable {
            path = .local
        } else if consistency == .lease && leaseHolds(rt) {
            path = .lease
        } else if options.unsafeReadsWithoutConfirmation && rt.raft.role == .leader {
            path = .unconfirmed
        } else {
            path = .readIndex
        }
        let served = metrics.readsServed[path]
        var read = PendingRead(
            serve: { _ in
                served?.increment()
                promise.succeed(ReadResult(value: body(rt.machine), appliedIndex: rt.machineApplied))
            },
            fail: { promise.fail($0) }, atLeast: atLeast)
        if path != .readIndex {
            if consistency != .serializable { read.atLeast = max(atLeast, rt.raft.log.committed) }
            if rt.machineApplied >= read.atLeast { return read.serve(rt.machineApplied) }
            let context = rt.reads.context()
            armReadDeadline(&read, context: context, rt)
            rt.reads.waitingApply[context] = read
            return
        }
        let context = rt.reads.context()
        armReadDeadline(&read, context: context, rt)
        rt.reads.waitingIndex[context] = read
        ask(context, rt)
        scheduleProcess()
    }

    /// Whether this node may serve a lease read now: lease reads are on, the core allows them (it leads, has
    /// committed in its term, and has not handed leadership on), and the lease, measured on the monotonic clock, has
    /// not run out.
    private func leaseHolds(_ rt: NodeRuntime<Machine>) -> Bool {
        guard options.leaseReads, let lease = rt.reads.lease else { return false }
        return lease.holds(now: Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds), rt.raft)
    }

    /// Asks the core for the read index of a waiting read (again, if it was asked before).
    private func ask(_ context: UInt64, _ rt: NodeRuntime<Machine>) {
        guard var read = rt.reads.waitingIndex[context] else { return }
        read.ticksSinceAsked = 0
        read.dropped = false
        do {
            try rt.raft.readIndex(context: context)
            if read.firstAsked == nil || read.askedTerm != rt.raft.term {
                read.firstAsked = .now()
                read.askedTerm = rt.raft.term
            }
        } catch {
            // No leader known: ask again at the next tick.
            read.dropped = true
        }
        rt.reads.waitingIndex[context] = read
    }

    private func armReadDeadline(_ read: inout PendingRead, context: UInt64, _ rt: NodeRuntime<Machine>) {
        let timeout = options.readTimeout
        read.deadline = eventLoop.scheduleTask(in: timeout) { [weak self] in
            guard let self, let rt = self.runtime.value else { return }
            let ms = timeout.nanoseconds / 1_000_000
            if let read = rt.reads.waitingIndex.removeValue(forKey: context) {
                read.fail(.readUnavailable("no leader confirmed it within \(ms) ms"))
            } else if let read = rt.reads.waitingApply.removeValue(forKey: context) {
                read.fail(
                    .readUnavailable(
                        "the state machine did not reach index \(read.atLeast) within \(ms) ms "
                            + "(it is at \(rt.machineApplied))"))
            }
        }
    }

    /// The core's answers: read indexes confirmed, and reads it will not answer.
    func readsAnswered(_ states: [ReadState], dropped: [UInt64], _ rt: NodeRuntime<Machine>) {
        for state in states {
            if let renewal = rt.reads.renewals.removeValue(forKey: state.context) {
                extendLease(from: renewal.asked, term: renewal.term, rt)
                continue
            }
            guard var read = rt.reads.waitingIndex.removeValue(forKey: state.context) else { continue }
            if let asked = read.firstAsked, let term = read.askedTerm { extendLease(from: asked, term: term, rt) }
            read.atLeast = max(read.atLeast, state.index)
            rt.reads.waitingApply[state.context] = read
        }
        for context in dropped {
            if rt.reads.renewals.removeValue(forKey: context) != nil { continue }
            rt.reads.waitingIndex[context]?.dropped = true
        }
        if !states.isEmpty { serveReads(rt) }
    }

    /// A round that began after `asked` was confirmed while this node leads in `term`: no other leader can be
    /// elected before the lease's end, counted from `asked` (earlier than the round's start, so shorter than it
    /// could be — on the safe side).
    private func extendLease(from asked: NIODeadline, term: Term, _ rt: NodeRuntime<Machine>) {
        guard options.leaseReads, rt.raft.role == .leader, rt.raft.term == term else { return }
        if rt.reads.lease == nil { rt.reads.lease = emptyLease }
        rt.reads.lease?.confirmed(askedAt: Int64(truncatingIfNeeded: asked.uptimeNanoseconds), term: term)
    }

    /// Serves every read whose index the state machine has reached. Called after entries are applied.
    func serveReads(_ rt: NodeRuntime<Machine>) {
        guard !rt.reads.waitingApply.isEmpty else { return }
        let applied = rt.machineApplied
        let ready = rt.reads.waitingApply.filter { $0.value.atLeast <= applied }
        for (context, read) in ready {
            rt.reads.waitingApply[context] = nil
            read.deadline?.cancel()
            read.serve(applied)
        }
    }

    /// At every tick: ask again for the reads the core dropped or could not take, and those a follower asked the
    /// leader about a while ago without an answer (the request or the answer may have been lost); a leader with
    /// lease reads renews its lease with the next heartbeat.
    func tickReads(_ rt: NodeRuntime<Machine>) {
        let patience = max(2, 2 * options.heartbeatTicks)
        for (context, read) in rt.reads.waitingIndex {
            let lost = rt.raft.role != .leader && read.ticksSinceAsked + 1 >= patience
            if read.dropped || lost {
                ask(context, rt)
            } else {
                rt.reads.waitingIndex[context]?.ticksSinceAsked += 1
            }
        }
        if options.leaseReads, rt.raft.leaseReadsAllowed, rt.reads.renewals.isEmpty {
            let context = rt.reads.context()
            do {
                try rt.raft.readIndex(context: context)
                rt.reads.renewals[context] = (.now(), rt.raft.term)
            } catch {}
        }
        if rt.raft.role != .leader { rt.reads.renewals = [:] }
    }

    /// Fails every waiting read (the node stops).
    func failAllReads(_ rt: NodeRuntime<Machine>, _ error: RaftNodeError) {
        let reads = Array(rt.reads.waitingIndex.values) + Array(rt.reads.waitingApply.values)
        rt.reads.waitingIndex = [:]
        rt.reads.waitingApply = [:]
        rt.reads.renewals = [:]
        for read in reads {
            read.deadline?.cancel()
            read.fail(error)
        }
    }
}
