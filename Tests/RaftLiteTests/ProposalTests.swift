import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftTransport
import Testing
import RaftTesting
import ProcessTesting

/// An in-memory transport that misbehaves on purpose with forwarded proposals: it can send every one of them twice
/// (the second copy late, after the first has committed), or lose them and report the link as reset, as a TCP
/// connection that drops its queue does.
final class MisbehavingTransport: RaftTransport {
    enum Fault {
        case duplicateProposals(after: TimeAmount)
        case loseProposals(count: Int)
    }

    let inner: InMemoryTransport
    let fault: Fault
    private let state = NIOLockedValueBox<(lost: Int, duplicated: Int, linkReset: (@Sendable (NodeID) -> Void)?)>(
        (0, 0, nil))

    init(id: NodeID, network: InMemoryNetwork, eventLoop: any EventLoop, fault: Fault) {
        self.inner = InMemoryTransport(id: id, network: network, eventLoop: eventLoop)
        self.fault = fault
    }

    var eventLoop: any EventLoop { inner.eventLoop }
    var lost: Int { state.withLockedValue { $0.lost } }
    var duplicated: Int { state.withLockedValue { $0.duplicated } }

    func start(deliver: @escaping @Sendable (Message) -> Void) async throws {
        try await inner.start(deliver: deliver)
    }

    func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        state.withLockedValue { $0.linkReset = linkReset }
        try await inner.start(deliver: deliver)
    }

    func send(_ message: Message) {
        guard case .propose = message.kind else { return inner.send(message) }
        switch fault {
        case .duplicateProposals(let delay):
            inner.send(message)
            state.withLockedValue { $0.duplicated += 1 }
            let inner = self.inner
            eventLoop.scheduleTask(in: delay) {
                inner.send(message)
                inner.flush()
            }
        case .loseProposals(let count):
            let (lose, reset) = state.withLockedValue { s -> (Bool, (@Sendable (NodeID) -> Void)?) in
                guard s.lost < count else { return (false, nil) }
                s.lost += 1
                return (true, s.linkReset)
            }
            guard lose else { return inner.send(message) }
            reset?(message.to)
        }
    }

    func flush() { inner.flush() }
    func shutdown() async { await inner.shutdown() }
    func statistics() async -> [NodeID: PeerStatistics] { [:] }
}

/// Three nodes on an in-memory network, each with a transport made by `transport`.
struct InMemoryCluster {
    let network = InMemoryNetwork()
    let names = ["node0", "node1", "node2"]
    let configuration: ClusterConfiguration
    let nodes: [RaftNode<Recorder>]
    let recorders: [Recorder]

    init(
        options: RaftNode<Recorder>.Options = LocalCluster.options(),
        transport: (NodeID, InMemoryNetwork, any EventLoop) -> any RaftTransport = {
            InMemoryTransport(id: $0, network: $1, eventLoop: $2)
        }
    ) throws {
        configuration = try ClusterConfiguration(
            members: names.enumerated().map {
                ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1000 + $0)
            })
        var nodes: [RaftNode<Recorder>] = []
        var recorders: [Recorder] = []
        for name in names {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let recorder = Recorder()
            recorders.append(recorder)
            nodes.append(
                try RaftNode(
                    cluster: configuration, name: name, stateMachine: recorder, options: options, eventLoop: loop,
                    transport: transport(ClusterConfiguration.nodeID(for: name), network, loop)))
        }
        self.nodes = nodes
        self.recorders = recorders
    }

    func start() async throws {
        for node in nodes { try await node.start() }
    }

    func stop() async {
        for node in nodes { await node.stop() }
    }

    /// The index of the leader every node agrees on.
    func waitForLeader() async -> Int? {
        var found: Int?
        _ = await eventually {
            var statuses: [NodeStatus] = []
            for node in nodes { statuses.append(await node.status()) }
            guard let leader = statuses.first(where: { $0.role == .leader }),
                statuses.allSatisfy({ $0.leader == leader.name && $0.term == leader.term })
            else { return false }
            found = names.firstIndex(of: leader.name)
            return true
        }
        return found
    }
}

@Suite(.serialized, .clusterSlot) struct ProposalTests {
    /// Audit item 1: the transport may duplicate messages. A late duplicate of a forwarded proposal commits after
    /// the original; it must not be applied a second time (on main it was: every command twice).
    @Test func aDuplicatedForwardedProposalIsAppliedOnce() async throws {
        let transports = NIOLockedValueBox<[MisbehavingTransport]>([])
        let cluster = try InMemoryCluster { id, network, loop in
            let t = MisbehavingTransport(
                id: id, network: network, eventLoop: loop,
                fault: .duplicateProposals(after: .milliseconds(30)))
            transports.withLockedValue { $0.append(t) }
            return t
        }
        try await cluster.start()
        let leader = try #require(await cluster.waitForLeader())
        let proposer = (leader + 1) % 3
        let commands = (0..<30).map { "increment \($0)" }
        for command in commands { try await cluster.nodes[proposer].propose(command) }
        // A marker proposed on the leader itself (not forwarded) commits after every late duplicate was appended.
        try await Task.sleep(for: .milliseconds(200))
        try await cluster.nodes[leader].propose("marker")
        let settled = await eventually {
            cluster.recorders.allSatisfy { $0.commands.last == Array("marker".utf8) }
        }
        #expect(settled)
        let duplicated = transports.withLockedValue { $0.reduce(0) { $0 + $1.duplicated } }
        #expect(duplicated >= commands.count, "every forwarded proposal was sent twice")
        for (name, recorder) in zip(cluster.names, cluster.recorders) {
            #expect(
                recorder.commands == (commands + ["marker"]).map { Array($0.utf8) },
                "\(name) applied \(recorder.commands.count) commands for \(commands.count + 1) proposals")
        }
        let last = await cluster.nodes[leader].status().commitIndex
        #expect(last.rawValue > UInt64(commands.count + 2), "the duplicates did reach the log (and were refused there)")
        await cluster.stop()
    }

    /// Audit item 2: a forwarded proposal lost with its link (the connection dropped its queue) is sent again at the
    /// next tick, instead of costing its client the whole deadline and ending as "unknown".
    @Test func aForwardedProposalLostWithItsLinkIsSentAgain() async throws {
        var options = LocalCluster.options()
        options.proposalTimeout = .seconds(8)
        let cluster = try InMemoryCluster(options: options) { id, network, loop in
            MisbehavingTransport(id: id, network: network, eventLoop: loop, fault: .loseProposals(count: 3))
        }
        try await cluster.start()
        let leader = try #require(await cluster.waitForLeader())
        let proposer = cluster.nodes[(leader + 1) % 3]
        let committed = try await proposer.propose("despite three lost links")
        #expect(cluster.recorders[leader].commands.contains(Array("despite three lost links".utf8)))
        #expect(committed.index > .zero)
        await cluster.stop()
    }

    /// Audit item 2: a proposal forwarded to a leader that silently lost it and was then deposed goes to the new
    /// leader as soon as the proposer learns of it.
    @Test func aProposalLostWithADeposedLeaderGoesToTheNewOne() async throws {
        var options = LocalCluster.options()
        options.proposalTimeout = .seconds(10)
        let cluster = try InMemoryCluster(options: options)
        try await cluster.start()
        let leader = try #require(await cluster.waitForLeader())
        let old = cluster.nodes[leader]
        let proposer = cluster.nodes[(leader + 1) % 3]
        // What the proposer forwards to the leader is lost; then the leader is cut off and a new one is elected.
        cluster.network.block(from: proposer.id, to: old.id)
        let proposal = Task { try await proposer.propose("survives its leader") }
        try await Task.sleep(for: .milliseconds(100))
        cluster.network.isolate(old.id)
        let committed = try await proposal.value
        let newLeader = try #require(await proposer.status().leader)
        #expect(newLeader != old.name)
        #expect(committed.term > Term(1) || committed.index > .zero)
        let recorder = try #require(cluster.names.firstIndex(of: newLeader).map { cluster.recorders[$0] })
        #expect(recorder.commands.filter { $0 == Array("survives its leader".utf8) }.count == 1)
        cluster.network.heal()
        await cluster.stop()
    }

    /// Audit item 7: a proposal the node handed on may still commit after the node stops, so the caller is told the
    /// outcome is unknown; one never handed on is definitely not applied.
    @Test func stoppingTellsWhichProposalsMayStillCommit() async throws {
        // Without CheckQuorum the leader, once cut off, stays leader however slowly the proposal reaches it.
        var options = LocalCluster.options()
        options.checkQuorum = false
        let cluster = try InMemoryCluster(options: options)
        try await cluster.start()
        let leader = try #require(await cluster.waitForLeader())
        let follower = (leader + 1) % 3
        // The leader appends, but cannot commit: nothing reaches the followers.
        for k in 0..<3 where k != leader { cluster.network.isolate(cluster.nodes[k].id) }
        cluster.network.isolate(cluster.nodes[leader].id)
        let before = await cluster.nodes[leader].status().lastIndex
        let appended = Task { try await cluster.nodes[leader].propose("appended, not committed") }
        let isAppended = await eventually { await cluster.nodes[leader].status().lastIndex > before }
        #expect(isAppended)
        await cluster.nodes[leader].stop()
        let error = await #expect(throws: RaftNodeError.self) { try await appended.value }
        #expect(error == .stoppedOutcomeUnknown)
        #expect(error?.outcomeIsUnknown == true)
        // A follower that knows no leader (it is cut off and has forgotten it) holds its proposal back: definite.
        _ = await eventually { await cluster.nodes[follower].status().leader == nil }
        let waiting = Task { try await cluster.nodes[follower].propose("never handed on") }
        try await Task.sleep(for: .milliseconds(100))
        await cluster.nodes[follower].stop()
        let definite = await #expect(throws: RaftNodeError.self) { try await waiting.value }
        #expect(definite == .stopped)
        #expect(definite?.outcomeIsUnknown == false)
        await cluster.stop()
    }
}
