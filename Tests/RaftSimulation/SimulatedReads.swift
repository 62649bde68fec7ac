import RaftCore

/// A client's linearizable read waiting in a node's shell, as `RaftNode` keeps one (`PendingRead` in
/// `NodeReads.swift`), with what the checker needs to judge it when it is served.
struct SimulatedRead {
    /// The highest index committed on any node when the client asked: every write acknowledged before the read
    /// began is at or below it, so the state the read is served from must have applied at least this far.
    var floor: LogIndex
    /// When the client asked (virtual time).
    var askedAt: Int64
    /// Asked of a node that was not leading then.
    var onFollower: Bool
    /// Asked once faults stopped: it must be served (it has no deadline).
    var liveness = false
    /// Served from the leader's lease, at its commit index, without a round.
    var fromLease = false
    /// The index the state machine must reach before the read is served: the read index once the core confirmed
    /// it, or the commit index of a lease read.
    var atLeast = LogIndex.zero
    /// When the core was first asked for this read's index, and in which term (the lease counts from there).
    var firstAsked: Int64?
    var askedTerm: Term?
    /// Ticks since the core was last asked for it (a follower's request may be lost on the way to the leader).
    var ticksSinceAsked = 0
    /// The core said it will not answer (it stopped leading, the leader refused, or no leader was known): ask again
    /// at the next tick.
    var dropped = false
}

/// A node's shell's reads, as `RaftNode`'s `NodeReads`: those waiting for their read index, by context, those
/// waiting for the state machine to reach it, and the leader's lease on the virtual clock. A crash loses it all; the
/// new incarnation's contexts start at a value of their own (as `NodeReads`'s start at a random one), so a late answer
/// to an earlier incarnation's read cannot be taken for one of its own.
struct SimulatedReads {
    var nextContext: UInt64 = 0

    init(firstContext: UInt64 = 0) { nextContext = firstContext }

    var waitingIndex: [UInt64: SimulatedRead] = [:]
    var waitingApply: [UInt64: SimulatedRead] = [:]
    var lease: ReadLease?
    /// Contexts asked only to renew the lease (no read waits for them): when, and in which term.
    var renewals: [UInt64: (asked: Int64, term: Term)] = [:]

    var pending: Int { waitingIndex.count + waitingApply.count }

    mutating func context() -> UInt64 {
        nextContext &+= 1
        return nextContext
    }
}
