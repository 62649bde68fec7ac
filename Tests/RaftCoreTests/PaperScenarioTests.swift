import RaftCore
import RaftSimulation
import Testing
import RaftTesting

/// The Raft paper's own scenarios, each in three parts: set up, drive, check.
@Suite struct PaperScenarioTests {
    static func n(_ k: UInt64) -> NodeID { NodeID(k) }

    /// A log whose entry k (from index 1) has term `terms[k - 1]`.
    static func log(_ terms: [UInt64], hardTerm: UInt64? = nil) -> PersistentState {
        let entries = terms.enumerated().map { k, term in
            Entry(term: Term(term), index: LogIndex(UInt64(k + 1)), data: [UInt8(k), UInt8(term)])
        }
        return PersistentState(hardState: HardState(term: Term(hardTerm ?? terms.last ?? 0)), entries: entries)
    }

    // MARK: - Elections (§5.2)

    @Test func aCandidateWithAMajorityOfVotesBecomesLeaderAndEveryoneFollowsIt() throws {
        var cluster = try LockstepCluster(count: 5)
        cluster.campaign(Self.n(1))
        cluster.stabilize()
        #expect(cluster[Self.n(1)]?.role == .leader)
        for id in cluster.ids where id != Self.n(1) {
            #expect(cluster[id]?.role == .follower)
            #expect(cluster[id]?.leader == Self.n(1))
            #expect(cluster[id]?.term == cluster[Self.n(1)]?.term)
        }
        // The leader's no-op is committed and applied everywhere.
        for id in cluster.ids {
            #expect(cluster[id]?.log.committed == LogIndex(1))
            #expect(cluster.applied[id]?.map(\.kind) == [.noop])
        }
    }

    @Test func aFollowerThatHearsNothingStartsAnElectionWithinTwoElectionTimeouts() throws {
        var cluster = try LockstepCluster(count: 3)
        let id = Self.n(2)
        var ticks = 0
        while cluster[id]?.role == .follower && ticks < 100 {
            cluster.tick(id)
            ticks += 1
        }
        #expect(cluster[id]?.role == .preCandidate)
        #expect((10..<20).contains(ticks), "election timeout is drawn from [electionTick, 2 * electionTick)")
    }

    @Test func aNodeVotesForAtMostOneCandidatePerTerm() throws {
        var node = try Raft(configuration: RaftConfiguration(id: Self.n(1), voters: [Self.n(1), Self.n(2), Self.n(3)]))
        let request = RequestVote(preVote: false, lastLogIndex: .zero, lastLogTerm: .zero)
        node.step(Message(from: Self.n(2), to: Self.n(1), term: Term(1), kind: .requestVote(request)))
        node.step(Message(from: Self.n(3), to: Self.n(1), term: Term(1), kind: .requestVote(request)))
        // A repeated request from the same candidate is granted again (its first answer may have been lost).
        node.step(Message(from: Self.n(2), to: Self.n(1), term: Term(1), kind: .requestVote(request)))
        let ready = node.ready()
        let answers = ready.messagesAfterPersist.compactMap { m -> (NodeID, Bool)? in
            guard case .requestVoteResponse(let r) = m.kind else { return nil }
            return (m.to, r.granted)
        }
        #expect(answers.map(\.0) == [Self.n(2), Self.n(3), Self.n(2)])
        #expect(answers.map(\.1) == [true, false, true])
        #expect(ready.hardState?.votedFor == Self.n(2))
        #expect(ready.messages.isEmpty, "votes wait until the vote is durable")
    }

    @Test func aVoterRefusesACandidateWhoseLogIsLessUpToDate() throws {
        // §5.4.1: the voter's last entry has a later term, or the same term and a higher index.
        for (candidateLast, candidateTerm, granted) in [
            (UInt64(3), UInt64(2), false), (2, 3, false), (3, 3, true),
            (9, 2, false), (1, 4, true),
        ] {
            var node = try Raft(
                configuration: RaftConfiguration(id: Self.n(1), voters: [Self.n(1), Self.n(2), Self.n(3)]),
                state: Self.log([1, 3, 3], hardTerm: 3))
            let request = RequestVote(
                preVote: false, lastLogIndex: LogIndex(candidateLast), lastLogTerm: Term(candidateTerm))
            node.step(Message(from: Self.n(2), to: Self.n(1), term: Term(5), kind: .requestVote(request)))
            let answer = node.ready().messagesAfterPersist.first
            guard case .requestVoteResponse(let response)? = answer?.kind else {
                Issue.record("no answer to the vote request")
                continue
            }
            #expect(response.granted == granted, "candidate ending at (\(candidateLast), t\(candidateTerm))")
        }
    }

    @Test func splitVotesResolveThroughRandomizedTimeouts() throws {
        var sawSplit = false
        for seed in UInt64(1)...20 {
            var cluster = try LockstepCluster(count: 5) { configuration in
                configuration.preVote = false
                configuration.randomSeed = seed &* 31 &+ configuration.id.rawValue
            }
            // Everyone campaigns at once: the votes split between the candidates.
            for id in cluster.ids { cluster.campaign(id) }
            cluster.stabilize()
            if cluster.leader == nil { sawSplit = true }
            var ticks = 0
            while cluster.leader == nil && ticks < 200 {
                cluster.tickAll()
                cluster.stabilize()
                ticks += 1
            }
            let leaders = cluster.ids.compactMap { cluster[$0] }.filter { $0.role == .leader }
            #expect(leaders.count == 1, "seed \(seed): one leader after \(ticks) ticks")
            let term = leaders.first?.term
            #expect(cluster.ids.allSatisfy { cluster[$0]?.term == term && cluster[$0]?.leader == leaders.first?.id })
        }
        #expect(sawSplit, "at least one of the runs started with a split vote")
    }

    // MARK: - Log replication (§5.3, Figure 7)

    /// Figure 7: the leader of term 8 and six followers whose logs are missing entries (a, b), have extra uncommitted
    /// entries (c, d), or both (e, f). The new leader brings every one of them to its own log.
    @Test func aNewLeaderRepairsEveryFollowerLogShapeOfFigure7() throws {
        let leaderLog: [UInt64] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
        let followers: [[UInt64]] = [
            [1, 1, 1, 4, 4, 5, 5, 6, 6],  // a
            [1, 1, 1, 4],  // b
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  // c
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  // d
            [1, 1, 1, 4, 4, 4, 4],  // e
            [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  // f
        ]
        var cluster = try LockstepCluster(count: 7) { _ in
        } initialState: { id in
            id.rawValue == 1 ? Self.log(leaderLog, hardTerm: 7) : Self.log(followers[Int(id.rawValue) - 2], hardTerm: 7)
        }
        cluster.campaign(Self.n(1))
        cluster.stabilize()
        let leader = try #require(cluster[Self.n(1)])
        #expect(leader.role == .leader)
        #expect(leader.term == Term(8))
        let expected = leaderLog + [8]
        for id in cluster.ids {
            #expect(cluster.logTerms(id) == expected, "follower \(id) was repaired")
            #expect(cluster[id]?.log.committed == LogIndex(11))
        }
        // Fast backtracking: each follower needed at most two rejections, not one per missing entry.
        for id in cluster.ids where id != Self.n(1) {
            let rejections = cluster.delivered.filter { m in
                guard m.from == id, case .appendEntriesResponse(let r) = m.kind else { return false }
                return !r.success
            }
            #expect(rejections.count <= 2, "\(id) rejected \(rejections.count) times")
        }
    }

    @Test func aFollowerNeverTruncatesItsLogForADelayedAppend() throws {
        var follower = try Raft(
            configuration: RaftConfiguration(id: Self.n(2), voters: [Self.n(1), Self.n(2), Self.n(3)]),
            state: Self.log([1, 1, 1], hardTerm: 1))
        // A stale message carrying only entry 2 arrives after entry 3 was appended.
        let stale = AppendEntries(
            prevIndex: LogIndex(1), prevTerm: Term(1),
            entries: [Entry(term: Term(1), index: LogIndex(2), data: [1, 1])],
            commit: .zero)
        follower.step(Message(from: Self.n(1), to: Self.n(2), term: Term(1), kind: .appendEntries(stale)))
        #expect(follower.log.lastIndex == LogIndex(3))
        let answer = follower.ready().messagesAfterPersist.first
        guard case .appendEntriesResponse(let r)? = answer?.kind else {
            Issue.record("no answer")
            return
        }
        #expect(r.success && r.index == LogIndex(2))
    }

    // MARK: - Safety (§5.4, Figure 8)

    /// Figure 8: an entry from an earlier term that is stored on a majority may still be overwritten by a later
    /// leader, so a leader never commits such an entry by counting replicas — only by committing an entry of its
    /// own term after it.
    @Test func anEntryFromAnEarlierTermIsNeverCommittedByCountingReplicasAsInFigure8() throws {
        let s1 = Self.n(1)
        let s2 = Self.n(2)
        let s3 = Self.n(3)
        let s4 = Self.n(4)
        let s5 = Self.n(5)
        // One entry per message, so replication can be stopped between an old entry and the new leader's no-op; and
        // the paper's plain elections (no pre-vote, no leader lease), so that the script decides who campaigns when.
        var cluster = try LockstepCluster(count: 5) { configuration in
            configuration.maxMessageEntries = 1
            configuration.preVote = false
            configuration.checkQuorum = false
        }
        cluster.campaign(s1)
        cluster.stabilize()
        let term1 = try #require(cluster[s1]?.term)

        // (a) S1 leads; its new entry (index 2) reaches only S2.
        cluster.partition([s1, s2])
        try cluster.propose(s1, [0xA])
        cluster.stabilize()
        #expect(cluster.logTerms(s2) == [term1.rawValue, term1.rawValue])

        // (b) S1 crashes; S5 wins a later term with S3 and S4, appends its no-op at index 2, and crashes before
        //     sending it anywhere.
        cluster.crash(s1)
        cluster.partition([s3, s4, s5])
        cluster.drop = { [s2] m in
            if case .appendEntries = m.kind, m.from == s5 { return true }
            return m.from == s2 || m.to == s2
        }
        cluster.campaign(s5)
        cluster.stabilize()
        let term2 = try #require(cluster[s5]?.term)
        #expect(cluster[s5]?.role == .leader)
        #expect(cluster.logTerms(s5) == [term1.rawValue, term2.rawValue])
        cluster.crash(s5)

        // (c) S1 restarts and wins the next term with S2 and S3; it replicates its old entry at index 2 to S3.
        //     Index 2 is now on a majority (S1, S2, S3), but it is from an earlier term: it must not be committed.
        try cluster.restart(s1)
        cluster.heal()
        // (Its first attempt is in S5's term, where S3 and S4 have voted already; the second succeeds.)
        for _ in 0..<3 where cluster[s1]?.role != .leader {
            cluster.campaign(s1)
            cluster.deliver { $0[s1]?.role == .leader }
        }
        #expect(cluster[s1]?.role == .leader)
        #expect(cluster[s1]?.term ?? .zero > term2)
        cluster.drop = { m in m.to == s4 || m.from == s4 }
        // S1's own new entry (its no-op at index 3) reaches no one before S1 crashes: strip it from its messages.
        let term3 = try #require(cluster[s1]?.term)
        cluster.rewrite = { m in
            guard case .appendEntries(var request) = m.kind else { return m }
            request.entries.removeAll { $0.term == term3 }
            return Message(from: m.from, to: m.to, term: m.term, kind: .appendEntries(request))
        }
        let onMajority = cluster.deliver { c in
            c[s1]?.progress(of: s3)?.match == LogIndex(2) && c[s1]?.progress(of: s2)?.match ?? .zero >= LogIndex(2)
        }
        #expect(onMajority)
        #expect(cluster[s1]?.log.committed ?? LogIndex(9) < LogIndex(2), "Raft §5.4.2: not committed by counting")

        // (d) S1 crashes before its own entry commits; S5 returns and wins with S2, S3 and S4 (its last term is
        //     later than theirs) and overwrites index 2. Nothing applied the overwritten entry.
        cluster.crash(s1)
        cluster.heal()
        cluster.rewrite = { $0 }
        try cluster.restart(s5)
        for _ in 0..<3 where cluster[s5]?.role != .leader {
            cluster.campaign(s5)
            cluster.stabilize()
        }
        #expect(cluster[s5]?.role == .leader)
        for id in [s2, s3, s4, s5] {
            #expect(cluster.logTerms(id).prefix(2) == [term1.rawValue, term2.rawValue], "\(id) holds S5's entry")
            #expect(cluster.applied[id]?.contains { $0.index == LogIndex(2) && $0.term == term1 } == false)
        }
    }
}
