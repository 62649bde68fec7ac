import RaftCore
import RaftSimulation
import Testing

/// The classic traps of membership changes, scripted step by step on `ScriptedCluster`, whose invariant checker
/// (the simulator's) watches every node after every step.
@Suite struct MembershipScenarioTests {
    static let n1 = NodeID(1)
    static let n2 = NodeID(2)
    static let n3 = NodeID(3)
    static let n4 = NodeID(4)
    static let n5 = NodeID(5)

    /// A cluster of `count` nodes whose bootstrap voters are `voters`, with node 1 elected and its first entry
    /// committed everywhere.
    static func elected(
        count: Int = 3, voters: Set<NodeID> = [n1, n2, n3], configure: (inout RaftConfiguration) -> Void = { _ in }
    ) throws -> ScriptedCluster {
        var cluster = try ScriptedCluster(count: count, bootstrap: voters, configure: configure)
        try cluster.campaign(n1)
        try cluster.stabilize()
        try #require(cluster[n1]?.role == .leader)
        try #require(cluster[n1].map { $0.log.term(at: $0.log.committed) == $0.term } == true)
        return cluster
    }

    static func change(_ steps: [ConfigChange.Step], _ transition: ConfigChange.Transition = .auto) -> ConfigChange {
        ConfigChange(steps, transition: transition)
    }

    @Test func aRemovedLeaderLeadsUntilTheChangeCommitsThenANewLeaderEmergesAmongTheRest() throws {
        for transition in [ConfigChange.Transition.simple, .auto] {
            var cluster = try Self.elected()
            let index = try cluster.with(Self.n1) {
                try $0.proposeConfigChange(Self.change([.init(.remove, Self.n1)], transition))
            }
            // In effect at once, but it still leads: it replicates without counting itself.
            #expect(cluster[Self.n1]?.role == .leader)
            #expect(cluster[Self.n1]?.membership.voters == [Self.n2, Self.n3])
            try cluster.stabilize()
            let old = try #require(cluster[Self.n1])
            #expect(old.log.committed >= index, "\(transition)")
            #expect(old.role != .leader, "\(transition): it stepped down once the change committed")
            try cluster.run(rounds: 60)
            let leader = try #require(cluster.leader)
            #expect([Self.n2, Self.n3].contains(leader.id), "\(transition)")
            #expect(leader.term > old.term)
            // The two remaining voters commit on their own.
            let before = leader.log.committed
            try cluster.with(leader.id) { _ = try $0.propose([42]) }
            cluster.isolate(Self.n1)
            try cluster.stabilize()
            #expect((cluster[leader.id]?.log.committed ?? .zero) > before)
        }
    }

    @Test func aChangeWhileAnotherIsPendingOrAJointConfigurationRemainsIsRefused() throws {
        var cluster = try Self.elected(count: 5)
        try cluster.with(Self.n1) {
            _ = try $0.proposeConfigChange(Self.change([.init(.addVoter, Self.n4)], .explicit))
        }
        // Not committed yet: refused.
        let pending = #expect(throws: MembershipError.self) {
            try cluster.with(Self.n1) { _ = try $0.proposeConfigChange(Self.change([.init(.addLearner, Self.n5)])) }
        }
        #expect(pending?.code == .inProgress)
        try cluster.stabilize()
        let joint = try #require(cluster[Self.n1]?.membership)
        #expect(joint.isJoint && joint.voters == [Self.n1, Self.n2, Self.n3, Self.n4])
        // Committed, but the joint configuration is still to be left: refused too.
        let stillJoint = #expect(throws: MembershipError.self) {
            try cluster.with(Self.n1) { _ = try $0.proposeConfigChange(Self.change([.init(.addLearner, Self.n5)])) }
        }
        #expect(stillJoint?.code == .inProgress)
        try cluster.with(Self.n1) { _ = try $0.proposeConfigChange(.leaveJoint) }
        try cluster.stabilize()
        #expect(cluster[Self.n1]?.membership.isJoint == false)
        try cluster.with(Self.n1) { _ = try $0.proposeConfigChange(Self.change([.init(.addLearner, Self.n5)])) }
        try cluster.stabilize()
        for id in cluster.ids {
            #expect(cluster[id]?.membership.learners == [Self.n5], "\(id)")
            #expect(cluster[id]?.membership.voters == [Self.n1, Self.n2, Self.n3, Self.n4], "\(id)")
        }
    }

    @Test func aOneVoterClusterWithTwoLearnersCommitsWithTheVoterAlone() throws {
        var cluster = try Self.elected(voters: [Self.n1]) { $0.learners = [Self.n2, Self.n3] }
        cluster.isolate(Self.n2)
        cluster.isolate(Self.n3)
        let before = cluster[Self.n1]?.log.committed ?? .zero
        try cluster.with(Self.n1) { _ = try $0.propose([7]) }
        try cluster.stabilize()
        #expect((cluster[Self.n1]?.log.committed ?? .zero) > before)
    }

    @Test func learnersAreNeverCountedInAQuorum() throws {
        var cluster = try Self.elected(count: 5)
        try cluster.with(Self.n1) {
            _ = try $0.proposeConfigChange(Self.change([.init(.addLearner, Self.n4), .init(.addLearner, Self.n5)]))
        }
        try cluster.stabilize()
        #expect(cluster[Self.n4]?.membership.learners == [Self.n4, Self.n5])
        // Only voter 1 and the two learners hear the leader: nothing commits, however long the learners ack.
        for voter in [Self.n2, Self.n3] { cluster.isolate(voter) }
        let before = try #require(cluster[Self.n1]?.log.committed)
        let index = try cluster.with(Self.n1) { raft -> LogIndex in
            _ = try raft.propose([9])
            return raft.log.lastIndex
        }
        for _ in 0..<5 {
            try cluster.tick(Self.n1)  // heartbeats (fewer ticks than CheckQuorum's period)
            try cluster.stabilize()
        }
        #expect(cluster[Self.n4]?.log.lastIndex == index, "the learners hold the entry")
        #expect(cluster[Self.n1]?.log.committed == before, "but it is not committed")
        cluster.isolate(Self.n2, false)
        try cluster.tick(Self.n1)
        try cluster.stabilize()
        #expect((cluster[Self.n1]?.log.committed ?? .zero) >= index, "one more voter commits it")
    }

    /// The single-server change bug of the thesis errata: a leader of a new term that proposed a change before
    /// committing an entry of its term could have it decided by a majority that does not overlap one of an earlier
    /// leader's uncommitted change. The core refuses until the new leader's own entry is committed.
    @Test func aNewLeaderCannotChangeTheMembershipBeforeCommittingAnEntryOfItsTerm() throws {
        // No leader lease (CheckQuorum off), so that node 2 can win at once once node 1 is cut off.
        var cluster = try Self.elected(count: 5, voters: [Self.n1, Self.n2, Self.n3, Self.n4]) {
            $0.checkQuorum = false
        }
        // Leader 1 adds voter 5 with a simple change that reaches no one.
        for id in cluster.ids where id != Self.n1 { cluster.isolate(id) }
        try cluster.with(Self.n1) { _ = try $0.proposeConfigChange(Self.change([.init(.addVoter, Self.n5)], .simple)) }
        try cluster.stabilize()
        #expect(cluster[Self.n1]?.membership.voters.count == 5)
        // Node 2 wins term 2 among 2, 3, 4 (node 1 cut off) without that entry.
        for id in cluster.ids where id != Self.n1 { cluster.isolate(id, false) }
        cluster.isolate(Self.n1)
        try cluster.campaign(Self.n2)
        var steps = 0
        while cluster[Self.n2]?.role != .leader && steps < 50 {
            try cluster.stabilize(limit: 1)
            steps += 1
        }
        try #require(cluster[Self.n2]?.role == .leader)
        // Its term's first entry is not committed yet: a change now (removing voter 1, say) is refused.
        let early = #expect(throws: MembershipError.self) {
            try cluster.with(Self.n2) {
                _ = try $0.proposeConfigChange(Self.change([.init(.remove, Self.n1)], .simple))
            }
        }
        #expect(early?.code == .notReady)
        try cluster.stabilize()
        try cluster.with(Self.n2) { _ = try $0.proposeConfigChange(Self.change([.init(.remove, Self.n1)], .simple)) }
        try cluster.stabilize()
        #expect(cluster[Self.n3]?.membership.voters == [Self.n2, Self.n3, Self.n4])
    }

    @Test func aSpuriousLostConnectionReportDisruptsNothingAndATransferHandsLeadershipOver() throws {
        var cluster = try Self.elected { $0.fastFailover = true }
        let term = try #require(cluster[Self.n1]?.term)
        // Node 2 is told its connection to the leader was lost, though it was not: its pre-vote fails, as node 3
        // still hears the leader.
        try cluster.with(Self.n2) { $0.connectionLost(to: Self.n1) }
        try cluster.stabilize()
        try cluster.run(rounds: 3)
        #expect(cluster[Self.n1]?.role == .leader)
        #expect(cluster.ids.allSatisfy { cluster[$0]?.term == term })
        // A transfer to node 3 makes it the leader of the next term.
        try cluster.with(Self.n1) { _ = try $0.transferLeadership(to: Self.n3) }
        try cluster.stabilize()
        #expect(cluster[Self.n3]?.role == .leader)
        #expect(cluster[Self.n3]?.term == term.next)
    }
}
