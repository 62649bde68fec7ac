import RaftCore

/// A cluster for scripted scenarios: nothing happens until the test says so.
///
/// Writes are durable at once and messages wait in one FIFO queue until delivered. Tests elect, propose, tick,
/// crash, restart and cut links, then deliver messages one at a time or until the cluster is quiet, checking the
/// nodes in between — the style of etcd's `raft_paper_test.go` and interaction tests.
public struct LockstepCluster {
    public private(set) var nodes: [NodeID: Raft] = [:]
    public private(set) var storage: [NodeID: MemoryStorage] = [:]
    /// Entries each node has applied, in order.
    public private(set) var applied: [NodeID: [Entry]] = [:]
    /// Messages sent and not yet delivered, oldest first.
    public private(set) var inFlight: [Message] = []
    /// Reads each node's core confirmed, and reads it dropped, in order (`Raft.readIndex(context:)`).
    public private(set) var readStates: [NodeID: [ReadState]] = [:]
    public private(set) var readsDropped: [NodeID: [UInt64]] = [:]
    /// Every message ever delivered, in order (for tests that count round trips).
    public private(set) var delivered: [Message] = []
    /// Messages for which this returns true are dropped when their turn comes.
    public var drop: (Message) -> Bool = { _ in false }
    /// Messages are passed through this before delivery (to model, say, a message that carried fewer entries).
    public var rewrite: (Message) -> Message = { $0 }
    /// Every node's id, in ascending order: the first cluster's, then those added (`addNode`).
    public private(set) var ids: [NodeID]
    private var configurations: [NodeID: RaftConfiguration] = [:]
    /// Each node's latest durable snapshot.
    public private(set) var snapshots: [NodeID: SnapshotMetadata] = [:]
    /// What a snapshot holds: the entries applied up to its index (the same on every node, by State Machine Safety,
    /// so one copy per index).
    public private(set) var snapshotContents: [LogIndex: [Entry]] = [:]

    /// A cluster of `count` voters with ids 1...count, each configured by `configure` (defaults otherwise) and
    /// starting from `initialState` (empty by default).
    public init(
        count: Int,
        configure: (inout RaftConfiguration) -> Void = { _ in },
        initialState: (NodeID) -> PersistentState = { _ in PersistentState() }
    ) throws {
        ids = (1...count).map { NodeID(UInt64($0)) }
        for id in ids {
            var configuration = RaftConfiguration(id: id, voters: Set(ids), randomSeed: id.rawValue)
            configure(&configuration)
            configurations[id] = configuration
            storage[id] = MemoryStorage(initialState(id))
            applied[id] = []
            try start(id)
        }
    }

    public subscript(id: NodeID) -> Raft? { nodes[id] }

    /// The node that considers itself leader with the highest term, if any.
    public var leader: Raft? {
        nodes.values.filter { $0.role == .leader }.max { $0.term < $1.term }
    }

    // MARK: - Driving nodes

    /// Asks node `id` for a linearizable read (the answer lands in `readStates` or `readsDropped`).
    public mutating func readIndex(_ id: NodeID, context: UInt64) throws(ReadIndexError) {
        do {
            try nodes[id]?.readIndex(context: context)
        } catch {
            collect(id)
            throw error
        }
        collect(id)
    }

    public mutating func campaign(_ id: NodeID) {
        nodes[id]?.campaign()
        collect(id)
    }

    public mutating func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times {
            nodes[id]?.tick()
            collect(id)
        }
    }

    /// Ticks every live node once, in id order.
    public mutating func tickAll() {
        for id in ids { tick(id) }
    }

    @discardableResult
    public mutating func propose(_ id: NodeID, _ data: [UInt8]) throws -> ProposalOutcome? {
        let outcome = try nodes[id]?.propose(data)
        collect(id)
        return outcome
    }

    /// Proposes a membership change on node `id` (see `Raft.proposeConfigChange`). Returns the index of the
    /// configuration entry, or nil if the node is down.
    @discardableResult
    public mutating func proposeConfigChange(_ id: NodeID, _ change: ConfigChange) throws(MembershipError) -> LogIndex?
    {
        guard var raft = nodes[id] else { return nil }
        defer {
            nodes[id] = raft
            collect(id)
        }
        return try raft.proposeConfigChange(change)
    }

    /// Asks leader `id` to hand leadership to `target` (or to the most up-to-date voter). Returns the node chosen,
    /// or nil if `id` is down.
    @discardableResult
    public mutating func transferLeadership(_ id: NodeID, to target: NodeID? = nil) throws(MembershipError) -> NodeID? {
        guard var raft = nodes[id] else { return nil }
        defer {
            nodes[id] = raft
            collect(id)
        }
        return try raft.transferLeadership(to: target)
    }

    /// Tells node `id` that its connection to `peer` was lost (what a shell reports when a link resets).
    public mutating func connectionLost(_ id: NodeID, to peer: NodeID) {
        nodes[id]?.connectionLost(to: peer)
        collect(id)
    }

    /// Adds a node that joins the cluster: an empty log, and the first node's configuration but for its id and
    /// random seed — so the bootstrap configuration it starts with does not name it. It takes part once a leader
    /// adds it through a membership change and replicates to it.
    /// - Throws: `ConfigurationError` if a node with that id already exists.
    public mutating func addNode(_ id: NodeID) throws(ConfigurationError) {
        guard configurations[id] == nil else { throw .invalid("node \(id) is already in the cluster") }
        guard let first = ids.first, var configuration = configurations[first] else {
            throw .invalid("the cluster has no node to copy the configuration of")
        }
        configuration.id = id
        configuration.randomSeed = id.rawValue
        configurations[id] = configuration
        storage[id] = MemoryStorage()
        applied[id] = []
        ids = (ids + [id]).sorted()
        try start(id)
    }

    /// Feeds a message to a node directly, as if it came from the network.
    public mutating func step(_ message: Message) {
        nodes[message.to]?.step(message)
        collect(message.to)
    }

    /// Loses the node's volatile state; its storage and applied entries remain.
    public mutating func crash(_ id: NodeID) {
        nodes[id] = nil
        inFlight.removeAll { $0.to == id }
    }

    /// Loses a crashed node's storage and state machine too (a wiped disk).
    public mutating func wipe(_ id: NodeID) {
        storage[id] = MemoryStorage()
        applied[id] = []
        snapshots[id] = nil
    }

    /// Snapshots node `id` at what it has applied, then compacts its log (in memory and in storage) up to `margin`
    /// entries before the snapshot. Returns the snapshot and the index the log now starts after, or nil if there is
    /// nothing new to snapshot.
    @discardableResult
    public mutating func snapshot(_ id: NodeID, margin: UInt64 = 0) -> (SnapshotMetadata, LogIndex)? {
        guard var raft = nodes[id], let meta = raft.snapshotCandidate else { return nil }
        snapshotContents[meta.index] = (applied[id] ?? []).filter { $0.index <= meta.index }
        snapshots[id] = meta
        raft.snapshotCreated(meta)
        let start = raft.compact(through: LogIndex(meta.index.rawValue - min(margin, meta.index.rawValue)))
        nodes[id] = raft
        if let stored = storage[id]?.state, start > stored.snapshotIndex, let term = stored.term(at: start) {
            let kept = stored.entries.filter { $0.index > start }
            storage[id] = MemoryStorage(
                PersistentState(hardState: stored.hardState, snapshotIndex: start, snapshotTerm: term, entries: kept))
        }
        collect(id)
        return (meta, start)
    }

    /// Starts a crashed node again from its storage, with its state machine at what it had applied.
    public mutating func restart(_ id: NodeID) throws {
        try start(id)
    }

    private mutating func start(_ id: NodeID) throws(ConfigurationError) {
        guard let configuration = configurations[id], let state = storage[id]?.initialState() else { return }
        let appliedIndex = applied[id]?.last?.index ?? .zero
        nodes[id] = try Raft(
            configuration: configuration, state: state, applied: appliedIndex, snapshot: snapshots[id])
    }

    /// Takes every ready of node `id` through the write pipeline and carries it out at once: persist, send (to the
    /// in-flight queue), apply.
    private mutating func collect(_ id: NodeID) {
        guard var raft = nodes[id] else { return }
        // Moved out while it works, so that the core is changed in place rather than copied.
        nodes[id] = nil
        var pipeline = ReadyPipeline()
        while let step = pipeline.take(from: &raft) {
            inFlight.append(contentsOf: step.messages)
            readStates[id, default: []].append(contentsOf: step.readStates)
            readsDropped[id, default: []].append(contentsOf: step.readsDropped)
            var durable = step.durable
            if let write = step.write {
                if let meta = write.snapshot {
                    // Installing a snapshot received: it becomes the node's, its log restarts after it, and the
                    // state machine is what the snapshot holds.
                    snapshots[id] = meta
                    let hardState = storage[id]?.state.hardState ?? HardState()
                    storage[id] = MemoryStorage(
                        PersistentState(hardState: hardState, snapshotIndex: meta.index, snapshotTerm: meta.term))
                    applied[id] = snapshotContents[meta.index] ?? []
                }
                // In-memory storage refuses only malformed writes, which the core never produces; a refusal would
                // show up as a missing entry in the test's checks.
                try? storage[id]?.persist(entries: write.entries, hardState: write.hardState)
                durable += pipeline.writeCompleted(&raft)
            }
            for ready in durable {
                inFlight.append(contentsOf: ready.messagesAfterPersist)
                applied[id, default: []].append(contentsOf: ready.committedEntries)
            }
        }
        nodes[id] = raft
    }

    // MARK: - Delivering messages

    /// Delivers the oldest message in flight (or drops it, if `drop` says so). Returns it, or nil if none.
    @discardableResult
    public mutating func deliverOne() -> Message? {
        guard !inFlight.isEmpty else { return nil }
        let message = inFlight.removeFirst()
        if drop(message) || nodes[message.to] == nil { return message }
        let delivering = rewrite(message)
        delivered.append(delivering)
        step(delivering)
        return delivering
    }

    /// Delivers messages until none is left in flight (at most `limit`, to catch message storms).
    public mutating func stabilize(limit: Int = 100_000) {
        var count = 0
        while count < limit, deliverOne() != nil { count += 1 }
    }

    /// Delivers messages until `condition` holds (checked before each delivery) or none is left in flight.
    /// Returns whether the condition held.
    @discardableResult
    public mutating func deliver(until condition: (LockstepCluster) -> Bool) -> Bool {
        while !condition(self) {
            if deliverOne() == nil { return condition(self) }
        }
        return true
    }

    /// Drops every message between the two groups (both ways), from now on.
    public mutating func partition(_ group: Set<NodeID>) {
        drop = { group.contains($0.from) != group.contains($0.to) }
    }

    public mutating func heal() {
        drop = { _ in false }
    }

    /// The terms of a node's log, from index 1 (for comparing log shapes).
    public func logTerms(_ id: NodeID) -> [UInt64] {
        guard let log = nodes[id]?.log else { return [] }
        var terms: [UInt64] = []
        var index = log.firstIndex
        while index <= log.lastIndex {
            terms.append(log.term(at: index)?.rawValue ?? 0)
            index = index.next
        }
        return terms
    }
}
