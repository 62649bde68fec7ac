import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftWire
import Testing
import ProcessTesting

/// Real nodes over loopback TCP. Each test starts its own cluster on free ports.
@Suite(.serialized, .clusterSlot) struct RaftNodeTests {
    @Test(arguments: [3, 5])
    func nodesElectExactlyOneLeader(count: Int) async throws {
        let cluster = try await LocalCluster.start(count)
        let leader = try #require(await cluster.waitForLeader())
        var leaders = 0
        for node in cluster.nodes where await node.role == .leader { leaders += 1 }
        #expect(leaders == 1)
        #expect(await leader.status().leader == leader.name)
        await cluster.stopAll()
    }

    @Test func aThousandProposalsCommitInTheSameOrderOnEveryNode() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        // Ten clients at once, a hundred proposals each: the leader batches them.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<10 {
                group.addTask {
                    for k in 0..<100 { try await leader.propose("client \(client) command \(k)") }
                }
            }
            try await group.waitForAll()
        }
        let applied = await eventually {
            cluster.names.allSatisfy { cluster.recorder($0)?.commands.count == 1000 }
        }
        #expect(applied)
        let reference = try #require(cluster.recorder("node0")?.commands)
        #expect(Set(reference).count == 1000, "each command applied exactly once")
        for name in cluster.names { #expect(cluster.recorder(name)?.commands == reference) }
        // Each client's commands keep their order.
        let first = reference.map { String(decoding: $0, as: UTF8.self) }.filter { $0.hasPrefix("client 3 ") }
        #expect(first == (0..<100).map { "client 3 command \($0)" })
        await cluster.stopAll()
    }

    @Test func whenTheLeaderStopsANewOneIsElectedAndKeepsCommitting() async throws {
        let cluster = try await LocalCluster.start(3)
        let first = try #require(await cluster.waitForLeader())
        for k in 0..<10 { try await first.propose("before \(k)") }
        let oldTerm = await first.status().term
        await cluster.stopNode(first.name)
        let second = try #require(await cluster.waitForLeader())
        #expect(second.name != first.name)
        #expect(await second.status().term > oldTerm)
        for k in 0..<10 { try await second.propose("after \(k)") }
        let survivors = cluster.names.filter { $0 != first.name }
        #expect(await eventually { survivors.allSatisfy { cluster.recorder($0)?.commands.count == 20 } })
        await cluster.stopAll()
    }

    @Test func aStoppedNodeRestartedOnItsStorageCatchesUp() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.names.first { $0 != leader.name })
        for k in 0..<50 { try await leader.propose("one \(k)") }
        await cluster.stopNode(follower)
        for k in 0..<200 { try await leader.propose("two \(k)") }
        try await cluster.startNode(follower)
        #expect(await eventually { cluster.recorder(follower)?.commands.count == 250 })
        #expect(cluster.recorder(follower)?.commands == cluster.recorder(leader.name)?.commands)
        let restarted = try #require(cluster[follower])
        #expect(await restarted.latestCommittedEntry()?.text == "two 199")
        await cluster.stopAll()
    }

    @Test func aProposalMadeOnAFollowerCommits() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader.name })
        let committed = try await follower.propose("via a follower", id: "request-1")
        #expect(committed.output == committed.index, "the state machine's output comes back")
        #expect(await follower.committedEntry(id: "request-1")?.index == committed.index)
        #expect(await eventually { await leader.committedEntry(id: "request-1")?.text == "via a follower" })
        await cluster.stopAll()
    }

    @Test func aProposalMadeBeforeAnyLeaderExistsWaitsForOne() async throws {
        let cluster = try await LocalCluster.start(3)
        let node = try #require(cluster["node0"])
        // Right after start no node knows a leader yet; the proposal waits for one instead of failing.
        let committed = try await node.propose("early")
        #expect(committed.index >= LogIndex(2))
        await cluster.stopAll()
    }

    @Test func withNoQuorumAProposalFailsDefinitelyAfterItsTimeout() async throws {
        var options = LocalCluster.options()
        options.proposalTimeout = .milliseconds(300)
        let cluster = try await LocalCluster.start(3, options: options)
        _ = try #require(await cluster.waitForLeader())
        await cluster.stopNode("node1")
        await cluster.stopNode("node2")
        let node = try #require(cluster["node0"])
        // node0 loses its leader (or its leadership, by CheckQuorum) and can find no other.
        _ = await eventually { await node.status().leader == nil }
        await #expect(throws: RaftNodeError.notLeader(leaderHint: nil)) { try await node.propose("alone") }
        await cluster.stopAll()
    }

    @Test func withoutForwardingAFollowerNamesTheLeader() async throws {
        var options = LocalCluster.options()
        options.forwardProposals = false
        let cluster = try await LocalCluster.start(3, options: options)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader.name })
        await #expect(throws: RaftNodeError.notLeader(leaderHint: leader.name)) { try await follower.propose("no") }
        await cluster.stopAll()
    }

    @Test func anEntryIsFoundByIdOnlyOnceCommitted() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader.name })
        #expect(await leader.committedEntry(id: "x") == nil)
        // Pause a majority: the leader appends the entry but cannot commit it.
        let others = cluster.nodes.filter { $0.name != leader.name }
        for node in others { await node.pause() }
        let pending = Task { try await leader.propose("held back", id: "x") }
        try await Task.sleep(for: .milliseconds(200))
        #expect(await leader.committedEntry(id: "x") == nil, "appended, not committed: not visible")
        for node in others { await node.resume() }
        _ = try? await pending.value
        #expect(await eventually { await follower.committedEntry(id: "x")?.text == "held back" })
        await cluster.stopAll()
    }

    @Test func aPausedLeaderIsReplacedAndRejoinsAsAFollower() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        await leader.pause()
        await #expect(throws: RaftNodeError.paused) { try await leader.propose("while paused") }
        let others = cluster.nodes.filter { $0.name != leader.name }
        let replaced = await eventually {
            for node in others where await node.role == .leader { return true }
            return false
        }
        #expect(replaced)
        await leader.resume()
        #expect(await eventually { await leader.role == .follower })
        await cluster.stopAll()
    }

    @Test func leadershipChangesAreStreamed() async throws {
        let cluster = try await LocalCluster.start(3)
        let node = try #require(cluster["node1"])
        var iterator = node.leadershipChanges().makeAsyncIterator()
        var sawLeader = false
        for _ in 0..<20 {
            guard let change = await iterator.next() else { break }
            if change.leader != nil {
                sawLeader = true
                break
            }
        }
        #expect(sawLeader)
        await cluster.stopAll()
    }

    @Test func strangersThatSendGarbageAreCutOffWhileTheClusterKeepsWorking() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let port = try #require(cluster.configuration[leader.name]?.port)
        var garbage = ByteBuffer()
        garbage.writeBytes((0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        var oversized = ByteBuffer()
        oversized.writeMultipleIntegers(UInt32(1 << 30), UInt8(1), UInt8(1), UInt32(0))
        var otherCluster = ByteBuffer()
        Hello(
            clusterID: "not this one", sender: ClusterConfiguration.nodeID(for: "node0"), senderName: "node0",
            receiver: leader.id
        ).write(into: &otherCluster)
        for bytes in [garbage, oversized, otherCluster] {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
            try await channel.writeAndFlush(bytes)
            #expect(await eventually(.seconds(5)) { !channel.isActive }, "the node closed the connection")
        }
        for k in 0..<20 { try await leader.propose("still working \(k)") }
        #expect(await leader.status().role == .leader)
        await cluster.stopAll()
    }

    @Test func stoppingFailsWaitingProposalsAndIsIdempotent() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        for node in cluster.nodes where node.name != leader.name { await node.pause() }
        let waiting = Task { try await leader.propose("never") }
        try await Task.sleep(for: .milliseconds(100))
        await leader.stop()
        // The leader appended it: it may still commit (a later leader may hold it), so the outcome is unknown.
        await #expect(throws: RaftNodeError.stoppedOutcomeUnknown) { try await waiting.value }
        await leader.stop()
        await #expect(throws: RaftNodeError.stopped) { try await leader.propose("after stop") }
        await cluster.stopAll()
    }
}

@Suite(.serialized, .clusterSlot) struct BoundedMemoryTests {
    /// A follower that is down while the leader keeps committing costs the leader a bounded queue, not a growing one.
    @Test func aDownFollowerCostsTheLeaderABoundedQueue() async throws {
        var options = LocalCluster.options()
        options.transport.maxQueuedBytesPerPeer = 512 << 10
        let cluster = try await LocalCluster.start(3, options: options)
        let leader = try #require(await cluster.waitForLeader())
        let down = try #require(cluster.names.first { $0 != leader.name })
        await cluster.stopNode(down)
        let command = [UInt8](repeating: 42, count: 1024)
        var worst = 0
        for round in 0..<20 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 { group.addTask { try await leader.propose(command) } }
                try await group.waitForAll()
            }
            let queued = await leader.peerStatistics()[down]?.queuedBytes ?? 0
            worst = max(worst, queued)
            if round == 19 { #expect(await leader.status().commitIndex.rawValue >= 1000) }
        }
        #expect(
            worst <= options.transport.maxQueuedBytesPerPeer + (1 << 20), "queued for the down peer: \(worst) bytes")
        await cluster.stopAll()
    }
}
