@testable import RaftCore
import Testing

/// The log, progress and quorum pieces on their own.
@Suite struct LogTests {
    static func entries(_ terms: [UInt64], from first: UInt64 = 1) -> [Entry] {
        terms.enumerated().map { k, t in Entry(term: Term(t), index: LogIndex(first + UInt64(k)), data: [UInt8(k)]) }
    }

    static func log(_ terms: [UInt64], committed: UInt64 = 0) -> RaftLog {
        RaftLog(
            snapshotIndex: .zero, snapshotTerm: .zero, entries: entries(terms), committed: LogIndex(committed),
            applied: .zero)
    }

    @Test func appendingTheLeadersEntriesCutsOnlyAtTheFirstConflict() {
        var log = Self.log([1, 1, 2, 2])
        // Entries 3 and 4 (term 2) conflict with the leader's entries of term 3 from index 3 on.
        let outcome = log.append(after: LogIndex(2), prevTerm: Term(1), entries: Self.entries([3, 3, 3], from: 3))
        #expect(outcome == .appended(lastNewIndex: LogIndex(5)))
        #expect((1...5).map { log.term(at: LogIndex(UInt64($0)))?.rawValue } == [1, 1, 3, 3, 3])
    }

    @Test func entriesTheLogAlreadyHoldsAreNotRewritten() {
        var log = Self.log([1, 1, 2, 2])
        _ = log.takeUnpersisted()
        log.persisted(upTo: LogIndex(4), term: Term(2))
        let outcome = log.append(after: LogIndex(1), prevTerm: Term(1), entries: Self.entries([1, 2], from: 2))
        #expect(outcome == .appended(lastNewIndex: LogIndex(3)))
        #expect(log.lastIndex == LogIndex(4))
        #expect(!log.hasUnpersisted, "nothing new to write")
    }

    @Test func theConsistencyCheckRefusesEntriesThatDoNotFollowAHeldEntry() {
        var log = Self.log([1, 1, 2])
        #expect(log.append(after: LogIndex(3), prevTerm: Term(1), entries: []) == .mismatch)
        #expect(log.append(after: LogIndex(7), prevTerm: Term(2), entries: []) == .mismatch)
        #expect(log.lastIndex == LogIndex(3))
    }

    @Test func committedEntriesAreNeverTruncated() {
        var log = Self.log([1, 1, 2], committed: 3)
        let outcome = log.append(after: LogIndex(1), prevTerm: Term(1), entries: Self.entries([3, 3], from: 2))
        #expect(outcome == .conflictsWithCommitted(LogIndex(2)))
        #expect(log.lastTerm == Term(2))
    }

    @Test func truncationPullsTheDurabilityMarksBack() {
        var log = Self.log([])
        _ = log.append(after: .zero, prevTerm: .zero, entries: Self.entries([1, 1, 1, 1]))
        #expect(log.takeUnpersisted().count == 4)
        log.persisted(upTo: LogIndex(4), term: Term(1))
        #expect(log.stable == LogIndex(4))
        _ = log.append(after: LogIndex(2), prevTerm: Term(1), entries: Self.entries([2], from: 3))
        #expect(log.stable == LogIndex(2))
        #expect(log.handedOut == LogIndex(2))
        #expect(log.takeUnpersisted().map(\.index) == [LogIndex(3)])
        // A late acknowledgement of the overwritten write changes nothing.
        log.persisted(upTo: LogIndex(4), term: Term(1))
        #expect(log.stable == LogIndex(2))
        log.persisted(upTo: LogIndex(3), term: Term(2))
        #expect(log.stable == LogIndex(3))
    }

    @Test func onlyEntriesHandedOutForPersistingAreHandedOutForApplying() {
        var log = Self.log([])
        _ = log.append(after: .zero, prevTerm: .zero, entries: Self.entries([1, 1, 1]))
        log.commit(to: LogIndex(3))
        #expect(log.takeCommitted().isEmpty)
        _ = log.takeUnpersisted()
        #expect(log.takeCommitted().map(\.index) == [LogIndex(1), LogIndex(2), LogIndex(3)])
        #expect(log.takeCommitted().isEmpty)
    }

    @Test func theCommitIndexNeverMovesBackOrPastTheEnd() {
        var log = Self.log([1, 1, 1])
        log.commit(to: LogIndex(2))
        log.commit(to: LogIndex(1))
        #expect(log.committed == LogIndex(2))
        log.commit(to: LogIndex(99))
        #expect(log.committed == LogIndex(3))
    }

    @Test func findsTheLastIndexWithATermAtMostAGivenOne() {
        let log = Self.log([1, 1, 4, 4, 5, 5, 6])
        #expect(log.lastIndex(atOrBelow: LogIndex(7), withTermAtMost: Term(5)) == (LogIndex(6), Term(5)))
        #expect(log.lastIndex(atOrBelow: LogIndex(7), withTermAtMost: Term(3)) == (LogIndex(2), Term(1)))
        #expect(log.lastIndex(atOrBelow: LogIndex(99), withTermAtMost: Term(9)) == (LogIndex(7), Term(6)))
        #expect(log.lastIndex(atOrBelow: LogIndex(5), withTermAtMost: Term(0)) == (LogIndex(0), Term(0)))
    }

    @Test func slicesRespectTheByteAndCountLimitsButAlwaysCarryOneEntry() {
        let log = RaftLog(
            snapshotIndex: .zero, snapshotTerm: .zero,
            entries: (1...10).map {
                Entry(term: Term(1), index: LogIndex(UInt64($0)), data: Array(repeating: 0, count: 100))
            },
            committed: .zero, applied: .zero)
        #expect(log.entries(from: LogIndex(1), maxBytes: 1 << 20, maxCount: 4).count == 4)
        #expect(log.entries(from: LogIndex(1), maxBytes: 3 * 124, maxCount: 100).count == 3)
        #expect(log.entries(from: LogIndex(1), maxBytes: 1, maxCount: 100).count == 1)
        #expect(log.entries(from: LogIndex(9), maxBytes: 1 << 20, maxCount: 100).count == 2)
        #expect(log.entries(from: LogIndex(11), maxBytes: 1 << 20, maxCount: 100).isEmpty)
    }
}

@Suite struct ProgressTests {
    @Test func aProbeWaitsForItsAnswerThenTheFollowerIsReplicated() {
        var pr = Progress(next: LogIndex(5), maxInflight: 2)
        #expect(!pr.isPaused)
        pr.sent(entriesThrough: LogIndex(6))
        #expect(pr.isPaused, "one probe at a time")
        let updated = pr.update(match: LogIndex(6))
        #expect(updated)
        pr.becomeReplicate()
        #expect(pr.next == LogIndex(7))
        pr.sent(entriesThrough: LogIndex(8))
        pr.sent(entriesThrough: LogIndex(9))
        #expect(pr.isPaused, "the window of two is full")
        let acknowledged = pr.update(match: LogIndex(8))
        #expect(acknowledged)
        pr.inflights.free(upTo: LogIndex(8))
        #expect(!pr.isPaused)
        #expect(pr.next == LogIndex(10))
    }

    @Test func staleRejectionsAreIgnored() {
        var pr = Progress(next: LogIndex(10), maxInflight: 4)
        pr.match = LogIndex(5)
        pr.becomeReplicate()
        let belowMatch = pr.backOff(rejected: LogIndex(4), matchHint: LogIndex(2))
        #expect(!belowMatch, "at or below the match: stale")
        let fresh = pr.backOff(rejected: LogIndex(7), matchHint: LogIndex(7))
        #expect(fresh)
        #expect(pr.next == LogIndex(6))
        pr.becomeProbe()
        pr.sent(entriesThrough: LogIndex(6))
        let older = pr.backOff(rejected: LogIndex(3), matchHint: LogIndex(3))
        #expect(!older, "answers an older probe: only a rejection of next - 1 counts")
        let latest = pr.backOff(rejected: LogIndex(5), matchHint: LogIndex(2))
        #expect(latest)
        // Rejecting the very entry it acknowledged (the match) means the follower lost its log: start over from its
        // hint instead of probing the same index forever.
        #expect(pr.match == LogIndex(2))
        #expect(pr.next == LogIndex(3))
    }

    @Test func aRejectedProbeSkipsToTheHintButNeverBelowTheMatch() {
        var pr = Progress(next: LogIndex(20), maxInflight: 4)
        pr.sent(entriesThrough: LogIndex(20))
        let backedOff = pr.backOff(rejected: LogIndex(19), matchHint: LogIndex(7))
        #expect(backedOff)
        #expect(pr.next == LogIndex(8))
        #expect(!pr.isPaused)
    }

    @Test func theInflightRingWrapsAround() {
        var inflights = Inflights(capacity: 3)
        for k: UInt64 in 1...3 { inflights.add(LogIndex(k * 10)) }
        #expect(inflights.isFull)
        inflights.free(upTo: LogIndex(15))
        #expect(inflights.count == 2)
        inflights.add(LogIndex(40))
        inflights.free(upTo: LogIndex(30))
        #expect(inflights.count == 1)
        inflights.freeFirst()
        #expect(inflights.count == 0)
    }
}

@Suite struct QuorumTests {
    let ids = (1...5).map { NodeID(UInt64($0)) }

    @Test func theCommittedIndexIsTheOneAMajorityHolds() {
        let config = MajorityConfig(Set(ids))
        let match: [NodeID: UInt64] = [ids[0]: 9, ids[1]: 7, ids[2]: 3, ids[3]: 8]
        #expect(config.committedIndex { LogIndex(match[$0] ?? 0) } == LogIndex(7))
        #expect(MajorityConfig([ids[0]]).committedIndex { _ in LogIndex(4) } == LogIndex(4))
        #expect(MajorityConfig([]).committedIndex { _ in LogIndex(4) } == .zero)
    }

    @Test func electionsAreWonLostOrPending() {
        let config = MajorityConfig(Set(ids))
        #expect(config.voteResult([ids[0]: true, ids[1]: true]) == .pending)
        #expect(config.voteResult([ids[0]: true, ids[1]: true, ids[2]: true]) == .won)
        #expect(config.voteResult([ids[0]: true, ids[1]: false, ids[2]: false, ids[3]: false]) == .lost)
        // Votes from outside the configuration do not count.
        #expect(config.voteResult([NodeID(9): true, NodeID(8): true, ids[0]: true]) == .pending)
    }
}
