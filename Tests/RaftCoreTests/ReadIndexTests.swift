import RaftCore
import RaftTesting
import Testing

private func n(_ k: UInt64) -> NodeID { NodeID(k) }

private func heartbeatRound(_ m: Message) -> UInt64? {
    if case .heartbeat(let h) = m.kind { h.context } else { nil }
}

private func carriesEntries(_ m: Message) -> Bool {
    if case .appendEntries(let a) = m.kind { !a.entries.isEmpty } else { false }
}

@Suite struct ReadIndexTests {
    @Test func aLeaderConfirmsAReadWithOneHeartbeatRoundAndAppendsNothing() throws {
        var cluster = try elected()
        let last = try #require(cluster[n(1)]?.log.lastIndex)
        let committed = try #require(cluster[n(1)]?.log.committed)
        let sentBefore = cluster.delivered.count
        try cluster.readIndex(n(1), context: 7)
        // Nothing is confirmed before a quorum has answered.
        #expect(cluster.readStates[n(1)] ?? [] == [])
        #expect(cluster.inFlight.filter { heartbeatRound($0) == 1 }.count == 2)
        cluster.stabilize()
        #expect(cluster.readStates[n(1)] == [ReadState(context: 7, index: committed)])
        // No log entry, no replication of one.
        #expect(cluster[n(1)]?.log.lastIndex == last)
        #expect(!cluster.delivered[sentBefore...].contains(where: carriesEntries))
    }

    @Test func readsThatArriveTogetherOrDuringARoundShareOne() throws {
        var cluster = try elected()
        for k in 1...3 { try cluster.readIndex(n(1), context: UInt64(k)) }
        // The three reads asked between two readies share round 1.
        #expect(cluster.inFlight.filter { heartbeatRound($0) == 1 }.count == 2)
        // Reads arriving while round 1 is in flight wait for round 2, which begins only once round 1 is confirmed.
        try cluster.readIndex(n(1), context: 4)
        try cluster.readIndex(n(1), context: 5)
        #expect(!cluster.inFlight.contains { heartbeatRound($0) == 2 })
        cluster.stabilize()
        #expect(cluster.readStates[n(1)]?.map(\.context) == [1, 2, 3, 4, 5])
        // Two rounds in all: one heartbeat per follower for each.
        #expect(cluster.delivered.filter { heartbeatRound($0) == 1 }.count == 2)
        #expect(cluster.delivered.filter { heartbeatRound($0) == 2 }.count == 2)
        #expect(!cluster.delivered.contains { heartbeatRound($0) == 3 })
    }

    @Test func oneAnswerBesidesTheLeaderIsAQuorumOfThree() throws {
        var cluster = try elected()
        cluster.partition([n(3)])
        try cluster.readIndex(n(1), context: 1)
        cluster.stabilize()
        #expect(cluster.readStates[n(1)]?.map(\.context) == [1])
    }

    @Test func aNewLeaderWaitsForAnEntryOfItsTermBeforeItTellsAReadIndex() throws {
        var cluster = try LockstepCluster(count: 3)
        cluster.campaign(n(1))
        // Deliver until node 1 leads, but before its no-op is committed.
        cluster.deliver { $0[n(1)]?.role == .leader }
        let leader = try #require(cluster[n(1)])
        #expect(leader.log.committed < leader.log.lastIndex)
        try cluster.readIndex(n(1), context: 9)
        #expect(!cluster.inFlight.contains { heartbeatRound($0) == 1 })
        cluster.stabilize()
        let noop = try #require(cluster[n(1)]?.log.lastIndex)
        #expect(cluster.readStates[n(1)] == [ReadState(context: 9, index: noop)])
    }

    @Test func aDeposedLeaderCutOffNeverConfirmsAReadAndDropsItWhenItLearns() throws {
        var cluster = try elected()
        cluster.partition([n(1)])
        try cluster.readIndex(n(1), context: 1)
        // The others elect one of them (once the old leader's lease has run out) and commit a write the old leader
        // never sees.
        var rounds = 0
        while cluster.leader?.id == n(1) || cluster.leader == nil, rounds < 100 {
            cluster.tick(n(2))
            cluster.tick(n(3))
            cluster.stabilize()
            rounds += 1
        }
        let newLeader = try #require(cluster.leader?.id)
        try #require(newLeader != n(1))
        _ = try cluster.propose(newLeader, [42])
        cluster.stabilize()
        let newCommit = try #require(cluster[newLeader]?.log.committed)
        // However long node 1 waits, it confirms nothing.
        cluster.tick(n(1), times: 3)
        cluster.stabilize()
        #expect(cluster.readStates[n(1)] ?? [] == [])
        // Once it hears of the new term, its read is dropped (to be asked again, of the new leader).
        cluster.heal()
        cluster.tick(newLeader)
        cluster.stabilize()
        #expect(cluster[n(1)]?.role == .follower)
        #expect(cluster.readsDropped[n(1)] == [1])
        #expect(cluster.readStates[n(1)] ?? [] == [])
        // Asked again, on the old leader now a follower: the new leader answers with an index holding the write.
        try cluster.readIndex(n(1), context: 2)
        cluster.stabilize()
        let state = try #require(cluster.readStates[n(1)]?.first)
        #expect(state.context == 2 && state.index >= newCommit)
    }

    @Test func aFollowerAsksTheLeaderForTheReadIndex() throws {
        var cluster = try elected()
        _ = try cluster.propose(n(1), [1])
        cluster.stabilize()
        let committed = try #require(cluster[n(1)]?.log.committed)
        try cluster.readIndex(n(2), context: 5)
        #expect(cluster.inFlight.contains { if case .readIndex(let r) = $0.kind { r.context == 5 } else { false } })
        cluster.stabilize()
        #expect(cluster.readStates[n(2)] == [ReadState(context: 5, index: committed)])
        #expect(cluster.readStates[n(1)] ?? [] == [])
    }

    @Test func aNodeThatDoesNotLeadRefusesAReadIndexRequest() throws {
        var cluster = try elected()
        cluster.step(
            Message(from: n(2), to: n(3), term: try #require(cluster[n(3)]?.term), kind: .readIndex(.init(context: 8))))
        cluster.stabilize()
        #expect(cluster.readsDropped[n(2)] == [8])
    }

    @Test func aNodeWithoutALeaderCannotTakeARead() throws {
        var cluster = try LockstepCluster(count: 3)
        #expect(throws: ReadIndexError.noLeader) { try cluster.readIndex(n(2), context: 1) }
    }

    @Test func aSingleVoterConfirmsAtOnce() throws {
        var cluster = try LockstepCluster(count: 1)
        cluster.campaign(n(1))
        cluster.stabilize()
        try #require(cluster[n(1)]?.role == .leader)
        try cluster.readIndex(n(1), context: 3)
        let committed = try #require(cluster[n(1)]?.log.committed)
        #expect(cluster.readStates[n(1)] == [ReadState(context: 3, index: committed)])
    }

    @Test func aLostAnswerIsMadeUpByTheNextHeartbeatOfTheRound() throws {
        var cluster = try elected()
        // Every answer to round 1's first heartbeats is lost.
        cluster.drop = { if case .heartbeatResponse = $0.kind { true } else { false } }
        try cluster.readIndex(n(1), context: 1)
        cluster.stabilize()
        #expect(cluster.readStates[n(1)] ?? [] == [])
        cluster.heal()
        // The next heartbeat carries round 1 again.
        cluster.tick(n(1))
        #expect(cluster.inFlight.contains { heartbeatRound($0) == 1 })
        cluster.stabilize()
        #expect(cluster.readStates[n(1)]?.map(\.context) == [1])
    }

    // MARK: - Leases

    @Test func leaseReadsNeedAStrictLeaseCheckQuorumAndAnEntryOfTheTerm() throws {
        var plain = try elected()
        #expect(plain[n(1)]?.leaseReadsAllowed == false)
        var strict = try LockstepCluster(count: 3) { $0.strictLease = true }
        strict.campaign(n(1))
        strict.deliver { $0[n(1)]?.role == .leader }
        #expect(strict[n(1)]?.leaseReadsAllowed == false)  // its no-op is not committed yet
        strict.stabilize()
        #expect(strict[n(1)]?.leaseReadsAllowed == true)
        #expect(strict[n(2)]?.leaseReadsAllowed == false)
        var noCheckQuorum = try elected {
            $0.strictLease = true
            $0.checkQuorum = false
        }
        #expect(noCheckQuorum[n(1)]?.leaseReadsAllowed == false)
        plain.stabilize()
        noCheckQuorum.stabilize()
    }

    @Test func aLeaderThatToldAVoterToCampaignGivesUpItsLease() throws {
        var cluster = try elected { $0.strictLease = true }
        #expect(cluster[n(1)]?.leaseReadsAllowed == true)
        cluster.partition([n(2)])
        _ = try cluster.transferLeadership(n(1), to: n(3))
        #expect(cluster[n(1)]?.role == .leader)
        #expect(cluster[n(1)]?.leaseReadsAllowed == false)
    }

    @Test func withAStrictLeaseARestartedVoterWaitsAnElectionTimeoutBeforeItVotes() throws {
        var cluster = try elected {
            $0.strictLease = true
            $0.fastFailover = true
        }
        try cluster.restart(n(3))
        let before = cluster.delivered.count
        // Node 2 asks for votes at once: node 3, just restarted, may have promised the leader its lease.
        cluster.partition([n(1)])
        cluster.tick(n(2), times: 20)
        let granted = { (c: LockstepCluster) in
            c.delivered[before...].contains { m in
                if case .requestVoteResponse(let r) = m.kind { m.from == n(3) && r.granted } else { false }
            }
        }
        cluster.stabilize()
        // Node 3's own timer has not run: it refused (by ignoring) every request so far.
        #expect(!granted(cluster))
        #expect(cluster[n(2)]?.role != .leader)
        // After an election timeout of its own ticks, it takes part again: one of the two is elected.
        for _ in 0..<40 where cluster.leader?.id == n(1) {
            cluster.tick(n(3))
            cluster.tick(n(2))
            cluster.stabilize()
        }
        let leader = try #require(cluster.leader)
        #expect(leader.id != n(1))
    }

    @Test func withAStrictLeaseALostConnectionDoesNotHurryAnElection() throws {
        var cluster = try elected {
            $0.strictLease = true
            $0.fastFailover = true
        }
        cluster.connectionLost(n(2), to: n(1))
        #expect(cluster[n(2)]?.role == .follower)
        #expect(!cluster.inFlight.contains { if case .requestVote = $0.kind { true } else { false } })
        var fast = try elected { $0.fastFailover = true }
        fast.connectionLost(n(2), to: n(1))
        #expect(fast[n(2)]?.role == .preCandidate)
    }

    @Test func aLeaseRunsFromWhenTheConfirmedReadWasAskedAndOnlyInItsTerm() throws {
        #expect(ReadLease(tickLength: 100, electionTick: 10, drift: 900) == nil)
        var lease = try #require(ReadLease(tickLength: 100, electionTick: 10, drift: 100))
        #expect(lease.duration == 800)
        var cluster = try elected { $0.strictLease = true }
        let leader = try #require(cluster[n(1)])
        #expect(!lease.holds(now: 0, leader))  // never confirmed
        lease.confirmed(askedAt: 1_000, term: leader.term)
        #expect(lease.holds(now: 1_799, leader))
        #expect(!lease.holds(now: 1_800, leader))
        // An older confirmation never shortens it.
        lease.confirmed(askedAt: 500, term: leader.term)
        #expect(lease.expiry == 1_800)
        // Not for another term, nor for a node that does not lead.
        lease.confirmed(askedAt: 1_000, term: Term(leader.term.rawValue + 1))
        #expect(!lease.holds(now: 1_100, leader))
        let follower = try #require(cluster[n(2)])
        lease.confirmed(askedAt: 1_000, term: follower.term)
        #expect(!lease.holds(now: 1_100, follower))
        cluster.stabilize()
    }
}
