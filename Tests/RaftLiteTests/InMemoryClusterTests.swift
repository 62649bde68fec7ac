import NIOCore
import RaftCore
import RaftLite
import RaftTesting
import Testing

/// A user's own state machine tested the way `RaftTesting` offers: nodes in one process, no sockets, no files.
@Suite struct InMemoryClusterTests {
    /// A counter: "add N" adds N and returns the new total.
    struct Counter: StateMachine {
        var total = 0
        mutating func apply(_ command: [UInt8], at index: LogIndex) -> Int {
            let text = String(decoding: command, as: UTF8.self)
            if text.hasPrefix("add "), let n = Int(text.dropFirst(4)) { total += n }
            return total
        }
    }

    /// The product's cluster (ProposalTests has a cluster of its own by the same name).
    typealias Cluster = RaftTesting.InMemoryCluster<Counter>

    static func totals(_ cluster: Cluster) async -> [Int?] {
        var totals: [Int?] = []
        for node in cluster.nodes { totals.append(try? await node.readStateMachine { $0.total }.get()) }
        return totals
    }

    @Test func aStateMachineSurvivesALeaderCutOffAndARestart() async throws {
        var options = RaftNode<Counter>.Options()
        options.tickInterval = .milliseconds(20)
        options.logger.logLevel = .critical
        let cluster = try Cluster(size: 3, options: options) { _ in Counter() }
        try await cluster.startAll()
        defer { Task { await cluster.stopAll() } }

        let first = try #require(await cluster.leader())
        let five = try await first.propose(Array("add 5".utf8))
        #expect(five.output == 5)

        // The leader is cut off; the other two elect one of themselves and go on.
        cluster.isolate(first.name)
        let second = try #require(await cluster.leader(excluding: [first.name]))
        #expect(second.name != first.name)
        let seven = try await second.propose(Array("add 2".utf8))
        #expect(seven.output == 7)

        // Healed, the old leader catches up; a node restarted from its storage replays the log into a new counter.
        cluster.heal()
        let restarted = try #require(cluster.names.first { $0 != second.name })
        await cluster.stop(restarted)
        try await cluster.start(restarted)
        #expect(await eventually { await Self.totals(cluster) == [7, 7, 7] })
        await cluster.stopAll()
    }
}
