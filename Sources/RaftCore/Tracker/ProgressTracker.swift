/// Who is in the cluster and how far each member has come, as this node sees it: the voters (a `JointConfig`, so
/// that a membership change can need two majorities), the learners (members that receive the log but do not vote),
/// the leader's `Progress` record for every other member, and the votes of the election in progress.
///
/// It answers the quorum questions the core asks — how far the log is committed, whether an election is won,
/// whether a quorum was heard from lately — so that `Raft` never counts replicas itself.
public struct ProgressTracker: Sendable {
    /// The node whose view this is; it keeps no `Progress` record of its own.
    public let id: NodeID
    /// The members with a vote.
    public var voters: JointConfig { members.voters }
    /// The members that receive the log without a vote.
    public var learners: Set<NodeID> { members.learners }
    /// Every member but this node, in ascending order: the nodes a leader replicates to. (Iterating a `Set` would
    /// visit them in an order that changes from process to process; the core must behave the same on every run.)
    public var peers: [NodeID] { members.peers }
    /// The leader's view of each peer (empty unless this node leads).
    public private(set) var progress: [NodeID: Progress] = [:]
    /// Votes received in the current election or pre-vote poll (this node's own included).
    private var votes: [NodeID: Bool] = [:]
    /// Who is in the cluster, in one immutable object that copies of the tracker share: a copy of the core (which
    /// its callers make more often than one would think) then costs one reference count for the membership, not one
    /// per set and array in it. A change of membership will make a new one.
    private var members: Members

    private final class Members: Sendable {
        let voters: JointConfig
        let learners: Set<NodeID>
        let peers: [NodeID]

        init(voters: JointConfig, learners: Set<NodeID>, id: NodeID) {
            self.voters = voters
            self.learners = learners.subtracting(voters.voters)
            self.peers = voters.voters.union(learners).subtracting([id]).sorted()
        }
    }

    public init(id: NodeID, voters: JointConfig, learners: Set<NodeID> = []) {
        self.id = id
        self.members = Members(voters: voters, learners: learners, id: id)
    }

    /// Takes a new membership (a configuration entry was appended, truncated away, or came with a snapshot). A
    /// leader keeps the progress of the peers that stay, and starts probing new ones from `next`, counting them as
    /// recently active, as a new leader counts everyone.
    mutating func setMembership(_ membership: Membership, next: LogIndex, maxInflight: Int, leading: Bool) {
        members = Members(
            voters: membership.jointConfig, learners: membership.learners.union(membership.learnersNext), id: id)
        guard leading else { return }
        var updated: [NodeID: Progress] = [:]
        for peer in members.peers {
            if let pr = progress[peer] {
                updated[peer] = pr
            } else {
                var pr = Progress(next: next, maxInflight: maxInflight)
                pr.recentActive = true
                updated[peer] = pr
            }
        }
        progress = updated
    }

    /// Whether the voters of `config` for which the leader heard lately (this period or the one before) make a
    /// quorum of it: a change that leaves fewer would stop the cluster committing. A peer that never answered does
    /// not count, whatever its grace period says.
    func hasActiveQuorum(_ config: JointConfig) -> Bool {
        config.hasQuorum { $0 == id || progress[$0].map { $0.heardFrom && ($0.recentActive || $0.wasActive) } == true }
    }

    /// Whether `node` belongs to the cluster, as a voter or a learner.
    public func isMember(_ node: NodeID) -> Bool { members.voters.contains(node) || members.learners.contains(node) }

    /// Whether `node` has a vote.
    public func isVoter(_ node: NodeID) -> Bool { members.voters.contains(node) }

    // MARK: - Progress

    /// Starts tracking every peer afresh, as a new leader does: each is probed from `next`, and counts as recently
    /// active, so that it has a whole CheckQuorum period to answer.
    mutating func resetProgress(next: LogIndex, maxInflight: Int) {
        progress = [:]
        for peer in members.peers {
            var pr = Progress(next: next, maxInflight: maxInflight)
            pr.recentActive = true
            progress[peer] = pr
        }
    }

    /// Forgets every peer's progress (a node that stops leading).
    mutating func clearProgress() {
        progress = [:]
    }

    /// Runs `body` on the progress record of `peer`, in place; nil if the peer has none.
    @discardableResult
    mutating func update<R>(_ peer: NodeID, _ body: (inout Progress) -> R) -> R? {
        guard let i = progress.index(forKey: peer) else { return nil }
        let result = body(&progress.values[i])
        progress.values[i].checkInvariants()
        return result
    }

    /// The highest index held by a quorum of voters, counting this node as holding `own` (its durable log).
    func committedIndex(own: LogIndex) -> LogIndex {
        members.voters.committedIndex { peer in peer == id ? own : (progress[peer]?.match ?? .zero) }
    }

    /// Whether a quorum of voters (this node included) has answered a heartbeat of read round `readRound` or a later
    /// one.
    func hasConfirmed(readRound: UInt64) -> Bool {
        members.voters.hasQuorum { $0 == id || (progress[$0]?.readRound ?? 0) >= readRound }
    }

    /// A tick of the leader: each follower's heartbeat answer may again prompt one catch-up append.
    mutating func newHeartbeatPeriod() {
        for i in progress.indices { progress.values[i].catchUpSent = false }
    }

    /// Whether a quorum of voters (this node included) was heard from since the last call; starts a new period.
    mutating func quorumActive() -> Bool {
        let active = members.voters.hasQuorum { $0 == id || progress[$0]?.recentActive == true }
        for i in progress.indices {
            progress.values[i].wasActive = progress.values[i].recentActive
            progress.values[i].recentActive = false
        }
        return active
    }

    // MARK: - Votes

    /// Forgets the votes of an earlier election.
    mutating func resetVotes() {
        votes = [:]
    }

    /// Records `voter`'s answer (the first answer counts; a repeat changes nothing) and returns the election's state.
    @discardableResult
    mutating func recordVote(from voter: NodeID, granted: Bool) -> VoteResult {
        if votes[voter] == nil { votes[voter] = granted }
        return voteResult
    }

    /// The state of the election so far.
    var voteResult: VoteResult { members.voters.voteResult(votes) }
}
