import RaftCore
import Testing

/// The core's public errors: every code distinct, equal only with equal details, and described as before they became
/// structs.
@Suite struct CoreErrorTests {
    static let proposalErrors: [(ProposalError, String)] = [
        (.notLeader(leaderHint: NodeID(2)), "this node is not the leader; the leader is \(NodeID(2))"),
        (.notLeader(leaderHint: nil), "this node is not the leader, and no leader is known yet; retry later"),
        (.tooLarge(size: 17, limit: 16), "proposal of 17 bytes exceeds the limit of 16 bytes"),
        (.empty, "empty batch of proposals"),
    ]

    @Test func proposalErrors() {
        for (error, text) in Self.proposalErrors { #expect(error.description == text) }
        #expect(Set(Self.proposalErrors.map(\.0.code)).count == 3)
        for (k, (a, _)) in Self.proposalErrors.enumerated() {
            for (j, (b, _)) in Self.proposalErrors.enumerated() { #expect((a == b) == (k == j), "\(a) vs \(b)") }
        }
        #expect(ProposalError.notLeader(leaderHint: NodeID(2)) != .notLeader(leaderHint: NodeID(3)))
        #expect(ProposalError.tooLarge(size: 17, limit: 16) != .tooLarge(size: 18, limit: 16))
        let refused = ProposalError.notLeader(leaderHint: NodeID(2))
        #expect(refused.code == .notLeader && refused.leaderHint == NodeID(2) && refused.size == nil)
    }

    @Test func configurationErrors() {
        let error = ConfigurationError.invalid("voters must not be empty")
        #expect(error.description == "invalid Raft configuration: voters must not be empty")
        #expect(error.code == .invalid && error.reason == "voters must not be empty")
        #expect(error == .invalid("voters must not be empty"))
        #expect(error != .invalid("something else"))
    }
}
