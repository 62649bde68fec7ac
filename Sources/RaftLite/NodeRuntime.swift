import NIOCore
import RaftCore
import RaftStorage
import RaftTransport

/// What decides the transport's peers: the configuration entry in effect, whether it is committed, and the leader.
struct PeersKey: Hashable {
    var index: LogIndex
    var term: Term
    var committed: Bool
    var leader: NodeID?
}

/// Everything mutable about a running node, touched only on its event loop.
final class NodeRuntime<Machine: StateMachine> {
    var raft: Raft
    var machine: Machine
    /// Which proposals were applied: part of the replicated state, rebuilt from the log with the state machine.
    var sessions = ProposalSessions()
    /// The client sessions (`registerSession`, session writes): replicated state too, snapshotted with the other.
    var clientSessions = ClientSessions()
    /// This node's own proposals, until each is settled.
    var tracker: ProposalTracker<ProposalWaiter<Machine.Output>>
    /// The readies taken from the core and not yet durable: the ordered write pipeline every shell shares.
    var pipeline = ReadyPipeline()
    /// Proposals failed since the last metrics update.
    var failures = 0
    var ticker: RepeatedTask?
    var paused = false
    /// No more processing (set by `stop()`, or by a failed write before `stop()` runs).
    var stopped = false
    /// `stop()` has released everything.
    var tornDown = false
    /// Why the node stopped on its own, if it did.
    var failure: RaftNodeError?
    var processScheduled = false
    var lastLeadership: LeadershipChange?
    var reportedCommit = LogIndex.zero
    var reportedApplied = LogIndex.zero
    var latest: CommittedEntry?
    /// The committed entries proposed with an id, by id (`committedEntry(id:)`).
    var byID = RememberedByID<CommittedEntry>()
    /// The last entry the state machine has applied (or skipped as a no-op or a copy): behind `raft.log.applied`
    /// while readies wait in the pipeline for their writes. A snapshot is of this index.
    var machineApplied = LogIndex.zero
    /// A snapshot is being written (only one at a time).
    var snapshotInProgress = false
    /// Callers of `snapshot()` waiting for the one being written.
    var snapshotWaiters: [EventLoopPromise<SnapshotMetadata>] = []
    /// Bytes of entries applied since the last snapshot began.
    var appliedBytesSinceSnapshot = 0
    /// The latest snapshot in the store: made here, or received and installed.
    var latestSnapshot: SnapshotInfo?
    /// Snapshots received from leaders, in the store, whose installation the core has been asked to decide, by
    /// index: a second one may arrive (from a new leader) while the first one's install is being written.
    var receivedSnapshots: [LogIndex: SnapshotInfo] = [:]

    /// The received snapshot `meta` names, if this node holds it.
    func received(_ meta: SnapshotMetadata) -> SnapshotInfo? {
        receivedSnapshots[meta.index].flatMap { $0.metadata.term == meta.term ? $0 : nil }
    }
    /// A snapshot was made: compact the log at the next `process`.
    var compactionDue = false
    /// Snapshots being streamed to followers, by follower (leader only).
    var senders: [NodeID: SnapshotSender] = [:]
    /// The follower's end of a snapshot transfer, made on first use.
    var receiver: SnapshotReceiver?
    /// Membership changes proposed here, waiting for their entries to be applied.
    var configWaiters: [ConfigWaiter] = []
    /// Members this node was told of (by a change it proposed) before their entries are in its log.
    var knownMembers: [NodeID: ClusterConfiguration.Member] = [:]
    /// What the transport's peers were last set from (to notice a change cheaply), and the peers set.
    var peersKey: PeersKey?
    var peers: [TCPTransport.Peer]?
    /// The membership the metrics last showed.
    var metricsMembership: Membership?
    /// Which members were reachable at the last health check, by name.
    var lastHealth: [String: Bool] = [:]
    /// Ticks since the last health check.
    var ticksSinceHealthCheck = 0
    /// A leadership transfer was in progress at the last round of processing.
    var wasTransferring = false
    /// Reads waiting for their index or for the state machine, and the lease.
    var reads = NodeReads()

    init(raft: Raft, machine: Machine, proposer: NodeID) {
        self.raft = raft
        self.machine = machine
        // A new incarnation at every start, so that this run's sequence numbers are never taken for an earlier run's.
        // The state machine resumes at the snapshot's entry, if it was restored from one.
        self.tracker = ProposalTracker(
            proposer: proposer, incarnation: UInt64.random(in: 1...UInt64.max),
            appliedTerm: raft.snapshot?.term ?? .zero)
        self.machineApplied = raft.log.applied
    }

    /// Remembers an entry by id, forgetting the oldest beyond `limit`.
    func remember(_ entry: CommittedEntry, as id: String, limit: Int) {
        byID.remember(entry, as: id, limit: limit)
    }
}

/// Values remembered by id, at most `limit` of them: beyond it the one first remembered is forgotten first
/// (remembering an id again replaces its value and keeps its place).
struct RememberedByID<Value> {
    private var values: [String: Value] = [:]
    /// The ids in the order they were first remembered; those before `orderStart` are forgotten.
    private var order: [String] = []
    private var orderStart = 0

    var count: Int { values.count }

    subscript(id: String) -> Value? { values[id] }

    mutating func remember(_ value: Value, as id: String, limit: Int) {
        if values.updateValue(value, forKey: id) == nil { order.append(id) }
        while values.count > limit, orderStart < order.count {
            values[order[orderStart]] = nil
            orderStart += 1
        }
        // Drop the forgotten prefix once it is most of the array, so that the array stays proportional to `limit`.
        if orderStart > 1024 && orderStart * 2 > order.count {
            order.removeFirst(orderStart)
            orderStart = 0
        }
    }
}
