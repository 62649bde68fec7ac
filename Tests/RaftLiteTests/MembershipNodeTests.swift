import NIOCore
import RaftCore
import RaftLite
import Testing
import ProcessTesting

/// Membership changes and leadership transfer on real nodes over loopback TCP, in one process.
@Suite(.serialized, .clusterSlot) struct MembershipNodeTests {
    /// A node that is not in the cluster file: it joins with the cluster's bootstrap configuration and its own address.
    private func newcomer(_ name: String, _ cluster: LocalCluster) throws
        -> (RaftNode<Recorder>, Recorder, ClusterConfiguration.Member)
    {
        let port = try FreePorts.reserve(1)[0]
        let recorder = Recorder()
        let member = ClusterConfiguration.Member(name: name, host: "127.0.0.1", port: port)
        let node = try RaftNode(
            cluster: cluster.configuration, name: name, stateMachine: recorder, options: cluster.options,
            address: member)
        return (node, recorder, member)
    }

    @Test func aClusterGrowsToFiveAndShrinksBackToThreeWhileCommitting() async throws {
        // Slower ticks than the default 20 ms, and a longer election timeout: the test talks to one leader
        // throughout, and on a loaded machine (a run with three busy loops beside it; a CI run with every suite at
        // once) 20-ms ticks, and once 100-ms ticks with the default 10-20, changed leaders in the middle of it.
        var options = LocalCluster.options(tickMilliseconds: 100)
        options.electionTicks = 40
        let cluster = try await LocalCluster.start(3, options: options)
        let leader = try #require(await cluster.waitForLeader())
        for k in 0..<20 { try await leader.propose("before \(k)") }

        var newcomers: [(RaftNode<Recorder>, Recorder)] = []
        for name in ["node3", "node4"] {
            let (node, recorder, address) = try newcomer(name, cluster)
            try await node.start()
            newcomers.append((node, recorder))
            try await leader.addVoter(address)
        }
        let grown = try #require(await leader.membership())
        #expect(grown.voters.map(\.name) == ["node0", "node1", "node2", "node3", "node4"])
        #expect(grown.committed && !grown.isJoint)
        for k in 0..<10 { try await leader.propose("grown \(k)") }
        // The newcomers hold everything, the entries from before they joined included.
        for (_, recorder) in newcomers {
            #expect(await eventually { recorder.commands.count == 30 })
        }

        // Shrink back: remove two of the original members (the leader among them, if it is one of them).
        let others = cluster.names.filter { $0 != leader.name }
        try await leader.changeMembership([.remove(others[0]), .remove(others[1])], transition: .auto)
        let shrunk = try #require(await leader.membership())
        #expect(shrunk.voters.count == 3 && !shrunk.isJoint)
        for k in 0..<10 { try await leader.propose("shrunk \(k)") }
        for (_, recorder) in newcomers {
            #expect(await eventually { recorder.commands.count == 40 })
        }
        for (node, _) in newcomers { await node.stop() }
        await cluster.stopAll()
    }

    @Test func aRemovedLeaderStepsDownAndTheOthersGoOn() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        try await leader.propose("one")
        try await leader.removeMember(leader.name)
        let rest = cluster.nodes.filter { $0.name != leader.name }
        var next: RaftNode<Recorder>?
        #expect(
            await eventually {
                for node in rest where await node.role == .leader { next = node }
                return next != nil
            })
        let newLeader = try #require(next)
        try await newLeader.propose("two")
        #expect(await leader.role != .leader)
        let membership = try #require(await newLeader.membership())
        #expect(!membership.members.map(\.name).contains(leader.name))
        await cluster.stopAll()
    }

    @Test func leadershipIsHandedOverOnRequestAndOnStop() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        try await leader.propose("one")
        let target = try #require(cluster.names.first { $0 != leader.name })
        let successor = try await leader.transferLeadership(to: target)
        #expect(successor == target)
        let newLeader = try #require(cluster[target])
        #expect(await newLeader.role == .leader)
        try await newLeader.propose("two")
        // Stopping the leader hands leadership over first: another node leads without an election timeout.
        await cluster.stopNode(target)
        let remaining = cluster.nodes
        #expect(
            await eventually(.seconds(5)) {
                for node in remaining where await node.role == .leader { return true }
                return false
            })
        await cluster.stopAll()
    }

    @Test func aChangeIsRefusedOnAFollowerAndWhileAnotherIsInProgress() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader.name })
        await #expect(throws: RaftNodeError.self) { try await follower.removeMember(leader.name) }
        do {
            try await follower.removeMember(leader.name)
        } catch {
            #expect(error.code == .notLeader)
        }
        // Removing two voters of three directly would change more than one voter: refused.
        do {
            try await leader.changeMembership(
                [.remove(cluster.names[0]), .remove(cluster.names[1])], transition: .simple)
            Issue.record("a simple change of two voters was accepted")
        } catch {
            #expect(error.code == .membership)
        }
        await cluster.stopAll()
    }

    @Test func withFastFailoverALostLeaderIsReplacedWithoutAnElectionTimeout() async throws {
        // node0 has the usual election timeout and becomes the leader; node1 and node2 have one so long that it never
        // runs out during the test. When node0 stops (without handing leadership over), only the lost connections can
        // make node1 and node2 elect a new leader.
        let ports = try FreePorts.reserve(3)
        let names = ["node0", "node1", "node2"]
        let cluster = try ClusterConfiguration(
            members: zip(names, ports).map { ClusterConfiguration.Member(name: $0, host: "127.0.0.1", port: $1) })
        var nodes: [RaftNode<Recorder>] = []
        for (k, name) in names.enumerated() {
            var options = LocalCluster.options()
            options.fastFailover = true
            options.transferLeadershipOnStop = false
            if k > 0 { options.electionTicks = 1_000_000 }
            nodes.append(try RaftNode(cluster: cluster, name: name, stateMachine: Recorder(), options: options))
        }
        for node in nodes { try await node.start() }
        #expect(await eventually { await nodes[0].role == .leader })
        try await nodes[0].propose("one")
        let followed = await eventually {
            let a = await nodes[1].status().leader
            let b = await nodes[2].status().leader
            return a == "node0" && b == "node0"
        }
        #expect(followed)
        await nodes[0].stop()
        #expect(
            await eventually {
                let roles = [await nodes[1].role, await nodes[2].role]
                return roles.contains(.leader)
            })
        let survivor = await nodes[1].role == .leader ? nodes[1] : nodes[2]
        try await survivor.propose("two")
        for node in nodes { await node.stop() }
    }

    @Test func membersHealthIsReportedAndAStoppedMemberBecomesUnreachable() async throws {
        let cluster = try await LocalCluster.start(3)
        let leader = try #require(await cluster.waitForLeader())
        let changes = leader.memberHealthChanges()
        #expect(
            await eventually {
                let health = await leader.memberHealth()
                return health.count == 2
                    && health.allSatisfy { $0.reachable && $0.roundTrip != nil && $0.active == true }
            })
        let victim = try #require(cluster.names.first { $0 != leader.name })
        await cluster.stopNode(victim)
        var sawUnreachable = false
        for await change in changes {
            if case .unreachable(victim, _) = change {
                sawUnreachable = true
                break
            }
        }
        #expect(sawUnreachable)
        let health = await leader.memberHealth()
        #expect(health.first { $0.name == victim }?.reachable == false)
        await cluster.stopAll()
    }
}
