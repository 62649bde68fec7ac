/// The voters of a cluster in the middle of a membership change (thesis §4.3): the configuration being entered
/// (`incoming`) and the one being left (`outgoing`). Every decision needs a majority of each: an entry is committed
/// only when both majorities hold it, an election is won only when both majorities grant it.
///
/// Outside a change `outgoing` is empty and a `JointConfig` decides exactly as `incoming` alone does. An empty half
/// takes no part in a decision; a configuration whose halves are both empty decides nothing: it commits nothing and
/// can win no election.
public struct JointConfig: Sendable, Hashable {
    /// The configuration being entered (the only one, outside a change).
    public private(set) var incoming: MajorityConfig
    /// The configuration being left; empty outside a change.
    public private(set) var outgoing: MajorityConfig

    public init(_ incoming: Set<NodeID>, outgoing: Set<NodeID> = []) {
        self.incoming = MajorityConfig(incoming)
        self.outgoing = MajorityConfig(outgoing)
    }

    /// Whether a change is in progress (both halves take part).
    public var isJoint: Bool { !outgoing.voters.isEmpty }

    /// Every voter of either half.
    public var voters: Set<NodeID> { incoming.voters.union(outgoing.voters) }

    public func contains(_ id: NodeID) -> Bool { incoming.contains(id) || outgoing.contains(id) }

    /// The largest index that a majority of each half holds, given each voter's match index (absent means zero).
    /// (Asked on every acknowledgement a leader receives: it allocates nothing beyond what each half's answer does.)
    public func committedIndex(_ matchOf: (NodeID) -> LogIndex) -> LogIndex {
        switch (incoming.voters.isEmpty, outgoing.voters.isEmpty) {
        case (true, true): .zero
        case (false, true): incoming.committedIndex(matchOf)
        case (true, false): outgoing.committedIndex(matchOf)
        case (false, false): min(incoming.committedIndex(matchOf), outgoing.committedIndex(matchOf))
        }
    }

    /// The state of an election: won when each half has a granting majority, lost as soon as one half cannot grant
    /// one any more, pending otherwise.
    public func voteResult(_ votes: [NodeID: Bool]) -> VoteResult {
        switch (incoming.voters.isEmpty, outgoing.voters.isEmpty) {
        case (true, true): return .lost
        case (false, true): return incoming.voteResult(votes)
        case (true, false): return outgoing.voteResult(votes)
        case (false, false):
            let a = incoming.voteResult(votes)
            let b = outgoing.voteResult(votes)
            if a == .lost || b == .lost { return .lost }
            return a == .won && b == .won ? .won : .pending
        }
    }

    /// Whether the voters for which `isActive` holds form a majority of each half.
    public func hasQuorum(_ isActive: (NodeID) -> Bool) -> Bool {
        switch (incoming.voters.isEmpty, outgoing.voters.isEmpty) {
        case (true, true): false
        case (false, true): incoming.hasQuorum(isActive)
        case (true, false): outgoing.hasQuorum(isActive)
        case (false, false): incoming.hasQuorum(isActive) && outgoing.hasQuorum(isActive)
        }
    }
}
