import ArgumentParser
import RaftCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The seed's usage example, run for real: start three nodes, let a leader emerge, make five requests, print each
/// node's latest committed entry, stop them.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start three nodes in this process, elect a leader, commit five values, print what each node holds."
    )

    @Option(help: "Milliseconds per Raft tick (an election timeout is 10 to 20 ticks).")
    var tickMilliseconds = 10

    @Option(help: "How many values to propose.")
    var values = 5

    func validate() throws {
        guard (1...1000).contains(tickMilliseconds) else { throw ValidationError("--tick-milliseconds must be 1...1000") }
        guard (1...10_000).contains(values) else { throw ValidationError("--values must be 1...10000") }
    }

    func run() throws {
        let names = ["node0", "node1", "node2"]
        print("Starting \(names.joined(separator: ", ")) in this process; their messages travel in memory.")
        var cluster = try DemoCluster(names: names, tickMilliseconds: tickMilliseconds)

        let start = DemoCluster.milliseconds()
        guard let leader = cluster.run(until: { $0.leader }, timeoutMilliseconds: 5000) else {
            throw DemoError("no leader was elected within 5 seconds")
        }
        print("\(names[leader]) became leader of term \(cluster.nodes[leader].raft.term.rawValue) "
              + "after \(DemoCluster.milliseconds() - start) ms.")

        // Like the seed, send the requests to node0, whatever its role: a follower forwards them to the leader.
        let proposer = 0
        let role = cluster.nodes[proposer].raft.role.rawValue
        print("Proposing \(values) values on \(names[proposer]) (\(role)"
              + (proposer == leader ? ")." : ", which forwards them to the leader)."))
        for k in 0..<values {
            try cluster.propose(Array("{\"val\": \(k)}".utf8), on: proposer)
        }
        let expected = values
        guard cluster.run(until: { c in c.nodes.allSatisfy { $0.appliedValues.count >= expected } ? true : nil },
                          timeoutMilliseconds: 5000) != nil else {
            throw DemoError("the values were not committed on every node within 5 seconds")
        }

        for (k, node) in cluster.nodes.enumerated() {
            let last = node.appliedValues.last.map { String(decoding: $0.data, as: UTF8.self) } ?? "nothing"
            let index = node.appliedValues.last?.index.rawValue ?? 0
            print("\(names[k]) (\(node.raft.role.rawValue)): latest committed entry #\(index): \(last)")
        }
        print("Stopping all nodes. (Try `swift test` to watch the simulator break them in 10,000 ways.)")
    }
}

struct DemoError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Three cores driven by one loop: ticks on a wall clock, messages and storage in memory.
struct DemoCluster {
    struct Node {
        var raft: Raft
        var storage = MemoryStorage()
        var inbox: [Message] = []
        var appliedValues: [Entry] = []
    }

    var nodes: [Node]
    let tickMilliseconds: Int

    init(names: [String], tickMilliseconds: Int) throws {
        let ids = (1...names.count).map { NodeID(UInt64($0)) }
        nodes = try ids.map { id in
            let configuration = RaftConfiguration(
                id: id, voters: Set(ids), randomSeed: UInt64(DemoCluster.milliseconds()) &+ id.rawValue)
            return Node(raft: try Raft(configuration: configuration))
        }
        self.tickMilliseconds = tickMilliseconds
    }

    static func milliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }

    /// The index of the node that leads, if every node agrees on it.
    var leader: Int? {
        guard let k = nodes.firstIndex(where: { $0.raft.role == .leader }) else { return nil }
        return nodes.allSatisfy({ $0.raft.leader == nodes[k].raft.id }) ? k : nil
    }

    mutating func propose(_ data: [UInt8], on k: Int) throws {
        try nodes[k].raft.propose(data)
        process()
    }

    /// Runs the cluster until `condition` returns a value, or the time is up.
    mutating func run<T>(until condition: (DemoCluster) -> T?, timeoutMilliseconds: Int) -> T? {
        let deadline = DemoCluster.milliseconds() + timeoutMilliseconds
        var nextTick = DemoCluster.milliseconds() + tickMilliseconds
        while DemoCluster.milliseconds() < deadline {
            process()
            if let value = condition(self) { return value }
            let now = DemoCluster.milliseconds()
            if now >= nextTick {
                for k in nodes.indices { nodes[k].raft.tick() }
                nextTick = now + tickMilliseconds
            } else {
                usleep(UInt32(min(1000, (nextTick - now) * 1000)))
            }
        }
        return nil
    }

    /// Carries out every node's ready and delivers messages until the cluster is quiet.
    private mutating func process() {
        var busy = true
        while busy {
            busy = false
            for k in nodes.indices {
                while nodes[k].raft.hasReady {
                    busy = true
                    let ready = nodes[k].raft.ready()
                    // Persist first (in memory here), then send and apply, as the I/O contract requires.
                    try? nodes[k].storage.persist(entries: ready.entries, hardState: ready.hardState)
                    for m in ready.messages + ready.messagesAfterPersist {
                        nodes[Int(m.to.rawValue) - 1].inbox.append(m)
                    }
                    nodes[k].appliedValues += ready.committedEntries.filter { $0.kind == .normal }
                    nodes[k].raft.advance(ready)
                }
            }
            for k in nodes.indices where !nodes[k].inbox.isEmpty {
                busy = true
                let inbox = nodes[k].inbox
                nodes[k].inbox = []
                for m in inbox { nodes[k].raft.step(m) }
            }
        }
    }
}
