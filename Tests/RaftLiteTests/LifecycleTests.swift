import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftLite
import RaftTransport
import Testing
import RaftTesting
import ProcessTesting

/// Storage whose writes fail after a number of successes.
final class FailingStorage: NodeStorage {
    private let inner = InMemoryNodeStorage()
    private let remaining: NIOLockedValueBox<Int>
    let closed = NIOLockedValueBox(false)

    init(successes: Int) { remaining = NIOLockedValueBox(successes) }

    func initialState() -> PersistentState { inner.initialState() }

    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void) {
        let fail = remaining.withLockedValue { r -> Bool in
            r -= 1
            return r < 0
        }
        if fail {
            completion(StorageFailure(.io, "the disk is gone"))
        } else {
            inner.persist(entries: entries, hardState: hardState, completion: completion)
        }
    }

    func close() { closed.withLockedValue { $0 = true } }
}

@Suite(.serialized, .clusterSlot) struct LifecycleTests {
    @Test func anEntryFromAnEarlierRunIsNeverTakenForANewProposal() async throws {
        // Three nodes on an in-memory network; node2 proposes, its proposal commits, but the leader's messages to
        // node2 are cut, so node2 never sees it applied. node2 restarts on its storage and proposes again: its new
        // proposal must resolve with its own entry, not the old one (same proposer, same sequence number).
        let network = InMemoryNetwork()
        let names = ["node0", "node1", "node2"]
        let cluster = try ClusterConfiguration(
            members: names.enumerated().map {
                ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1000 + $0)
            })
        let storages = names.map { _ in InMemoryNodeStorage() }
        func node(_ k: Int) throws -> RaftNode<Recorder> {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let id = ClusterConfiguration.nodeID(for: names[k])
            return try RaftNode(
                cluster: cluster, name: names[k], stateMachine: Recorder(), storage: storages[k],
                // Slower ticks than the other tests': a leader change while the old proposal is on its way would
                // drop it, and on a loaded machine 20-ms ticks change leaders often.
                options: LocalCluster.options(tickMilliseconds: 100), eventLoop: loop,
                transport: InMemoryTransport(id: id, network: network, eventLoop: loop))
        }
        var nodes = try (0..<3).map(node)
        for n in nodes { try await n.start() }
        // Make node0 the leader by cutting node1 and node2 off from each other... simpler: wait for any leader,
        // then pick a follower as the proposer.
        var leader: RaftNode<Recorder>?
        _ = await eventually {
            for n in nodes where await n.role == .leader { leader = n }
            return leader != nil
        }
        let theLeader = try #require(leader)
        let k = try #require(nodes.firstIndex { $0.name != theLeader.name })
        let proposer = nodes[k]
        // The proposer must know the leader before its messages are cut, or its proposal has nowhere to go (on a
        // loaded machine the election can be over before the leader's first append reaches it).
        let knowsTheLeader = await eventually { await proposer.status().leader == theLeader.name }
        try #require(knowsTheLeader)
        network.block(from: theLeader.id, to: proposer.id)
        let old = Task { try await proposer.propose("OLD") }
        let committedElsewhere = await eventually {
            await theLeader.latestCommittedEntry()?.text == "OLD"
        }
        #expect(committedElsewhere)
        await proposer.stop()
        _ = try? await old.value
        network.heal()
        nodes[k] = try node(k)
        try await nodes[k].start()
        let fresh = try await nodes[k].propose("NEW")
        let entry = await eventually { await nodes[k].latestCommittedEntry()?.text == "NEW" }
        #expect(entry)
        #expect(await nodes[k].latestCommittedEntry()?.index == fresh.index, "resolved with its own entry")
        for n in nodes { await n.stop() }
    }

    @Test func aFollowerWhoseStorageWasWipedCatchesUp() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.names.first { $0 != leader.name })
        for k in 0..<30 { try await leader.propose("before \(k)") }
        await cluster.stopNode(follower)
        try await cluster.startNode(follower, wiped: true)
        for k in 0..<5 { try await leader.propose("after \(k)") }
        #expect(await eventually { cluster.recorder(follower)?.commands.count == 35 })
        await cluster.stopAll()
    }

    @Test func stoppingWhileStartingLeavesNothingListening() async throws {
        for _ in 0..<10 {
            let port = try FreePorts.reserve(1)[0]
            let cluster = try ClusterConfiguration([
                "a": ["ip": "127.0.0.1", "port": port], "b": ["ip": "127.0.0.1", "port": 1],
            ])
            let node = try RaftNode(cluster: cluster, name: "a")
            let starting = Task { try await node.start() }
            await node.stop()
            _ = try? await starting.value
            await node.stop()
            // The port is free again: a listener can bind it.
            let rebound = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: "127.0.0.1", port: port).get()
            #expect(rebound != nil, "port \(port) is still taken")
            try? await rebound?.close()
        }
    }

    @Test func aFailingDiskStopsTheNodeAndStopReleasesEverything() async throws {
        let storage = FailingStorage(successes: 3)
        let port = try FreePorts.reserve(1)[0]
        let cluster = try ClusterConfiguration(["solo": ["ip": "127.0.0.1", "port": port]])
        var options = RaftNode<NoStateMachine>.Options()
        options.tickInterval = .milliseconds(10)
        options.logger.logLevel = .critical
        let node = try RaftNode(cluster: cluster, name: "solo", storage: storage, options: options)
        try await node.start()
        let changes = node.leadershipChanges()
        // Writes fail soon: the node stops by itself, and its streams end.
        for k in 0..<100 {
            do { try await node.propose("x\(k)") } catch { break }
        }
        var ended = false
        for await _ in changes {}
        ended = true
        #expect(ended)
        #expect(await eventually { storage.closed.withLockedValue { $0 } })
        await #expect(throws: RaftNodeError.self) { try await node.propose("after") }
    }

    @Test func aTransportOnAnotherEventLoopIsRefused() throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let loops = Array(group.makeIterator().prefix(2))
        guard loops.count == 2 else { return }
        let cluster = try ClusterConfiguration(["a": ["ip": "127.0.0.1", "port": 1]])
        let transport = InMemoryTransport(
            id: ClusterConfiguration.nodeID(for: "a"), network: InMemoryNetwork(), eventLoop: loops[0])
        #expect(throws: RaftNodeError.self) {
            try RaftNode(
                cluster: cluster, name: "a", stateMachine: NoStateMachine(), eventLoop: loops[1], transport: transport)
        }
        // Without an explicit loop the node takes the transport's.
        let node = try RaftNode(cluster: cluster, name: "a", stateMachine: NoStateMachine(), transport: transport)
        #expect(node.eventLoop === loops[0])
    }
}
