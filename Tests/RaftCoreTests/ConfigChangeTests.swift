import RaftCore
import RaftTesting
import Testing

private func n(_ k: UInt64) -> NodeID { NodeID(k) }
private func ids(_ ks: UInt64...) -> Set<NodeID> { Set(ks.map(NodeID.init)) }

private func change(_ steps: ConfigChange.Step..., transition: ConfigChange.Transition = .auto) -> ConfigChange {
    ConfigChange(steps, transition: transition)
}

/// The changes a node's log holds, in order.
private func configEntries(_ raft: Raft?) -> [ConfigChange] {
    guard let log = raft?.log else { return [] }
    var changes: [ConfigChange] = []
    var index = log.firstIndex
    while index <= log.lastIndex, let entry = log.entry(at: index) {
        if entry.kind == .configChange, let change = ConfigChange(decoding: entry.data) { changes.append(change) }
        index = index.next
    }
    return changes
}

/// The error a throwing membership call gives, or nil if it succeeded.
private func membershipError<T>(_ body: () throws(MembershipError) -> T) -> MembershipError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

/// Runs a bare core's readies as the shell would (writes durable at once) and returns every message it sent.
private func drain(_ node: inout Raft) -> [Message] {
    var pipeline = ReadyPipeline()
    var sent: [Message] = []
    while let step = pipeline.take(from: &node) {
        sent += step.messages
        var durable = step.durable
        if step.write != nil { durable += pipeline.writeCompleted(&node) }
        for ready in durable { sent += ready.messagesAfterPersist }
    }
    return sent
}

private func append(
    from leader: UInt64, to node: UInt64 = 2, term: UInt64, prev: (UInt64, UInt64), _ entries: [Entry], commit: UInt64
) -> Message {
    Message(
        from: n(leader), to: n(node), term: Term(term),
        kind: .appendEntries(
            AppendEntries(
                prevIndex: LogIndex(prev.0), prevTerm: Term(prev.1), entries: entries, commit: LogIndex(commit))))
}

private func confEntry(_ index: UInt64, term: UInt64, _ change: ConfigChange) -> Entry {
    Entry(term: Term(term), index: LogIndex(index), kind: .configChange, data: change.encoded())
}

private let three = Membership(voters: ids(1, 2, 3))

// MARK: - The configuration in effect is the latest in the log

@Suite struct ConfigurationInTheLogTests {
    @Test func aConfigurationEntryTakesEffectWhenAppendedAndIsRevertedWhenANewLeaderOverwritesIt() throws {
        var node = try Raft(configuration: RaftConfiguration(id: n(2), voters: ids(1, 2, 3)))
        let addFour = change(.init(.addVoter, n(4)))
        node.step(
            append(
                from: 1, term: 2, prev: (0, 0),
                [Entry(term: Term(2), index: LogIndex(1), kind: .noop), confEntry(2, term: 2, addFour)], commit: 1))
        _ = drain(&node)
        #expect(node.membership.voters == ids(1, 2, 3, 4), "in effect at once, uncommitted")
        #expect(node.status.membershipIndex == LogIndex(2))
        #expect(node.log.committed == LogIndex(1))
        // Leader 3 of term 3 never had the entry: it overwrites index 2 with an ordinary one.
        node.step(
            append(from: 3, term: 3, prev: (1, 2), [Entry(term: Term(3), index: LogIndex(2), data: [7])], commit: 1))
        _ = drain(&node)
        #expect(node.log.term(at: LogIndex(2)) == Term(3))
        #expect(node.membership == three)
        #expect(node.status.membershipIndex == .zero)
    }

    @Test func anOverwrittenConfigurationGivesWayToTheOneThatReplacesIt() throws {
        var node = try Raft(configuration: RaftConfiguration(id: n(2), voters: ids(1, 2, 3)))
        node.step(
            append(
                from: 1, term: 2, prev: (0, 0),
                [
                    Entry(term: Term(2), index: LogIndex(1), kind: .noop), Entry(term: Term(2), index: LogIndex(2)),
                    confEntry(3, term: 2, change(.init(.addVoter, n(4)))),
                ], commit: 1))
        _ = drain(&node)
        #expect(node.membership.isJoint)
        // A shorter replacement: the log is cut at 2, and the entry at 3 goes with it.
        node.step(
            append(
                from: 3, term: 3, prev: (1, 2),
                [confEntry(2, term: 3, change(.init(.remove, n(1)), transition: .simple))],
                commit: 1))
        _ = drain(&node)
        #expect(node.log.lastIndex == LogIndex(2))
        #expect(node.membership == Membership(voters: ids(2, 3)))
        #expect(node.status.membershipIndex == LogIndex(2))
        #expect(node.membership(at: LogIndex(1)) == three)
    }

    @Test func aSnapshotReplacingTheLogBringsItsMembershipAndOneTheLogHoldsChangesNothing() throws {
        var node = try Raft(configuration: RaftConfiguration(id: n(2), voters: ids(1, 2, 3)))
        node.step(
            append(
                from: 1, term: 2, prev: (0, 0),
                [
                    Entry(term: Term(2), index: LogIndex(1), kind: .noop),
                    confEntry(2, term: 2, change(.init(.addVoter, n(4)))),
                ],
                commit: 1))
        _ = drain(&node)
        #expect(node.membership.isJoint)
        // A snapshot of an entry the log holds only commits it: the log's configuration stays.
        node.step(
            Message(
                from: n(1), to: n(2), term: Term(2),
                kind: .installSnapshot(SnapshotMetadata(index: LogIndex(2), term: Term(2), membership: three))))
        _ = drain(&node)
        #expect(node.log.committed == LogIndex(2))
        #expect(node.membership.isJoint)
        // A snapshot from a later leader whose log never held that entry replaces the log, and the membership.
        let theirs = Membership(voters: ids(1, 2, 3), learners: ids(5))
        node.step(
            Message(
                from: n(3), to: n(2), term: Term(3),
                kind: .installSnapshot(SnapshotMetadata(index: LogIndex(6), term: Term(3), membership: theirs))))
        _ = drain(&node)
        #expect(node.log.snapshotIndex == LogIndex(6))
        #expect(node.membership == theirs)
        #expect(node.status.membershipIndex == LogIndex(6))
    }

    @Test func aRestartRebuildsTheMembershipFromTheSnapshotAndTheLog() throws {
        var cluster = try elected()
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(4))))
        cluster.stabilize()
        // Cut off alone, 1 appends a change that stays uncommitted.
        cluster.partition([n(1)])
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(3)), transition: .explicit))
        cluster.stabilize()
        let before = try #require(cluster[n(1)]?.membership)
        #expect(before.isJoint)
        #expect(before.learners == ids(4))
        cluster.crash(n(1))
        try cluster.restart(n(1))
        #expect(cluster[n(1)]?.membership == before, "the uncommitted change is in the log: it is in effect")
        #expect(cluster[n(2)]?.membership == Membership(voters: ids(1, 2, 3), learners: ids(4)))
        cluster.crash(n(2))
        try cluster.restart(n(2))
        #expect(cluster[n(2)]?.membership == Membership(voters: ids(1, 2, 3), learners: ids(4)))
    }

    @Test func compactionKeepsTheConfigurationOfEverySnapshotPoint() throws {
        var cluster = try elected()
        // Index 2: learner 4 (committed, needs no joint phase); 3: remove 3 (simple); 4: a command.
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(4))))
        cluster.stabilize()
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(3)), transition: .simple))
        cluster.stabilize()
        try cluster.propose(n(1), [1])
        cluster.stabilize()
        var leader = try #require(cluster[n(1)])
        #expect(leader.log.applied == LogIndex(4))
        let withLearner = Membership(voters: ids(1, 2, 3), learners: ids(4))
        let final = Membership(voters: ids(1, 2), learners: ids(4))
        #expect(leader.snapshotCandidate(at: LogIndex(1))?.membership == three)
        #expect(leader.snapshotCandidate(at: LogIndex(2))?.membership == withLearner)
        #expect(leader.snapshotCandidate(at: LogIndex(3))?.membership == final)
        #expect(leader.snapshotCandidate?.membership == final)
        // A snapshot at 2, compacted there: the points from 2 on are what is asked about, and they are kept.
        let meta = try #require(leader.snapshotCandidate(at: LogIndex(2)))
        leader.snapshotCreated(meta)
        #expect(leader.compact(through: LogIndex(2)) == LogIndex(2))
        #expect(leader.membership(at: LogIndex(2)) == withLearner)
        #expect(leader.membership(at: LogIndex(3)) == final)
        #expect(leader.snapshotCandidate(at: LogIndex(4))?.membership == final)
        // And a node restarted from that snapshot and the log after it has the same membership.
        let state = PersistentState(
            hardState: leader.hardState, snapshotIndex: LogIndex(2), snapshotTerm: meta.term,
            entries: (3...4).compactMap { leader.log.entry(at: LogIndex(UInt64($0))) })
        let restarted = try Raft(
            configuration: RaftConfiguration(id: n(1), voters: ids(1, 2, 3)), state: state, applied: LogIndex(4),
            snapshot: meta)
        #expect(restarted.membership == final)
        #expect(restarted.membership(at: LogIndex(2)) == withLearner)
        #expect(restarted.status.membershipIndex == LogIndex(3))
        // Restarted from the snapshot alone, the snapshot's membership is in effect.
        let fromSnapshot = try Raft(
            configuration: RaftConfiguration(id: n(1), voters: ids(1, 2, 3)),
            state: PersistentState(
                hardState: leader.hardState, snapshotIndex: LogIndex(2), snapshotTerm: meta.term, entries: []),
            applied: LogIndex(2), snapshot: meta)
        #expect(fromSnapshot.membership == withLearner)
    }
}

// MARK: - Joining, learners

@Suite struct JoiningAndLearnerTests {
    @Test func aNodeThatJoinsWithAnEmptyLogFollowsTheLeaderAndBecomesAVoter() throws {
        var cluster = try elected()
        try cluster.addNode(n(4))
        #expect(cluster[n(4)]?.membership == three, "its bootstrap configuration does not name it")
        // Not a voter of its own configuration: it never campaigns.
        cluster.tick(n(4), times: 50)
        #expect(cluster[n(4)]?.role == .follower)
        #expect(cluster[n(4)]?.term == .zero)
        #expect(cluster.inFlight.isEmpty)
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(4))))
        cluster.stabilize()
        #expect(cluster[n(4)]?.leader == n(1))
        #expect(cluster.logTerms(n(4)) == cluster.logTerms(n(1)))
        #expect(cluster[n(4)]?.membership == Membership(voters: ids(1, 2, 3), learners: ids(4)))
        // Promoted, through a joint configuration the leader leaves by itself.
        try cluster.proposeConfigChange(n(1), change(.init(.addVoter, n(4))))
        cluster.stabilize()
        for id in cluster.ids {
            #expect(cluster[id]?.membership == Membership(voters: ids(1, 2, 3, 4)), "\(id)")
            #expect(configEntries(cluster[id]).filter(\.isLeaveJoint).count == 1, "\(id): one leave entry")
        }
        #expect(cluster[n(4)]?.log.committed == cluster[n(1)]?.log.lastIndex)
    }

    /// A cluster of voters 1-3 with learners 4 and 5, every entry committed everywhere.
    private func withLearners(configure: (inout RaftConfiguration) -> Void = { _ in }) throws -> LockstepCluster {
        var cluster = try elected(configure: configure)
        try cluster.addNode(n(4))
        try cluster.addNode(n(5))
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(4)), .init(.addLearner, n(5))))
        cluster.stabilize()
        try #require(cluster[n(5)]?.membership == Membership(voters: ids(1, 2, 3), learners: ids(4, 5)))
        return cluster
    }

    @Test func learnersReceiveTheLogButDoNotCountTowardsCommitment() throws {
        var cluster = try withLearners()
        cluster.partition([n(1), n(4), n(5)])
        let committed = try #require(cluster[n(1)]?.log.committed)
        try cluster.propose(n(1), Array("x".utf8))
        cluster.stabilize()
        #expect(cluster[n(4)]?.log.lastIndex == committed.next, "the learners hold the entry")
        #expect(cluster[n(5)]?.log.lastIndex == committed.next)
        #expect(cluster[n(1)]?.log.committed == committed, "three of five members, but one voter of three")
        cluster.heal()
        cluster.tick(n(1))
        cluster.stabilize()
        #expect(cluster[n(1)]?.log.committed == committed.next)
    }

    @Test func learnersNeitherCampaignNorAreAskedForVotes() throws {
        // No leader lease, so that 3 grants 2 its vote as soon as 1 is gone.
        var cluster = try withLearners { $0.checkQuorum = false }
        cluster.partition([n(4)])
        cluster.tick(n(4), times: 100)
        cluster.campaign(n(4))
        #expect(cluster[n(4)]?.role == .follower)
        #expect(cluster.inFlight.filter { $0.from == n(4) }.isEmpty)
        cluster.heal()
        cluster.crash(n(1))
        cluster.campaign(n(2))
        let asked = Set(cluster.inFlight.filter { if case .requestVote = $0.kind { true } else { false } }.map(\.to))
        #expect(asked == ids(1, 3))
        cluster.stabilize()
        #expect(cluster[n(2)]?.role == .leader, "2 and 3 are a majority of the voters; the learners do not matter")
    }

    @Test func checkQuorumCountsOnlyVoters() throws {
        var cluster = try withLearners()
        cluster.partition([n(1), n(4), n(5)])
        for _ in 0..<25 {
            cluster.tick(n(1))
            cluster.stabilize()
        }
        #expect(cluster[n(1)]?.role == .follower, "the learners' answers do not keep it leading")
    }

    @Test func aLearnerAskedToVoteVotes() throws {
        // etcd-io/etcd#10998: a node that is a learner in its own log may be a voter in the candidate's newer one.
        var configuration = RaftConfiguration(id: n(4), voters: ids(1, 2, 3))
        configuration.learners = ids(4)
        var learner = try Raft(configuration: configuration)
        learner.step(
            Message(
                from: n(2), to: n(4), term: Term(2),
                kind: .requestVote(RequestVote(preVote: true, lastLogIndex: .zero, lastLogTerm: .zero))))
        learner.step(
            Message(
                from: n(2), to: n(4), term: Term(2),
                kind: .requestVote(RequestVote(preVote: false, lastLogIndex: .zero, lastLogTerm: .zero))))
        let answers = drain(&learner).compactMap { m -> (Bool, Bool)? in
            if case .requestVoteResponse(let r) = m.kind, m.to == n(2) { return (r.preVote, r.granted) }
            return nil
        }
        #expect(answers.map(\.0) == [true, false])
        #expect(answers.map(\.1) == [true, true], "both granted")
        #expect(learner.votedFor == n(2))
        // Still a learner: it does not campaign.
        learner.campaign()
        #expect(learner.role == .follower)
    }
}

// MARK: - Proposing changes

@Suite struct ProposingConfigChangeTests {
    @Test func aNewLeaderRefusesChangesUntilItsNoOpIsCommitted() throws {
        var cluster = try LockstepCluster(count: 3)
        cluster.campaign(n(1))
        cluster.deliver { $0[n(1)]?.role == .leader }
        let addLearner = change(.init(.addLearner, n(4)))
        #expect(
            membershipError { () throws(MembershipError) in try cluster.proposeConfigChange(n(1), addLearner) }?.code
                == .notReady)
        cluster.stabilize()
        #expect(
            membershipError { () throws(MembershipError) in try cluster.proposeConfigChange(n(1), addLearner) } == nil)
        // A follower is not the place.
        let onFollower = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(2), addLearner)
        }
        #expect(onFollower?.code == .notLeader)
        #expect(onFollower?.leaderHint == n(1))
    }

    @Test func oneChangeAtATime() throws {
        var cluster = try elected()
        cluster.partition([n(1)])
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(4))))
        let second = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(5))))
        }
        #expect(second?.code == .inProgress, "the first is not committed")
        cluster.heal()
        cluster.tick(n(1))
        cluster.stabilize()
        // An explicit joint configuration stays until it is left; nothing else goes in meanwhile.
        try cluster.proposeConfigChange(n(1), change(.init(.addVoter, n(4)), transition: .explicit))
        cluster.stabilize()
        #expect(cluster[n(1)]?.membership.isJoint == true)
        #expect(configEntries(cluster[n(1)]).filter(\.isLeaveJoint).isEmpty)
        let during = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(5))))
        }
        #expect(during?.code == .inProgress)
        try cluster.proposeConfigChange(n(1), .leaveJoint)
        cluster.stabilize()
        #expect(cluster[n(1)]?.membership == Membership(voters: ids(1, 2, 3, 4)))
        let nothingToLeave = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), .leaveJoint)
        }
        #expect(nothingToLeave?.code == .invalid)
    }

    @Test func aChangeThatLeavesTooFewRecentlyHeardVotersIsRefused() throws {
        var cluster = try elected()
        cluster.crash(n(3))
        // Two quorum checks without an answer from 3.
        for _ in 0..<25 {
            cluster.tick(n(1))
            cluster.stabilize()
        }
        try #require(cluster[n(1)]?.role == .leader)
        let removeTwo = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), change(.init(.remove, n(2)), transition: .simple))
        }
        #expect(removeTwo?.code == .wouldLoseQuorum, "1 and the silent 3 would be left")
        #expect(removeTwo?.reason.isEmpty == false)
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(3)), transition: .simple))
        cluster.stabilize()
        #expect(cluster[n(1)]?.membership == Membership(voters: ids(1, 2)))
        #expect(cluster[n(1)]?.log.committed == cluster[n(1)]?.log.lastIndex)
    }

    @Test func aLearnerNeverHeardFromDoesNotCountAsActiveWhenPromoted() throws {
        // A single voter adds a learner that does not exist (no node 2 ever answers), then promotes it: two voters,
        // one of them silent, would commit nothing more.
        var cluster = try elected(1)
        try cluster.proposeConfigChange(n(1), change(.init(.addLearner, n(2))))
        cluster.stabilize()
        #expect(cluster[n(1)]?.membership.learners == ids(2))
        let promote = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), change(.init(.addVoter, n(2)), transition: .simple))
        }
        #expect(promote?.code == .wouldLoseQuorum)
    }

    @Test func aRemovedLeaderLeadsUntilTheChangeCommitsThenHandsOver() throws {
        var cluster = try elected()
        cluster.partition([n(3)])
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(1)), transition: .simple))
        #expect(cluster[n(1)]?.membership == Membership(voters: ids(2, 3)))
        try cluster.propose(n(1), [1])
        cluster.stabilize()
        // 1 and 2 hold the change, but 1 is not a voter of it: 2 and 3 must both hold it.
        #expect(cluster[n(1)]?.role == .leader)
        #expect(cluster[n(1)]?.log.committed == LogIndex(1))
        cluster.heal()
        cluster.tick(n(1))
        cluster.stabilize()
        #expect(cluster[n(1)]?.role == .follower)
        let leader = try #require(cluster.leader)
        #expect([n(2), n(3)].contains(leader.id))
        #expect(leader.term == Term(2), "elected at once, on the old leader's timeoutNow")
        #expect(cluster.delivered.contains { if case .timeoutNow = $0.kind { $0.from == n(1) } else { false } })
        for id in [n(2), n(3)] { #expect(cluster[id]?.leader == leader.id) }
        // The new leader's log has everything the old one committed.
        #expect(cluster.applied[leader.id]?.contains { $0.data == [1] } == true)
    }

    @Test func aLeaderRemovedThroughAJointChangeStepsDownAfterTheLeaveCommits() throws {
        var cluster = try elected()
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(1))))
        // It enters the joint configuration, still a voter of the outgoing half, and is still leading when that
        // commits: it appends the leave entry itself.
        cluster.deliver { $0[n(1)]?.membership.isJoint == false }
        #expect(cluster[n(1)]?.role == .leader)
        #expect(cluster[n(1)]?.log.lastTerm == Term(1))
        cluster.stabilize()
        #expect(cluster[n(1)]?.role == .follower)
        let leader = try #require(cluster.leader)
        #expect(leader.term == Term(2))
        #expect(leader.membership == Membership(voters: ids(2, 3)))
        #expect(configEntries(cluster[leader.id]).filter(\.isLeaveJoint).count == 1)
    }
}

// MARK: - Leaving a joint configuration automatically

@Suite struct AutoLeaveTests {
    @Test func theLeaderLeavesOnceAndOnlyOnce() throws {
        var cluster = try elected()
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(3))))
        cluster.stabilize()
        for id in [n(1), n(2)] {
            let changes = configEntries(cluster[id])
            #expect(changes.count == 2, "\(id): \(changes)")
            #expect(changes.last?.isLeaveJoint == true)
            #expect(cluster[id]?.membership == Membership(voters: ids(1, 2)))
            #expect(cluster[id]?.log.committed == LogIndex(3))
        }
    }

    /// Five voters (no leader lease, so that a new leader can be elected at once), with 1 leading and the joint
    /// entry that removes 5 appended by every node; 1 has not yet heard that it was.
    private func jointEverywhereButNotCommittedOnTheLeader() throws -> LockstepCluster {
        var cluster = try elected(5) { $0.checkQuorum = false }
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(5))))
        cluster.deliver { c in (2...5).allSatisfy { c[n(UInt64($0))]?.membership.isJoint == true } }
        try #require(cluster[n(1)]?.log.committed == LogIndex(1))
        return cluster
    }

    private let four = Membership(voters: ids(1, 2, 3, 4))

    @Test func aNewLeaderLeavesAJointConfigurationTheOldOneEntered() throws {
        var cluster = try jointEverywhereButNotCommittedOnTheLeader()
        cluster.crash(n(1))
        cluster.campaign(n(2))
        cluster.stabilize()
        #expect(cluster[n(2)]?.role == .leader)
        #expect(cluster[n(2)]?.membership == four)
        try cluster.restart(n(1))
        cluster.tick(n(2))
        cluster.stabilize()
        for id in [n(1), n(2), n(3), n(4)] {
            let changes = configEntries(cluster[id])
            #expect(changes.count == 2, "\(id): \(changes)")
            #expect(changes.filter(\.isLeaveJoint).count == 1)
            #expect(cluster[id]?.membership == four)
        }
    }

    @Test func aLeaveTheOldLeaderAppendedButNobodyGotIsOverwrittenAndAppendedOnceByTheNewLeader() throws {
        var cluster = try jointEverywhereButNotCommittedOnTheLeader()
        // From now on nothing 1 sends arrives: it learns the joint entry committed and appends the leave alone.
        cluster.drop = { $0.from == n(1) }
        cluster.stabilize()
        #expect(cluster[n(1)]?.membership == four)
        #expect(cluster[n(1)]?.log.lastIndex == LogIndex(3))
        cluster.crash(n(1))
        cluster.drop = { _ in false }
        cluster.campaign(n(2))
        cluster.stabilize()
        try cluster.restart(n(1))
        #expect(cluster[n(1)]?.membership == four, "restarted from its log, which ends with its leave")
        cluster.tick(n(2))
        cluster.stabilize()
        for id in [n(1), n(2), n(3), n(4)] {
            let changes = configEntries(cluster[id])
            #expect(changes.count == 2, "\(id): \(changes)")
            #expect(changes.filter(\.isLeaveJoint).count == 1)
            #expect(cluster[id]?.log.term(at: LogIndex(3)) == Term(2), "1's leave at 3 was overwritten")
            #expect(cluster[id]?.membership == four)
            #expect(cluster[id]?.status.membershipIndex == LogIndex(4))
        }
    }

    @Test func aJointConfigurationCommittedDuringATransferThatFailsIsLeftWhenTheTransferEnds() throws {
        var cluster = try elected(5)
        cluster.partition([n(4)])
        try cluster.proposeConfigChange(n(1), change(.init(.remove, n(5))))
        // The transfer to 4 cannot finish (4 is cut off); meanwhile the joint entry commits.
        try cluster.transferLeadership(n(1), to: n(4))
        cluster.stabilize()
        #expect(cluster[n(1)]?.log.committed == LogIndex(2))
        #expect(cluster[n(1)]?.membership.isJoint == true, "no leave while transferring")
        for _ in 0..<10 {
            cluster.tick(n(1))
            cluster.stabilize()
        }
        #expect(cluster[n(1)]?.transferee == nil, "the transfer timed out")
        #expect(cluster[n(1)]?.role == .leader)
        #expect(cluster[n(1)]?.membership == four, "and the leader left the joint configuration")
        #expect(configEntries(cluster[n(1)]).filter(\.isLeaveJoint).count == 1)
    }
}
