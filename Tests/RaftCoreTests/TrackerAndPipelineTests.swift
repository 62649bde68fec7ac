@testable import RaftCore
import Testing

/// The progress tracker on its own.
@Suite struct ProgressTrackerTests {
    let me = NodeID(2)
    let voters: Set<NodeID> = [NodeID(1), NodeID(2), NodeID(3)]

    @Test func peersAreEveryOtherMemberInOrderAndLearnersDoNotVote() {
        let tracker = ProgressTracker(id: me, voters: JointConfig(voters), learners: [NodeID(9), NodeID(4)])
        #expect(tracker.peers == [NodeID(1), NodeID(3), NodeID(4), NodeID(9)])
        #expect(tracker.isMember(NodeID(9)) && !tracker.isVoter(NodeID(9)))
        #expect(tracker.isVoter(me) && !tracker.isMember(NodeID(5)))
        // A node named as both voter and learner is a voter.
        let both = ProgressTracker(id: me, voters: JointConfig(voters), learners: [NodeID(1)])
        #expect(both.learners.isEmpty && both.isVoter(NodeID(1)))
    }

    @Test func theCommittedIndexCountsThisNodeAsItsOwnDurableLog() {
        var tracker = ProgressTracker(id: me, voters: JointConfig(voters))
        tracker.resetProgress(next: LogIndex(1), maxInflight: 4)
        #expect(tracker.committedIndex(own: LogIndex(5)) == .zero)
        tracker.update(NodeID(3)) { _ = $0.update(match: LogIndex(4)) }
        #expect(tracker.committedIndex(own: LogIndex(5)) == LogIndex(4))
        #expect(tracker.committedIndex(own: LogIndex(2)) == LogIndex(2))
        // A learner's copy counts for nothing.
        var withLearner = ProgressTracker(id: me, voters: JointConfig(voters), learners: [NodeID(7)])
        withLearner.resetProgress(next: LogIndex(1), maxInflight: 4)
        withLearner.update(NodeID(7)) { _ = $0.update(match: LogIndex(9)) }
        #expect(withLearner.committedIndex(own: LogIndex(9)) == .zero)
    }

    @Test func quorumActivityIsJudgedPerPeriod() {
        var tracker = ProgressTracker(id: me, voters: JointConfig(voters))
        tracker.resetProgress(next: LogIndex(1), maxInflight: 4)
        // A new leader gives every follower a whole period.
        let first = tracker.quorumActive()
        #expect(first)
        let second = tracker.quorumActive()
        #expect(!second)
        tracker.update(NodeID(1)) { $0.recentActive = true }
        let third = tracker.quorumActive()
        #expect(third)
    }

    @Test func theFirstAnswerOfAVoterCounts() {
        var tracker = ProgressTracker(id: me, voters: JointConfig(voters))
        #expect(tracker.recordVote(from: me, granted: true) == .pending)
        #expect(tracker.recordVote(from: NodeID(1), granted: false) == .pending)
        // A repeated answer, even a different one, changes nothing.
        #expect(tracker.recordVote(from: NodeID(1), granted: true) == .pending)
        #expect(tracker.recordVote(from: NodeID(3), granted: true) == .won)
        tracker.resetVotes()
        #expect(tracker.voteResult == .pending)
    }
}

/// The ordered write pipeline on its own, on a real core.
@Suite struct ReadyPipelineTests {
    static func leader(of voters: [UInt64]) throws -> Raft {
        let ids = Set(voters.map { NodeID($0) })
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(1), voters: ids, preVote: false))
        raft.campaign()
        // The candidacy is durable before its vote requests go out, so before any vote can come back.
        raft.advance(raft.ready())
        for peer in voters.dropFirst() {
            raft.step(
                Message(
                    from: NodeID(peer), to: NodeID(1), term: raft.term,
                    kind: .requestVoteResponse(RequestVoteResponse(preVote: false, granted: true))))
        }
        return raft
    }

    @Test func aReadyWithNothingToWriteAndNothingAheadIsDurableAtOnce() throws {
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(1), voters: [NodeID(1)]))
        var pipeline = ReadyPipeline()
        raft.campaign()
        #expect(raft.role == .leader)
        // Term, vote and the leader's no-op: a write.
        let taken = pipeline.take(from: &raft)
        let first = try #require(taken)
        let write = try #require(first.write)
        #expect(write.hardState?.term == raft.term && write.entries.map(\.kind) == [.noop])
        #expect(first.durable.isEmpty && pipeline.writesInProgress == 1)
        let none = pipeline.take(from: &raft)
        #expect(none == nil)
        // Once durable, the core is told: the no-op commits, and its application needs no write.
        let durable = pipeline.writeCompleted(&raft)
        #expect(durable.count == 1 && raft.log.stable == LogIndex(1) && raft.log.committed == LogIndex(1))
        let taken2 = pipeline.take(from: &raft)
        let second = try #require(taken2)
        #expect(second.write == nil && second.durable.map { $0.committedEntries.map(\.index) } == [[LogIndex(1)]])
        #expect(pipeline.isIdle)
        // Nothing in progress: a completion report is ignored.
        let ignored = pipeline.writeCompleted(&raft)
        #expect(ignored.isEmpty)
    }

    @Test func messagesGoAtOnceAndWhatPromisesDurabilityWaitsForTheWrite() throws {
        var raft = try Raft(
            configuration: RaftConfiguration(
                id: NodeID(1), voters: [NodeID(1), NodeID(2), NodeID(3)], preVote: false))
        var pipeline = ReadyPipeline()
        raft.campaign()
        let taken = pipeline.take(from: &raft)
        let step = try #require(taken)
        // Vote requests promise the candidate's durable vote: they wait.
        #expect(step.messages.isEmpty && step.write?.hardState?.votedFor == NodeID(1) && step.durable.isEmpty)
        let durable = pipeline.writeCompleted(&raft)
        #expect(durable.flatMap(\.messagesAfterPersist).count == 2)
    }

    @Test func aReadyWithNothingToWriteWaitsForTheWritesAheadOfIt() throws {
        var raft = try Self.leader(of: [1, 2, 3])
        var pipeline = ReadyPipeline()
        // The leader's term, vote and no-op: write 1. Its appends go at once.
        let taken = pipeline.take(from: &raft)
        let first = try #require(taken)
        #expect(first.write != nil && !first.messages.isEmpty)
        // Both followers acknowledge the no-op before the leader's own write is done: it commits (thesis §10.2.1),
        // but may be applied only once the leader's write is durable.
        for peer in [UInt64(2), 3] {
            raft.step(
                Message(
                    from: NodeID(peer), to: NodeID(1), term: raft.term,
                    kind: .appendEntriesResponse(AppendEntriesResponse(success: true, index: LogIndex(1)))))
        }
        #expect(raft.log.committed == LogIndex(1))
        var readiesBehind = 0
        while let step = pipeline.take(from: &raft) {
            #expect(step.write == nil && step.durable.isEmpty)
            readiesBehind += 1
        }
        #expect(readiesBehind >= 1 && pipeline.writesInProgress == 1 && !pipeline.isIdle)
        let durable = pipeline.writeCompleted(&raft)
        #expect(durable.count >= 2)
        #expect(durable.flatMap(\.committedEntries).map(\.index) == [LogIndex(1)])
        #expect(pipeline.isIdle)
    }

    @Test func writesCompleteInTheOrderTheyWereStarted() throws {
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(1), voters: [NodeID(1)]))
        var pipeline = ReadyPipeline()
        raft.campaign()
        var writes: [ReadyPipeline.Write] = []
        if let w = pipeline.take(from: &raft)?.write { writes.append(w) }
        for command in ["a", "b"] {
            try raft.propose(Array(command.utf8))
            if let w = pipeline.take(from: &raft)?.write { writes.append(w) }
        }
        #expect(writes.count == 3 && pipeline.writesInProgress == 3)
        let one = pipeline.writeCompleted(&raft)
        #expect(one.flatMap(\.entries).map(\.index) == [LogIndex(1)])
        #expect(raft.log.stable == LogIndex(1))
        let two = pipeline.writeCompleted(&raft)
        #expect(two.flatMap(\.entries).map(\.index) == [LogIndex(2)])
        #expect(raft.log.stable == LogIndex(2))
        pipeline.reset()
        #expect(pipeline.isIdle && pipeline.writesInProgress == 0)
    }
}
