/// A linearizable read the core has confirmed (thesis §6.4): once the state machine has applied up to `index`, the
/// read may be served from it, locally, and sees every write that completed before the read began.
public struct ReadState: Sendable, Hashable {
    /// The caller's name for the read (`Raft.readIndex(context:)`).
    public var context: UInt64
    /// The read index: the leader's commit index when the read arrived, confirmed by a quorum since.
    public var index: LogIndex

    public init(context: UInt64, index: LogIndex) {
        self.context = context
        self.index = index
    }
}

/// Why the core cannot take a read now.
public enum ReadIndexError: Error, Sendable, Hashable {
    /// No leader is known to ask (a follower between leaders, a candidate): try again once one is.
    case noLeader
}

/// The leader's reads waiting for confirmation (thesis §6.4, as etcd's `readOnly` does it with its request
/// contexts, but batched by rounds).
///
/// A read records the commit index when it arrives, then waits for a *round*: one heartbeat to every follower,
/// carrying the round's number, and a quorum of answers echoing it. A quorum that answered a heartbeat sent after the
/// read arrived proves that no other leader had been elected by then (any election needs one of those voters, which
/// would have answered with its newer term), so the commit index recorded held every write acknowledged before the
/// read. At most one round is in flight: reads that arrive while one is wait for the next, which starts when that one
/// is confirmed — every read that arrives meanwhile shares it.
struct PendingReads: Sendable {
    struct Read: Sendable, Hashable {
        var context: UInt64
        /// Who asked: this node (handed out in `Ready.readStates`), or a follower (answered with a message).
        var from: NodeID
        var index: LogIndex
        /// The round that confirms it.
        var round: UInt64
    }

    struct Asker: Sendable, Hashable {
        var context: UInt64
        var from: NodeID
    }

    /// Reads that arrived before the leader committed an entry of its term: until then its commit index may lag
    /// behind what earlier leaders committed, so it cannot tell a read index yet.
    var awaitingCommit: [Asker] = []
    /// Reads waiting for their round, in arrival (and so round) order.
    var waiting: [Read] = []
    /// The last round begun. Never reset, so that an answer to an old round can never pass for a new one's.
    var lastRound: UInt64 = 0
    /// `lastRound` is not confirmed yet.
    var inFlight = false

    /// A round should begin: reads wait for one, and none is in flight.
    var wantsRound: Bool { !inFlight && waiting.last.map { $0.round > lastRound } == true }

    mutating func enqueue(context: UInt64, from: NodeID, index: LogIndex) {
        waiting.append(Read(context: context, from: from, index: index, round: lastRound + 1))
    }

    /// Begins the next round (`lastRound` is its number).
    mutating func beginRound() {
        lastRound += 1
        inFlight = true
    }

    /// Takes the reads whose round `confirmed` says is confirmed, in order.
    mutating func release(_ confirmed: (UInt64) -> Bool) -> ArraySlice<Read> {
        var k = 0
        var checked: (round: UInt64, ok: Bool)?
        while k < waiting.count {
            let round = waiting[k].round
            if checked?.round != round { checked = (round, confirmed(round)) }
            guard checked?.ok == true else { break }
            k += 1
        }
        guard k > 0 else { return [] }
        let released = waiting[..<k]
        waiting.removeFirst(k)
        if let last = released.last, last.round >= lastRound { inFlight = false }
        return released
    }

    /// Forgets every read (the node stops leading); returns this node's own, to report them dropped.
    mutating func dropAll(own id: NodeID) -> [UInt64] {
        let own =
            awaitingCommit.filter { $0.from == id }.map(\.context) + waiting.filter { $0.from == id }.map(\.context)
        awaitingCommit = []
        waiting = []
        inFlight = false
        return own
    }
}

/// A leader's read lease (thesis §6.4.1), on a clock the shell chooses (monotonic, in nanoseconds): how long the
/// leader may serve reads without a round, and the bookkeeping that extends it.
///
/// A voter that answers a leader's heartbeat ignores vote requests for `electionTick` of its ticks after it (with
/// `RaftConfiguration.strictLease`), and its first tick may come at once: so for `(electionTick - 1)` tick lengths
/// after a round began that a quorum confirmed, no other leader can be elected — if no voter's ticks run faster than
/// the leader's clock by more than the drift allowance. The lease is counted from when the read that the round
/// confirmed was *asked* (before the round began: on the safe side), not from when the answers came back.
public struct ReadLease: Sendable, Hashable {
    /// How long a confirmation lasts, in the clock's units.
    public let duration: Int64
    /// The lease holds until this time, in this term.
    public private(set) var expiry: Int64?
    public private(set) var term: Term?

    /// A lease of `duration` units (nil if not positive).
    public init?(duration: Int64) {
        guard duration > 0 else { return nil }
        self.duration = duration
    }

    /// The lease of a node whose ticks last `tickLength` units, with `electionTick` ticks per election timeout,
    /// less `drift` units; nil if that is not positive.
    public init?(tickLength: Int64, electionTick: Int, drift: Int64) {
        let (product, overflow) = tickLength.multipliedReportingOverflow(by: Int64(max(0, electionTick - 1)))
        guard !overflow else { return nil }
        self.init(duration: product - drift)
    }

    /// A read asked at `askedAt`, while leading in `term`, was confirmed: the lease runs until `askedAt + duration`
    /// (or later, if an earlier confirmation already took it there).
    public mutating func confirmed(askedAt: Int64, term askedTerm: Term) {
        let (end, overflow) = askedAt.addingReportingOverflow(duration)
        guard !overflow else { return }
        if term != askedTerm || (expiry.map { $0 < end } ?? true) {
            expiry = end
            term = askedTerm
        }
    }

    /// Whether `raft` may serve a read from its lease at `now`.
    public func holds(now: Int64, _ raft: Raft) -> Bool {
        guard raft.leaseReadsAllowed, term == raft.term, let expiry else { return false }
        return now < expiry
    }
}
