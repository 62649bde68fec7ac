import RaftCore
import RaftSimulation
import Testing

/// The pure pieces behind exactly-once proposals: the envelope, the table that refuses copies at apply time, and
/// the proposer's tracker that decides when a proposal is applied, lost, or unknown.
@Suite struct ProposalBookkeepingTests {
    static func header(_ proposer: UInt64, _ incarnation: UInt64, _ sequence: UInt64, floor: UInt64 = 0)
        -> ProposalEnvelope.Header
    {
        let envelope = ProposalEnvelope(
            proposer: NodeID(proposer), incarnation: incarnation, sequence: sequence, floor: floor, command: [1])
        return ProposalEnvelope.Header(decoding: envelope.encoded())!  // safe: a test's own well-formed envelope
    }

    @Test func anEnvelopeSurvivesARoundTripAndGarbageIsNone() throws {
        let envelope = ProposalEnvelope(
            proposer: NodeID(7), incarnation: 1 << 60, sequence: 42, floor: 40, id: "a name", command: [0, 1, 255])
        let decoded = try #require(ProposalEnvelope(decoding: envelope.encoded()))
        #expect(decoded == envelope)
        #expect(ProposalEnvelope.Header(decoding: envelope.encoded())?.identity == envelope.identity)
        for garbage: [UInt8] in [[], [2], [1] + Array(repeating: 0, count: 40), Array(envelope.encoded().prefix(20))] {
            #expect(ProposalEnvelope(decoding: garbage) == nil)
        }
        // An id length that runs past the data.
        var broken = envelope.encoded()
        broken[ProposalEnvelope.headerSize - 2] = 0xFF
        #expect(ProposalEnvelope(decoding: broken) == nil)
    }

    /// Feeds `log` to `sessions` in order; returns each decision.
    static func decisions(_ sessions: inout ProposalSessions, _ log: [(ProposalEnvelope.Header, UInt64)]) -> [Bool] {
        log.map { sessions.admit($0.0, term: Term($0.1)) }
    }

    @Test func aCopyOfAnAppliedProposalIsRefusedEverywhereTheSame() {
        let log =
            [
                (Self.header(1, 9, 1), 1), (Self.header(1, 9, 2), 1), (Self.header(1, 9, 1), 1),
                (Self.header(2, 5, 1), 2),
                (Self.header(1, 9, 2), 2), (Self.header(1, 9, 3), 2),
            ] as [(ProposalEnvelope.Header, UInt64)]
        var a = ProposalSessions()
        var b = ProposalSessions()
        let first = Self.decisions(&a, log)
        #expect(first == [true, true, false, true, false, true])
        // Another node (or this one after a restart) replaying the same log decides the same.
        let second = Self.decisions(&b, log)
        #expect(second == first)
    }

    @Test func aProposalBelowTheFloorIsNeverApplied() {
        // Sequence 5 commits with floor 5: the proposer settled 1...4 (say, 4 timed out), so a late copy of 4 is
        // refused although 4 was never applied.
        var sessions = ProposalSessions()
        let decided = Self.decisions(
            &sessions,
            [
                (Self.header(1, 1, 5, floor: 5), 1), (Self.header(1, 1, 4, floor: 1), 1),
                (Self.header(1, 1, 6, floor: 5), 1),
            ])
        #expect(decided == [true, false, true])
    }

    @Test func aRestartedProposersOldSessionIsForgottenOnlyOnceNoCopyCanCommit() {
        var sessions = ProposalSessions()
        // Node 1 applies a proposal in term 3, restarts (incarnation 200), and its first new proposal commits in
        // term 4. In term 4 a late copy of the old incarnation's proposal can still commit: it is still refused.
        let early = Self.decisions(
            &sessions, [(Self.header(1, 100, 1), 3), (Self.header(1, 200, 1), 4), (Self.header(1, 100, 1), 4)])
        #expect(early == [true, true, false])
        #expect(sessions.count == 2)
        // Once an entry of term 5 is applied, no entry of the old incarnation can follow: its session goes; other
        // proposers' sessions are untouched.
        let later = Self.decisions(&sessions, [(Self.header(1, 200, 2), 5), (Self.header(2, 1, 1), 5)])
        #expect(later == [true, true])
        #expect(sessions.count == 2)
    }

    /// A one-node cluster: a leader at once, so the tracker can be driven without a network.
    static func soloLeader() throws -> Raft {
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(1), voters: [NodeID(1)]))
        raft.campaign()
        try #require(raft.role == .leader)
        return raft
    }

    @Test func aProposalAppliedOnceIsSettledAsAppliedAndTheFloorRises() throws {
        var raft = try Self.soloLeader()
        var tracker = ProposalTracker<String>(proposer: NodeID(1), incarnation: 5)
        let first = tracker.submit([1], waiter: "first")
        let second = tracker.submit([2], waiter: "second")
        let refusals = [tracker.hand(first, to: &raft), tracker.hand(second, to: &raft)]
        #expect(refusals.allSatisfy { $0 == nil })
        var sessions = ProposalSessions()
        var settled: [String] = []
        while raft.hasReady {
            let ready = raft.ready()
            for entry in ready.committedEntries {
                let header = entry.kind == .normal ? ProposalEnvelope.Header(decoding: entry.data) : nil
                let admitted = header.map { sessions.admit($0, term: entry.term) } ?? false
                let outcome = tracker.applied((entry.index, entry.term), envelope: header, admitted: admitted)
                if let (_, waiter) = outcome.settled { settled.append(waiter) }
                #expect(outcome.lost.isEmpty)
            }
            raft.advance(ready)
        }
        #expect(settled == ["first", "second"])
        #expect(tracker.isEmpty)
        // Every later envelope says that 1 and 2 are settled.
        let third = tracker.submit([3], waiter: "third")
        let data = try #require(tracker.entryData(third))
        #expect(ProposalEnvelope.Header(decoding: data)?.floor == 3)
    }

    @Test func everyCopyOvertakenByALaterTermIsProvenLostAndHandedOutAgain() {
        var tracker = ProposalTracker<String>(proposer: NodeID(2), incarnation: 1)
        let p = tracker.submit([9], waiter: "p")
        // Forwarded to node 1 in term 3; then this node applies the no-op of a term-4 leader without seeing p.
        tracker.handed(p, term: Term(3), to: NodeID(1))
        #expect(tracker.mayStillCommit(p))
        let before = tracker.applied((LogIndex(5), Term(3)), envelope: nil, admitted: true)
        #expect(before.lost.isEmpty, "an entry of the same term proves nothing")
        let after = tracker.applied((LogIndex(6), Term(4)), envelope: nil, admitted: true)
        #expect(after.lost == [p])
        #expect(!tracker.mayStillCommit(p))
        // Its deadline passing now is a definite failure, not an unknown outcome.
        guard case .lost? = tracker.settle(p)?.1 else {
            Issue.record("a proposal with no copy left must settle as lost")
            return
        }
    }

    @Test func aProposalThatMayStillCommitSettlesAsUnknownAndOneNeverHandedAsNeverHanded() {
        var tracker = ProposalTracker<Int>(proposer: NodeID(2), incarnation: 1)
        let handed = tracker.submit([1], waiter: 1)
        let waiting = tracker.submit([2], waiter: 2)
        tracker.handed(handed, term: Term(2), to: NodeID(1))
        tracker.awaitLeader(waiting)
        let all = tracker.settleAll()
        #expect(all.count == 2)
        if case .unknown = all[0].1 {} else { Issue.record("a live copy: unknown, got \(all[0].1)") }
        if case .neverHanded = all[1].1 {} else { Issue.record("never handed: definite, got \(all[1].1)") }
    }

    @Test func aNewLeaderOrTermGetsEveryProposalNotYetHandedToIt() throws {
        // Node 2 follows node 1 in term 1 and forwards; node 3 then leads term 2.
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(2), voters: [NodeID(1), NodeID(2), NodeID(3)]))
        raft.step(Message(from: NodeID(1), to: NodeID(2), term: Term(1), kind: .heartbeat(Heartbeat(commit: .zero))))
        let joined = raft.ready()
        raft.advance(joined)
        var tracker = ProposalTracker<Int>(proposer: NodeID(2), incarnation: 1)
        let p = tracker.submit([1], waiter: 1)
        let refusal = tracker.hand(p, to: &raft)
        #expect(refusal == nil)
        let unchanged = tracker.handOutIfLeaderChanged(&raft)
        #expect(unchanged.isEmpty, "the leader it was just handed to")
        let forwarded = raft.ready().messages.filter { if case .propose = $0.kind { true } else { false } }
        #expect(forwarded.map(\.to) == [NodeID(1)])
        // The same leader and term again: nothing to hand out.
        let again = tracker.handOutIfLeaderChanged(&raft)
        #expect(again.isEmpty)
        #expect(!raft.hasReady)
        // A new leader in a new term: p goes to it.
        raft.step(Message(from: NodeID(3), to: NodeID(2), term: Term(2), kind: .heartbeat(Heartbeat(commit: .zero))))
        let vote = raft.ready()
        raft.advance(vote)
        let refused = tracker.handOutIfLeaderChanged(&raft)
        #expect(refused.isEmpty)
        let handedOut = raft.ready()
        let sent = handedOut.messages + handedOut.messagesAfterPersist
        #expect(sent.contains { m in if case .propose = m.kind { m.to == NodeID(3) } else { false } })
    }

    @Test func aResetLinkSendsItsProposalsAgainOncePerReset() {
        var tracker = ProposalTracker<Int>(proposer: NodeID(2), incarnation: 1)
        let p = tracker.submit([1], waiter: 1)
        let q = tracker.submit([2], waiter: 2)
        tracker.handed(p, term: Term(1), to: NodeID(1))
        tracker.handed(q, term: Term(1), to: NodeID(3))
        tracker.linkReset(NodeID(1))
        #expect(tracker.takeRetries() == [p])
        #expect(tracker.takeRetries().isEmpty)
    }
}
