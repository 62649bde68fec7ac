import ArgumentParser
import NIOCore
import RaftLite

/// The seed's usage example, run for real: start three nodes, let a leader emerge, make five requests, print each
/// node's latest committed entry, stop them.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start three nodes in this process on loopback TCP, elect a leader, commit five values, show them."
    )

    @Option(help: "Milliseconds per Raft tick (an election timeout is 10 to 20 ticks).")
    var tickMilliseconds = 20

    @Option(help: "How many values to propose.")
    var values = 5

    func validate() throws {
        guard (1...1000).contains(tickMilliseconds) else {
            throw ValidationError("--tick-milliseconds must be 1...1000")
        }
        guard (1...10_000).contains(values) else { throw ValidationError("--values must be 1...10000") }
    }

    func run() async throws {
        let names = ["node0", "node1", "node2"]
        let ports = try FreePorts.reserve(names.count)
        // The seed's configuration format: a dictionary of nodes, ports as strings.
        var dictionary: [String: Any] = [:]
        for (name, port) in zip(names, ports) { dictionary[name] = ["ip": "127.0.0.1", "port": "\(port)"] }
        let cluster = try ClusterConfiguration(dictionary)
        var options = RaftNode<NoStateMachine>.Options()
        options.tickInterval = .milliseconds(Int64(tickMilliseconds))
        options.logger.logLevel = .warning

        print(
            "Starting \(names.joined(separator: ", ")) in this process, talking TCP on 127.0.0.1 ports "
                + ports.map(String.init).joined(separator: ", ") + ".")
        let nodes = try names.map { try RaftNode(cluster: cluster, name: $0, options: options) }
        let clock = ContinuousClock()
        let started = clock.now
        for node in nodes { try await node.start() }

        guard let leader = await waitForLeader(nodes, within: .seconds(10)) else {
            for node in nodes { await node.stop() }
            throw DemoError("no leader was elected within 10 seconds")
        }
        let elapsed = (clock.now - started).components
        let status = await leader.status()
        print(
            "\(leader.name) became leader of term \(status.term.rawValue) after "
                + "\(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000) ms.")

        // As in the seed, every request goes to node0, whatever its role: a follower forwards it to the leader.
        let proposer = nodes[0]
        let role = await proposer.role
        print(
            "Proposing \(values) values on \(proposer.name) (\(role.rawValue)"
                + (role == .leader ? ")." : ", which forwards them to the leader)."))
        for k in 0..<values {
            let committed = try await proposer.propose("{\"val\": \(k)}")
            if values <= 10 { print("  {\"val\": \(k)} committed at index \(committed.index.rawValue)") }
        }
        // A follower learns that an entry is committed shortly after the leader does.
        _ = await waitUntil(within: .seconds(5)) {
            var done = true
            for node in nodes where await node.latestCommittedEntry()?.text != "{\"val\": \(values - 1)}" {
                done = false
            }
            return done
        }
        for node in nodes {
            let entry = await node.latestCommittedEntry()
            print("\(node.name) (\(await node.role)): latest committed entry \(entry.map { "\($0)" } ?? "none")")
        }
        print("Stopping all nodes.")
        for node in nodes { await node.stop() }
    }

    private func waitForLeader(_ nodes: [RaftNode<NoStateMachine>], within limit: Duration) async -> RaftNode<
        NoStateMachine
    >? {
        var leader: RaftNode<NoStateMachine>?
        _ = await waitUntil(within: limit) {
            for node in nodes where await node.role == .leader {
                let term = await node.status().term
                var agreed = true
                for other in nodes {
                    let s = await other.status()
                    if s.leader != node.name || s.term != term { agreed = false }
                }
                if agreed {
                    leader = node
                    return true
                }
            }
            return false
        }
        return leader
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
func waitUntil(within limit: Duration, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return await condition()
}

struct DemoError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
