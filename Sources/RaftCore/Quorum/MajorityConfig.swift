/// The outcome of an election, so far.
public enum VoteResult: Sendable, Hashable {
    /// Not yet decided: too few answers either way.
    case pending
    /// A majority granted.
    case won
    /// A majority refused: the election cannot be won.
    case lost
}

/// A set of voters that decides by simple majority (Raft §5.2, §5.3).
public struct MajorityConfig: Sendable, Hashable {
    public private(set) var voters: Set<NodeID>
    /// The voters in ascending order: iterating a `Set` would visit them in an order that changes from process to
    /// process, and the core must behave the same on every run.
    public let ordered: [NodeID]

    public init(_ voters: Set<NodeID>) {
        self.voters = voters
        self.ordered = voters.sorted()
    }

    /// How many voters make a majority.
    public var quorum: Int { voters.count / 2 + 1 }

    public func contains(_ id: NodeID) -> Bool { voters.contains(id) }

    /// The largest index that a majority of voters hold, given each voter's match index (absent means zero).
    /// An empty configuration commits nothing.
    public func committedIndex(_ matchOf: (NodeID) -> LogIndex) -> LogIndex {
        guard !ordered.isEmpty else { return .zero }
        var values = ordered.map(matchOf)
        values.sort(by: >)
        return values[quorum - 1]
    }

    /// The state of an election given the votes received so far (`true` granted, `false` refused).
    public func voteResult(_ votes: [NodeID: Bool]) -> VoteResult {
        var granted = 0
        var refused = 0
        for id in ordered {
            switch votes[id] {
            case true?: granted += 1
            case false?: refused += 1
            case nil: break
            }
        }
        if granted >= quorum { return .won }
        if refused > voters.count - quorum { return .lost }
        return .pending
    }

    /// Whether the voters for which `isActive` holds form a majority.
    public func hasQuorum(_ isActive: (NodeID) -> Bool) -> Bool {
        var active = 0
        for id in ordered where isActive(id) { active += 1 }
        return active >= quorum
    }
}
