/// The proposer's side of its proposals: which are waiting, where their copies went, and when each is settled —
/// applied, proven never to apply, or given up with its outcome unknown.
///
/// It is pure bookkeeping, with no clock and no I/O: the runtime (and the simulator, which proves these rules)
/// hands proposals to the core when it is told to, reports what the core did with them, feeds it every applied entry,
/// and asks it to settle a proposal when its deadline passes. `Waiter` is whatever the caller needs to answer the
/// client (a promise, a record in a test).
///
/// **When a proposal is proven lost.** Every copy of a proposal is an entry of the term in which it was handed to
/// the core: a leader appends its own proposals in its term, and appends a forwarded proposal only if the message's
/// term is its own. Log terms never decrease along the log, so once this node applies an entry of a later term than
/// every copy's, no copy can be applied any more: if the proposal was not applied by then, it never will be. Such a
/// proposal is handed out again (it is safe: no copy is left) or, if its deadline passes first, fails definitely.
///
/// **Retries.** When this node sees a new leader, or a new term, the proposals not handed to that leader in that
/// term are handed again; when its link to the leader is reset (messages queued on it were lost), they are handed
/// again at the next `takeRetries()`. Copies are harmless: `ProposalSessions` applies at most one. A proposal whose
/// deadline passes while a copy might still commit is settled as unknown.
public struct ProposalTracker<Waiter> {
    /// How a proposal was settled.
    public enum Settlement {
        /// It was applied at this index (in this term).
        case applied(LogIndex, Term)
        /// It was never handed to any leader: it cannot have taken effect.
        case neverHanded
        /// Every copy of it was proven unable to commit: it did not take effect, and never will.
        case lost
        /// A copy of it might still commit.
        case unknown
    }

    struct Pending {
        var waiter: Waiter
        var envelope: ProposalEnvelope
        /// The latest term in which a copy was handed out and may still commit; nil if there is none.
        var liveTerm: Term?
        /// Where and when the latest copy went (the leader it was forwarded to, or this node if appended here).
        var handedTo: NodeID?
        var handedTerm: Term?
        /// The link to `handedTo` was reset since: hand it again at the next `takeRetries()`.
        var retryDue = false
        var everHanded = false
    }

    /// A proposal the core refused for good, settled.
    public struct Refusal {
        public var sequence: UInt64
        public var waiter: Waiter
        public var settlement: Settlement
        public var error: ProposalError
    }

    public let proposer: NodeID
    public let incarnation: UInt64
    /// The leader, and its term, to which the pending proposals were last handed out.
    private var handedOutTo: (term: Term, leader: NodeID)?
    private var pending: [UInt64: Pending] = [:]
    private var nextSequence: UInt64 = 1
    /// The lowest sequence not yet settled: the `floor` every new envelope carries.
    private var floor: UInt64 = 1
    /// The term of the last entry applied on this node.
    private var appliedTerm: Term

    /// - Parameters:
    ///   - proposer: this node.
    ///   - incarnation: this run of this node; must differ from every earlier run's (a random number will do).
    ///   - appliedTerm: the term of the last entry this node's state machine has applied.
    public init(proposer: NodeID, incarnation: UInt64, appliedTerm: Term = .zero) {
        self.proposer = proposer
        self.incarnation = incarnation
        self.appliedTerm = appliedTerm
    }

    /// Proposals not yet settled.
    public var count: Int { pending.count }
    public var isEmpty: Bool { pending.isEmpty }

    /// Registers a new proposal; returns its sequence number. It is not handed out until the caller does so.
    /// - Parameter sessionOperation: what the entry asks of the client-session table, if anything.
    public mutating func submit(
        _ command: [UInt8], id: String? = nil, sessionOperation: SessionOperation? = nil, waiter: Waiter
    ) -> UInt64 {
        let sequence = nextSequence
        nextSequence += 1
        let envelope = ProposalEnvelope(
            proposer: proposer, incarnation: incarnation, sequence: sequence, floor: floor, id: id, command: command,
            sessionOperation: sessionOperation)
        pending[sequence] = Pending(waiter: waiter, envelope: envelope)
        return sequence
    }

    /// The waiter of a pending proposal, to read or change.
    public subscript(sequence: UInt64) -> Waiter? {
        get { pending[sequence]?.waiter }
        set {
            guard let newValue else { return }
            pending[sequence]?.waiter = newValue
        }
    }

    /// The bytes to hand to the core for a pending proposal (its envelope, with the current floor).
    public func entryData(_ sequence: UInt64) -> [UInt8]? {
        guard var envelope = pending[sequence]?.envelope else { return nil }
        envelope.floor = floor
        return envelope.encoded()
    }

    /// Hands a pending proposal to the core: appended if this node leads, else forwarded to the leader. With no
    /// leader known (and forwarding on), or while an earlier copy may still commit, it waits for a leader instead.
    /// - Returns: the settled proposal, if the core refused it for good (too large; not the leader and not
    ///   forwarding).
    public mutating func hand(_ sequence: UInt64, to raft: inout Raft) -> Refusal? {
        guard let data = entryData(sequence) else { return nil }
        let outcome: ProposalOutcome
        do {
            outcome = try raft.propose(data)
        } catch {
            // A leader handing leadership over takes proposals again after the transfer (`handOutAgain`).
            if error.code == .transferring
                || (error.code == .notLeader
                    && ((error.leaderHint == nil && raft.configuration.forwardProposals) || mayStillCommit(sequence)))
            {
                awaitLeader(sequence)
                return nil
            }
            guard let (waiter, settlement) = settle(sequence) else { return nil }
            return Refusal(sequence: sequence, waiter: waiter, settlement: settlement, error: error)
        }
        switch outcome {
        case .appended(_, let term): handed(sequence, term: term, to: raft.id)
        case .forwarded(let leader): handed(sequence, term: raft.term, to: leader)
        }
        return nil
    }

    /// Call after anything that may have changed who leads: if the core now knows a leader, or a term, other than
    /// the one the pending proposals were last handed out for, hands every proposal not yet handed to that leader in
    /// that term (copies of them that went elsewhere may still commit too: `ProposalSessions` applies only one).
    public mutating func handOutIfLeaderChanged(_ raft: inout Raft) -> [Refusal] {
        guard let leader = raft.leader, handedOutTo?.leader != leader || handedOutTo?.term != raft.term else {
            return []
        }
        handedOutTo = (raft.term, leader)
        return handOuts(term: raft.term, leader: leader).compactMap { hand($0, to: &raft) }
    }

    /// Hands out again every proposal that waits for a leader, even if the leader and term are those of the last
    /// hand-out: call when a leadership transfer ends with this node still leading.
    public mutating func handOutAgain(_ raft: inout Raft) -> [Refusal] {
        handedOutTo = nil
        return handOutIfLeaderChanged(&raft)
    }

    /// The core took a copy in `term`: appended it here (`to` is this node) or forwarded it to the leader `to`.
    public mutating func handed(_ sequence: UInt64, term: Term, to leader: NodeID) {
        guard var p = pending[sequence] else { return }
        p.liveTerm = max(p.liveTerm ?? term, term)
        p.handedTo = leader
        p.handedTerm = term
        p.retryDue = false
        p.everHanded = true
        pending[sequence] = p
    }

    /// The core knows no leader to take the proposal: it waits for one (see `handOuts(term:leader:)`).
    public mutating func awaitLeader(_ sequence: UInt64) {
        pending[sequence]?.handedTo = nil
        pending[sequence]?.handedTerm = nil
        pending[sequence]?.retryDue = false
    }

    /// Settles a proposal now: with `.neverHanded` or `.lost` if no copy can commit, else `.unknown`. Used when its
    /// deadline passes, when the node stops, and when the core refuses it.
    public mutating func settle(_ sequence: UInt64) -> (Waiter, Settlement)? {
        guard let p = pending[sequence] else { return nil }
        let settlement: Settlement = !p.everHanded ? .neverHanded : mayStillCommit(p) ? .unknown : .lost
        remove(sequence)
        return (p.waiter, settlement)
    }

    /// Settles every pending proposal (the node stops).
    public mutating func settleAll() -> [(Waiter, Settlement)] {
        pending.keys.sorted().compactMap { settle($0) }
    }

    /// Feeds the tracker an entry this node applied (every entry, no-ops included, in log order), with the envelope
    /// it carried and whether `ProposalSessions` admitted it.
    /// - Returns: the proposal it settled, if it was one of ours, and the proposals proven lost by it, to hand out
    ///   again.
    public mutating func applied(
        _ entry: (index: LogIndex, term: Term), envelope: ProposalEnvelope.Header?, admitted: Bool
    ) -> (settled: (sequence: UInt64, waiter: Waiter)?, lost: [UInt64]) {
        var settled: (UInt64, Waiter)?
        if admitted, let identity = envelope?.identity, identity.proposer == proposer,
            identity.incarnation == incarnation, let p = pending[identity.sequence]
        {
            remove(identity.sequence)
            settled = (identity.sequence, p.waiter)
        }
        var lost: [UInt64] = []
        if entry.term > appliedTerm {
            appliedTerm = entry.term
            for (sequence, p) in pending where p.liveTerm.map({ $0 < entry.term }) == true {
                pending[sequence]?.liveTerm = nil
                lost.append(sequence)
            }
            lost.sort()
        }
        return (settled, lost)
    }

    /// The state machine was restored from a snapshot that ends at an entry of `term`: the entries it covers will
    /// never be applied here one by one. Every pending proposal that `isApplied` says the snapshot's sessions table
    /// holds as applied is settled (returned in `applied`: it took effect, but its result is not known here); of the
    /// others, those proven lost by the snapshot's term (every copy's term is older) are returned in `lost`, to hand
    /// out again, as `applied(_:envelope:admitted:)` does.
    public mutating func snapshotRestored(
        term: Term, isApplied: (_ sequence: UInt64) -> Bool
    ) -> (applied: [(sequence: UInt64, waiter: Waiter)], lost: [UInt64]) {
        var settled: [(UInt64, Waiter)] = []
        for sequence in pending.keys.sorted() where isApplied(sequence) {
            if let p = pending[sequence] {
                remove(sequence)
                settled.append((sequence, p.waiter))
            }
        }
        var lost: [UInt64] = []
        if term > appliedTerm {
            appliedTerm = term
            for (sequence, p) in pending where p.liveTerm.map({ $0 < term }) == true {
                pending[sequence]?.liveTerm = nil
                lost.append(sequence)
            }
            lost.sort()
        }
        return (settled, lost)
    }

    /// The proposals to hand out now that this node sees `leader` lead `term`: those waiting for a leader, and those
    /// whose latest copy went to another leader or in another term.
    func handOuts(term: Term, leader: NodeID) -> [UInt64] {
        pending.filter { $0.value.handedTo != leader || $0.value.handedTerm != term }.keys.sorted()
    }

    /// Messages queued for `peer` were lost: proposals last forwarded to it are handed again at the next
    /// `takeRetries()`.
    public mutating func linkReset(_ peer: NodeID) {
        for (sequence, p) in pending where p.handedTo == peer && p.handedTo != proposer {
            pending[sequence]?.retryDue = true
        }
    }

    /// The proposals due for another hand-off since their link was reset; each is returned once per reset.
    public mutating func takeRetries() -> [UInt64] {
        var due: [UInt64] = []
        for (sequence, p) in pending where p.retryDue {
            pending[sequence]?.retryDue = false
            due.append(sequence)
        }
        return due.sorted()
    }

    /// Whether a copy of a pending proposal may still commit.
    public func mayStillCommit(_ sequence: UInt64) -> Bool {
        pending[sequence].map(mayStillCommit) ?? false
    }

    private func mayStillCommit(_ p: Pending) -> Bool {
        p.liveTerm.map { $0 >= appliedTerm } ?? false
    }

    private mutating func remove(_ sequence: UInt64) {
        pending[sequence] = nil
        // Raise the floor past everything settled.
        while floor < nextSequence && pending[floor] == nil { floor += 1 }
    }
}
