import RaftCore
import RaftTesting
import Testing

private func n(_ k: UInt64) -> NodeID { NodeID(k) }
private func ids(_ ks: UInt64...) -> Set<NodeID> { Set(ks.map(NodeID.init)) }

private let three = Membership(voters: ids(1, 2, 3))

private func change(_ steps: ConfigChange.Step..., transition: ConfigChange.Transition = .auto) -> ConfigChange {
    ConfigChange(steps, transition: transition)
}

private func applied(_ change: ConfigChange, to membership: Membership = three) throws -> Membership {
    try change.applied(to: membership).get()
}

/// The reason an invalid change gives, or nil if it applied.
private func refusal(_ change: ConfigChange, to membership: Membership = three) -> MembershipError? {
    if case .failure(let error) = change.applied(to: membership) { return error }
    return nil
}

/// Every transition of `ConfigChange.applied(to:)`, and the reasons invalid changes give.
@Suite struct ConfigChangeApplicationTests {
    @Test func addingAVoterEntersAJointConfigurationThatLeavesItselfOrWaits() throws {
        let auto = try applied(change(.init(.addVoter, n(4))))
        #expect(auto.voters == ids(1, 2, 3, 4))
        #expect(auto.outgoing == ids(1, 2, 3))
        #expect(auto.isJoint && auto.autoLeave)
        #expect(auto.description == "voters=(n1,n2,n3,n4)&&(n1,n2,n3) autoleave")
        let explicit = try applied(change(.init(.addVoter, n(4)), transition: .explicit))
        #expect(explicit.isJoint && !explicit.autoLeave)
        #expect(explicit.description == "voters=(n1,n2,n3,n4)&&(n1,n2,n3)")
        // Leaving keeps the incoming voters only.
        let left = try applied(.leaveJoint, to: explicit)
        #expect(left == Membership(voters: ids(1, 2, 3, 4)))
        #expect(try applied(.leaveJoint, to: auto) == left, "leaving clears the auto-leave flag too")
    }

    @Test func aSimpleChangeOfOneVoterTakesEffectDirectly() throws {
        #expect(try applied(change(.init(.addVoter, n(4)), transition: .simple)) == Membership(voters: ids(1, 2, 3, 4)))
        #expect(try applied(change(.init(.remove, n(3)), transition: .simple)) == Membership(voters: ids(1, 2)))
        // One voter and any number of learners.
        let mixed = try applied(change(.init(.addVoter, n(4)), .init(.addLearner, n(5)), transition: .simple))
        #expect(mixed == Membership(voters: ids(1, 2, 3, 4), learners: ids(5)))
        // Demoting a voter in a simple change makes it a learner at once.
        let demoted = try applied(change(.init(.addLearner, n(3)), transition: .simple))
        #expect(demoted == Membership(voters: ids(1, 2), learners: ids(3)))
    }

    @Test func aSimpleChangeOfTwoVotersIsRefused() throws {
        for bad in [
            change(.init(.addVoter, n(4)), .init(.addVoter, n(5)), transition: .simple),
            change(.init(.addVoter, n(4)), .init(.remove, n(1)), transition: .simple),
            change(.init(.remove, n(2)), .init(.addLearner, n(3)), transition: .simple),
        ] {
            let error = try #require(refusal(bad), "\(bad)")
            #expect(error.code == .invalid)
            #expect(error.reason.contains("at most one voter"), "\(error.reason)")
            #expect(error.reason.contains("changes 2"), "\(error.reason)")
        }
        // The same changes are fine through a joint configuration.
        let replaced = try applied(change(.init(.addVoter, n(4)), .init(.remove, n(1))))
        #expect(replaced.voters == ids(2, 3, 4))
        #expect(replaced.outgoing == ids(1, 2, 3))
    }

    @Test func learnersAloneNeedNoJointPhase() throws {
        let withLearner = try applied(change(.init(.addLearner, n(4))))
        #expect(withLearner == Membership(voters: ids(1, 2, 3), learners: ids(4)))
        #expect(!withLearner.isJoint && !withLearner.autoLeave)
        #expect(withLearner.description == "voters=(n1,n2,n3) learners=(n4)")
        // Removing a learner, or a node that is no member at all, changes no voter either.
        #expect(try applied(change(.init(.remove, n(4))), to: withLearner) == three)
        #expect(try applied(change(.init(.remove, n(9))), to: three) == three)
        // Adding a voter that already votes is no change.
        #expect(try applied(change(.init(.addVoter, n(2))), to: three) == three)
    }

    @Test func aLearnerIsPromotedAndLeavesTheLearners() throws {
        let withLearner = Membership(voters: ids(1, 2, 3), learners: ids(4))
        let simple = try applied(change(.init(.addVoter, n(4)), transition: .simple), to: withLearner)
        #expect(simple == Membership(voters: ids(1, 2, 3, 4)))
        let joint = try applied(change(.init(.addVoter, n(4))), to: withLearner)
        #expect(joint.voters == ids(1, 2, 3, 4))
        #expect(joint.learners.isEmpty)
        #expect(joint.isMember(n(4)) && joint.isVoter(n(4)))
    }

    @Test func aVoterDemotedInAJointChangeVotesUntilItIsLeft() throws {
        let joint = try applied(change(.init(.addLearner, n(3))))
        #expect(joint.voters == ids(1, 2))
        #expect(joint.outgoing == ids(1, 2, 3))
        #expect(joint.learnersNext == ids(3))
        #expect(joint.learners.isEmpty)
        #expect(joint.isVoter(n(3)), "still a voter of the outgoing configuration")
        #expect(joint.description == "voters=(n1,n2)&&(n1,n2,n3) learners_next=(n3) autoleave")
        let left = try applied(.leaveJoint, to: joint)
        #expect(left == Membership(voters: ids(1, 2), learners: ids(3)))
        #expect(!left.isVoter(n(3)) && left.isMember(n(3)))
        // A joint change that only demotes still needs its joint phase: the voters change.
        #expect(joint.isJoint)
    }

    @Test func removingAVoterInAJointChangeKeepsItInTheOutgoingHalfOnly() throws {
        let joint = try applied(change(.init(.remove, n(1))))
        #expect(joint.voters == ids(2, 3))
        #expect(joint.outgoing == ids(1, 2, 3))
        #expect(joint.isVoter(n(1)))
        let left = try applied(.leaveJoint, to: joint)
        #expect(left == Membership(voters: ids(2, 3)))
        #expect(!left.isMember(n(1)))
    }

    @Test func invalidChangesSayWhy() throws {
        let joint = try applied(change(.init(.addVoter, n(4))))
        let cases: [(ConfigChange, Membership, String)] = [
            (.leaveJoint, three, "not joint"),
            (change(.init(.addVoter, n(5))), joint, "leave it before another change"),
            (change(.init(.addVoter, n(4)), .init(.addLearner, n(4))), three, "appears twice"),
            (change(.init(.remove, n(1)), .init(.remove, n(2)), .init(.remove, n(3))), three, "at least one voter"),
            (
                change(.init(.addLearner, n(1)), .init(.addLearner, n(2)), .init(.addLearner, n(3))), three,
                "at least one voter"
            ),
            (change(.init(.remove, n(1)), transition: .simple), Membership(voters: ids(1)), "at least one voter"),
            (ConfigChange([], transition: .simple), three, "not joint"),
        ]
        for (bad, membership, reason) in cases {
            let error = try #require(refusal(bad, to: membership), "\(bad) on \(membership)")
            #expect(error.code == .invalid)
            #expect(error.reason.contains(reason), "\(bad): \(error.reason)")
            #expect("\(error)".contains(reason))
        }
    }

    @Test func contextsAreKeptForMembersAndDroppedWithThem() throws {
        let start = Membership(voters: ids(1, 2, 3), contexts: [n(1): [1], n(2): [2], n(3): [3]])
        let added = try applied(change(.init(.addLearner, n(4), context: [4, 4])), to: start)
        #expect(added.contexts == [n(1): [1], n(2): [2], n(3): [3], n(4): [4, 4]])
        // An empty context keeps what the member had; a new one replaces it.
        let promoted = try applied(change(.init(.addVoter, n(4)), transition: .simple), to: added)
        #expect(promoted.contexts[n(4)] == [4, 4])
        let moved = try applied(change(.init(.addVoter, n(4), context: [9]), transition: .simple), to: added)
        #expect(moved.contexts[n(4)] == [9])
        // A removed member's context stays while it still votes in the outgoing half, and goes when that is left.
        let joint = try applied(change(.init(.remove, n(3))), to: start)
        #expect(joint.contexts[n(3)] == [3])
        #expect(try applied(.leaveJoint, to: joint).contexts[n(3)] == nil)
        #expect(try applied(change(.init(.remove, n(2)), transition: .simple), to: start).contexts[n(2)] == nil)
    }

    @Test func applyingIsPureAndDescriptionsNameTheSteps() throws {
        let replace = change(.init(.addVoter, n(4)), .init(.remove, n(1)), .init(.addLearner, n(5)))
        #expect(try applied(replace) == applied(replace))
        #expect(replace.description == "v4 r1 l5 (auto)")
        #expect(ConfigChange.leaveJoint.description == "leave joint")
        #expect(ConfigChange.leaveJoint.isLeaveJoint)
        #expect(change(.init(.addVoter, n(4)), transition: .simple).description == "v4 (simple)")
    }
}

/// The encodings of `Membership` and `ConfigChange`: round trips, and garbage refused without a crash.
@Suite struct MembershipEncodingTests {
    static let memberships: [Membership] = [
        .empty.withVoters(ids(1)),
        three,
        Membership(voters: ids(1, 2, 3), learners: ids(4, 5)),
        Membership(
            voters: ids(1, 2, 4), outgoing: ids(1, 2, 3), learnersNext: ids(3), autoLeave: true,
            contexts: [n(1): Array("a:1".utf8), n(4): [], n(3): [0, 255]]),
        Membership(
            voters: [NodeID(UInt64.max), n(1)], contexts: [NodeID(UInt64.max): Array(repeating: 7, count: 300)]),
    ]

    static let changes: [ConfigChange] = [
        .leaveJoint,
        ConfigChange([.init(.addVoter, n(4))], transition: .simple),
        ConfigChange([.init(.addLearner, n(5), context: Array("node-5 127.0.0.1:7005".utf8)), .init(.remove, n(1))]),
        ConfigChange([.init(.remove, NodeID(UInt64.max))], transition: .explicit),
    ]

    @Test(arguments: memberships) func aMembershipRoundTrips(_ membership: Membership) throws {
        let bytes = membership.encoded()
        #expect(Membership(decoding: bytes) == membership)
        // Every strict prefix is refused, and so is a byte more.
        for length in 0..<bytes.count { #expect(Membership(decoding: bytes.prefix(length)) == nil, "prefix \(length)") }
        #expect(Membership(decoding: bytes + [0]) == nil)
    }

    @Test(arguments: changes) func aChangeRoundTrips(_ change: ConfigChange) throws {
        let bytes = change.encoded()
        #expect(ConfigChange(decoding: bytes) == change)
        for length in 0..<bytes.count {
            #expect(ConfigChange(decoding: bytes.prefix(length)) == nil, "prefix \(length)")
        }
        #expect(ConfigChange(decoding: bytes + [0]) == nil)
    }

    @Test func malformedMembershipsAreRefused() throws {
        var wrongVersion = three.encoded()
        wrongVersion[0] = 2
        #expect(Membership(decoding: wrongVersion) == nil)
        // A voter that is also a learner: well-formed bytes, invalid membership.
        #expect(Membership(decoding: Membership(voters: ids(1), learners: ids(1)).encoded()) == nil)
        // No voter at all.
        #expect(Membership(decoding: Membership.empty.encoded()) == nil)
        // A learner to be that is not an outgoing voter, and auto-leave outside a joint configuration.
        #expect(Membership(decoding: Membership(voters: ids(1), learnersNext: ids(2)).encoded()) == nil)
        #expect(Membership(decoding: Membership(voters: ids(1), autoLeave: true).encoded()) == nil)
        // The auto-leave flag is 0 or 1.
        var flag = three.encoded()
        flag[1 + 4 + 24 + 4 + 4 + 4] = 2
        #expect(Membership(decoding: flag) == nil)
        // A count far beyond the bytes (or the limit) is refused without allocating for it.
        #expect(Membership(decoding: [1, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
        #expect(Membership(decoding: three.encoded(), maxMembers: 2) == nil)
        let withContext = Membership(voters: ids(1), contexts: [n(1): [1, 2, 3]])
        #expect(Membership(decoding: withContext.encoded(), maxContextBytes: 2) == nil)
        #expect(Membership(decoding: withContext.encoded(), maxContextBytes: 3) == withContext)
    }

    @Test func malformedChangesAreRefused() throws {
        let good = ConfigChange([.init(.addVoter, n(4))]).encoded()
        var wrongVersion = good
        wrongVersion[0] = 0
        #expect(ConfigChange(decoding: wrongVersion) == nil)
        var wrongTransition = good
        wrongTransition[1] = 3
        #expect(ConfigChange(decoding: wrongTransition) == nil)
        var wrongAction = good
        wrongAction[6] = 3
        #expect(ConfigChange(decoding: wrongAction) == nil)
        #expect(ConfigChange(decoding: [1, 0, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
        #expect(ConfigChange(decoding: good, maxSteps: 0) == nil)
    }

    /// A few thousand random byte strings, and mutations of valid encodings: never a crash; what decodes is valid
    /// and encodes back to what decodes to it.
    @Test func randomBytesDecodeToNothingOrToAValidValue() throws {
        var random = SplitMix64(seed: 13)
        let seeds = Self.memberships.map { $0.encoded() } + Self.changes.map { $0.encoded() }
        var decodedMemberships = 0
        var decodedChanges = 0
        for k in 0..<6000 {
            var bytes: [UInt8]
            if k % 2 == 0 {
                let length = Int(random.next() % 80)
                bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                // Most random strings fail at the version byte; give half of them the right one.
                if k % 4 == 0, !bytes.isEmpty { bytes[0] = 1 }
            } else {
                bytes = seeds[Int(random.next() % UInt64(seeds.count))]
                for _ in 0..<(1 + Int(random.next() % 3)) where !bytes.isEmpty {
                    let at = Int(random.next() % UInt64(bytes.count))
                    switch random.next() % 3 {
                    case 0: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                    case 1: bytes.removeSubrange(at...)
                    default: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                    }
                }
            }
            if let membership = Membership(decoding: bytes) {
                decodedMemberships += 1
                #expect(!membership.voters.isEmpty)
                #expect(membership.learners.isDisjoint(with: membership.voters.union(membership.outgoing)))
                #expect(membership.learnersNext.isSubset(of: membership.outgoing))
                #expect(Membership(decoding: membership.encoded()) == membership)
            }
            if let change = ConfigChange(decoding: bytes) {
                decodedChanges += 1
                #expect(change.encoded() == bytes, "the encoding of a change is canonical")
                // Applying whatever decodes never traps either.
                _ = change.applied(to: three)
            }
        }
        // The mutations leave some values valid, so the checks above did run.
        #expect(decodedMemberships > 0)
        #expect(decodedChanges > 0)
    }

    @Test func aSnapshotsMetadataCarriesTheWholeMembership() {
        let joint = Membership(voters: ids(1, 2, 4), outgoing: ids(1, 2, 3), learners: ids(5), autoLeave: true)
        let meta = SnapshotMetadata(index: LogIndex(9), term: Term(2), membership: joint)
        #expect(meta.voters == [n(1), n(2), n(3), n(4)])
        #expect(meta.learners == [n(5)])
        #expect(meta.membership == joint)
    }
}

extension Membership {
    fileprivate func withVoters(_ voters: Set<NodeID>) -> Membership { Membership(voters: voters) }
}
