/// A message between two Raft nodes.
///
/// Every message carries the sender's term; the receiver's reaction to a term other than its own is
/// the same for every kind (Raft §5.1) and lives in one place, `Raft.step(_:)`.
public struct Message: Sendable, Hashable, CustomStringConvertible {
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    public var kind: Kind

    public init(from: NodeID, to: NodeID, term: Term, kind: Kind) {
        self.from = from
        self.to = to
        self.term = term
        self.kind = kind
    }

    /// The kinds of message in the protocol.
    public enum Kind: Sendable, Hashable {
        /// Leader → follower: entries to append after `prevIndex`, or none (a probe), and the leader's commit index
        /// (Raft §5.3).
        case appendEntries(AppendEntries)
        /// Follower → leader: the outcome of an `appendEntries`.
        case appendEntriesResponse(AppendEntriesResponse)
        /// Candidate → voter: a request for a vote, or, with `preVote`, a poll of whether a vote would be granted
        /// (Raft §5.2, thesis §9.6).
        case requestVote(RequestVote)
        /// Voter → candidate: the answer to a `requestVote`.
        case requestVoteResponse(RequestVoteResponse)
        /// Leader → follower: "I am alive", with the commit index the follower may safely adopt.
        case heartbeat(Heartbeat)
        /// Follower → leader: the answer to a heartbeat; it tells the leader the follower is reachable (CheckQuorum)
        /// and, by echoing the heartbeat's read round, that it still took this leader for its leader when that round
        /// began (ReadIndex, thesis §6.4).
        case heartbeatResponse(HeartbeatResponse)
        /// Leader → follower: entries up to `commit` are committed. Sent when the commit index moves and no other
        /// message would carry it; never answered.
        case commitNotice(LogIndex)
        /// Follower → leader: proposals a client made on the follower, forwarded to the leader.
        case propose([[UInt8]])
        /// Leader → follower: the follower needs entries the leader no longer holds; it must take this snapshot
        /// instead. The leader's shell streams the snapshot's bytes (`snapshotChunk`); the follower's shell steps
        /// its core with this message once it holds them all, checked. Answered with an `appendEntriesResponse`.
        /// (The three snapshot kinds are `indirect`, boxed: they are rare, and boxing them keeps every other
        /// message as small as it was before them; a chunk held inline would make each one 8 bytes larger.)
        indirect case installSnapshot(SnapshotMetadata)
        /// Leader → follower: bytes of a snapshot. Handled by the shells, never by the core.
        indirect case snapshotChunk(SnapshotChunk)
        /// Follower → leader: how far the follower holds a snapshot. Handled by the shells, never by the core.
        indirect case snapshotChunkAck(SnapshotChunkAck)
        /// Leader → the follower it hands leadership to: start an election now, without a pre-vote (thesis §3.10).
        /// Sent once the follower's log is as long as the leader's.
        case timeoutNow
        /// Follower → leader: a linearizable read on the follower asks for a read index (thesis §6.4: the leader's
        /// commit index once the leader has confirmed it still leads). Never touches the log.
        case readIndex(ReadIndexRequest)
        /// Leader → follower: the read index for a `readIndex` request, or its refusal (the receiver does not lead).
        case readIndexResponse(ReadIndexResponse)
    }

    public var description: String { "\(from)→\(to) \(term) \(kind)" }
}

/// The body of an AppendEntries request (Raft Figure 2).
public struct AppendEntries: Sendable, Hashable {
    /// The index of the entry immediately preceding `entries`.
    public var prevIndex: LogIndex
    /// The term of the entry at `prevIndex`.
    public var prevTerm: Term
    /// The entries to append (none in a probe); their indexes are `prevIndex + 1`, `prevIndex + 2`, ...
    public var entries: [Entry]
    /// The leader's commit index.
    public var commit: LogIndex

    public init(prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex) {
        self.prevIndex = prevIndex
        self.prevTerm = prevTerm
        self.entries = entries
        self.commit = commit
    }
}

/// The body of an AppendEntries response.
public struct AppendEntriesResponse: Sendable, Hashable {
    /// Whether the follower's log matched at the request's `prevIndex`.
    public var success: Bool
    /// On success: the index up to which the follower's log now matches the leader's and is durable.
    /// On rejection: the `prevIndex` of the rejected request.
    public var index: LogIndex
    /// On rejection: the follower's best guess of where its log may match the leader's: the largest index at or
    /// below `index` whose term is at most the request's `prevTerm`, and that term (thesis §5.3's optimisation,
    /// in the form etcd uses). The leader skips every entry in between in one round trip.
    public var rejectHintIndex: LogIndex
    public var rejectHintTerm: Term

    public init(success: Bool, index: LogIndex, rejectHintIndex: LogIndex = .zero, rejectHintTerm: Term = .zero) {
        self.success = success
        self.index = index
        self.rejectHintIndex = rejectHintIndex
        self.rejectHintTerm = rejectHintTerm
    }
}

/// The body of a RequestVote request.
public struct RequestVote: Sendable, Hashable {
    /// A pre-vote poll (thesis §9.6): no one changes term or records a vote because of it.
    public var preVote: Bool
    public var lastLogIndex: LogIndex
    public var lastLogTerm: Term
    /// The election follows a leadership transfer (`timeoutNow`): voters grant it even while they hear from the
    /// leader, who asked for it.
    public var transfer: Bool

    public init(preVote: Bool, lastLogIndex: LogIndex, lastLogTerm: Term, transfer: Bool = false) {
        self.preVote = preVote
        self.lastLogIndex = lastLogIndex
        self.lastLogTerm = lastLogTerm
        self.transfer = transfer
    }
}

/// The body of a RequestVote response.
public struct RequestVoteResponse: Sendable, Hashable {
    public var preVote: Bool
    public var granted: Bool

    public init(preVote: Bool, granted: Bool) {
        self.preVote = preVote
        self.granted = granted
    }
}

/// The body of a heartbeat.
public struct Heartbeat: Sendable, Hashable {
    /// The leader's commit index, capped at what the leader knows this follower holds, so that the follower can
    /// adopt it without checking its log.
    public var commit: LogIndex
    /// The latest read round the leader has begun (0: none yet). The follower echoes it in its answer; a quorum of
    /// answers echoing round `r` confirms every read that was waiting for round `r` (ReadIndex).
    public var context: UInt64

    public init(commit: LogIndex, context: UInt64 = 0) {
        self.commit = commit
        self.context = context
    }
}

/// The body of a heartbeat's answer.
public struct HeartbeatResponse: Sendable, Hashable {
    /// The read round of the heartbeat answered (`Heartbeat.context`).
    public var context: UInt64

    public init(context: UInt64 = 0) { self.context = context }
}

/// A follower's request for a read index.
public struct ReadIndexRequest: Sendable, Hashable {
    /// The follower's name for the read, echoed in the answer.
    public var context: UInt64

    public init(context: UInt64) { self.context = context }
}

/// The leader's answer to a `ReadIndexRequest`.
public struct ReadIndexResponse: Sendable, Hashable {
    public var context: UInt64
    /// The read index: the state machine must have applied up to it before the read is served. Meaningless when
    /// `granted` is false.
    public var index: LogIndex
    /// False when the node asked does not lead (any more): ask again, of the leader.
    public var granted: Bool

    public init(context: UInt64, index: LogIndex, granted: Bool) {
        self.context = context
        self.index = index
        self.granted = granted
    }
}
