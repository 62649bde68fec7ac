import Logging
import NIOCore
import NIOPosix
import RaftCore
import RaftKVClient
import RaftLite
import RaftTransport
import Testing

@testable import RaftKV
import RaftTesting
import ProcessTesting

/// Which HTTP statuses tell a client that its command did not take effect, and which leave the outcome open.
@Suite(.clusterSlot) struct HTTPContractTests {
    static let everyError: [RaftNodeError] = [
        .notLeader(leaderHint: "n1"), .notLeader(leaderHint: nil), .timedOut, .stoppedOutcomeUnknown,
        .dropped("lost"), .tooLarge(size: 10, limit: 5), .invalidProposal("bad"), .paused, .stopped, .notStarted,
        .alreadyStarted, .storage("disk"), .configuration("config"),
    ]

    @Test func only504LeavesTheOutcomeOpenAndEveryOtherFailureIsDefinite() {
        for error in Self.everyError {
            let reply = KVServer.reply(for: error)
            if error.outcomeIsUnknown {
                #expect(reply.status == .gatewayTimeout, "\(error)")
            } else {
                #expect(
                    reply.status == .serviceUnavailable || (400..<500).contains(Int(reply.status.code)),
                    "\(error) must be a definite failure, got \(reply.status)")
            }
        }
        struct Unexpected: Error {}
        #expect(KVServer.reply(for: Unexpected()).status == .gatewayTimeout, "an error of unknown meaning is unknown")
    }

    /// A leader stopped with a write appended but not committed: the write may still commit under a later leader,
    /// so the client gets 504, never 503 (on the code before the audit it got 503: "not applied").
    @Test func aWriteInFlightWhenItsNodeStopsIsAnsweredAsUnknown() async throws {
        let network = InMemoryNetwork()
        let names = ["n0", "n1", "n2"]
        let cluster = try ClusterConfiguration(
            members: names.enumerated().map {
                ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1000 + $0)
            })
        var options = RaftNode<KVStore>.Options()
        options.tickInterval = .milliseconds(20)
        options.proposalTimeout = .seconds(20)
        // Without CheckQuorum a leader cut off stays leader however slowly the write reaches it on a loaded machine:
        // it appends the write and cannot commit it, which is the case under test.
        options.checkQuorum = false
        options.logger.logLevel = .critical
        var nodes: [RaftNode<KVStore>] = []
        for name in names {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let id = ClusterConfiguration.nodeID(for: name)
            nodes.append(
                try RaftNode(
                    cluster: cluster, name: name, stateMachine: KVStore(), options: options, eventLoop: loop,
                    transport: InMemoryTransport(id: id, network: network, eventLoop: loop)))
        }
        for node in nodes { try await node.start() }
        var leader: RaftNode<KVStore>?
        _ = await eventually {
            var statuses: [NodeStatus] = []
            for node in nodes { statuses.append(await node.status()) }
            guard let l = statuses.first(where: { $0.role == .leader }),
                statuses.allSatisfy({ $0.leader == l.name && $0.term == l.term })
            else { return false }
            leader = nodes.first { $0.name == l.name }
            return true
        }
        let node = try #require(leader)
        var serverOptions = KVServer.Options()
        serverOptions.port = 0
        let server = KVServer(node: node, options: serverOptions, logger: Logger(label: "test")) { [] }
        try await server.start()
        let port = try #require(await server.boundPort)
        let client = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)], timeout: .seconds(20))
        #expect(try await client.put("before", Array("ok".utf8)).status == 200)

        network.isolate(node.id)
        let before = await node.status().lastIndex
        let write = Task { try await client.put("in flight", Array("maybe".utf8)) }
        // Stop only once the leader has appended the write (it cannot commit: the leader is cut off).
        let appended = await eventually { await node.status().lastIndex > before }
        #expect(appended)
        await node.stop()
        let response = try await write.value
        #expect(response.status == 504, "\(response.status) \(response.text)")
        #expect(response.text.contains("unknown_outcome"))
        await server.drain(timeout: .seconds(1))
        for other in nodes { await other.stop() }
    }
}
