@testable import RaftCore
@testable import RaftLite
import Testing

/// The runtime's pure bookkeeping, apart from any node: how settled proposals fail, and the by-id memory.
@Suite struct ProposalFailureTests {
    typealias Tracker = ProposalTracker<Int>

    @Test func atTheDeadlineOnlyACopyThatMayCommitLeavesTheOutcomeOpen() {
        #expect(ProposalFailure.atDeadline(Tracker.Settlement.neverHanded) == .notLeader(leaderHint: nil))
        #expect(
            ProposalFailure.atDeadline(Tracker.Settlement.lost)
                == .dropped("every copy was overtaken by entries of a later term"))
        #expect(ProposalFailure.atDeadline(Tracker.Settlement.unknown) == .timedOut)
        #expect(ProposalFailure.atDeadline(Tracker.Settlement.applied(LogIndex(3), Term(1))) == .timedOut)
    }

    @Test func aRefusalMapsTheCoreErrorAndNamesTheLeader() {
        func refusal(_ error: ProposalError, _ settlement: Tracker.Settlement = .neverHanded) -> Tracker.Refusal {
            Tracker.Refusal(sequence: 1, waiter: 0, settlement: settlement, error: error)
        }
        let names = { (id: NodeID) -> String? in id == NodeID(2) ? "n2" : nil }
        #expect(
            ProposalFailure.refused(refusal(.notLeader(leaderHint: NodeID(2))), leaderName: names)
                == .notLeader(leaderHint: "n2"))
        #expect(
            ProposalFailure.refused(refusal(.notLeader(leaderHint: NodeID(9))), leaderName: names)
                == .notLeader(leaderHint: nil))
        #expect(
            ProposalFailure.refused(refusal(.notLeader(leaderHint: nil)), leaderName: names)
                == .notLeader(leaderHint: nil))
        #expect(
            ProposalFailure.refused(refusal(.tooLarge(size: 17, limit: 16)), leaderName: names)
                == .tooLarge(size: 17, limit: 16))
        #expect(ProposalFailure.refused(refusal(.empty), leaderName: names) == .invalidProposal("empty proposal"))
        // A copy handed on earlier may still commit, whatever the core says now.
        #expect(
            ProposalFailure.refused(refusal(.tooLarge(size: 17, limit: 16), .unknown), leaderName: names)
                == .timedOut)
        #expect(
            ProposalFailure.refused(refusal(.empty, .lost), leaderName: names) == .invalidProposal("empty proposal"))
    }

    @Test func atStopACopyThatMayCommitIsUnknownAndEveryOtherFailsAsGiven() {
        #expect(ProposalFailure.atStop(Tracker.Settlement.unknown, definite: .stopped) == .stoppedOutcomeUnknown)
        #expect(ProposalFailure.atStop(Tracker.Settlement.neverHanded, definite: .stopped) == .stopped)
        #expect(ProposalFailure.atStop(Tracker.Settlement.lost, definite: .storage("disk")) == .storage("disk"))
    }
}

@Suite struct RememberedByIDTests {
    @Test func forgetsTheFirstRememberedBeyondTheLimit() {
        var memory = RememberedByID<Int>()
        for k in 0..<5 { memory.remember(k, as: "id\(k)", limit: 3) }
        #expect(memory.count == 3)
        #expect(memory["id0"] == nil && memory["id1"] == nil)
        #expect(memory["id2"] == 2 && memory["id3"] == 3 && memory["id4"] == 4)
    }

    @Test func rememberingAnIdAgainReplacesItsValueAndKeepsItsPlace() {
        var memory = RememberedByID<Int>()
        memory.remember(1, as: "a", limit: 2)
        memory.remember(2, as: "b", limit: 2)
        memory.remember(10, as: "a", limit: 2)
        #expect(memory.count == 2 && memory["a"] == 10)
        memory.remember(3, as: "c", limit: 2)
        #expect(memory["a"] == nil && memory["b"] == 2 && memory["c"] == 3)
        // Forgotten, then remembered again: it comes back as the newest.
        memory.remember(4, as: "a", limit: 2)
        #expect(memory["a"] == 4 && memory["b"] == nil && memory["c"] == 3)
    }

    @Test func staysRightAcrossCompactionsOfItsOrder() {
        var memory = RememberedByID<Int>()
        for k in 0..<10_000 { memory.remember(k, as: "id\(k)", limit: 100) }
        #expect(memory.count == 100)
        #expect(memory["id9899"] == nil && memory["id9900"] == 9900 && memory["id9999"] == 9999)
    }
}
