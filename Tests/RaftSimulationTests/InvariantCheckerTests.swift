import RaftCore
import RaftSimulation
import Testing
import RaftTesting

/// The checker is the judge of every simulated schedule: these tests hand it violations made on purpose and expect
/// it to name each one.
@Suite struct InvariantCheckerTests {
    static let voters: Set<NodeID> = [NodeID(1), NodeID(2), NodeID(3)]

    /// A real core, elected leader by votes fed to it by hand: the checker sees exactly what a simulation would.
    static func leader(_ id: UInt64, after state: PersistentState = PersistentState()) throws -> Raft {
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(id), voters: voters), state: state)
        raft.campaign()
        let voter = NodeID(id == 1 ? 2 : 1)
        raft.step(
            Message(
                from: voter, to: raft.id, term: raft.term.next,
                kind: .requestVoteResponse(RequestVoteResponse(preVote: true, granted: true))))
        raft.step(
            Message(
                from: voter, to: raft.id, term: raft.term,
                kind: .requestVoteResponse(RequestVoteResponse(preVote: false, granted: true))))
        try #require(raft.role == .leader)
        return raft
    }

    static func entry(_ index: UInt64, _ term: UInt64, _ data: [UInt8]) -> Entry {
        Entry(term: Term(term), index: LogIndex(index), data: data)
    }

    @Test func twoLeadersInOneTermBreakElectionSafety() throws {
        var checker = InvariantChecker()
        let a = try Self.leader(1)
        let b = try Self.leader(2)
        #expect(a.term == b.term)
        try checker.observe(a.id, a)
        let error = #expect(throws: InvariantViolation.self) { try checker.observe(b.id, b) }
        #expect(error?.invariant == .electionSafety)
    }

    @Test func aLeaderWhoseLogShrinksBreaksLeaderAppendOnly() throws {
        var checker = InvariantChecker()
        var a = try Self.leader(1)
        let before = a
        try a.propose([1])
        try checker.observe(a.id, a)
        let error = #expect(throws: InvariantViolation.self) { try checker.observe(before.id, before) }
        #expect(error?.invariant == .leaderAppendOnly)
    }

    @Test func twoDifferentEntriesWithTheSameIndexAndTermBreakLogMatching() throws {
        var checker = InvariantChecker()
        let log = try Self.leader(1).log
        try checker.observeAppended(NodeID(1), [Self.entry(1, 1, [1])], in: log)
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observeAppended(NodeID(2), [Self.entry(1, 1, [2])], in: log)
        }
        #expect(error?.invariant == .logMatching)
        // The same entry after a different predecessor is caught too.
        try checker.observeAppended(NodeID(1), [Self.entry(2, 1, [3]), Self.entry(3, 2, [4])], in: log)
        let reordered = #expect(throws: InvariantViolation.self) {
            try checker.observeAppended(NodeID(2), [Self.entry(2, 2, [9]), Self.entry(3, 2, [4])], in: log)
        }
        #expect(reordered?.invariant == .logMatching)
    }

    @Test func aNewLeaderMissingACommittedEntryBreaksLeaderCompleteness() throws {
        var checker = InvariantChecker()
        // Node 1 leads term 1 and its no-op is committed; the checker learns of it from a follower's commit index.
        var follower = try Raft(configuration: RaftConfiguration(id: NodeID(2), voters: Self.voters))
        let append = AppendEntries(
            prevIndex: .zero, prevTerm: .zero,
            entries: [Entry(term: Term(1), index: LogIndex(1), kind: .noop)], commit: LogIndex(1))
        follower.step(Message(from: NodeID(1), to: NodeID(2), term: Term(1), kind: .appendEntries(append)))
        #expect(follower.log.committed == LogIndex(1))
        try checker.observe(follower.id, follower)
        // Node 3 becomes leader of term 2 with an empty log.
        let usurper = try Self.leader(3, after: PersistentState(hardState: HardState(term: Term(1))))
        #expect(usurper.term == Term(2))
        let error = #expect(throws: InvariantViolation.self) { try checker.observe(usurper.id, usurper) }
        #expect(error?.invariant == .leaderCompleteness)
    }

    /// A checker that has seen index 1 (term 1) committed, by a follower of node 1.
    static func checkerWithOneCommitted() throws -> InvariantChecker {
        var checker = InvariantChecker()
        var follower = try Raft(configuration: RaftConfiguration(id: NodeID(2), voters: voters))
        let append = AppendEntries(prevIndex: .zero, prevTerm: .zero, entries: [entry(1, 1, [1])], commit: LogIndex(1))
        follower.step(Message(from: NodeID(1), to: NodeID(2), term: Term(1), kind: .appendEntries(append)))
        try #require(follower.log.committed == LogIndex(1))
        try checker.observe(follower.id, follower)
        return checker
    }

    @Test func differentEntriesAppliedAtOneIndexBreakStateMachineSafety() throws {
        var checker = try Self.checkerWithOneCommitted()
        try checker.observeApplied(NodeID(1), [Self.entry(1, 1, [1])], committed: LogIndex(1))
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observeApplied(NodeID(2), [Self.entry(1, 1, [2])], committed: LogIndex(1))
        }
        #expect(error?.invariant == .stateMachineSafety)
        let gap = #expect(throws: InvariantViolation.self) {
            try checker.observeApplied(NodeID(3), [Self.entry(2, 1, [5])], committed: LogIndex(2))
        }
        #expect(gap?.invariant == .stateMachineSafety, "applying index 2 before index 1")
    }

    @Test func applyingWhatIsNotCommittedBreaksDurability() throws {
        var checker = try Self.checkerWithOneCommitted()
        let beyondOwn = #expect(throws: InvariantViolation.self) {
            try checker.observeApplied(NodeID(1), [Self.entry(1, 1, [1])], committed: .zero)
        }
        #expect(beyondOwn?.invariant == .durability, "applied beyond the node's own commit index")
        let otherTerm = #expect(throws: InvariantViolation.self) {
            try checker.observeApplied(NodeID(1), [Self.entry(1, 2, [1])], committed: LogIndex(1))
        }
        #expect(otherTerm?.invariant == .durability, "applied an entry the cluster did not commit there")
        try checker.observeApplied(NodeID(1), [Self.entry(1, 1, [1])], committed: LogIndex(1))
        let beyondCluster = #expect(throws: InvariantViolation.self) {
            try checker.observeApplied(NodeID(1), [Self.entry(2, 1, [2])], committed: LogIndex(2))
        }
        #expect(beyondCluster?.invariant == .durability, "applied beyond what any node committed")
    }

    @Test func aRestartWithACommitIndexTheClusterNeverReachedBreaksDurability() throws {
        var checker = try Self.checkerWithOneCommitted()
        let voters = Self.voters
        let ahead = PersistentState(
            hardState: HardState(term: Term(1), commit: LogIndex(2)),
            entries: [Self.entry(1, 1, [1]), Self.entry(2, 1, [2])])
        let restarted = try Raft(configuration: RaftConfiguration(id: NodeID(3), voters: voters), state: ahead)
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observeRestart(NodeID(3), restarted, applied: .zero)
        }
        #expect(error?.invariant == .durability)
        let other = PersistentState(
            hardState: HardState(term: Term(2), commit: LogIndex(1)), entries: [Self.entry(1, 2, [9])])
        let wrong = try Raft(configuration: RaftConfiguration(id: NodeID(3), voters: voters), state: other)
        let mismatch = #expect(throws: InvariantViolation.self) {
            try checker.observeRestart(NodeID(3), wrong, applied: .zero)
        }
        #expect(mismatch?.invariant == .durability, "restarted with another entry committed at index 1")
        let fine = try Raft(
            configuration: RaftConfiguration(id: NodeID(3), voters: voters),
            state: PersistentState(
                hardState: HardState(term: Term(1), commit: LogIndex(1)),
                entries: [Self.entry(1, 1, [1])]))
        try checker.observeRestart(NodeID(3), fine, applied: .zero)
    }

    @Test func aProposalTakingEffectTwiceOrAfterBeingSettledLostBreaksExactlyOnce() throws {
        var checker = InvariantChecker()
        let a = ProposalIdentity(proposer: NodeID(1), incarnation: 7, sequence: 1)
        let b = ProposalIdentity(proposer: NodeID(1), incarnation: 7, sequence: 2)
        try checker.observeAdmission(NodeID(1), Self.entry(1, 1, []), proposal: a, admitted: true)
        try checker.observeAdmission(NodeID(2), Self.entry(1, 1, []), proposal: a, admitted: true)
        let differently = #expect(throws: InvariantViolation.self) {
            try checker.observeAdmission(NodeID(3), Self.entry(1, 1, []), proposal: a, admitted: false)
        }
        #expect(differently?.invariant == .exactlyOnce, "two nodes decided differently at one index")
        // A copy of `a` refused at index 2 is fine; admitted at index 3, it took effect twice.
        try checker.observeAdmission(NodeID(1), Self.entry(2, 1, []), proposal: a, admitted: false)
        #expect(checker.duplicatesRefused == 1)
        let twice = #expect(throws: InvariantViolation.self) {
            try checker.observeAdmission(NodeID(1), Self.entry(3, 1, []), proposal: a, admitted: true)
        }
        #expect(twice?.invariant == .exactlyOnce)
        // `b` settled as lost must never take effect; `a` settled as applied elsewhere than where it took effect is
        // caught too.
        try checker.observeSettled(b, ProposalTracker<Void>.Settlement.lost)
        let afterLost = #expect(throws: InvariantViolation.self) {
            try checker.observeAdmission(NodeID(1), Self.entry(4, 2, []), proposal: b, admitted: true)
        }
        #expect(afterLost?.invariant == .exactlyOnce)
        let wrongIndex = #expect(throws: InvariantViolation.self) {
            try checker.observeSettled(a, ProposalTracker<Void>.Settlement.applied(LogIndex(9), Term(1)))
        }
        #expect(wrongIndex?.invariant == .exactlyOnce)
        try checker.observeSettled(a, ProposalTracker<Void>.Settlement.applied(LogIndex(1), Term(1)))
    }

    @Test func acknowledgingOrVotingBeforeTheWriteBreaksDurability() throws {
        let checker = InvariantChecker()
        let empty = PersistentState()
        let ack = Message(
            from: NodeID(2), to: NodeID(1), term: Term(1),
            kind: .appendEntriesResponse(AppendEntriesResponse(success: true, index: LogIndex(3))))
        #expect(throws: InvariantViolation.self) { try checker.observeSent(ack, durable: empty) }
        let vote = Message(
            from: NodeID(2), to: NodeID(1), term: Term(1),
            kind: .requestVoteResponse(RequestVoteResponse(preVote: false, granted: true)))
        #expect(throws: InvariantViolation.self) { try checker.observeSent(vote, durable: empty) }
        let stored = PersistentState(hardState: HardState(term: Term(1), votedFor: NodeID(1)))
        try checker.observeSent(vote, durable: stored)
    }

    @Test func aCorrectRunPassesEveryCheck() throws {
        var checker = InvariantChecker()
        var cluster = try LockstepCluster(count: 3)
        cluster.campaign(NodeID(1))
        cluster.stabilize()
        for k in 0..<5 { try cluster.propose(NodeID(1), [UInt8(k)]) }
        cluster.stabilize()
        for id in cluster.ids {
            let raft = try #require(cluster[id])
            try checker.observe(id, raft)
            try checker.observeApplied(id, cluster.applied[id] ?? [], committed: raft.log.committed)
        }
        #expect(checker.highestCommitted == LogIndex(6))
        #expect(checker.highestApplied == LogIndex(6))
    }
}
