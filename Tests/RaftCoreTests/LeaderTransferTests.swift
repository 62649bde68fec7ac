import RaftCore
import RaftTesting
import Testing

private func n(_ k: UInt64) -> NodeID { NodeID(k) }
private func ids(_ ks: UInt64...) -> Set<NodeID> { Set(ks.map(NodeID.init)) }

private func isTimeoutNow(_ m: Message) -> Bool { if case .timeoutNow = m.kind { true } else { false } }

private func isVoteRequest(_ m: Message, preVote: Bool) -> Bool {
    if case .requestVote(let r) = m.kind { r.preVote == preVote } else { false }
}

private func membershipError<T>(_ body: () throws(MembershipError) -> T) -> MembershipError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct LeaderTransferTests {
    @Test func aTransferToAnUpToDateFollowerSendsTimeoutNowAtOnceAndItWins() throws {
        var cluster = try elected()
        let chosen = try cluster.transferLeadership(n(1), to: n(2))
        #expect(chosen == n(2))
        #expect(cluster[n(1)]?.transferee == n(2))
        #expect(cluster.inFlight.contains { isTimeoutNow($0) && $0.to == n(2) })
        cluster.stabilize()
        #expect(cluster[n(2)]?.role == .leader)
        #expect(cluster[n(2)]?.term == Term(2))
        #expect(cluster[n(1)]?.role == .follower)
        #expect(cluster[n(1)]?.transferee == nil)
        // No pre-vote: the request said it was a transfer, and the voters in the lease granted it.
        #expect(!cluster.delivered.contains { isVoteRequest($0, preVote: true) && $0.term == Term(2) })
        #expect(cluster.delivered.contains { if case .requestVote(let r) = $0.kind { r.transfer } else { false } })
    }

    @Test func aTransferWithoutATargetPicksTheMostUpToDateVoter() throws {
        var cluster = try elected()
        cluster.partition([n(2)])
        try cluster.propose(n(1), [1])
        cluster.stabilize()
        #expect(try cluster.transferLeadership(n(1)) == n(3))
        cluster.stabilize()
        #expect(cluster[n(3)]?.role == .leader)
    }

    @Test func aLaggingTargetCatchesUpBeforeItIsToldToCampaign() throws {
        var cluster = try elected()
        cluster.partition([n(3)])
        for k in 0..<3 { try cluster.propose(n(1), [UInt8(k)]) }
        cluster.stabilize()
        cluster.heal()
        try cluster.transferLeadership(n(1), to: n(3))
        #expect(!cluster.inFlight.contains(where: isTimeoutNow), "3 is behind")
        #expect(cluster.inFlight.contains { if case .appendEntries = $0.kind { $0.to == n(3) } else { false } })
        // timeoutNow only once 3 acknowledged the leader's last entry.
        cluster.deliver { $0.inFlight.contains(where: isTimeoutNow) }
        let last = try #require(cluster[n(1)]?.log.lastIndex)
        #expect(cluster[n(1)]?.progress(of: n(3))?.match == last)
        cluster.stabilize()
        #expect(cluster[n(3)]?.role == .leader)
        #expect(cluster.applied[n(3)]?.filter { $0.kind == .normal }.map(\.data) == [[0], [1], [2]])
    }

    @Test func proposalsAndChangesAreRefusedDuringATransferAndTakenAgainAfterItsDeadline() throws {
        var cluster = try elected()
        cluster.partition([n(3)])
        try cluster.transferLeadership(n(1), to: n(3))
        #expect(throws: ProposalError.transferring) { try cluster.propose(n(1), [1]) }
        let change = membershipError { () throws(MembershipError) in
            try cluster.proposeConfigChange(n(1), ConfigChange([.init(.addLearner, n(4))]))
        }
        #expect(change?.code == .transferring)
        // A proposal forwarded by a follower is dropped too (its proposer retries).
        let before = try #require(cluster[n(1)]?.log.lastIndex)
        try cluster.propose(n(2), [2])
        cluster.stabilize()
        #expect(cluster[n(1)]?.log.lastIndex == before)
        // An election timeout later the leader gives up and takes proposals again.
        for _ in 0..<9 {
            cluster.tick(n(1))
            cluster.stabilize()
        }
        #expect(cluster[n(1)]?.transferee == n(3))
        cluster.tick(n(1))
        #expect(cluster[n(1)]?.transferee == nil)
        #expect(cluster[n(1)]?.role == .leader)
        let outcome = try cluster.propose(n(1), [3])
        #expect(outcome == .appended(before.next...before.next, term: Term(1)))
    }

    @Test func aTransferIsRefusedToANonVoterOrItselfOrOnAFollower() throws {
        var cluster = try elected()
        try cluster.proposeConfigChange(n(1), ConfigChange([.init(.addLearner, n(4))]))
        cluster.stabilize()
        let toLearner = membershipError { () throws(MembershipError) in try cluster.transferLeadership(n(1), to: n(4)) }
        #expect(toLearner?.code == .invalid)
        let toSelf = membershipError { () throws(MembershipError) in try cluster.transferLeadership(n(1), to: n(1)) }
        #expect(toSelf?.code == .invalid)
        let onFollower = membershipError { () throws(MembershipError) in try cluster.transferLeadership(n(2), to: n(3))
        }
        #expect(onFollower?.code == .notLeader)
        #expect(onFollower?.leaderHint == n(1))
        // A voter a pending change removes is no target either: the transfer would end with the change.
        try cluster.proposeConfigChange(n(1), ConfigChange([.init(.remove, n(3))], transition: .simple))
        let toRemoved = membershipError { () throws(MembershipError) in try cluster.transferLeadership(n(1), to: n(3)) }
        #expect(toRemoved?.code == .invalid)
        #expect(cluster[n(1)]?.transferee == nil)
    }

    @Test func timeoutNowFromANodeThatIsNotTheLeaderIsIgnored() throws {
        var cluster = try elected()
        let term = try #require(cluster[n(3)]?.term)
        cluster.step(Message(from: n(2), to: n(3), term: term, kind: .timeoutNow))
        #expect(cluster[n(3)]?.role == .follower)
        #expect(cluster[n(3)]?.term == term)
        #expect(cluster.inFlight.isEmpty)
        // And a learner told to campaign by the leader does not either.
        try cluster.addNode(n(4))
        try cluster.proposeConfigChange(n(1), ConfigChange([.init(.addLearner, n(4))]))
        cluster.stabilize()
        cluster.step(Message(from: n(1), to: n(4), term: term, kind: .timeoutNow))
        #expect(cluster[n(4)]?.role == .follower)
        #expect(cluster.inFlight.isEmpty)
    }
}

@Suite struct FastFailoverTests {
    private func failoverCluster(_ on: Bool = true) throws -> LockstepCluster {
        try elected { $0.fastFailover = on }
    }

    @Test func aFollowerThatLostTheLeaderPreVotesAtOnceButVotersStillHearingItIgnoreIt() throws {
        var cluster = try failoverCluster()
        cluster.connectionLost(n(2), to: n(1))
        #expect(cluster[n(2)]?.role == .preCandidate)
        let polled = Set(cluster.inFlight.filter { isVoteRequest($0, preVote: true) }.map(\.to))
        #expect(polled == ids(1, 3))
        cluster.stabilize()
        #expect(cluster[n(1)]?.role == .leader)
        #expect(cluster[n(1)]?.term == Term(1))
        #expect(
            !cluster.delivered.contains {
                if case .requestVoteResponse = $0.kind { $0.term == Term(2) } else { false }
            },
            "nobody answered the poll")
        // The leader's next heartbeat brings 2 back.
        cluster.tick(n(1))
        cluster.stabilize()
        #expect(cluster[n(2)]?.role == .follower)
        #expect(cluster[n(2)]?.leader == n(1))
        #expect(cluster[n(2)]?.term == Term(1))
    }

    @Test func whenAQuorumLostTheLeaderANewOneIsElectedWithoutAnElectionTimeout() throws {
        var cluster = try failoverCluster()
        cluster.crash(n(1))
        // 3 learns first; its poll reaches 2, which still hears 1 as far as it knows, and is ignored.
        cluster.connectionLost(n(3), to: n(1))
        cluster.stabilize()
        #expect(cluster[n(3)]?.role == .preCandidate)
        // Then 2 learns too: its poll reaches 3, which lost the leader as well, and grants it.
        cluster.connectionLost(n(2), to: n(1))
        cluster.stabilize()
        let leader = try #require(cluster.leader)
        #expect(leader.id == n(2))
        #expect(leader.term == Term(2))
        #expect(cluster[n(3)]?.leader == n(2))
        #expect(
            cluster.delivered.contains {
                if case .requestVoteResponse(let r) = $0.kind {
                    $0.from == n(3) && r.granted && r.preVote
                } else {
                    false
                }
            }, "3, which lost the leader too, granted the pre-vote")
    }

    @Test(arguments: [3, 5])
    func followersThatLoseTheLeaderAtTheSameMomentElectOneOfThemWithoutATimeout(_ count: Int) throws {
        // A crashed leader's connections all reset at once: every follower polls before any poll arrives. Each grants
        // the others' polls; were all to stand, each would vote for itself and the vote would split.
        var cluster = try elected(count) { $0.fastFailover = true }
        cluster.crash(n(1))
        for k in 2...count { cluster.connectionLost(n(UInt64(k)), to: n(1)) }
        cluster.stabilize()
        let leader = try #require(cluster.leader?.id, "a leader without a single tick")
        #expect(cluster[leader]?.term == Term(2))
        for k in 2...count { #expect(cluster[n(UInt64(k))]?.leader == leader) }
    }

    @Test func withFastFailoverOffOrAboutAnotherPeerNothingHappens() throws {
        var off = try failoverCluster(false)
        off.connectionLost(n(2), to: n(1))
        #expect(off[n(2)]?.role == .follower)
        #expect(off.inFlight.isEmpty)
        var on = try failoverCluster()
        on.connectionLost(n(2), to: n(3))
        #expect(on[n(2)]?.role == .follower)
        #expect(on.inFlight.isEmpty)
        on.connectionLost(n(1), to: n(2))
        #expect(on[n(1)]?.role == .leader, "a leader is not hurried by losing a follower")
        #expect(on.inFlight.isEmpty)
    }
}
