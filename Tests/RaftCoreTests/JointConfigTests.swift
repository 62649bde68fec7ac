import RaftCore
import Testing

/// Joint majorities on their own, on the cases etcd's `quorum` package covers: empty configurations, a joint
/// configuration with an empty half, halves that overlap, halves that are disjoint, and ties.
@Suite struct JointConfigTests {
    static func ids(_ raw: UInt64...) -> Set<NodeID> { Set(raw.map { NodeID($0) }) }

    /// Match indexes by node id (absent means zero).
    static func matches(_ pairs: [UInt64: UInt64]) -> (NodeID) -> LogIndex {
        { LogIndex(pairs[$0.rawValue] ?? 0) }
    }

    static func votes(_ pairs: [UInt64: Bool]) -> [NodeID: Bool] {
        Dictionary(uniqueKeysWithValues: pairs.map { (NodeID($0.key), $0.value) })
    }

    // MARK: - Committed index

    @Test func anEmptyConfigurationCommitsNothing() {
        let empty = JointConfig([])
        #expect(empty.committedIndex(Self.matches([1: 5])) == .zero)
        #expect(!empty.isJoint)
    }

    @Test func anEmptyOutgoingHalfDecidesLikeTheIncomingMajority() {
        let joint = JointConfig(Self.ids(1, 2, 3))
        let majority = MajorityConfig(Self.ids(1, 2, 3))
        for m in [[1: 5, 2: 4, 3: 3], [1: 9], [:], [2: 7, 3: 7], [1: 1, 2: 2, 3: 3]] as [[UInt64: UInt64]] {
            #expect(joint.committedIndex(Self.matches(m)) == majority.committedIndex(Self.matches(m)))
        }
        // An empty incoming half with a non-empty outgoing one: the outgoing majority alone decides.
        let onlyOutgoing = JointConfig([], outgoing: Self.ids(1, 2, 3))
        #expect(onlyOutgoing.committedIndex(Self.matches([1: 5, 2: 4, 3: 3])) == LogIndex(4))
    }

    @Test func disjointHalvesCommitTheSmallerOfTheirIndexes() {
        let joint = JointConfig(Self.ids(1, 2, 3), outgoing: Self.ids(4, 5, 6))
        #expect(joint.isJoint)
        // Incoming majority holds 100; outgoing majority holds 15.
        let m = Self.matches([1: 100, 2: 101, 3: 99, 4: 10, 5: 20, 6: 15])
        #expect(joint.committedIndex(m) == LogIndex(15))
        // One half with nothing: nothing commits.
        #expect(joint.committedIndex(Self.matches([1: 100, 2: 101, 3: 99])) == .zero)
    }

    @Test func overlappingHalvesCountASharedVoterInEach() {
        // Replacing 1 by 4: {1,2,3} → {2,3,4}.
        let joint = JointConfig(Self.ids(2, 3, 4), outgoing: Self.ids(1, 2, 3))
        // 2 and 3 hold 7: a majority of both halves.
        #expect(joint.committedIndex(Self.matches([2: 7, 3: 7])) == LogIndex(7))
        // 1 and 4 hold 9, 2 holds 8, 3 holds 5: incoming {4:9, 2:8, 3:5} → 8; outgoing {1:9, 2:8, 3:5} → 8.
        #expect(joint.committedIndex(Self.matches([1: 9, 2: 8, 3: 5, 4: 9])) == LogIndex(8))
        // 4 is far behind: incoming {2:8, 3:5, 4:1} → 5; outgoing {1:9, 2:8, 3:5} → 8; joint 5.
        #expect(joint.committedIndex(Self.matches([1: 9, 2: 8, 3: 5, 4: 1])) == LogIndex(5))
        // The same voters in both halves decide as one majority.
        let same = JointConfig(Self.ids(1, 2, 3), outgoing: Self.ids(1, 2, 3))
        #expect(same.committedIndex(Self.matches([1: 3, 2: 2, 3: 1])) == LogIndex(2))
    }

    @Test func tiesInAnEvenHalfNeedMoreThanHalf() {
        // Four voters need three: two at 5 and two at 3 commit only 3.
        let joint = JointConfig(Self.ids(1, 2, 3, 4), outgoing: Self.ids(1, 2))
        #expect(joint.committedIndex(Self.matches([1: 5, 2: 5, 3: 3, 4: 3])) == LogIndex(3))
        // The two-voter outgoing half needs both.
        #expect(joint.committedIndex(Self.matches([1: 5, 2: 1, 3: 5, 4: 5])) == LogIndex(1))
    }

    // MARK: - Votes

    @Test func anEmptyConfigurationWinsNoElection() {
        #expect(JointConfig([]).voteResult([:]) == .lost)
        #expect(JointConfig([]).voteResult(Self.votes([1: true])) == .lost)
    }

    @Test func aJointElectionNeedsBothHalves() {
        let joint = JointConfig(Self.ids(1, 2, 3), outgoing: Self.ids(4, 5, 6))
        #expect(joint.voteResult([:]) == .pending)
        // Incoming won, outgoing pending: pending.
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 4: true])) == .pending)
        // Both won.
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 4: true, 6: true])) == .won)
        // Incoming won, outgoing lost: lost.
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 3: true, 4: false, 5: false])) == .lost)
        // Incoming lost, outgoing pending: lost (nothing the outgoing half says can save it).
        #expect(joint.voteResult(Self.votes([1: false, 2: false, 4: true])) == .lost)
    }

    @Test func aSharedVoterVotesInBothHalves() {
        let joint = JointConfig(Self.ids(2, 3, 4), outgoing: Self.ids(1, 2, 3))
        #expect(joint.voteResult(Self.votes([2: true, 3: true])) == .won)
        #expect(joint.voteResult(Self.votes([2: false, 3: false])) == .lost)
        #expect(joint.voteResult(Self.votes([1: true, 4: true])) == .pending)
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 4: false, 3: false])) == .lost)
    }

    @Test func aTieInAnEvenHalfIsLostOnlyWhenAMajorityIsOutOfReach() {
        let joint = JointConfig(Self.ids(1, 2, 3, 4))
        #expect(joint.voteResult(Self.votes([1: true, 2: true])) == .pending)
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 3: false])) == .pending)
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 3: false, 4: false])) == .lost)
        #expect(joint.voteResult(Self.votes([1: true, 2: true, 3: true, 4: false])) == .won)
    }

    @Test func quorumActivityNeedsBothHalves() {
        let joint = JointConfig(Self.ids(1, 2, 3), outgoing: Self.ids(3, 4, 5))
        #expect(joint.hasQuorum { [1, 2, 3, 4].contains($0.rawValue) })
        #expect(!joint.hasQuorum { [1, 2, 3].contains($0.rawValue) })
        #expect(!JointConfig([]).hasQuorum { _ in true })
    }

    // MARK: - Against the definition

    /// For random configurations over six nodes and random match indexes and votes, the joint answers equal what
    /// the definitions say: the committed index is the largest index that every non-empty half holds on a
    /// majority; an election is won when every non-empty half has a granting majority, and lost when some half
    /// can no longer reach one (or no half takes part).
    @Test func jointDecisionsMatchTheirDefinitions() {
        var random = SplitMix64(seed: 11)
        let universe = (1...6).map { NodeID(UInt64($0)) }
        for _ in 0..<2_000 {
            let incoming = Set(universe.filter { _ in random.next() % 2 == 0 })
            let outgoing = Set(universe.filter { _ in random.next() % 3 == 0 })
            let joint = JointConfig(incoming, outgoing: outgoing)
            let halves = [incoming, outgoing].filter { !$0.isEmpty }
            var match: [NodeID: LogIndex] = [:]
            var votes: [NodeID: Bool] = [:]
            for id in universe {
                if random.next() % 4 != 0 { match[id] = LogIndex(random.next() % 6) }
                switch random.next() % 3 {
                case 0: votes[id] = true
                case 1: votes[id] = false
                default: break
                }
            }
            let matchOf = { (id: NodeID) in match[id] ?? .zero }

            var expectedCommit = LogIndex.zero
            if !halves.isEmpty {
                for candidate in 0...6 {
                    let index = LogIndex(UInt64(candidate))
                    let held = halves.allSatisfy { half in
                        half.filter { matchOf($0) >= index }.count >= half.count / 2 + 1
                    }
                    if held { expectedCommit = max(expectedCommit, index) }
                }
            }
            #expect(joint.committedIndex(matchOf) == expectedCommit, "\(incoming) \(outgoing) \(match)")

            let expectedVote: VoteResult
            let won = halves.allSatisfy { h in h.filter { votes[$0] == true }.count >= h.count / 2 + 1 }
            let outOfReach = halves.contains { h in h.filter { votes[$0] != false }.count < h.count / 2 + 1 }
            if halves.isEmpty || outOfReach {
                expectedVote = .lost
            } else if won {
                expectedVote = .won
            } else {
                expectedVote = .pending
            }
            #expect(joint.voteResult(votes) == expectedVote, "\(incoming) \(outgoing) \(votes)")
        }
    }
}
