import RaftCore
import Testing

/// What the proposer's tracker does when its node catches up through a snapshot, which covers entries it will never
/// see applied one by one.
@Suite struct ProposalTrackerSnapshotTests {
    @Test func proposalsTheSnapshotAppliedAreSettledAndThoseItProvesLostGoAgain() {
        var tracker = ProposalTracker<String>(proposer: NodeID(2), incarnation: 1)
        let applied = tracker.submit([1], waiter: "applied")
        let lost = tracker.submit([2], waiter: "lost")
        let live = tracker.submit([3], waiter: "still live")
        let waiting = tracker.submit([4], waiter: "never handed")
        tracker.handed(applied, term: Term(2), to: NodeID(1))
        tracker.handed(lost, term: Term(2), to: NodeID(1))
        tracker.handed(live, term: Term(3), to: NodeID(1))
        #expect(tracker[waiting] != nil)
        // The snapshot ends at an entry of term 3 and its sessions table holds `applied` as applied.
        let outcome = tracker.snapshotRestored(term: Term(3)) { $0 == applied }
        #expect(outcome.applied.map(\.sequence) == [applied])
        #expect(outcome.applied.map(\.waiter) == ["applied"])
        // A copy handed out in term 2 cannot follow an entry of term 3: lost. One of term 3 may still commit.
        #expect(outcome.lost == [lost])
        #expect(tracker.mayStillCommit(live))
        #expect(!tracker.mayStillCommit(lost))
        #expect(tracker.count == 3)
        // The floor moved past the settled proposal: the next envelope promises it is settled.
        let next = tracker.entryData(lost).flatMap(ProposalEnvelope.Header.init(decoding:))
        #expect(next?.floor == lost)
    }

    @Test func aSnapshotOfAnOlderTermProvesNothingLost() {
        var tracker = ProposalTracker<Int>(proposer: NodeID(2), incarnation: 1, appliedTerm: Term(4))
        let p = tracker.submit([1], waiter: 1)
        tracker.handed(p, term: Term(4), to: NodeID(1))
        let outcome = tracker.snapshotRestored(term: Term(3)) { _ in false }
        #expect(outcome.applied.isEmpty)
        #expect(outcome.lost.isEmpty)
        #expect(tracker.mayStillCommit(p))
    }
}
