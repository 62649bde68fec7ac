import RaftCore

/// What a finished schedule did.
public struct SimulationResult: Sendable, Hashable {
    /// Events processed: message deliveries, ticks, completed writes, proposals, faults.
    public var steps = 0
    public var virtualTime: Int64 = 0
    /// The highest term reached, and how many terms had a leader.
    public var highestTerm = Term.zero
    public var leadersElected = 0
    /// The highest index committed on any node.
    public var committed = LogIndex.zero
    public var messagesDelivered = 0
    public var messagesDropped = 0
    public var crashes = 0
    public var tornWrites = 0
    public var pauses = 0
    public var partitions = 0
    /// Client proposals: made, applied (each exactly once), copies refused as duplicates, proven lost (settled as
    /// definitely not applied), and given up with an unknown outcome at their deadline.
    public var proposals = 0
    public var proposalsApplied = 0
    public var duplicatesRefused = 0
    public var proposalsLost = 0
    public var proposalsUnknown = 0
    /// Restarts whose restored commit index was checked against what the cluster committed.
    public var restartsChecked = 0
    /// Schedules whose liveness was judged under a partition that stays (one-way, bridge, isolation), not a heal.
    public var steadyPartitions = 0
    /// Snapshots: made durable by the nodes themselves, lost in a crash while being written, sent by leaders
    /// (InstallSnapshot), and installed by followers (their state machines restored from them). Transfers whose
    /// end the leader never learned (its shell never reported it to the core), followers cut off long enough to
    /// fall behind the leader's compaction, and proposals settled as applied because a snapshot showed they were.
    public var snapshotsTaken = 0
    public var snapshotsLost = 0
    public var installsSent = 0
    public var installsApplied = 0
    public var reportsLost = 0
    public var laggards = 0
    public var proposalsSettledBySnapshot = 0
    /// Membership: actions asked of the leader, changes it accepted (`leaveJoint` ones among them) and of those
    /// the ones removing the leader's own vote, configuration entries committed (the automatic leaves of joint
    /// configurations among them), changes refused by reason (`MembershipError.Code`), leadership transfers
    /// accepted and refused, lost-connection reports (for a crashed leader, and spurious ones for a live leader),
    /// the largest configuration (members, voters of either half) any leader entered, and steady partitions not
    /// installed because no voter of every configuration in effect would have had a quorum on its side.
    public var membershipActions = 0
    public var changesProposed = 0
    public var leaveJointsProposed = 0
    public var leaderRemovals = 0
    public var changesCommitted = 0
    public var changeRefusals: [String: Int] = [:]
    public var transfers = 0
    public var transferRefusals = 0
    public var connectionLostReports = 0
    public var spuriousConnectionLost = 0
    public var maxMembers = 0
    public var maxVoters = 0
    public var steadyPartitionsSkipped = 0
    /// Linearizable reads during the fault phase: asked by clients (of leaders and of followers), served (each checked), served by nodes that
    /// did not lead when asked, served from a leader's lease without a round, given up at their deadline, lost with
    /// their node in a crash; reads the core dropped (to be asked again), and lease renewals confirmed.
    public var readsAsked = 0
    public var readsServed = 0
    public var readsServedOnFollowers = 0
    public var leaseReadsServed = 0
    public var readsTimedOut = 0
    public var readsLostInCrashes = 0
    public var readsDropped = 0
    public var leaseRenewals = 0
    /// Reads asked once faults stopped, of the stable leader and of each of its followers, each of which must be
    /// served (within the liveness bound).
    public var livenessReads = 0
}

/// A schedule that broke an invariant: everything needed to understand and replay it.
public struct SimulationFailure: Error, Sendable, CustomStringConvertible {
    public var options: SimulationOptions
    public var violation: InvariantViolation
    public var step: Int
    public var time: Int64
    /// The last events before the failure, oldest first (empty unless tracing was on).
    public var trace: [String]

    /// The command that runs exactly this schedule again, with a trace of its last events.
    public var replayCommand: String {
        "RAFT_SIM_SEED=\(options.seed) RAFT_SIM_TRACE=1 swift test --filter replaysOneSeed"
    }

    public var description: String {
        var lines = [
            "simulation failed: \(violation)",
            "  at step \(step), virtual time \(time), seed \(options.seed)",
            "  options: \(options)",
            "  replay: \(replayCommand)",
        ]
        if !trace.isEmpty {
            lines.append("  last \(trace.count) events:")
            lines.append(contentsOf: trace.map { "    \($0)" })
        }
        return lines.joined(separator: "\n")
    }
}

/// A deterministic simulation of a Raft cluster: N nodes, virtual time, a faulty network, crashing disks.
///
/// One seed controls every choice. The network delays, drops, duplicates and reorders messages and can be
/// partitioned (symmetrically, one way, or into bridged halves); nodes crash, losing everything not yet durable
/// (a write in progress may be torn: part of it reaches the disk), restart from their storage, and pause. After
/// every step the `InvariantChecker` checks Raft's safety properties. When the fault phase ends, the network heals
/// and every node comes back; a leader must then be elected, and proposals made to it must commit on every node,
/// each within a bounded virtual time.
public struct Simulation {
    public let options: SimulationOptions

    private enum Event {
        case tick(node: Int, incarnation: Int)
        case deliver(Message)
        case drainInbox(node: Int, incarnation: Int)
        case persisted(node: Int, incarnation: Int)
        case propose
        case proposalDeadline(node: Int, incarnation: Int, sequence: UInt64)
        case nemesis
        case restart(node: Int, incarnation: Int)
        case resume(node: Int, incarnation: Int)
        case endFaults
        case livenessDeadline(stage: Int)
        case strikeLeader(node: Int, term: Term)
        /// The snapshot node `k` is writing is durable.
        case snapshotWritten(node: Int, incarnation: Int)
        /// A whole snapshot transfer, modelled as the delivery of the leader's InstallSnapshot message.
        case deliverSnapshot(Message, senderIncarnation: Int)
        /// The leader's shell learns how a transfer to `peer` ended and tells its core.
        case snapshotReport(node: Int, incarnation: Int, peer: NodeID, succeeded: Bool)
        /// A laggard's isolation ends, unless the network changed since (`epoch`).
        case rejoin(epoch: Int)
        /// The leader is asked for a membership change, a leadership transfer, or one of its followers hears a
        /// spurious report that its connection to it was lost. A `chain` of them keeps going every
        /// `membershipInterval`; the others strike once, when a new leader has just become able to change the
        /// membership (in schedules of leader churn, leaders seldom live long enough otherwise).
        case membership(chain: Bool)
        /// Node `k`'s shell reports its connection to `peer` lost.
        case connectionLost(node: Int, incarnation: Int, peer: NodeID)
        /// A client asks some node for a linearizable read.
        case read
        /// The client of node `k`'s read `context` gives up on it.
        case readDeadline(node: Int, incarnation: Int, context: UInt64)
    }

    private struct Node {
        let id: NodeID
        var raft: Raft?
        var storage = MemoryStorage()
        /// The state machine: what it applied, and which proposals took effect. It survives crashes (unless it
        /// restarts empty, and is then restored from `snapshot`).
        var machine = SimulatedState()
        /// The latest durable snapshot (made here or installed from a leader); survives crashes.
        var snapshot: SimulatedSnapshot?
        /// A snapshot being written: the state machine frozen at the candidate's index (a crash loses it).
        var creating: SimulatedSnapshot?
        var appliedSinceSnapshot = 0
        /// The highest sequence this incarnation's tracker handed out.
        var submitted: UInt64 = 0
        /// This incarnation's own proposals (a crash forgets them, as a process forgets its clients).
        var tracker: ProposalTracker<Client>
        /// The ordered write pipeline, as `RaftNode` runs it.
        var pipeline = ReadyPipeline()
        /// Writes the pipeline handed out and the disk has not yet made durable, oldest first.
        var writes: [ReadyPipeline.Write] = []
        /// How many of `writes` the sync in progress covers (one sync makes every write before it durable: group
        /// commit); zero when the disk is idle.
        var syncing = 0
        var incarnation = 0
        var paused = false
        var heldWhilePaused: [Event] = []
        /// Messages delivered but not yet stepped: they are stepped together, then one ready is taken.
        var inbox: [Message] = []
        /// The last term in which this node was seen leading.
        var ledTerm = Term.zero
        var ledCommit = LogIndex.zero
        /// The commit index last checked against the nodes' storage (reset on restart).
        var checkedCommit = LogIndex.zero
        /// The shell's reads (a crash loses them).
        var reads = SimulatedReads()

        init(id: NodeID) {
            self.id = id
            self.tracker = ProposalTracker(proposer: id, incarnation: 1)
        }
    }

    /// A client waiting for a proposal.
    private struct Client {
        /// Proposed once faults stopped: it must be applied.
        var mustApply = false
    }

    private enum Stage: Equatable {
        case faults
        case awaitingLeader
        /// Waiting for the liveness proposals made on `node` to be applied on `node` and on every node in `nodes`.
        case awaitingCommit(node: Int, proposals: [UInt64], nodes: [Int])
        case done
    }

    private var nodes: [Node]
    private var queue = EventQueue<Event>()
    private var random: SplitMix64
    private var checker = InvariantChecker()
    private var now: Int64 = 0
    private var result = SimulationResult()
    private var blocked: Set<Link> = []
    /// The time of the last in-order delivery on each link (`from * nodeCount + to`).
    private var linkClock: [Int64]
    private var stage = Stage.faults
    private var stageNumber = 0
    private var stageBound: Int64 = 0
    private var faultsEndedAt: Int64 = 0
    /// The liveness proposals applied so far, by sequence, and where.
    private var livenessApplied: [UInt64: LogIndex] = [:]
    /// The liveness stage runs under a partition that stays: only nodes linked both ways to the leader must follow.
    private var steadyPartition = false
    private var proposalCounter: UInt64 = 0
    private let traceCapacity: Int
    private var trace: [String] = []
    private var traceStart = 0

    /// Every snapshot made durable, by (index, term): the bytes the shells write and stream to each other.
    private var snapshotStore: [SnapshotKey: SimulatedSnapshot] = [:]
    /// Bumped whenever the set of blocked links changes: a laggard rejoins only if nothing changed since.
    private var partitionEpoch = 0
    /// The highest commit index checked durable on a quorum of its committer's configuration.
    private var commitChecked = LogIndex.zero
    /// Indexes of configuration entries seen applied.
    private var configsApplied: Set<LogIndex> = []
    /// Whether the last membership action is to be retried soon (it was refused for now), and how often it was.
    private var retryMembership = false
    private var membershipRetries = 0
    /// The reads asked once faults stopped, by node (their contexts): each must be served.
    private var livenessReads: [Int: UInt64] = [:]

    private struct SnapshotKey: Hashable {
        var index: LogIndex
        var term: Term
        init(_ meta: SnapshotMetadata) {
            index = meta.index
            term = meta.term
        }
    }

    private struct Link: Hashable {
        var from: Int
        var to: Int
    }

    /// Prepares a run with the given options; `traceCapacity` is how many of the last events a failure reports.
    public init(options: SimulationOptions, traceCapacity: Int = 0) {
        self.options = options
        self.traceCapacity = traceCapacity
        self.random = SplitMix64(seed: options.seed)
        self.nodes = (1...options.poolSize).map { Node(id: NodeID(UInt64($0))) }
        self.linkClock = Array(repeating: 0, count: options.poolSize * options.poolSize)
    }

    /// Runs one schedule to its end.
    /// - Throws: `SimulationFailure` on the first broken invariant.
    public static func run(_ options: SimulationOptions, traceCapacity: Int = 0) throws(SimulationFailure)
        -> SimulationResult
    {
        var simulation = Simulation(options: options, traceCapacity: traceCapacity)
        return try simulation.run()
    }

    public mutating func run() throws(SimulationFailure) -> SimulationResult {
        do {
            try start()
            while stage != .done, let (time, event) = queue.pop() {
                now = time
                result.steps += 1
                if traceCapacity > 0 { record(event) }
                try handle(event)
            }
        } catch {
            throw SimulationFailure(
                options: options, violation: error, step: result.steps, time: now, trace: orderedTrace())
        }
        result.virtualTime = now
        result.committed = checker.highestCommitted
        result.leadersElected = checker.leaders.count
        result.highestTerm = checker.leaders.keys.max() ?? .zero
        result.duplicatesRefused = checker.duplicatesRefused
        return result
    }

    // MARK: - Set-up

    private func configuration(for index: Int) -> RaftConfiguration {
        // The bootstrap voters; the spares start with the same configuration and join only through changes.
        let voters = Set(nodes.prefix(options.nodeCount).map(\.id))
        var configuration = RaftConfiguration(
            id: nodes[index].id,
            voters: voters,
            electionTick: options.electionTick,
            heartbeatTick: options.heartbeatTick,
            preVote: options.preVote,
            checkQuorum: options.checkQuorum,
            maxMessageEntries: options.maxMessageEntries,
            maxInflightMessages: options.maxInflightMessages,
            maxProposalBytes: 1024,
            forwardProposals: options.forwardProposals,
            randomSeed: options.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 1_000_003
                &+ UInt64(nodes[index].incarnation)
        )
        configuration.fastFailover = options.fastFailover
        configuration.strictLease = options.strictLease
        return configuration
    }

    private mutating func start() throws(InvariantViolation) {
        for k in nodes.indices {
            try boot(k)
        }
        schedule(.propose, after: randomDelay(upTo: options.proposalInterval * 2))
        schedule(.nemesis, after: randomDelay(upTo: options.nemesisInterval * 2))
        schedule(.endFaults, after: Int64(options.faultTicks) * options.tickInterval)
        if options.membershipInterval > 0 {
            schedule(.membership(chain: true), after: randomDelay(upTo: options.membershipInterval * 2))
        }
        if options.readInterval > 0 { schedule(.read, after: randomDelay(upTo: options.readInterval * 2)) }
    }

    /// Starts (or restarts) node `k` from what its storage holds.
    private mutating func boot(_ k: Int) throws(InvariantViolation) {
        let state = nodes[k].storage.initialState()
        // Some restarts keep the state machine (it is durable), others rebuild it from the log.
        if nodes[k].incarnation > 0 && chance(0.3) {
            nodes[k].machine = SimulatedState()
        }
        // A state machine behind the latest durable snapshot (rebuilt, or a snapshot installed as it crashed)
        // starts from that snapshot.
        if let snapshot = nodes[k].snapshot, snapshot.meta.index > nodes[k].machine.applied {
            nodes[k].machine = snapshot.state
        }
        nodes[k].creating = nil
        nodes[k].appliedSinceSnapshot = 0
        nodes[k].submitted = 0
        let applied = nodes[k].machine.applied
        nodes[k].tracker = ProposalTracker(
            proposer: nodes[k].id, incarnation: UInt64(nodes[k].incarnation) + 1,
            appliedTerm: state.term(at: applied) ?? .zero)
        let raft: Raft
        do {
            raft = try Raft(
                configuration: configuration(for: k), state: state, applied: applied,
                snapshot: nodes[k].snapshot?.meta)
        } catch {
            throw InvariantViolation(.durability, "\(nodes[k].id) cannot restart from its storage: \(error)")
        }
        try checker.observeRestart(nodes[k].id, raft, applied: applied)
        try checker.observeRestoredState(
            nodes[k].id, nodes[k].machine, durableSnapshot: nodes[k].snapshot?.meta.index ?? .zero)
        result.restartsChecked += 1
        nodes[k].checkedCommit = raft.log.committed
        nodes[k].raft = raft
        schedule(.tick(node: k, incarnation: nodes[k].incarnation), after: 1 + randomDelay(upTo: options.tickInterval))
    }

    // MARK: - Events

    private mutating func handle(_ event: Event) throws(InvariantViolation) {
        switch event {
        case .tick(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            let role = nodes[k].raft?.role
            let term = nodes[k].raft?.term
            let leader = nodes[k].raft?.leader
            // Before the core's tick, as `RaftNode` does: a round asked for here goes with this tick's heartbeat.
            tickReads(k)
            nodes[k].raft?.tick()
            if chance(options.snapshotOnDemandRate) { startSnapshot(k, force: true) }
            // Most ticks change nothing but a timer (on a spare not yet a member, every one): nothing to take.
            if nodes[k].raft?.hasReady == true || nodes[k].raft?.role != role || nodes[k].raft?.term != term
                || nodes[k].raft?.leader != leader
            {
                try processReady(k)
            }
            schedule(.tick(node: k, incarnation: incarnation), after: options.tickInterval)

        case .deliver(let message):
            let k = index(of: message.to)
            guard nodes[k].raft != nil, !blocked.contains(Link(from: index(of: message.from), to: k)) else {
                result.messagesDropped += 1
                return
            }
            if nodes[k].paused { return hold(event, for: k) }
            result.messagesDelivered += 1
            if stage == .faults && chance(options.burstRate) {
                if nodes[k].inbox.isEmpty {
                    schedule(
                        .drainInbox(node: k, incarnation: nodes[k].incarnation),
                        after: randomDelay(upTo: options.burstWindow))
                }
                nodes[k].inbox.append(message)
                return
            }
            nodes[k].raft?.step(message)
            try processReady(k)

        case .drainInbox(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            let burst = nodes[k].inbox
            nodes[k].inbox = []
            for message in burst { nodes[k].raft?.step(message) }
            try processReady(k)

        case .persisted(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            try completeWrite(k)

        case .propose:
            guard stage == .faults else { return }
            try proposeSomewhere()
            schedule(.propose, after: 1 + randomDelay(upTo: options.proposalInterval * 2))

        case .proposalDeadline(let k, let incarnation, let sequence):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            if let (_, settlement) = nodes[k].tracker.settle(sequence) { try record(settlement, of: sequence, on: k) }

        case .nemesis:
            guard stage == .faults else { return }
            try injectFault()
            schedule(.nemesis, after: 1 + randomDelay(upTo: options.nemesisInterval * 2))

        case .restart(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].raft == nil else { return }
            try boot(k)

        case .resume(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].paused else { return }
            resume(k)

        case .endFaults:
            try endFaults()

        case .snapshotWritten(let k, let incarnation):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            try snapshotWritten(k)

        case .deliverSnapshot(let message, let senderIncarnation):
            let k = index(of: message.to)
            guard nodes[k].raft != nil, !blocked.contains(Link(from: index(of: message.from), to: k)) else {
                result.messagesDropped += 1
                reportTransfer(message, senderIncarnation, succeeded: false)
                return
            }
            if nodes[k].paused { return hold(event, for: k) }
            result.messagesDelivered += 1
            nodes[k].raft?.step(message)
            try processReady(k)
            reportTransfer(message, senderIncarnation, succeeded: true)

        case .snapshotReport(let k, let incarnation, let peer, let succeeded):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            nodes[k].raft?.reportSnapshot(to: peer, succeeded: succeeded)
            try processReady(k)

        case .rejoin(let epoch):
            guard stage == .faults, epoch == partitionEpoch else { return }
            heal()

        case .membership(let chain):
            guard stage == .faults else { return }
            try membershipAction()
            guard chain else { return }
            if retryMembership && membershipRetries < 5 {
                // An operator retries a change refused for now (no leader, one in progress, a new leader not ready).
                membershipRetries += 1
                schedule(.membership(chain: true), after: 1 + randomDelay(upTo: 3 * options.tickInterval))
            } else {
                membershipRetries = 0
                schedule(.membership(chain: true), after: 1 + randomDelay(upTo: options.membershipInterval * 2))
            }

        case .connectionLost(let k, let incarnation, let peer):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            nodes[k].raft?.connectionLost(to: peer)
            try processReady(k)

        case .read:
            guard stage == .faults else { return }
            try readSomewhere()
            schedule(.read, after: 1 + randomDelay(upTo: options.readInterval * 2))

        case .readDeadline(let k, let incarnation, let context):
            guard nodes[k].incarnation == incarnation, nodes[k].raft != nil else { return }
            if nodes[k].paused { return hold(event, for: k) }
            if nodes[k].reads.waitingIndex.removeValue(forKey: context) != nil
                || nodes[k].reads.waitingApply.removeValue(forKey: context) != nil
            {
                result.readsTimedOut += 1
            }

        case .strikeLeader(let k, let term):
            guard stage == .faults, let raft = nodes[k].raft, raft.role == .leader, raft.term == term else { return }
            if chance(0.7) {
                crash(k)
                schedule(
                    .restart(node: k, incarnation: nodes[k].incarnation),
                    after: randomDelay(upTo: Int64(options.maxDowntimeTicks) * options.tickInterval))
            } else {
                isolate(k)
            }

        case .livenessDeadline(let number):
            guard number == stageNumber else { return }
            switch stage {
            case .awaitingLeader:
                throw InvariantViolation(
                    .liveness,
                    "no stable leader \(stageBound / options.tickInterval) ticks after faults stopped: "
                        + clusterSummary())
            case .awaitingCommit(let k, let proposals, let required):
                throw InvariantViolation(
                    .liveness,
                    "of \(proposals.count) proposals made on \(nodes[k].id), \(livenessApplied.count) were applied, not "
                        + "all on \(([k] + required).map { "\(nodes[$0].id)" }.joined(separator: ", ")), "
                        + "\(stageBound / options.tickInterval) ticks after they were made"
                        + (steadyPartition ? " (under a steady partition: \(blockedSummary()))" : "")
                        + (livenessReadsPending.isEmpty
                            ? ""
                            : "; reads not served on "
                                + livenessReadsPending.map { "\(nodes[$0].id)" }.joined(separator: ", ")) + ": "
                        + clusterSummary())
            case .faults, .done:
                return
            }
        }
        if case .awaitingLeader = stage { try checkForStableLeader() }
        if case .awaitingCommit(let k, let proposals, let required) = stage {
            try checkProposalsApplied(on: k, proposals, required)
        }
    }

    /// Takes node `k`'s readies through the write pipeline: sends what may go at once, queues the writes for the
    /// disk, and finishes at once a ready with nothing to write and nothing ahead of it.
    private mutating func processReady(_ k: Int) throws(InvariantViolation) {
        let id = nodes[k].id
        while let step = withPipeline(k, { pipeline, raft in pipeline.take(from: &raft) }) ?? nil,
            let log = nodes[k].raft?.log
        {
            try checker.observeAppended(id, step.write?.entries ?? [], in: log)
            for message in step.messages { send(message) }
            if !step.readStates.isEmpty || !step.readsDropped.isEmpty {
                try readsAnswered(step.readStates, dropped: step.readsDropped, on: k)
            }
            if let write = step.write {
                nodes[k].writes.append(write)
                if nodes[k].syncing == 0 { startSync(k) }
            }
            for ready in step.durable { try finish(ready, on: k) }
        }
        // A new leader or term: the node's pending proposals go to it (as `RaftNode` does after each pass).
        if nodes[k].raft != nil {
            var refused: [ProposalTracker<Client>.Refusal] = []
            withRaft(k) { raft, tracker in refused = tracker.handOutIfLeaderChanged(&raft) }
            for refusal in refused { try record(refusal.settlement, of: refusal.sequence, on: k) }
            if nodes[k].raft?.hasReady == true { return try processReady(k) }
        }
        guard let raft = nodes[k].raft else { return }
        try observeCommit(k)
        if raft.role == .leader && stage == .faults {
            // Strike leaders at the moments that matter: soon after they are elected (their logs half replicated),
            // and soon after their commit index moves (before the followers learn of it).
            if raft.term != nodes[k].ledTerm {
                nodes[k].ledTerm = raft.term
                if chance(options.assassinationRate) {
                    schedule(
                        .strikeLeader(node: k, term: raft.term),
                        after: randomDelay(upTo: 3 * options.maxDelay + options.maxPersistDelay))
                }
            } else if raft.log.committed > nodes[k].ledCommit {
                if chance(options.assassinationRate / 4) {
                    schedule(.strikeLeader(node: k, term: raft.term), after: randomDelay(upTo: options.maxDelay))
                }
                if options.membershipInterval > 0 && raft.log.term(at: nodes[k].ledCommit) != raft.term
                    && raft.log.term(at: raft.log.committed) == raft.term && chance(0.8)
                {
                    schedule(.membership(chain: false), after: randomDelay(upTo: options.minDelay))
                }
            }
            nodes[k].ledCommit = raft.log.committed
        }
        try checker.observe(id, raft)
    }

    /// Node `k`'s commit index must be durable on a majority, and is recorded as committed.
    private mutating func observeCommit(_ k: Int) throws(InvariantViolation) {
        guard let raft = nodes[k].raft else { return }
        if raft.log.committed > nodes[k].checkedCommit {
            if raft.log.committed > commitChecked {
                // Beyond anything checked so far: this node committed it (a leader, or one that just stepped down
                // when the configuration removing it committed), with its configuration in effect.
                try checkDurableOnQuorum(
                    raft.log.committed, term: raft.log.term(at: raft.log.committed), by: raft.id,
                    of: raft.membership)
                commitChecked = raft.log.committed
            }
            nodes[k].checkedCommit = raft.log.committed
            try checker.observe(raft.id, raft)
        }
    }

    /// Starts one sync covering every write queued so far.
    private mutating func startSync(_ k: Int) {
        nodes[k].syncing = nodes[k].writes.count
        schedule(
            .persisted(node: k, incarnation: nodes[k].incarnation), after: randomDelay(upTo: options.maxPersistDelay))
    }

    /// The sync in progress on node `k` finishes: the writes it covers are durable, in order.
    private mutating func completeWrite(_ k: Int) throws(InvariantViolation) {
        let count = nodes[k].syncing
        nodes[k].syncing = 0
        for _ in 0..<count {
            guard !nodes[k].writes.isEmpty else { break }
            let write = nodes[k].writes.removeFirst()
            if let meta = write.snapshot { try storeInstalled(meta, on: k) }
            do {
                try nodes[k].storage.persist(entries: write.entries, hardState: write.hardState)
            } catch {
                throw InvariantViolation(.durability, "\(nodes[k].id) handed out a write its storage refused: \(error)")
            }
            let durable = withPipeline(k) { pipeline, raft in pipeline.writeCompleted(&raft) } ?? []
            for ready in durable { try finish(ready, on: k) }
        }
        try processReady(k)
        if nodes[k].syncing == 0 && !nodes[k].writes.isEmpty { startSync(k) }
    }

    /// What follows a durable write (the pipeline has told the core): send the messages that waited for it, apply
    /// committed entries.
    private mutating func finish(_ ready: Ready, on k: Int) throws(InvariantViolation) {
        let durable = nodes[k].storage.state
        for message in ready.messagesAfterPersist {
            try checker.observeSent(message, durable: durable)
            send(message)
        }
        // A snapshot received is installed first: the entries committed in this ready follow it.
        if let meta = ready.snapshot { try restore(meta, on: k) }
        var lost: [UInt64] = []
        if let last = ready.committedEntries.last {
            try observeCommit(k)
            try checker.observeApplied(
                nodes[k].id, ready.committedEntries, committed: nodes[k].raft?.log.committed ?? .zero)
            if durable.term(at: last.index) != last.term {
                throw InvariantViolation(.durability, "\(nodes[k].id) applied \(last.index) before storing it")
            }
            for entry in ready.committedEntries { try apply(entry, on: k, lost: &lost) }
            nodes[k].appliedSinceSnapshot += ready.committedEntries.count
            if nodes[k].appliedSinceSnapshot >= options.snapshotEvery { startSnapshot(k, force: false) }
        }
        // Proposals proven lost go again (no copy of them can commit any more).
        for sequence in lost { try hand(sequence, on: k) }
        try serveReads(k)
    }

    // MARK: - Snapshots

    /// Starts writing a snapshot of node `k`'s state machine at the core's candidate — only when the state machine
    /// is exactly there (the core counts as applied what it handed out; readies still in the pipeline may not be
    /// applied yet). The snapshot is durable after a while (`snapshotWritten`); one at a time.
    private mutating func startSnapshot(_ k: Int, force: Bool) {
        guard nodes[k].creating == nil, let meta = nodes[k].raft?.snapshotCandidate,
            meta.index == nodes[k].machine.applied
        else { return }
        nodes[k].creating = SimulatedSnapshot(meta: meta, state: nodes[k].machine)
        nodes[k].appliedSinceSnapshot = 0
        schedule(
            .snapshotWritten(node: k, incarnation: nodes[k].incarnation),
            after: randomDelay(upTo: options.maxSnapshotDelay))
    }

    /// Node `k`'s snapshot is durable: it becomes the node's latest (unless one installed meanwhile is newer), the
    /// core learns of it, and the log is compacted up to the margin before it, in memory and in storage.
    private mutating func snapshotWritten(_ k: Int) throws(InvariantViolation) {
        guard let snapshot = nodes[k].creating else { return }
        nodes[k].creating = nil
        guard snapshot.meta.index > nodes[k].snapshot?.meta.index ?? .zero else { return }
        try checker.observeSnapshot(nodes[k].id, snapshot)
        if snapshotStore[SnapshotKey(snapshot.meta)] == nil { snapshotStore[SnapshotKey(snapshot.meta)] = snapshot }
        nodes[k].snapshot = snapshot
        result.snapshotsTaken += 1
        let index = snapshot.meta.index
        let target = LogIndex(index.rawValue - min(options.compactionMargin, index.rawValue))
        var start = LogIndex.zero
        withRaft(k) { raft, _ in
            raft.snapshotCreated(snapshot.meta)
            start = raft.compact(through: target)
        }
        // Storage keeps at least what the core keeps, and never drops what the snapshot does not cover.
        let stored = nodes[k].storage.state
        let through = min(start, target)
        if through > stored.snapshotIndex, let term = stored.term(at: through) {
            nodes[k].storage = MemoryStorage(
                PersistentState(
                    hardState: stored.hardState, snapshotIndex: through, snapshotTerm: term,
                    entries: stored.entries.filter { $0.index > through }))
        }
        try processReady(k)
    }

    /// The write that installs a snapshot received is durable (or lands in a crash): the node's storage holds
    /// the snapshot and an empty log after it — the rest of the write is then stored on top.
    private mutating func storeInstalled(_ meta: SnapshotMetadata, on k: Int) throws(InvariantViolation) {
        guard let snapshot = snapshotStore[SnapshotKey(meta)] else {
            throw InvariantViolation(
                .durability, "\(nodes[k].id) was handed a \(meta) to install, which no node made durable")
        }
        nodes[k].storage = MemoryStorage(
            PersistentState(
                hardState: nodes[k].storage.state.hardState, snapshotIndex: meta.index, snapshotTerm: meta.term))
        nodes[k].snapshot = snapshot
    }

    /// A ready that installs a snapshot is durable: the state machine and the proposal sessions are restored from
    /// it, and this node's own proposals it shows applied are settled (their index is unknown here).
    private mutating func restore(_ meta: SnapshotMetadata, on k: Int) throws(InvariantViolation) {
        guard let snapshot = snapshotStore[SnapshotKey(meta)] else {
            throw InvariantViolation(.durability, "\(nodes[k].id) installed a \(meta) that no node made durable")
        }
        nodes[k].machine = snapshot.state
        nodes[k].appliedSinceSnapshot = 0
        try checker.observeInstalled(nodes[k].id, snapshot, restored: nodes[k].machine)
        result.installsApplied += 1
        guard nodes[k].submitted > 0 else { return }
        for sequence in 1...nodes[k].submitted {
            guard nodes[k].tracker[sequence] != nil, let data = nodes[k].tracker.entryData(sequence),
                let header = ProposalEnvelope.Header(decoding: data),
                nodes[k].machine.sessions.hasAdmitted(header)
            else { continue }
            guard let (client, _) = nodes[k].tracker.settle(sequence) else { continue }
            let identity = ProposalIdentity(
                proposer: nodes[k].id, incarnation: nodes[k].tracker.incarnation, sequence: sequence)
            try checker.observeSettledBySnapshot(identity, at: meta.index)
            result.proposalsSettledBySnapshot += 1
            if client.mustApply { livenessApplied[sequence] = meta.index }
        }
    }

    /// The leader's shell learns how a transfer ended, after a round trip — or, sometimes, it does not, and gives
    /// the transfer up as failed after a timeout (or never, if lost reports stay lost).
    private mutating func reportTransfer(_ message: Message, _ senderIncarnation: Int, succeeded: Bool) {
        var succeeded = succeeded
        var delay = messageDelay()
        if chance(options.lostReportRate) {
            result.reportsLost += 1
            if options.lostReportsStay { return }
            succeeded = false
            delay = Int64(options.snapshotReportTimeoutTicks) * options.tickInterval
        }
        schedule(
            .snapshotReport(
                node: index(of: message.from), incarnation: senderIncarnation, peer: message.to, succeeded: succeeded),
            after: delay)
    }

    /// Applies one committed entry to node `k`'s state machine: `ProposalSessions` decides whether a proposal is
    /// applied or is a copy, the checker holds every node to the same decision and every proposal to one
    /// application, and the proposer's tracker learns what became of its proposals.
    private mutating func apply(_ entry: Entry, on k: Int, lost: inout [UInt64]) throws(InvariantViolation) {
        let header = entry.kind == .normal ? ProposalEnvelope.Header(decoding: entry.data) : nil
        let admitted =
            entry.kind == .normal && (header.map { nodes[k].machine.sessions.admit($0, term: entry.term) } ?? true)
        try checker.observeAdmission(nodes[k].id, entry, proposal: header?.identity, admitted: admitted)
        if entry.kind == .configChange && configsApplied.insert(entry.index).inserted { result.changesCommitted += 1 }
        nodes[k].machine.apply(entry, admitted: admitted)
        try checker.observeState(nodes[k].id, nodes[k].machine)
        let outcome = nodes[k].tracker.applied((entry.index, entry.term), envelope: header, admitted: admitted)
        lost += outcome.lost
        if let (sequence, client) = outcome.settled {
            try record(.applied(entry.index, entry.term), of: sequence, on: k)
            if client.mustApply { livenessApplied[sequence] = entry.index }
        }
    }

    /// Runs `body` on node `k`'s write pipeline and core in place (a copy of the core would duplicate its log).
    private mutating func withPipeline<R>(_ k: Int, _ body: (inout ReadyPipeline, inout Raft) -> R) -> R? {
        guard var raft = nodes[k].raft else { return nil }
        nodes[k].raft = nil
        let result = body(&nodes[k].pipeline, &raft)
        nodes[k].raft = raft
        return result
    }

    /// Runs `body` on node `k`'s core and tracker in place (a copy of the core would duplicate its log).
    private mutating func withRaft(_ k: Int, _ body: (inout Raft, inout ProposalTracker<Client>) -> Void) {
        guard var raft = nodes[k].raft else { return }
        nodes[k].raft = nil
        body(&raft, &nodes[k].tracker)
        nodes[k].raft = raft
    }

    /// Hands one of node `k`'s proposals to its core.
    private mutating func hand(_ sequence: UInt64, on k: Int) throws(InvariantViolation) {
        var refusal: ProposalTracker<Client>.Refusal?
        withRaft(k) { raft, tracker in refusal = tracker.hand(sequence, to: &raft) }
        if let refusal { try record(refusal.settlement, of: refusal.sequence, on: k) }
    }

    /// A proposal of node `k` was settled: the checker holds the settlement to what the cluster applied.
    private mutating func record(
        _ settlement: ProposalTracker<Client>.Settlement, of sequence: UInt64, on k: Int
    ) throws(InvariantViolation) {
        let identity = ProposalIdentity(
            proposer: nodes[k].id, incarnation: nodes[k].tracker.incarnation, sequence: sequence)
        try checker.observeSettled(identity, settlement)
        switch settlement {
        case .applied: result.proposalsApplied += 1
        case .lost, .neverHanded: result.proposalsLost += 1
        case .unknown: result.proposalsUnknown += 1
        }
    }

    /// The definition of committed: the entry is durable on a quorum of the configuration its committer counted
    /// with (a majority of the voters; in a joint configuration, a majority of each half; learners count for
    /// nothing). Every commit index must meet it when a node first reaches it — this is what makes a leader that
    /// counted its own, not yet durable, write fail at once. (A follower's commit index comes from a leader's,
    /// checked when the leader reached it.)
    private func checkDurableOnQuorum(_ index: LogIndex, term: Term?, by node: NodeID, of membership: Membership)
        throws(InvariantViolation)
    {
        guard let term else { return }
        // A node whose storage was compacted past the index holds it in its snapshot (it applied it: the checker
        // held every applied entry to the one the cluster committed).
        func holds(_ id: NodeID) -> Bool {
            let state = nodes[self.index(of: id)].storage.state
            return state.term(at: index) == term || index < state.snapshotIndex
        }
        for half in [membership.voters, membership.outgoing] where !half.isEmpty {
            let holders = half.filter(holds).count
            if holders < half.count / 2 + 1 {
                throw InvariantViolation(
                    .durability,
                    "\(node) has \(index) (\(term)) committed but only \(holders) of the voters "
                        + "\(half.sorted().map(\.description).joined(separator: ",")) of \(membership) have it durable")
            }
        }
    }

    // MARK: - The network

    private mutating func send(_ message: Message) {
        if case .installSnapshot = message.kind { return sendSnapshot(message) }
        if stage == .faults && chance(options.dropRate) {
            result.messagesDropped += 1
            return
        }
        // Links are FIFO, like a TCP connection, except for the messages that are reordered on purpose.
        let link = index(of: message.from) * nodes.count + index(of: message.to)
        var delay = messageDelay()
        if stage != .faults || !chance(options.reorderRate) {
            delay = max(delay, linkClock[link] - now)
            linkClock[link] = now + delay
        }
        schedule(.deliver(message), after: delay)
        if stage == .faults && chance(options.duplicateRate) {
            schedule(.deliver(message), after: messageDelay())
        }
    }

    /// A snapshot's transfer, as one message: slower than others (the bytes are many), off the link's order (it
    /// streams on a connection of its own), lost or duplicated like any message. The leader's shell reports how it
    /// ended.
    private mutating func sendSnapshot(_ message: Message) {
        result.installsSent += 1
        let incarnation = nodes[index(of: message.from)].incarnation
        let delay = messageDelay() + randomDelay(upTo: options.snapshotTransferDelay)
        if stage == .faults && chance(options.dropRate) {
            result.messagesDropped += 1
            reportTransfer(message, incarnation, succeeded: false)
            return
        }
        schedule(.deliverSnapshot(message, senderIncarnation: incarnation), after: delay)
        if stage == .faults && chance(options.duplicateRate) {
            schedule(
                .deliverSnapshot(message, senderIncarnation: incarnation),
                after: messageDelay() + randomDelay(upTo: options.snapshotTransferDelay))
        }
    }

    private mutating func messageDelay() -> Int64 {
        options.minDelay + randomDelay(upTo: options.maxDelay - options.minDelay)
    }

    // MARK: - Faults

    private mutating func injectFault() throws(InvariantViolation) {
        let weights = [
            options.crashWeight, options.pauseWeight, options.partitionWeight, options.healWeight,
            options.laggardWeight,
        ]
        var roll = Int(random.next() % UInt64(weights.reduce(0, +)))
        var kind = 0
        while roll >= weights[kind] {
            roll -= weights[kind]
            kind += 1
        }
        switch kind {
        case 0: crashSomeone()
        case 1: pauseSomeone()
        case 2: partition()
        case 3: heal()
        default: isolateLaggard()
        }
    }

    private mutating func heal() {
        blocked.removeAll()
        partitionEpoch += 1
    }

    /// A follower is cut off long enough for the leader to snapshot and compact past it; when it rejoins (unless
    /// the network changed meanwhile), it needs a snapshot.
    private mutating func isolateLaggard() {
        let followers = nodes.indices.filter { nodes[$0].raft != nil && nodes[$0].raft?.role != .leader }
        guard !followers.isEmpty else { return }
        result.laggards += 1
        isolate(followers[pick(followers.count)])
        let ticks = Int64(options.laggardTicks / 2 + pick(options.laggardTicks / 2 + 1))
        schedule(.rejoin(epoch: partitionEpoch), after: ticks * options.tickInterval)
    }

    /// A victim for a fault: half the time the current leader (faults there hurt most), otherwise anyone who fits.
    private mutating func victim(where fits: (Node) -> Bool) -> Int? {
        let candidates = nodes.indices.filter { fits(nodes[$0]) }
        guard !candidates.isEmpty else { return nil }
        if chance(options.leaderBias) {
            if let leader = candidates.first(where: { nodes[$0].raft?.role == .leader }) { return leader }
            // Leader churn: with no leader to strike, let the cluster elect one.
            if options.leaderBias > 0.5 { return nil }
        }
        return candidates[pick(candidates.count)]
    }

    private mutating func crashSomeone() {
        guard let k = victim(where: { $0.raft != nil }) else { return }
        crash(k)
        schedule(
            .restart(node: k, incarnation: nodes[k].incarnation),
            after: randomDelay(upTo: Int64(options.maxDowntimeTicks) * options.tickInterval))
    }

    /// Node `k` loses everything not yet durable. A write in progress may be torn: a prefix of its entries lands.
    /// The nodes that had it as their leader may hear of it: their connection to it was reset.
    private mutating func crash(_ k: Int) {
        result.crashes += 1
        for j in nodes.indices where j != k && nodes[j].raft?.leader == nodes[k].id {
            guard chance(options.connectionLostRate) else { continue }
            result.connectionLostReports += 1
            schedule(
                .connectionLost(node: j, incarnation: nodes[j].incarnation, peer: nodes[k].id), after: messageDelay())
        }
        if nodes[k].syncing > 0 && chance(options.tornWriteRate) {
            // Some of the writes of the sync in progress reach the disk, the last of them perhaps only in part.
            result.tornWrites += 1
            let whole = pick(nodes[k].syncing)
            for write in nodes[k].writes.prefix(whole) {
                if let meta = write.snapshot { try? storeInstalled(meta, on: k) }
                try? nodes[k].storage.persist(entries: write.entries, hardState: write.hardState)
            }
            // A snapshot's install is all or nothing (the shell renames its file into place), then entries follow.
            let torn = nodes[k].writes[whole]
            if let meta = torn.snapshot {
                if chance(0.5) {
                    try? storeInstalled(meta, on: k)
                    try? nodes[k].storage.append(torn.entries.prefix(pick(torn.entries.count + 1)))
                }
            } else {
                try? nodes[k].storage.append(torn.entries.prefix(pick(torn.entries.count + 1)))
            }
        }
        if nodes[k].creating != nil { result.snapshotsLost += 1 }
        result.readsLostInCrashes += nodes[k].reads.pending
        // As a restarted process's do, the new incarnation's read contexts start somewhere no earlier one's were
        // (drawn from the seed, the node and the crash count, so that the seed still replays).
        var draw = SplitMix64(seed: options.seed ^ (UInt64(k) << 48) ^ UInt64(result.crashes) &* 0x9E37_79B9)
        nodes[k].reads = SimulatedReads(firstContext: draw.next())
        let durable = nodes[k].storage.initialState()
        checker.forgetLostEntries(of: nodes[k].id) { durable.term(at: $0) }
        nodes[k].creating = nil
        nodes[k].raft = nil
        nodes[k].writes = []
        nodes[k].pipeline.reset()
        nodes[k].syncing = 0
        nodes[k].paused = false
        nodes[k].heldWhilePaused = []
        nodes[k].inbox = []
        nodes[k].incarnation += 1
    }

    private mutating func pauseSomeone() {
        guard let k = victim(where: { $0.raft != nil && !$0.paused }) else { return }
        result.pauses += 1
        nodes[k].paused = true
        schedule(
            .resume(node: k, incarnation: nodes[k].incarnation),
            after: 1 + randomDelay(upTo: 30 * options.tickInterval))
    }

    private mutating func hold(_ event: Event, for k: Int) {
        nodes[k].heldWhilePaused.append(event)
    }

    /// A paused node wakes up and finds everything that arrived meanwhile (ticks that fell due are not replayed).
    private mutating func resume(_ k: Int) {
        nodes[k].paused = false
        let held = nodes[k].heldWhilePaused
        nodes[k].heldWhilePaused = []
        var tickRescheduled = false
        for event in held {
            if case .tick = event {
                if tickRescheduled { continue }
                tickRescheduled = true
            }
            schedule(event, after: 0)
        }
    }

    private mutating func partition() {
        result.partitions += 1
        blocked.removeAll()
        partitionEpoch += 1
        let n = nodes.count
        func cut(_ a: Int, _ b: Int) { blocked.insert(Link(from: a, to: b)) }
        switch pick(5) {
        case 0:
            isolate(victim(where: { _ in true }) ?? 0)
        case 1:
            // Split into a minority and a majority.
            let side = randomSubset(size: 1 + pick(n / 2))
            for a in side {
                for b in 0..<n where !side.contains(b) {
                    cut(a, b)
                    cut(b, a)
                }
            }
        case 2:
            // One-way: a node can send but not receive, or receive but not send.
            let k = pick(n)
            let outgoing = chance(0.5)
            for j in 0..<n where j != k { outgoing ? cut(k, j) : cut(j, k) }
        case 3:
            // Bridge: two halves that cannot talk to each other, and one node that talks to both.
            let bridge = pick(n)
            let others = (0..<n).filter { $0 != bridge }
            let left = Set(others.prefix(others.count / 2))
            for a in left {
                for b in others where !left.contains(b) {
                    cut(a, b)
                    cut(b, a)
                }
            }
        default:
            // Random one-way link failures.
            for a in 0..<n { for b in 0..<n where a != b && chance(0.3) { cut(a, b) } }
        }
    }

    /// Cuts node `k` off from every other node, both ways (replacing any partition in place).
    private mutating func isolate(_ k: Int) {
        blocked.removeAll()
        partitionEpoch += 1
        for j in nodes.indices where j != k {
            blocked.insert(Link(from: k, to: j))
            blocked.insert(Link(from: j, to: k))
        }
    }

    // MARK: - Clients

    /// A client proposes through a node, as through `RaftNode.propose`: the node's tracker hands it out, retries it
    /// when the leader changes or a copy is proven lost, and settles it when it is applied or its deadline passes.
    private mutating func proposeSomewhere() throws(InvariantViolation) {
        // Clients mostly find the leader (or whoever thinks it leads); the rest go to any member.
        guard let k = victim(where: { $0.raft.map { $0.membership.isMember($0.id) } == true && !$0.paused }) else {
            return
        }
        let sequence = nodes[k].tracker.submit(nextCommand(), waiter: Client())
        nodes[k].submitted = sequence
        result.proposals += 1
        schedule(
            .proposalDeadline(node: k, incarnation: nodes[k].incarnation, sequence: sequence),
            after: Int64(options.proposalTimeoutTicks) * options.tickInterval)
        try hand(sequence, on: k)
        try processReady(k)
    }

    private mutating func nextCommand() -> [UInt8] {
        proposalCounter += 1
        var data = withUnsafeBytes(of: proposalCounter.littleEndian, Array.init)
        data.append(contentsOf: (0..<pick(24)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        return data
    }

    // MARK: - Reads

    /// A client asks a node for a linearizable read, as through `RaftNode.read`: mostly one that leads (or thinks it
    /// does: a deposed leader may not know yet), otherwise any member, follower or not; with lease reads on, some are
    /// asked as lease reads.
    private mutating func readSomewhere() throws(InvariantViolation) {
        let members = nodes.indices.filter {
            !nodes[$0].paused && nodes[$0].raft.map { $0.membership.isMember($0.id) } == true
        }
        guard !members.isEmpty else { return }
        let leaders = members.filter { nodes[$0].raft?.role == .leader }
        let k =
            !leaders.isEmpty && chance(options.leaderReadRate)
            ? leaders[pick(leaders.count)] : members[pick(members.count)]
        try askRead(on: k, lease: chance(options.leaseReadRate))
    }

    /// Node `k`'s shell takes a client's read (`RaftNode.submitRead`). The checker's floor is what the cluster had
    /// committed at this moment, the read's invocation.
    @discardableResult
    private mutating func askRead(on k: Int, lease: Bool, deadline: Bool = true) throws(InvariantViolation) -> UInt64? {
        guard let raft = nodes[k].raft else { return nil }
        var read = SimulatedRead(floor: checker.highestCommitted, askedAt: now, onFollower: raft.role != .leader)
        read.liveness = !deadline
        if deadline { result.readsAsked += 1 }
        let context = nodes[k].reads.context()
        let fromLease = lease && leaseHolds(k)
        if fromLease || options.unsafeReadsWithoutConfirmation {
            // Served at this node's commit index: a leader within its lease (no other leader can exist, so its commit
            // index holds every completed write), or — the broken read path — any node, unconfirmed.
            read.fromLease = fromLease
            read.atLeast = raft.log.committed
            nodes[k].reads.waitingApply[context] = read
        } else {
            nodes[k].reads.waitingIndex[context] = read
            askCore(context, on: k)
        }
        if deadline {
            schedule(
                .readDeadline(node: k, incarnation: nodes[k].incarnation, context: context),
                after: Int64(options.readTimeoutTicks) * options.tickInterval)
        }
        try serveReads(k)
        try processReady(k)
        return context
    }

    /// The lease a confirmed read gives node `k`'s leader (see `ReadLease`), on the virtual clock.
    private var emptyLease: ReadLease? {
        if let duration = options.leaseDurationOverride { return ReadLease(duration: duration) }
        return ReadLease(
            tickLength: options.tickInterval, electionTick: options.electionTick, drift: options.leaseClockDrift)
    }

    /// Whether node `k` may serve a lease read now: lease reads are on, the core allows them, and the lease, on the
    /// virtual clock (which runs on while a node is paused), has not run out.
    private func leaseHolds(_ k: Int) -> Bool {
        guard options.strictLease, let lease = nodes[k].reads.lease, let raft = nodes[k].raft else { return false }
        return lease.holds(now: now, raft)
    }

    /// Asks node `k`'s core for the read index of a waiting read (again, if it was asked before).
    private mutating func askCore(_ context: UInt64, on k: Int) {
        guard var read = nodes[k].reads.waitingIndex[context] else { return }
        read.ticksSinceAsked = 0
        read.dropped = false
        var refused = false
        var term = Term.zero
        withRaft(k) { raft, _ in
            do throws(ReadIndexError) { try raft.readIndex(context: context) } catch { refused = true }
            term = raft.term
        }
        if refused {
            // No leader known: ask again at the next tick.
            read.dropped = true
        } else if read.firstAsked == nil || read.askedTerm != term {
            read.firstAsked = now
            read.askedTerm = term
        }
        nodes[k].reads.waitingIndex[context] = read
    }

    /// Node `k`'s core answered: read indexes confirmed (the read then waits for the state machine), and reads it
    /// will not answer (asked again at the next tick). A confirmed read, or lease renewal, extends a leader's lease
    /// from when it was asked.
    private mutating func readsAnswered(_ states: [ReadState], dropped: [UInt64], on k: Int)
        throws(InvariantViolation)
    {
        for state in states {
            if let renewal = nodes[k].reads.renewals.removeValue(forKey: state.context) {
                result.leaseRenewals += 1
                extendLease(k, from: renewal.asked, term: renewal.term)
                continue
            }
            guard var read = nodes[k].reads.waitingIndex.removeValue(forKey: state.context) else { continue }
            if let asked = read.firstAsked, let term = read.askedTerm { extendLease(k, from: asked, term: term) }
            read.atLeast = max(read.atLeast, state.index)
            nodes[k].reads.waitingApply[state.context] = read
        }
        for context in dropped {
            if nodes[k].reads.renewals.removeValue(forKey: context) != nil { continue }
            if nodes[k].reads.waitingIndex[context] != nil {
                nodes[k].reads.waitingIndex[context]?.dropped = true
                result.readsDropped += 1
            }
        }
        if !states.isEmpty { try serveReads(k) }
    }

    private mutating func extendLease(_ k: Int, from asked: Int64, term: Term) {
        guard options.strictLease, let raft = nodes[k].raft, raft.role == .leader, raft.term == term else { return }
        if nodes[k].reads.lease == nil { nodes[k].reads.lease = emptyLease }
        nodes[k].reads.lease?.confirmed(askedAt: asked, term: term)
    }

    /// Serves every read of node `k` whose index its state machine has reached, from that state — and the checker
    /// judges each.
    private mutating func serveReads(_ k: Int) throws(InvariantViolation) {
        guard !nodes[k].reads.waitingApply.isEmpty else { return }
        let state = nodes[k].machine
        for context in nodes[k].reads.waitingApply.keys.sorted() {
            guard let read = nodes[k].reads.waitingApply[context], read.atLeast <= state.applied else { continue }
            nodes[k].reads.waitingApply[context] = nil
            try checker.observeRead(
                nodes[k].id, state, floor: read.floor,
                "\(read.fromLease ? "a lease read" : "a read") #\(context) asked at t=\(read.askedAt) "
                    + "(\(read.onFollower ? "not leading" : "leading") then, read index \(read.atLeast))")
            guard !read.liveness else { continue }
            result.readsServed += 1
            if read.onFollower { result.readsServedOnFollowers += 1 }
            if read.fromLease { result.leaseReadsServed += 1 }
        }
    }

    /// At each of node `k`'s ticks (`RaftNode.tickReads`): ask again for the reads the core dropped or could not
    /// take, and those a follower asked the leader about a while ago without an answer; a leader with lease reads
    /// renews its lease with a read of its own.
    private mutating func tickReads(_ k: Int) {
        guard let raft = nodes[k].raft else { return }
        let patience = max(2, 2 * options.heartbeatTick)
        for context in nodes[k].reads.waitingIndex.keys.sorted() {
            guard let read = nodes[k].reads.waitingIndex[context] else { continue }
            if read.dropped || (raft.role != .leader && read.ticksSinceAsked + 1 >= patience) {
                askCore(context, on: k)
            } else {
                nodes[k].reads.waitingIndex[context]?.ticksSinceAsked += 1
            }
        }
        if options.strictLease, raft.leaseReadsAllowed, nodes[k].reads.renewals.isEmpty {
            let context = nodes[k].reads.context()
            var taken = true
            withRaft(k) { raft, _ in
                do throws(ReadIndexError) { try raft.readIndex(context: context) } catch { taken = false }
            }
            if taken { nodes[k].reads.renewals[context] = (now, raft.term) }
        }
        if raft.role != .leader { nodes[k].reads.renewals = [:] }
    }

    // MARK: - Membership

    /// Asks the leader (the one of the highest term, if several think they lead) for a membership action: mostly a
    /// change drawn from the membership it has in effect, sometimes a leadership transfer, or a spurious report to
    /// one of its followers that the connection to it was lost (which must disrupt nothing). Refusals are expected
    /// and counted.
    private mutating func membershipAction() throws(InvariantViolation) {
        var k: Int?
        for j in nodes.indices where nodes[j].raft?.role == .leader && !nodes[j].paused {
            if let best = k, let bestTerm = nodes[best].raft?.term, let term = nodes[j].raft?.term, term <= bestTerm {
                continue
            }
            k = j
        }
        retryMembership = true
        guard let k, let raft = nodes[k].raft else { return }
        retryMembership = false
        result.membershipActions += 1
        let m = raft.membership
        let roll = pick(100)
        if m.isJoint && !m.autoLeave && roll < 60 {
            return try propose(.leaveJoint, on: k)
        }
        if roll < 12 {
            // A transfer to a named voter (perhaps one that is not, or no longer, a voter), or to the best one.
            let target: NodeID? = chance(0.5) ? nodes[pick(nodes.count)].id : nil
            var refused = false
            withRaft(k) { raft, _ in
                do throws(MembershipError) { _ = try raft.transferLeadership(to: target) } catch { refused = true }
            }
            if refused { result.transferRefusals += 1 } else { result.transfers += 1 }
            return try processReady(k)
        }
        if roll < 18 {
            let followers = nodes.indices.filter { $0 != k && nodes[$0].raft?.leader == raft.id }
            guard !followers.isEmpty else { return }
            let j = followers[pick(followers.count)]
            result.spuriousConnectionLost += 1
            schedule(.connectionLost(node: j, incarnation: nodes[j].incarnation, peer: raft.id), after: 0)
            return
        }
        let steps = changeSteps(from: m)
        guard !steps.isEmpty else { return }
        // A change of at most one voter may go without a joint configuration; a larger one asked to is refused.
        let voters = Set(steps.filter { $0.action == .addVoter }.map(\.node)).subtracting(m.voters)
            .union(steps.filter { $0.action != .addVoter && m.voters.contains($0.node) }.map(\.node))
        let transition: ConfigChange.Transition =
            switch pick(voters.count <= 1 ? 3 : 10) {
            case 0: .simple
            case 1, 3, 5, 7, 9: .explicit
            default: .auto
            }
        let removesLeader = steps.contains { $0.node == raft.id && $0.action != .addVoter }
        try propose(ConfigChange(steps, transition: transition), on: k, removesLeader: removesLeader)
    }

    /// One to three steps for a change of `m`: add a learner, promote one, add a voter directly, remove a voter or
    /// a learner, demote a voter, replace a voter with another node. Steps stay within the pool; the voters drift
    /// between one and the whole pool, more often back towards three to five.
    private mutating func changeSteps(from m: Membership) -> [ConfigChange.Step] {
        var steps: [ConfigChange.Step] = []
        var touched = Set<NodeID>()
        let count = chance(0.25) ? 2 + pick(2) : 1
        for _ in 0..<count {
            let outsiders = nodes.map(\.id).filter { !m.isMember($0) && !touched.contains($0) }
            let learners = m.learners.subtracting(touched).sorted()
            let voters = m.voters.subtracting(touched).sorted()
            func any(_ ids: [NodeID]) -> NodeID? { ids.isEmpty ? nil : ids[pick(ids.count)] }
            var kind = pick(7)
            if m.voters.count <= 2 && (kind == 3 || kind == 5) && chance(0.7) { kind = 2 }
            if m.voters.count >= 5 && (kind == 1 || kind == 2) && chance(0.7) { kind = 3 }
            var step: [ConfigChange.Step] = []
            switch kind {
            case 0: if let n = any(outsiders) { step = [.init(.addLearner, n)] }
            case 1: if let n = any(learners) { step = [.init(.addVoter, n)] }
            case 2: if let n = any(outsiders) { step = [.init(.addVoter, n)] }
            case 3: if let n = any(voters) { step = [.init(.remove, n)] }
            case 4: if let n = any(learners) { step = [.init(.remove, n)] }
            case 5: if let n = any(voters) { step = [.init(.addLearner, n)] }
            default:
                if let a = any(voters), let b = any(learners + outsiders) {
                    step = [.init(.remove, a), .init(.addVoter, b)]
                }
            }
            for s in step where touched.insert(s.node).inserted { steps.append(s) }
        }
        return steps
    }

    private mutating func propose(_ change: ConfigChange, on k: Int, removesLeader: Bool = false)
        throws(InvariantViolation)
    {
        var outcome: Result<LogIndex, MembershipError> = .failure(.notReady)
        withRaft(k) { raft, _ in
            do throws(MembershipError) { outcome = .success(try raft.proposeConfigChange(change)) } catch {
                outcome = .failure(error)
            }
        }
        switch outcome {
        case .success:
            result.changesProposed += 1
            if change.isLeaveJoint { result.leaveJointsProposed += 1 }
            if removesLeader { result.leaderRemovals += 1 }
            if let m = nodes[k].raft?.membership {
                result.maxMembers = max(result.maxMembers, m.members.count)
                result.maxVoters = max(result.maxVoters, m.voters.union(m.outgoing).count)
            }
        case .failure(let error):
            result.changeRefusals["\(error.code)", default: 0] += 1
            retryMembership = error.code != .invalid && error.code != .wouldLoseQuorum
        }
        try processReady(k)
    }

    // MARK: - Liveness

    /// The bound for each liveness stage: 30 election timeouts, plus the time to stream the backlog (the longest
    /// log against the shortest commit index) to a follower at the configured window — message limit times
    /// pipeline depth per round trip — since a deliberately narrow window makes catching up slow, not wrong.
    private var livenessBound: Int64 {
        let electionTimeouts = 30 * Int64(options.electionTick) * options.tickInterval
        let longest = nodes.compactMap { $0.raft?.log.lastIndex.rawValue }.max() ?? 0
        let shortest = nodes.compactMap { $0.raft?.log.committed.rawValue }.min() ?? 0
        let perRoundTrip = UInt64(options.maxMessageEntries * options.maxInflightMessages)
        let roundTrips = Int64((longest - min(shortest, longest)) / perRoundTrip + 1)
        // A follower behind the leader's compaction needs a snapshot first (perhaps twice, if the first is of an
        // index the leader compacts past meanwhile).
        let snapshotTransfers =
            4
            * (options.snapshotTransferDelay + 2 * options.maxDelay + options.maxPersistDelay + options.maxSnapshotDelay)
        return electionTimeouts + snapshotTransfers
            + roundTrips * (2 * options.maxDelay + options.maxPersistDelay + options.tickInterval)
    }

    private mutating func endFaults() throws(InvariantViolation) {
        faultsEndedAt = now
        heal()
        // With PreVote and CheckQuorum, Raft makes progress under some partitions that stay: a node cut off, a node
        // that can only send or only receive, two halves bridged by one node. Judge liveness under one of them.
        if options.preVote && options.checkQuorum && chance(options.steadyPartitionRate) {
            steadyPartition = true
            result.steadyPartitions += 1
            installSteadyPartition()
        }
        for k in nodes.indices {
            if nodes[k].raft == nil {
                try boot(k)
            } else if nodes[k].paused {
                resume(k)
            }
        }
        // With membership changes, which nodes can win depends on whose logs hold which configuration, not only on
        // who is a voter where (a node that holds the latest configuration may be cut off from the quorum it needs,
        // while those it could reach cannot win against its longer log): judge liveness after a heal only.
        if steadyPartition && (options.membershipInterval > 0 || !steadyPartitionKeepsAQuorum()) {
            // The changes left configurations the partition splits (two voters, or four with a learner as the
            // bridge): no leader could have a quorum of each on its side. Judge liveness after a heal instead.
            steadyPartition = false
            result.steadyPartitions -= 1
            result.steadyPartitionsSkipped += 1
            heal()
        }
        enterStage(.awaitingLeader)
    }

    /// Whether some node is a voter of every configuration in effect now (the latest in each node's log, and the
    /// one at each node's commit index: an uncommitted one may yet be truncated away) and has, among the nodes
    /// linked both ways to it, a quorum of each — of each half of a joint one.
    private func steadyPartitionKeepsAQuorum() -> Bool {
        var memberships: Set<Membership> = []
        for node in nodes {
            guard let raft = node.raft else { continue }
            memberships.insert(raft.membership)
            memberships.insert(raft.membership(at: raft.log.committed))
        }
        return nodes.indices.contains { k in
            let side = Set(connected(to: k).map { nodes[$0].id } + [nodes[k].id])
            return memberships.allSatisfy { m in
                m.voters.contains(nodes[k].id)
                    && [m.voters, m.outgoing].allSatisfy { half in
                        half.isEmpty || half.intersection(side).count > half.count / 2
                    }
            }
        }
    }

    /// Cuts links for good: a node isolated, a node that can only send, a node that can only receive, or a bridge.
    private mutating func installSteadyPartition() {
        let n = nodes.count
        let k = pick(n)
        switch pick(4) {
        case 0:
            isolate(k)
        case 1:
            for j in 0..<n where j != k { blocked.insert(Link(from: j, to: k)) }
        case 2:
            for j in 0..<n where j != k { blocked.insert(Link(from: k, to: j)) }
        default:
            let others = (0..<n).filter { $0 != k }.shuffled(using: &random)
            let left = Set(others.prefix(others.count / 2))
            for a in left {
                for b in others where !left.contains(b) {
                    blocked.insert(Link(from: a, to: b))
                    blocked.insert(Link(from: b, to: a))
                }
            }
        }
    }

    private func blockedSummary() -> String {
        blocked.map { "\(nodes[$0.from].id)→\(nodes[$0.to].id)" }.sorted().joined(separator: " ")
    }

    private mutating func enterStage(_ next: Stage) {
        stage = next
        stageNumber += 1
        stageBound = livenessBound
        schedule(.livenessDeadline(stage: stageNumber), after: stageBound)
    }

    /// The nodes linked both ways to node `k`.
    private func connected(to k: Int) -> [Int] {
        nodes.indices.filter {
            $0 != k && !blocked.contains(Link(from: k, to: $0)) && !blocked.contains(Link(from: $0, to: k))
        }
    }

    /// A stable leader: every node follows it in its term (under a steady partition, every node linked both ways to
    /// it), and it has committed an entry of its term — judged only once two election timeouts have passed since the
    /// faults stopped, so that CheckQuorum no longer judges a period of other faults (a leader deposed for that is
    /// not a liveness failure).
    private mutating func checkForStableLeader() throws(InvariantViolation) {
        guard now >= faultsEndedAt + 2 * Int64(options.electionTick) * options.tickInterval + options.maxDelay else {
            return
        }
        guard let k = nodes.firstIndex(where: { $0.raft?.role == .leader }), let leader = nodes[k].raft else { return }
        // Stable also means settled: no transfer under way (the leader refuses proposals meanwhile), and a
        // configuration in effect that is committed and has this leader as a voter (otherwise it is about to step
        // down, or to leave a joint configuration). Its followers are the other members of that configuration.
        let membership = leader.membership
        guard leader.transferee == nil, membership.isVoter(leader.id),
            leader.membership(at: leader.log.committed) == membership
        else { return }
        let followers = (steadyPartition ? connected(to: k) : nodes.indices.filter { $0 != k }).filter {
            membership.isMember(nodes[$0].id)
        }
        for j in followers {
            guard let raft = nodes[j].raft, raft.term == leader.term, raft.leader == leader.id else { return }
        }
        guard leader.log.term(at: leader.log.committed) == leader.term else { return }
        var proposals: [UInt64] = []
        for _ in 0..<options.livenessProposals {
            let sequence = nodes[k].tracker.submit(nextCommand(), waiter: Client(mustApply: true))
            nodes[k].submitted = sequence
            result.proposals += 1
            proposals.append(sequence)
        }
        enterStage(.awaitingCommit(node: k, proposals: proposals, nodes: followers))
        for sequence in proposals {
            var refusal: ProposalTracker<Client>.Refusal?
            withRaft(k) { raft, tracker in refusal = tracker.hand(sequence, to: &raft) }
            if let refusal {
                throw InvariantViolation(
                    .liveness, "the stable leader \(leader.id) refused a proposal: \(refusal.error)")
            }
        }
        try processReady(k)
        // And a linearizable read asked of the leader and of each follower must be served (checked like any).
        if options.readInterval > 0 {
            for j in [k] + followers {
                if let context = try askRead(on: j, lease: false, deadline: false) {
                    livenessReads[j] = context
                    result.livenessReads += 1
                }
            }
        }
    }

    /// The liveness reads not yet served, by node.
    private var livenessReadsPending: [Int] {
        livenessReads.keys.sorted().filter { j in
            livenessReads[j].map {
                nodes[j].reads.waitingIndex[$0] != nil || nodes[j].reads.waitingApply[$0] != nil
            } == true
        }
    }

    /// Every liveness proposal was applied (exactly once: the checker sees to that) on its node, and every required
    /// node has applied at least as far.
    private mutating func checkProposalsApplied(on k: Int, _ proposals: [UInt64], _ required: [Int])
        throws(InvariantViolation)
    {
        guard livenessApplied.count == proposals.count, let last = livenessApplied.values.max() else { return }
        guard ([k] + required).allSatisfy({ nodes[$0].machine.applied >= last }) else { return }
        guard livenessReadsPending.isEmpty else { return }
        stage = .done
    }

    private func clusterSummary() -> String {
        nodes.map { node in
            guard let r = node.raft else { return "\(node.id): down" }
            return "\(r.id): \(r.role.rawValue) \(r.term) leader=\(r.leader.map { "\($0)" } ?? "none") "
                + "last=\(r.log.lastIndex) commit=\(r.log.committed) applied=\(node.machine.applied) snapshot=\(node.snapshot?.meta.index ?? .zero) "
                + "\(r.membership)\(r.transferee.map { " transferring to \($0)" } ?? "")"
                + (node.paused ? " paused" : "")
                + (r.role == .leader
                    ? " progress=["
                        + r.status.progress.sorted { $0.key < $1.key }.map { peer, pr in
                            "\(peer): \(pr.state) match=\(pr.match) next=\(pr.next)"
                                + (pr.state == .snapshot ? " pending=\(pr.pendingSnapshot)" : "")
                        }.joined(separator: ", ") + "]" : "")
        }.joined(separator: "; ")
    }

    // MARK: - Randomness, time, tracing

    private mutating func schedule(_ event: Event, after delay: Int64) {
        queue.schedule(event, at: now + delay)
    }

    private mutating func randomDelay(upTo bound: Int64) -> Int64 {
        bound <= 0 ? 0 : Int64(random.next() % UInt64(bound + 1))
    }

    private mutating func chance(_ p: Double) -> Bool {
        p > 0 && Double(random.next() >> 11) * 0x1p-53 < p
    }

    private mutating func pick(_ count: Int) -> Int { Int(random.next() % UInt64(count)) }

    private mutating func randomSubset(size: Int) -> Set<Int> {
        var all = Array(0..<nodes.count)
        all.shuffle(using: &random)
        return Set(all.prefix(size))
    }

    private func index(of id: NodeID) -> Int { Int(id.rawValue) - 1 }

    private mutating func record(_ event: Event) {
        let line = "[\(result.steps) t=\(now)] \(describe(event))"
        if trace.count < traceCapacity {
            trace.append(line)
        } else {
            trace[traceStart] = line
            traceStart = (traceStart + 1) % traceCapacity
        }
    }

    private func orderedTrace() -> [String] {
        Array(trace[traceStart...] + trace[..<traceStart])
    }

    private func describe(_ event: Event) -> String {
        switch event {
        case .tick(let k, _): "tick \(nodes[k].id) \(nodes[k].raft.map { "\($0.role.rawValue) \($0.term)" } ?? "")"
        case .deliver(let m): "deliver \(m)"
        case .drainInbox(let k, _): "step \(nodes[k].inbox.count) messages on \(nodes[k].id) as one burst"
        case .persisted(let k, _): "write done on \(nodes[k].id)"
        case .propose: "client proposal"
        case .proposalDeadline(let k, _, let sequence): "deadline of proposal #\(sequence) on \(nodes[k].id)"
        case .nemesis: "fault (blocked links before: \(blocked.count))"
        case .restart(let k, _): "restart \(nodes[k].id)"
        case .resume(let k, _): "resume \(nodes[k].id)"
        case .endFaults: "faults end: heal, restart, resume"
        case .livenessDeadline(let s): "liveness deadline of stage \(s)"
        case .strikeLeader(let k, let term): "strike leader \(nodes[k].id) of \(term)"
        case .snapshotWritten(let k, _):
            "snapshot written on \(nodes[k].id): \(nodes[k].creating.map { "\($0.meta)" } ?? "none")"
        case .deliverSnapshot(let m, _): "deliver snapshot transfer \(m)"
        case .snapshotReport(let k, _, let peer, let succeeded):
            "\(nodes[k].id) learns its snapshot transfer to \(peer) \(succeeded ? "succeeded" : "failed")"
        case .rejoin(let epoch): "laggard rejoins (epoch \(epoch), now \(partitionEpoch))"
        case .membership:
            "membership action (leader \(nodes.first { $0.raft?.role == .leader }.map { "\($0.id): \($0.raft?.membership.description ?? "")" } ?? "none"))"
        case .connectionLost(let k, _, let peer): "\(nodes[k].id) loses its connection to \(peer)"
        case .read: "client read"
        case .readDeadline(let k, _, let context): "deadline of read #\(context) on \(nodes[k].id)"
        }
    }
}
