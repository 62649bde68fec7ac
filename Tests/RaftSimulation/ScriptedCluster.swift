import RaftCore

/// A small handwritten driver for membership scenarios: `Raft` cores with writes durable at once and one FIFO queue
/// of messages, nothing happening until the test says so — and the simulator's `InvariantChecker` watching every
/// node after every step, with commits held to a quorum of the committer's configuration, as in the simulation.
public struct ScriptedCluster {
    public private(set) var nodes: [NodeID: Raft] = [:]
    public private(set) var storage: [NodeID: MemoryStorage] = [:]
    public private(set) var applied: [NodeID: [Entry]] = [:]
    public private(set) var checker = InvariantChecker()
    private var queue: [Message] = []
    /// Links that drop every message (from, to).
    private var cut: Set<[NodeID]> = []
    private var checkedCommit = LogIndex.zero
    public let ids: [NodeID]

    /// Nodes 1...`count`, with `bootstrap` as every node's initial voters (the others are spares that join only
    /// through changes).
    public init(count: Int, bootstrap: Set<NodeID>, configure: (inout RaftConfiguration) -> Void = { _ in }) throws {
        ids = (1...count).map { NodeID(UInt64($0)) }
        for id in ids {
            var configuration = RaftConfiguration(id: id, voters: bootstrap, randomSeed: id.rawValue)
            configure(&configuration)
            nodes[id] = try Raft(configuration: configuration)
            storage[id] = MemoryStorage()
            applied[id] = []
        }
    }

    public subscript(id: NodeID) -> Raft? { nodes[id] }

    /// The node that thinks it leads with the highest term.
    public var leader: Raft? { nodes.values.filter { $0.role == .leader }.max { $0.term < $1.term } }

    /// Runs `body` on node `id`'s core, then carries out what it asks.
    public mutating func with<R>(_ id: NodeID, _ body: (inout Raft) throws -> R) throws -> R {
        guard var raft = nodes[id] else { throw InvariantViolation(.liveness, "no node \(id)") }
        nodes[id] = nil
        let result: R
        do {
            result = try body(&raft)
        } catch {
            nodes[id] = raft
            throw error
        }
        nodes[id] = raft
        try collect(id)
        return result
    }

    public mutating func campaign(_ id: NodeID) throws { try with(id) { $0.campaign() } }

    public mutating func tick(_ id: NodeID, times: Int = 1) throws {
        for _ in 0..<times { try with(id) { $0.tick() } }
    }

    /// Cuts node `id` off from every other node (both ways), or reconnects it.
    public mutating func isolate(_ id: NodeID, _ isolated: Bool = true) {
        for other in ids where other != id {
            if isolated {
                cut.insert([id, other])
                cut.insert([other, id])
            } else {
                cut.remove([id, other])
                cut.remove([other, id])
            }
        }
    }

    /// Delivers messages until none is left (or `limit` were delivered).
    public mutating func stabilize(limit: Int = 100_000) throws {
        var delivered = 0
        while !queue.isEmpty && delivered < limit {
            let message = queue.removeFirst()
            delivered += 1
            guard !cut.contains([message.from, message.to]), nodes[message.to] != nil else { continue }
            try with(message.to) { $0.step(message) }
        }
    }

    /// Ticks every node and delivers, `rounds` times.
    public mutating func run(rounds: Int) throws {
        for _ in 0..<rounds {
            for id in ids { try tick(id) }
            try stabilize()
        }
    }

    private mutating func collect(_ id: NodeID) throws {
        guard var raft = nodes[id] else { return }
        nodes[id] = nil
        var pipeline = ReadyPipeline()
        var failure: InvariantViolation?
        while let step = pipeline.take(from: &raft) {
            do {
                try checker.observeAppended(id, step.write?.entries ?? [], in: raft.log)
            } catch { failure = failure ?? error }
            queue.append(contentsOf: step.messages)
            var durable = step.durable
            if let write = step.write {
                try? storage[id]?.persist(entries: write.entries, hardState: write.hardState)
                durable += pipeline.writeCompleted(&raft)
            }
            for ready in durable {
                queue.append(contentsOf: ready.messagesAfterPersist)
                applied[id, default: []].append(contentsOf: ready.committedEntries)
                do {
                    if !ready.committedEntries.isEmpty { try checker.observe(id, raft) }
                    try checker.observeApplied(id, ready.committedEntries, committed: raft.log.committed)
                } catch { failure = failure ?? error }
            }
        }
        nodes[id] = raft
        if let failure { throw failure }
        if raft.log.committed > checkedCommit {
            try checkQuorum(raft.log.committed, by: raft)
            checkedCommit = raft.log.committed
        }
        try checker.observe(id, raft)
    }

    /// The committed index is durable on a quorum of the committer's configuration (each half of a joint one).
    private func checkQuorum(_ index: LogIndex, by raft: Raft) throws(InvariantViolation) {
        let term = raft.log.term(at: index)
        let m = raft.membership
        for half in [m.voters, m.outgoing] where !half.isEmpty {
            let holders = half.filter { storage[$0]?.state.term(at: index) == term }.count
            if holders <= half.count / 2 {
                throw InvariantViolation(
                    .durability, "\(raft.id) committed \(index) held by \(holders) of \(half.count) voters of \(m)")
            }
        }
    }
}
