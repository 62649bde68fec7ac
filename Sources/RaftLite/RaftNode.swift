import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftTLS
import RaftTransport

/// One node of a Raft cluster: it owns a Raft core, a clock, storage, a transport and the application's state
/// machine, and drives them.
///
/// ```swift
/// let cluster = try ClusterConfiguration(["node0": ["ip": "127.0.0.1", "port": "5567"],
///                                         "node1": ["ip": "127.0.0.1", "port": "5566"],
///                                         "node2": ["ip": "127.0.0.1", "port": "5565"]])
/// let node = try RaftNode(cluster: cluster, name: "node0")
/// try await node.start()
/// try await node.propose(Array("{\"val\": 1}".utf8))      // returns once committed and applied
/// print(await node.latestCommittedEntry() as Any)
/// await node.stop()
/// ```
///
/// Everything the node does happens on one event loop, in the order the inputs arrive, so the core and the state
/// machine need no locks. The public methods may be called from anywhere.
public final class RaftNode<Machine: StateMachine>: Sendable {
    /// Timing and limits. Durations are multiples of `tickInterval`.
    public struct Options: Sendable {
        /// One tick of the Raft clock.
        public var tickInterval: TimeAmount = .milliseconds(100)
        /// An election timeout is 1 to 2 times this many ticks; a leader heartbeats every `heartbeatTicks`.
        public var electionTicks = 10
        public var heartbeatTicks = 1
        public var preVote = true
        public var checkQuorum = true
        /// Forward proposals made on a follower to the leader (else they fail with `notLeader(leaderHint:)`).
        public var forwardProposals = true
        /// How long `propose` waits for its command to be committed and applied before giving up with `timedOut`.
        public var proposalTimeout: TimeAmount = .seconds(5)
        public var maxProposalBytes = 1 << 20
        public var maxMessageBytes = 1 << 20
        public var maxInflightMessages = 256
        /// Where to listen for peers; by default the address the configuration gives this node.
        public var listenHost: String?
        public var transport = TCPTransport.Options()
        /// Mutual TLS with the peers (nil: plain TCP), for the default TCP transport; `peerTLS.reload()` applies to
        /// the connections made after it. See `PeerTLSRequirement` for when a node should refuse to run without it.
        public var peerTLS: PeerTLS?
        /// The seed of the election-timeout generator; random by default.
        public var randomSeed: UInt64?
        /// How many committed entries with ids `committedEntry(id:)` remembers (the oldest are forgotten first).
        public var rememberedIDs = 100_000
        /// Snapshot once this many entries were applied since the last snapshot (0: never for this reason). Only
        /// for a node with a snapshot store (a data directory) and a state machine that implements snapshots.
        public var snapshotEntries = 100_000
        /// Snapshot once this many bytes of entries were applied since the last snapshot (0: never for this reason).
        public var snapshotBytes = 64 << 20
        /// Neither of the two reasons above starts a snapshot before the bytes applied since the last one reach this
        /// multiple of that snapshot's size (0: no such wait). A snapshot writes the whole state, so without it a
        /// state much larger than `snapshotBytes` would be written out again for every `snapshotBytes` applied; with
        /// it, snapshots write at most 1/`snapshotStateFactor` bytes per byte applied, however large the state. The
        /// price: the log since the last snapshot may hold up to this multiple of the state's size, on disk and in
        /// memory, and a restart replays it.
        public var snapshotStateFactor = 2.0
        /// How many entries before the latest snapshot the log keeps after compacting, so that a follower slightly
        /// behind still gets entries rather than a whole snapshot.
        public var compactionMargin = 5_000
        /// And no more entry bytes than this in that margin (0: no byte bound). Each compaction writes the entries it
        /// keeps into a new log segment, so with large values a margin of thousands of entries rewrote hundreds of
        /// megabytes at every snapshot while the log's other writes waited behind it.
        public var compactionMarginBytes = 64 << 20
        /// Snapshots go to followers in chunks of this many bytes, with at most `snapshotWindowBytes` of them
        /// unacknowledged, so that a transfer never crowds out the heartbeats and appends on the same link.
        public var snapshotChunkBytes = 256 << 10
        public var snapshotWindowBytes = 1 << 20
        /// A learner is promoted (`addVoter`, `promote`) once its log is within this many entries of the leader's.
        public var learnerCatchUpLag = 1_000
        /// How long `addVoter` and `promote` wait for a learner to catch up.
        public var learnerCatchUpTimeout: TimeAmount = .seconds(300)
        /// A leader asked to stop (`stop()`) first hands leadership to the most up-to-date voter, so that the cluster
        /// does not wait an election timeout for a new one.
        public var transferLeadershipOnStop = true
        /// A follower whose connection to the leader is lost starts a pre-vote at once, and a voter that lost the
        /// leader too grants it (`RaftConfiguration.fastFailover`): a crashed leader is replaced in a few round trips
        /// rather than an election timeout. On by default: the simulator and the Jepsen-style suite run with it.
        public var fastFailover = true
        /// Serve `ReadConsistency.lease` reads on the leader without a round trip while its lease holds (thesis
        /// §6.4.1). Off by default. The lease lasts `(electionTicks - 1) * tickInterval - leaseClockDrift` from the
        /// start of the last round a quorum confirmed, measured on this machine's monotonic clock. It rests on an
        /// assumption about clocks: that every voter's ticks run no faster than this node's clock by more than
        /// `leaseClockDrift` over that span (a voter that heard from the leader ignores vote requests for
        /// `electionTicks` of its ticks). A process paused for a while is safe (its clock runs on while it is
        /// stopped); a machine whose clock jumps forward or runs fast is not. Needs `checkQuorum`; it turns the
        /// leader lease strict (`RaftConfiguration.strictLease`: no hurried failover, and a restarted node waits an
        /// election timeout before it votes), so a crashed leader is replaced after an election timeout.
        public var leaseReads = false
        /// The allowance for clock drift that `leaseReads` takes off the lease.
        public var leaseClockDrift: TimeAmount = .milliseconds(100)
        /// How long a read waits for its read index and for the state machine before it fails (`readUnavailable`).
        public var readTimeout: TimeAmount = .seconds(5)
        /// Testing only: a leader serves linearizable reads at its own commit index without confirming that it still
        /// leads — the broken read path the Jepsen-style suite must catch. Never turn it on otherwise.
        public var unsafeReadsWithoutConfirmation = false
        /// A client session (`registerSession()`) expires when it has not been used for this long, as the
        /// replicated table's clock measures it (the highest wall-clock time any proposer stamped on a session
        /// entry). An hour, as LogCabin's default: far above any client's pause between retries and any sane clock
        /// difference between nodes, so a client that retries does not lose its session to either. It is carried in
        /// the register entry, so each session keeps the timeout of the node that registered it.
        public var sessionTimeout: TimeAmount = .hours(1)
        /// The most client sessions the replicated table keeps; registering one more drops the least recently used.
        /// A session costs about 60 bytes plus its last result in memory and in every snapshot.
        public var maxSessions = 50_000
        public var logger = Logger(label: "raftlite")

        public init() {}
    }

    /// The node's name in the cluster configuration, and its id.
    public let name: String
    public let id: NodeID
    public let cluster: ClusterConfiguration
    public let options: Options
    /// This node's own entry (its address).
    let selfMember: ClusterConfiguration.Member
    /// The event loop on which the node runs.
    public let eventLoop: any EventLoop
    let transport: any RaftTransport
    let storage: any NodeStorage
    /// Where snapshots are kept (nil: this node never snapshots, and cannot take one from a leader).
    let snapshotStore: SnapshotStore?
    let logger: Logger
    private let machineBeforeStart: NIOLoopBoundBox<Machine?>
    let runtime: NIOLoopBoundBox<NodeRuntime<Machine>?>
    let observers: NIOLoopBoundBox<Observers>
    /// Signalled when the node has stopped: with nil after `stop()`, with the error when it stopped on its own.
    private let stopped = StopSignal()
    let metrics: NodeMetrics
    var streams: NodeStreams { NodeStreams(eventLoop: eventLoop, observers: observers) }

    /// Creates a node; it does nothing until `start()`.
    ///
    /// - Parameters:
    ///   - cluster: every member and its address.
    ///   - name: this node's name in `cluster`.
    ///   - stateMachine: the application's state, to which committed commands are applied.
    ///   - storage: where term, vote and log are kept (by default in memory: a restarted process forgets them, so
    ///     use durable storage for anything but experiments).
    ///   - transport: how messages travel (by default TCP to the addresses in `cluster`).
    ///   - address: this node's own entry, for a node that is not in `cluster` (one that joins a running cluster:
    ///     `cluster` is then the cluster's bootstrap configuration, and the node is a member once a change adds it).
    /// - Throws: `RaftNodeError.configuration` if `name` is not a member and no `address` is given.
    public init(
        cluster: ClusterConfiguration, name: String, stateMachine: sending Machine,
        storage: any NodeStorage = InMemoryNodeStorage(), snapshotStore: SnapshotStore? = nil,
        options: Options = Options(), eventLoop: (any EventLoop)? = nil, transport: (any RaftTransport)? = nil,
        address: ClusterConfiguration.Member? = nil
    ) throws(RaftNodeError) {
        let me: ClusterConfiguration.Member
        if let address, cluster[name] == nil {
            guard address.name == name else {
                throw .configuration("the address given is for \"\(address.name)\", not \"\(name)\"")
            }
            me = address
        } else {
            me = try Self.member(name, of: cluster)
        }
        self.selfMember = me
        if let eventLoop, let transport, eventLoop !== transport.eventLoop {
            throw .configuration("the transport runs on another event loop than the one given for the node")
        }
        let loop = eventLoop ?? transport?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        // Every message must fit in a frame: the largest batch of entries, or the largest single proposal.
        let largestMessage = max(
            options.maxMessageBytes, options.maxProposalBytes + ProposalEnvelope.overhead + Entry.headerSize)
        guard transport != nil || largestMessage + 4096 <= options.transport.maxFrameSize else {
            throw .configuration(
                "maxMessageBytes (\(options.maxMessageBytes)) and maxProposalBytes (\(options.maxProposalBytes)) must "
                    + "fit in the transport's maxFrameSize (\(options.transport.maxFrameSize)) with room to spare")
        }
        guard options.sessionTimeout.nanoseconds >= 1_000_000, options.maxSessions >= 1 else {
            throw .configuration(
                "sessionTimeout (\(options.sessionTimeout)) must be at least a millisecond and maxSessions "
                    + "(\(options.maxSessions)) at least 1")
        }
        var logger = options.logger
        logger[metadataKey: "node"] = "\(name)"
        self.name = name
        self.id = me.id
        self.cluster = cluster
        self.options = options
        self.eventLoop = loop
        self.storage = storage
        self.snapshotStore = snapshotStore
        self.logger = logger
        self.transport =
            transport
            ?? TCPTransport(
                localID: me.id, localName: name, clusterID: cluster.clusterID,
                listenHost: options.listenHost ?? me.host, listenPort: me.port,
                peers: cluster.members.filter { $0.name != name }.map {
                    TCPTransport.Peer(id: $0.id, name: $0.name, host: $0.host, port: $0.port)
                },
                eventLoop: loop, options: options.transport, tls: options.peerTLS, logger: logger)
        self.machineBeforeStart = NIOLoopBoundBox.makeBoxSendingValue(stateMachine, as: Machine?.self, eventLoop: loop)
        self.runtime = NIOLoopBoundBox.makeEmptyBox(valueType: NodeRuntime<Machine>.self, eventLoop: loop)
        self.observers = NIOLoopBoundBox.makeBoxSendingValue(Observers(), eventLoop: loop)
        self.metrics = NodeMetrics(
            node: name, peers: cluster.members.filter { $0.name != name }.map { ($0.id, $0.name) })
    }

    /// The first configuration a cluster file describes: each member's `role` field says what it is at the start —
    /// `voter` (the default), `learner`, or `spare` (an address only: a node that a membership change may add later).
    static func bootstrapMembership(of cluster: ClusterConfiguration) throws(RaftNodeError)
        -> (voters: Set<NodeID>, learners: Set<NodeID>)
    {
        var voters = Set<NodeID>()
        var learners = Set<NodeID>()
        for member in cluster.members {
            switch member.fields["role"] {
            case nil, .string("voter")?: voters.insert(member.id)
            case .string("learner")?: learners.insert(member.id)
            case .string("spare")?: break
            case let other?:
                throw .configuration(
                    "\(member.name).role must be \"voter\", \"learner\" or \"spare\", got \(other)")
            }
        }
        guard !voters.isEmpty else {
            throw .configuration("the cluster file names no voter (every member's role is not voter)")
        }
        return (voters, learners)
    }

    /// The member named `name`, or the error that says it is not one.
    static func member(_ name: String, of cluster: ClusterConfiguration) throws(RaftNodeError)
        -> ClusterConfiguration.Member
    {
        guard let me = cluster[name] else {
            throw .configuration(
                "node \"\(name)\" is not in the cluster configuration (members: "
                    + cluster.members.map(\.name).joined(separator: ", ") + ")")
        }
        return me
    }

    // MARK: - Life cycle

    /// Restores the node from its storage, starts listening and connecting to its peers, and starts the clock.
    /// - Throws: `RaftNodeError` if the storage cannot be read, the address cannot be bound, or the node was
    ///   started before (a stopped node cannot be restarted: create a new one on the same storage).
    public func start() async throws(RaftNodeError) {
        var state: PersistentState
        do {
            state = try storage.initialState()
        } catch {
            throw .storage("cannot read the node's storage: \(error)")
        }
        // The latest snapshot, and the log after it: the state machine is restored from the one and brought up to
        // date from the other, so a start costs what the snapshot and the log since it cost, not the whole history.
        var latest: SnapshotInfo?
        if let snapshotStore {
            do {
                latest = try snapshotStore.latest()
            } catch {
                throw .storage("cannot read the node's snapshots: \(error)")
            }
            let reconciled: PersistentState
            let needsReset: Bool
            do {
                (reconciled, needsReset) = try SnapshotRecovery.reconcile(log: state, snapshot: latest?.metadata)
            } catch {
                throw .storage("the log and the latest snapshot do not fit together: \(error)")
            }
            state = reconciled
            if needsReset, let meta = latest?.metadata {
                // A snapshot received from a leader was put in place, but the crash came before the log was reset
                // to it: finish that now, before anything is appended after it.
                logger.notice("finishing the installation of a received snapshot", metadata: ["index": "\(meta.index)"])
                if let error = Self.wait({ done in
                    self.storage.reset(
                        to: meta.index, term: meta.term, hardState: reconciled.hardState, completion: done)
                }) {
                    throw .storage("cannot reset the log to the snapshot at \(meta.index): \(error)")
                }
            }
        }
        let bootstrap = try Self.bootstrapMembership(of: cluster)
        var configuration = RaftConfiguration(
            id: id, voters: bootstrap.voters, electionTick: options.electionTicks,
            heartbeatTick: options.heartbeatTicks, preVote: options.preVote, checkQuorum: options.checkQuorum,
            maxMessageBytes: options.maxMessageBytes, maxInflightMessages: options.maxInflightMessages,
            maxProposalBytes: options.maxProposalBytes + ProposalEnvelope.overhead,
            forwardProposals: options.forwardProposals,
            randomSeed: options.randomSeed ?? UInt64.random(in: 0...UInt64.max))
        // The cluster file's members are the first configuration; a configuration in the log or a snapshot wins.
        configuration.learners = bootstrap.learners
        configuration.contexts = Dictionary(
            uniqueKeysWithValues: cluster.members.filter {
                bootstrap.voters.contains($0.id) || bootstrap.learners.contains($0.id)
            }
            .map { ($0.id, $0.context) })
        configuration.fastFailover = options.fastFailover
        if options.leaseReads {
            guard options.checkQuorum else { throw .configuration("leaseReads needs checkQuorum") }
            guard emptyLease != nil else {
                throw .configuration(
                    "leaseReads: the lease ((electionTicks - 1) * tickInterval - leaseClockDrift) must be positive")
            }
            configuration.strictLease = true
        }
        let snapshot = latest
        let raft: Raft
        do {
            raft = try Raft(
                configuration: configuration, state: state, applied: latest?.metadata.index ?? .zero,
                snapshot: latest?.metadata)
        } catch {
            throw .configuration("\(error)")
        }
        let installed = await onLoop { () -> Result<Void, RaftNodeError> in
            guard self.runtime.value == nil, let machine = self.machineBeforeStart.value else {
                return .failure(.alreadyStarted)
            }
            let rt = NodeRuntime(raft: raft, machine: machine, proposer: self.id)
            if let latest = snapshot {
                do {
                    try self.restore(from: latest, into: rt)
                } catch {
                    return .failure(.storage("cannot restore the state machine from \(latest.path): \(error)"))
                }
            }
            self.machineBeforeStart.value = nil
            self.runtime.value = rt
            return .success(())
        }
        switch installed {
        case .success: break
        case .failure(let error): throw error
        case nil: throw .stopped
        }
        do {
            try await transport.start(
                deliver: { [weak self] message in self?.receive(message) },
                linkReset: { [weak self] peer in self?.runtime.value?.tracker.linkReset(peer) },
                connectionLost: { [weak self] peer in self?.connectionLost(peer) })
        } catch {
            await stop()
            throw .configuration("cannot listen for peers: \(error)")
        }
        let running = await onLoop { () -> Bool in
            guard let rt = self.runtime.value, !rt.stopped else { return false }
            rt.ticker = self.eventLoop.scheduleRepeatedTask(
                initialDelay: self.options.tickInterval, delay: self.options.tickInterval
            ) { [weak self] _ in self?.tick() }
            self.process()
            return true
        }
        // `stop()` ran while the transport was starting: it has torn everything down already.
        guard running == true else { throw .stopped }
        logger.info(
            "started",
            metadata: [
                "term": "\(raft.term)", "lastIndex": "\(raft.log.lastIndex)",
                "snapshot": "\(latest?.metadata.index.rawValue ?? 0)",
            ])
    }

    /// Stops the node: proposals still waiting fail with `stopped` (one already handed to the leader may still
    /// commit), connections close, the clock stops, the storage is closed (its directory unlocked). A node that was
    /// never started just releases its storage. Safe to call more than once, and from any state.
    public func stop() async {
        if options.transferLeadershipOnStop {
            let leads = await onLoop { () -> Bool in
                guard let rt = self.runtime.value, !rt.stopped, !rt.paused, rt.raft.role == .leader else {
                    return false
                }
                // Only if some other voter answers: handing over to nodes that are gone would only delay the stop.
                return rt.raft.membership.voters.contains {
                    $0 != self.id && rt.raft.progress(of: $0)?.recentActive == true
                }
            }
            if leads == true {
                do {
                    let successor = try await transferLeadership()
                    logger.notice("handed leadership over before stopping", metadata: ["to": "\(successor)"])
                } catch {
                    logger.warning("could not hand leadership over before stopping", metadata: ["error": "\(error)"])
                }
            }
        }
        let tearDown = await onLoop { () -> Bool in
            guard let rt = self.runtime.value else {
                // Never started: nothing runs, but the storage may hold a lock, and streams may be waiting.
                let first = self.machineBeforeStart.value != nil
                self.machineBeforeStart.value = nil
                self.observers.value.finish()
                return first
            }
            guard !rt.tornDown else { return false }
            rt.tornDown = true
            rt.stopped = true
            rt.ticker?.cancel()
            self.cancelSnapshotTransfers(rt)
            rt.receiver?.stop()
            self.settleAll(rt, .stopped)
            self.failAllReads(rt, .stopped)
            self.observers.value.finish()
            return true
        }
        guard tearDown == true else { return }
        await transport.shutdown()
        // Closing a write-ahead log waits for its last writes: do it on a thread of its own, not the caller's.
        let storage = self.storage
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread {
                storage.close()
                done.resume()
            }.start()
        }
        let reason = await onLoop { self.runtime.value?.failure } ?? nil
        stopped.signal(reason)
        logger.info("stopped")
    }

    /// Waits until the node has stopped; returns nil if it was stopped by `stop()`, or the error that stopped it
    /// (a failed write: the node cannot go on without durable storage).
    /// (Cancelling the waiting task makes it return nil at once.)
    public func waitUntilStopped() async -> RaftNodeError? {
        let once = ResumeOnce<RaftNodeError?>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                once.install(continuation)
                stopped.whenSignalled { once.resume($0) }
            }
        } onCancel: {
            once.resume(nil)
        }
    }

    /// Takes the node out of the cluster without losing its state: it stops ticking, drops every message it
    /// receives and refuses proposals, until `resume()` (the seed's `pause()`).
    public func pause() async {
        await onLoop { self.runtime.value?.paused = true }
    }

    /// Brings a paused node back.
    public func resume() async {
        await onLoop { self.runtime.value?.paused = false }
    }

    // MARK: - Proposing

    /// Proposes a command and returns once it is committed and applied on this node.
    ///
    /// On a follower the command is forwarded to the leader (unless `Options.forwardProposals` is off).
    /// - Parameter id: an optional name for the entry, by which `committedEntry(id:)` finds it later.
    /// - Returns: the command's index and term, and what the state machine returned for it.
    /// With no leader known, the proposal waits for one (up to `Options.proposalTimeout`).
    /// - Throws: `RaftNodeError`: `notLeader` (not forwarding, or no leader appeared in time), `timedOut` (the outcome is
    ///   unknown: the command may still commit), `dropped` (it will never commit: a new leader replaced it),
    ///   `tooLarge`, `paused`, `stopped`, `notStarted`.
    @discardableResult
    public func propose(_ command: [UInt8], id: String? = nil) async throws(RaftNodeError) -> Committed<Machine.Output>
    {
        let promise = eventLoop.makePromise(of: Committed<Machine.Output>.self)
        eventLoop.execute { self.submit(command, id: id, promise: promise) }
        do {
            return try await promise.futureResult.get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .stopped
        }
    }

    /// Proposes a command and returns a future of its commitment: the same as `propose(_:id:)` without a hop
    /// through Swift concurrency, for code that already runs on `eventLoop` (a NIO server sharing the node's loop).
    public func proposeFuture(_ command: [UInt8], id: String? = nil) -> EventLoopFuture<Committed<Machine.Output>> {
        let promise = eventLoop.makePromise(of: Committed<Machine.Output>.self)
        if eventLoop.inEventLoop {
            submit(command, id: id, promise: promise)
        } else {
            eventLoop.execute { self.submit(command, id: id, promise: promise) }
        }
        return promise.futureResult
    }

    // MARK: - Client sessions

    /// Registers a client session through the log (Raft thesis §6.3) and returns its client id: the index of the
    /// register entry, the same on every node. Writes made with the session (`propose(_:session:id:)`) are applied
    /// at most once per sequence number, and a retry gets the first result. The session expires after
    /// `Options.sessionTimeout` without use, or when `Options.maxSessions` newer ones push it out.
    /// - Throws: as `propose`; `invalidProposal` if the state machine does not support client sessions.
    public func registerSession() async throws(RaftNodeError) -> UInt64 {
        do {
            return try await registerSessionFuture().get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .stopped
        }
    }

    /// `registerSession()` as a future, for code on `eventLoop`.
    public func registerSessionFuture() -> EventLoopFuture<UInt64> {
        let promise = eventLoop.makePromise(of: UInt64.self)
        let operation = SessionOperation.register(
            timeMs: Self.wallClockMilliseconds(),
            timeoutMs: UInt64(max(1, options.sessionTimeout.nanoseconds / 1_000_000)),
            maxSessions: UInt64(max(1, options.maxSessions)))
        let waiter = ProposalWaiter<Machine.Output>(registration: promise, started: .now())
        if eventLoop.inEventLoop {
            submit([], id: nil, session: operation, waiter: waiter)
        } else {
            eventLoop.execute { self.submit([], id: nil, session: operation, waiter: waiter) }
        }
        return promise.futureResult
    }

    /// Proposes a write of a client session: applied once for its `session.sequence`, on every node, and a retry
    /// of it (the same client id and sequence, through this node or another) gets the first result — the same
    /// index, term and output — without being applied again.
    ///
    /// A session has **one write outstanding at a time**: number writes 1, 2, 3... and send the next only once the
    /// previous one has a definite answer; retry one that ended with an unknown outcome (`outcomeIsUnknown`) with
    /// the same sequence.
    /// - Throws: as `propose(_:id:)`, and `sessionExpired` (the session is not in the table: never registered, or
    ///   expired), `sequenceSuperseded` (the session applied a later sequence), both definite: the command was not
    ///   applied and never will be; `invalidProposal` for a sequence or client id of 0, or a state machine without
    ///   client sessions (`StateMachine.supportsClientSessions`).
    @discardableResult
    public func propose(_ command: [UInt8], session: ClientSession, id: String? = nil) async throws(RaftNodeError)
        -> Committed<Machine.Output>
    {
        do {
            return try await proposeFuture(command, session: session, id: id).get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .stopped
        }
    }

    /// `propose(_:session:id:)` as a future, for code on `eventLoop`.
    public func proposeFuture(_ command: [UInt8], session: ClientSession, id: String? = nil)
        -> EventLoopFuture<Committed<Machine.Output>>
    {
        let promise = eventLoop.makePromise(of: Committed<Machine.Output>.self)
        let operation = SessionOperation.write(
            clientID: session.clientID, sequence: session.sequence, timeMs: Self.wallClockMilliseconds())
        let waiter = ProposalWaiter(promise: promise, started: .now())
        if eventLoop.inEventLoop {
            submit(command, id: id, session: operation, waiter: waiter)
        } else {
            eventLoop.execute { self.submit(command, id: id, session: operation, waiter: waiter) }
        }
        return promise.futureResult
    }

    /// The time stamped on session entries: this node's wall clock, in milliseconds since 1970. Only the highest
    /// one seen counts (see `ClientSessions`), so a clock that jumps back does no harm; one far ahead expires
    /// sessions early.
    static func wallClockMilliseconds() -> UInt64 {
        let now = Date().timeIntervalSince1970 * 1000
        return now > 0 ? UInt64(now) : 0
    }

    /// Reads this node's state machine on the node's loop: a local read, which may lag behind the leader (use
    /// `propose` for a linearizable one). Nil if the node is not running.
    public func readStateMachine<T: Sendable>(_ body: @escaping @Sendable (Machine) -> T) -> EventLoopFuture<T?> {
        eventLoop.submit { self.runtime.value.map { body($0.machine) } }
    }

    /// `status()` as a future, for code on the node's loop.
    public func statusFuture() -> EventLoopFuture<NodeStatus> {
        eventLoop.submit { self.currentStatus() }
    }

    /// Proposes a text command (as UTF-8).
    @discardableResult
    public func propose(_ command: String, id: String? = nil) async throws(RaftNodeError) -> Committed<Machine.Output> {
        try await propose(Array(command.utf8), id: id)
    }

    private func submit(_ command: [UInt8], id clientID: String?, promise: EventLoopPromise<Committed<Machine.Output>>)
    {
        submit(command, id: clientID, session: nil, waiter: ProposalWaiter(promise: promise, started: .now()))
    }

    private func submit(
        _ command: [UInt8], id clientID: String?, session: SessionOperation?, waiter: ProposalWaiter<Machine.Output>
    ) {
        guard let rt = runtime.value else { return waiter.fail(RaftNodeError.notStarted) }
        guard !rt.stopped else { return waiter.fail(RaftNodeError.stopped) }
        guard !rt.paused else { return waiter.fail(RaftNodeError.paused) }
        guard command.count <= options.maxProposalBytes else {
            return waiter.fail(RaftNodeError.tooLarge(size: command.count, limit: options.maxProposalBytes))
        }
        if let clientID, clientID.utf8.count > ProposalEnvelope.maxIDBytes || clientID.isEmpty {
            return waiter.fail(
                RaftNodeError.invalidProposal("an id must have 1 to \(ProposalEnvelope.maxIDBytes) bytes"))
        }
        if let session {
            guard Machine.supportsClientSessions else {
                return waiter.fail(
                    RaftNodeError.invalidProposal("the state machine \(Machine.self) does not support client sessions"))
            }
            if case .write(let client, let sequence, _) = session, client == 0 || sequence == 0 {
                return waiter.fail(
                    RaftNodeError.invalidProposal("a session write needs a client id and a sequence of at least 1"))
            }
        }
        metrics.proposals.increment()
        let sequence = rt.tracker.submit(command, id: clientID, sessionOperation: session, waiter: waiter)
        armDeadline(sequence, rt)
        hand(sequence, rt)
        scheduleProcess()
    }

    // MARK: - Observing

    /// The node's role: follower, pre-candidate, candidate or leader (the seed's `check_role()`).
    public var role: Raft.Role {
        get async { await onLoop { self.runtime.value?.raft.role ?? .follower } ?? .follower }
    }

    /// Role, term, leader and log positions, as this node sees them.
    public func status() async -> NodeStatus {
        await onLoop { self.currentStatus() } ?? .notRunning(name: name)
    }

    private func currentStatus() -> NodeStatus {
        guard let rt = runtime.value else { return .notRunning(name: name) }
        let s = rt.raft.status
        return NodeStatus(
            name: name, role: s.role, term: s.term, leader: s.leader.flatMap { member(id: $0, rt)?.name },
            // What the state machine has applied, not what the core handed out to apply: readies wait in the
            // pipeline for their writes, and a reader of the status expects the state to hold what it names.
            commitIndex: s.commitIndex, appliedIndex: rt.machineApplied, lastIndex: s.lastIndex,
            snapshotIndex: rt.raft.snapshot?.index ?? .zero, firstIndex: rt.raft.log.firstIndex, paused: rt.paused,
            started: !rt.stopped)
    }

    /// What the transport counted for each peer, by name: messages sent, dropped and received, bytes queued.
    public func peerStatistics() async -> [String: PeerStatistics] {
        let stats = await transport.statistics()
        let names =
            await onLoop { () -> [NodeID: String] in
                guard let rt = self.runtime.value else { return [:] }
                return Dictionary(
                    uniqueKeysWithValues: stats.keys.compactMap { id in self.member(id: id, rt).map { (id, $0.name) } })
            } ?? [:]
        var byName: [String: PeerStatistics] = [:]
        for (id, stat) in stats {
            if let name = names[id] ?? cluster.member(id: id)?.name { byName[name] = stat }
        }
        return byName
    }

    /// The last command committed and applied on this node (the seed's `check_committed_entry()`).
    public func latestCommittedEntry() async -> CommittedEntry? {
        await onLoop { self.runtime.value?.latest } ?? nil
    }

    /// The committed entry proposed with this id (the seed's `check_committed_entry(id)`), once it is committed —
    /// never before.
    public func committedEntry(id: String) async -> CommittedEntry? {
        await onLoop { self.runtime.value?.byID[id] } ?? nil
    }

    /// Changes of role, term or leader, as they happen (the first element is the current state, once the node has
    /// started). For applications that use the cluster as a failure detector. May be called before `start()`; the
    /// stream ends when the node stops.
    public func leadershipChanges() -> AsyncStream<LeadershipChange> {
        streams.leadershipChanges { self.runtime.value.map { self.leadershipState($0) } }
    }

    /// Every command committed and applied on this node, in log order. Subscribed before `start()`, it begins with the
    /// entries the node re-applies from its log as it starts (those after its latest snapshot: the commands a
    /// snapshot covers, at start-up or installed from the leader, are not streamed one by one). The stream ends when the node stops; if the reader falls
    /// more than `buffer` entries behind, the oldest unread ones are skipped.
    public func committedEntries(buffer: Int = 10_000) -> AsyncStream<CommittedEntry> {
        streams.committedEntries(buffer: buffer)
    }

    // MARK: - The loop

    private func tick() {
        guard let rt = runtime.value, !rt.stopped, !rt.paused else { return }
        // Before the core's tick, so that a round asked for here goes with this tick's heartbeat.
        tickReads(rt)
        rt.raft.tick()
        for sender in rt.senders.values { sender.tick() }
        rt.ticksSinceHealthCheck += 1
        if rt.ticksSinceHealthCheck >= max(1, options.electionTicks / 5) {
            rt.ticksSinceHealthCheck = 0
            checkHealth()
        }
        // Proposals whose link to the leader was reset since the last tick go again (once per reset).
        for sequence in rt.tracker.takeRetries() { hand(sequence, rt) }
        process()
    }

    private func send(_ message: Message) {
        if case .installSnapshot(let meta) = message.kind, let rt = runtime.value {
            // Not a message to send as it is: the snapshot's bytes go in a stream of their own.
            startSnapshotTransfer(meta, to: message.to, rt)
            return
        }
        metrics.sent[message.to]?.increment()
        transport.send(message)
    }

    private func receive(_ message: Message) {
        guard let rt = runtime.value, !rt.stopped, !rt.paused else { return }
        metrics.received[message.from]?.increment()
        if receiveTransferMessage(message, rt) { return }
        rt.raft.step(message)
        scheduleProcess()
    }

    /// The transport lost an established connection with `peer` (its process may have died): with fast failover,
    /// a follower that loses its leader starts a pre-vote at once.
    private func connectionLost(_ peer: NodeID) {
        guard let rt = runtime.value, !rt.stopped, !rt.paused else { return }
        let before = rt.raft.role
        rt.raft.connectionLost(to: peer)
        if rt.raft.role != before {
            logger.info(
                "lost the connection to the leader; polling the voters at once", metadata: ["leader": "\(peer)"])
        }
        scheduleProcess()
    }

    /// Processes soon, once, however many inputs arrive before: messages read from one socket read share a ready.
    func scheduleProcess() {
        guard let rt = runtime.value, !rt.processScheduled else { return }
        rt.processScheduled = true
        eventLoop.execute { [weak self] in
            guard let self, let rt = self.runtime.value else { return }
            rt.processScheduled = false
            self.process()
        }
    }

    /// Carries out every ready, following the I/O contract of `Ready`.
    func process() {
        guard let rt = runtime.value, !rt.stopped else { return }
        while let step = rt.pipeline.take(from: &rt.raft) {
            let peersKey = PeersKey(
                index: rt.raft.membershipIndex, term: rt.raft.membershipTerm,
                committed: rt.raft.log.committed >= rt.raft.membershipIndex, leader: rt.raft.leader)
            if rt.peersKey != peersKey {
                rt.peersKey = peersKey
                syncPeers(rt)
            }
            for message in step.messages { send(message) }
            if !step.readStates.isEmpty || !step.readsDropped.isEmpty {
                readsAnswered(step.readStates, dropped: step.readsDropped, rt)
            }
            if let write = step.write {
                if let meta = write.snapshot {
                    // A snapshot received from the leader, already in the snapshot store: the log restarts after it.
                    guard rt.received(meta) != nil else {
                        storageFailed(
                            StorageFailure(.corrupt, "the core installs \(meta), which this node did not receive"))
                        return
                    }
                    let hardState = write.hardState ?? rt.raft.hardState
                    storage.reset(to: meta.index, term: meta.term, hardState: hardState) { [weak self] error in
                        guard let self, let error else { return }
                        self.eventLoop.execute { self.storageFailed(error) }
                    }
                }
                let started = NIODeadline.now()
                storage.persist(entries: write.entries, hardState: write.hardState) { [weak self] error in
                    guard let node = self else { return }
                    let took = NIODeadline.now().nanoseconds(since: started)
                    node.metrics.storageWriteDuration.recordNanoseconds(took)
                    node.eventLoop.execute { node.writeCompleted(error) }
                }
            }
            for ready in step.durable { finish(ready, rt) }
        }
        compactIfDue(rt)
        let transferring = rt.raft.transferee != nil
        if rt.wasTransferring && !transferring && rt.raft.role == .leader {
            // A transfer ended with this node still leading: the proposals it held back go now.
            rt.wasTransferring = false
            for refusal in rt.tracker.handOutAgain(&rt.raft) { failRefused(refusal, rt) }
            process()
            return
        }
        rt.wasTransferring = transferring
        transport.flush()
        reportLeadership(rt)
    }

    private func writeCompleted(_ error: (any Error)?) {
        guard let rt = runtime.value, !rt.stopped, rt.pipeline.writesInProgress > 0 else { return }
        if let error {
            storageFailed(error)
            return
        }
        // The oldest write is durable: finish it, and the readies queued behind it that had nothing to write.
        for ready in rt.pipeline.writeCompleted(&rt.raft) { finish(ready, rt) }
        process()
    }

    /// The node cannot go on without durable storage (or without the state a snapshot restores): it would break
    /// the promises it made. It stops.
    func storageFailed(_ error: any Error) {
        guard let rt = runtime.value, !rt.stopped else { return }
        logger.critical("storage failed; stopping the node", metadata: ["error": "\(error)"])
        rt.stopped = true
        rt.failure = .storage("\(error)")
        settleAll(rt, .storage("\(error)"))
        failAllReads(rt, .storage("\(error)"))
        Task { await self.stop() }
    }

    /// What follows a durable write (the pipeline has told the core): send what waited for it, apply committed
    /// commands.
    private func finish(_ ready: Ready, _ rt: NodeRuntime<Machine>) {
        // The state a received snapshot holds comes before the entries after it.
        if let meta = ready.snapshot {
            installReceivedSnapshot(meta, rt)
            guard !rt.stopped else { return }
            serveReads(rt)
        }
        for message in ready.messagesAfterPersist { send(message) }
        var lost: [UInt64] = []
        for entry in ready.committedEntries { apply(entry, rt, lost: &lost) }
        // Proposals proven lost by what was applied: no copy of them can commit any more, so they go again.
        for sequence in lost { hand(sequence, rt) }
        if !ready.committedEntries.isEmpty {
            serveReads(rt)
            snapshotIfDue(rt)
        }
    }

    private func apply(_ entry: Entry, _ rt: NodeRuntime<Machine>, lost: inout [UInt64]) {
        rt.appliedBytesSinceSnapshot &+= entry.byteSize
        rt.machineApplied = entry.index
        if entry.kind == .configChange { configApplied(entry, rt) }
        let header = entry.kind == .normal ? ProposalEnvelope.Header(decoding: entry.data) : nil
        // A copy of a proposal applied (or settled) before is not applied again, on any node.
        let admitted = entry.kind == .normal && (header.map { rt.sessions.admit($0, term: entry.term) } ?? true)
        // What the proposer is answered, if it is this node.
        var answer: Result<Committed<Machine.Output>, RaftNodeError>?
        var registered: UInt64?
        if admitted {
            switch header?.sessionOperation {
            case nil:
                let output = applyCommand(entry, hasEnvelope: header != nil, rt)
                answer = .success(Committed(index: entry.index, term: entry.term, output: output))
            case .register(let timeMs, let timeoutMs, let maxSessions)?:
                rt.clientSessions.register(
                    clientID: entry.index, timeMs: timeMs, timeoutMs: timeoutMs, maxSessions: maxSessions)
                registered = entry.index.rawValue
            case .write(let clientID, let sequence, let timeMs)?:
                // Decided from the session table alone, so every node decides the same.
                switch rt.clientSessions.decide(clientID: clientID, sequence: sequence, timeMs: timeMs) {
                case .apply:
                    let output = applyCommand(entry, hasEnvelope: true, rt)
                    rt.clientSessions.record(
                        clientID: clientID, sequence: sequence,
                        result: ClientSessions.StoredResult(
                            index: entry.index, term: entry.term, output: rt.machine.encodeSessionOutput(output)))
                    answer = .success(Committed(index: entry.index, term: entry.term, output: output))
                case .cached(let first):
                    if let bytes = first.output, let output = rt.machine.decodeSessionOutput(bytes) {
                        answer = .success(Committed(index: first.index, term: first.term, output: output))
                    } else {
                        answer = .failure(.appliedResultUnknown)
                    }
                case .expired: answer = .failure(.sessionExpired)
                case .superseded: answer = .failure(.sequenceSuperseded)
                }
            }
        }
        let outcome = rt.tracker.applied((entry.index, entry.term), envelope: header, admitted: admitted)
        lost += outcome.lost
        if let (_, waiter) = outcome.settled {
            waiter.timeout?.cancel()
            metrics.proposalDuration.recordNanoseconds(NIODeadline.now().nanoseconds(since: waiter.started))
            switch (waiter.promise, answer, registered) {
            case (.command(let promise), .success(let committed)?, _): promise.succeed(committed)
            case (.command(let promise), .failure(let error)?, _):
                rt.failures += 1
                promise.fail(error)
            case (.registration(let promise), _, let clientID?): promise.succeed(clientID)
            default:
                // An entry of another kind than the proposal this node made: it cannot happen (the envelope is this
                // node's), but the caller must not wait for ever.
                waiter.fail(RaftNodeError.invalidProposal("the entry applied is not of the kind proposed"))
            }
        }
    }

    /// Applies an admitted entry's command to the state machine and publishes it.
    private func applyCommand(_ entry: Entry, hasEnvelope: Bool, _ rt: NodeRuntime<Machine>) -> Machine.Output {
        let envelope = hasEnvelope ? ProposalEnvelope(decoding: entry.data) : nil
        let command = envelope?.command ?? entry.data
        let output = rt.machine.apply(command, at: entry.index)
        let committed = CommittedEntry(index: entry.index, term: entry.term, data: command, id: envelope?.id)
        rt.latest = committed
        observers.value.publish(committed)
        if let clientID = envelope?.id { rt.remember(committed, as: clientID, limit: options.rememberedIDs) }
        return output
    }

    private func leadershipState(_ rt: NodeRuntime<Machine>) -> LeadershipChange {
        LeadershipChange(
            role: rt.raft.role, term: rt.raft.term, leader: rt.raft.leader.flatMap { member(id: $0, rt)?.name })
    }

    private func reportLeadership(_ rt: NodeRuntime<Machine>) {
        let log = rt.raft.log
        if log.committed != rt.reportedCommit {
            rt.reportedCommit = log.committed
            metrics.commitIndex.record(Int64(truncatingIfNeeded: log.committed.rawValue))
        }
        if rt.machineApplied != rt.reportedApplied {
            rt.reportedApplied = rt.machineApplied
            metrics.appliedIndex.record(Int64(truncatingIfNeeded: rt.machineApplied.rawValue))
        }
        if rt.failures > 0 {
            metrics.proposalsFailed.increment(by: rt.failures)
            rt.failures = 0
        }
        // A new leader, or a new term: the proposals not yet handed to it go there.
        if rt.raft.role != .leader && !rt.senders.isEmpty { cancelSnapshotTransfers(rt) }
        let refused = rt.tracker.handOutIfLeaderChanged(&rt.raft)
        for refusal in refused { failRefused(refusal, rt) }
        if rt.raft.hasReady { scheduleProcess() }
        let now = leadershipState(rt)
        guard now != rt.lastLeadership else { return }
        metrics.record(now, after: rt.lastLeadership)
        rt.lastLeadership = now
        logger.info("\(now)")
        observers.value.publish(now)
    }

    /// Runs an asynchronous storage operation and waits for it, off any event loop (used at start-up only).
    static func wait(_ body: (@escaping @Sendable ((any Error)?) -> Void) -> Void) -> (any Error)? {
        let done = DispatchSemaphore(value: 0)
        let box = NIOLockedValueBox<(any Error)?>(nil)
        body { error in
            box.withLockedValue { $0 = error }
            done.signal()
        }
        done.wait()
        return box.withLockedValue { $0 }
    }

    /// Runs `body` on the node's loop and returns its result (nil if the loop is gone).
    func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        try? await eventLoop.submit(body).get()
    }
}

extension RaftNode {
    /// A node whose term, vote and log live in a write-ahead log in `dataDirectory` (created if needed), so that it
    /// can be stopped, killed or restarted without breaking Raft's guarantees. The directory belongs to this node of
    /// this cluster, created for this bootstrap member list: any other is refused.
    ///
    /// `cluster` is the cluster's *bootstrap* configuration: the first membership, in effect until the log or a
    /// snapshot holds one of its own. The directory's identity binds the bootstrap member names and the cluster id
    /// (`cluster.clusterID`), never the membership in effect, so a node keeps opening its directory after members
    /// were added or removed — as long as it is given the same bootstrap configuration.
    ///
    /// - Parameter address: this node's own entry, for a node that is not in `cluster` (one that joins a running
    ///   cluster: `cluster` is then that cluster's bootstrap configuration, with its cluster id).
    /// - Throws: `RaftNodeError.storage` if the directory is in use by another process, damaged, of another
    ///   format (the message names the file and offset), or another node's, another cluster's, or made for another
    ///   bootstrap member list (the message names both); `RaftNodeError.configuration` if `name` is not a member
    ///   and no `address` is given.
    public convenience init(
        cluster: ClusterConfiguration, name: String, stateMachine: sending Machine, dataDirectory: String,
        options: Options = Options(), address: ClusterConfiguration.Member? = nil
    ) throws(RaftNodeError) {
        let me: ClusterConfiguration.Member
        if let address, cluster[name] == nil {
            guard address.name == name else {
                throw .configuration("the address given is for \"\(address.name)\", not \"\(name)\"")
            }
            me = address
        } else {
            me = try Self.member(name, of: cluster)
        }
        let identity = DataDirectoryIdentity(
            clusterID: cluster.clusterID, nodeName: name, nodeID: me.id, members: cluster.members.map(\.name))
        let log: WriteAheadLog
        do {
            log = try WriteAheadLog(directory: dataDirectory, expectedIdentity: identity)
        } catch {
            throw .storage("\(error)")
        }
        for warning in log.report.warnings {
            options.logger.warning("\(warning)", metadata: ["node": "\(name)"])
        }
        let snapshots: SnapshotStore
        do {
            snapshots = try SnapshotStore(directory: dataDirectory)
        } catch {
            log.close()
            throw .storage("\(error)")
        }
        do {
            try self.init(
                cluster: cluster, name: name, stateMachine: stateMachine, storage: log, snapshotStore: snapshots,
                options: options, address: address)
        } catch {
            log.close()
            throw error
        }
    }
}

extension RaftNode where Machine == NoStateMachine {
    /// A node whose application only reads the committed entries, as the seed's nodes did.
    public convenience init(
        cluster: ClusterConfiguration, name: String, storage: any NodeStorage = InMemoryNodeStorage(),
        options: Options = Options()
    ) throws(RaftNodeError) {
        try self.init(cluster: cluster, name: name, stateMachine: NoStateMachine(), storage: storage, options: options)
    }

    /// A node that only reads the committed entries, with its log in `dataDirectory`.
    public convenience init(
        cluster: ClusterConfiguration, name: String, dataDirectory: String, options: Options = Options()
    ) throws(RaftNodeError) {
        try self.init(
            cluster: cluster, name: name, stateMachine: NoStateMachine(), dataDirectory: dataDirectory,
            options: options)
    }
}
