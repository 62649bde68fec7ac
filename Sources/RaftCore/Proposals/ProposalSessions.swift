/// Decides, for each committed proposal, whether it is applied or is a copy of one applied (or settled) before — from
/// the log alone, so every node, and every restart of a node, decides the same.
///
/// A proposal can reach the log more than once: the network may duplicate the message that forwards it, and a
/// proposer retries a proposal it cannot prove lost (when the leader changes, or its link to the leader is reset).
/// Every copy carries the same identity (`ProposalEnvelope`: proposer, incarnation, sequence), and this table
/// remembers, per proposer incarnation (a *session*), which sequences were applied. A copy is refused when its
/// sequence was applied before, or is below the session's floor: the highest `floor` any of the session's entries
/// carried, below which the proposer promised it will never wait for an outcome again.
///
/// The table is part of the replicated state: it must be kept, snapshotted and restored with the state machine it
/// guards, and fed every committed envelope in log order.
///
/// **Forgetting sessions.** A session ends when its proposer restarts. Its proposals can still commit after that,
/// but only in entries of a term no later than the one in which the new incarnation's first proposal committed:
/// every entry's term is the term in which its proposer handed it over (a leader appends a forwarded proposal only
/// in the term it was sent in), a proposer forwards only in a term that is durable (`Raft.propose`), and a restarted
/// node resumes in a term at least as high as any it had made durable. Log terms never decrease, so once an entry
/// of a later term is applied, the old session can never see another entry: it is dropped.
public struct ProposalSessions: Sendable, Hashable {
    struct Session: Sendable, Hashable {
        var floor: UInt64 = 0
        /// Sequences at or above `floor` that were applied, in increasing order (they mostly arrive in order, so an
        /// insertion is usually an append, and raising the floor drops a prefix).
        var applied: [UInt64] = []
        /// The proposer restarted: no entry of this session can have a term above this one.
        var lastTerm: Term?

        /// Records `sequence` as applied; false if it was below the floor or applied before.
        mutating func admit(_ sequence: UInt64, floor newFloor: UInt64) -> Bool {
            if newFloor > floor {
                floor = newFloor
                applied.removeSubrange(..<position(of: newFloor))
            }
            guard sequence >= floor else { return false }
            if let last = applied.last, sequence <= last {
                let k = position(of: sequence)
                if applied[k] == sequence { return false }
                applied.insert(sequence, at: k)
            } else {
                applied.append(sequence)
            }
            return true
        }

        /// The index of the first element of `applied` at or above `sequence`.
        private func position(of sequence: UInt64) -> Int {
            var low = 0
            var high = applied.count
            while low < high {
                let mid = (low + high) / 2
                if applied[mid] < sequence { low = mid + 1 } else { high = mid }
            }
            return low
        }
    }

    struct Key: Hashable, Sendable {
        var proposer: NodeID
        var incarnation: UInt64
    }

    private var sessions: [Key: Session] = [:]
    /// The term of the last entry admitted or refused.
    private var term = Term.zero

    public init() {}

    /// Sessions remembered.
    public var count: Int { sessions.count }

    /// Decides whether the committed proposal with this header, in an entry of `term`, is applied (true) or is a copy
    /// of one already applied or settled (false), and records the decision. Call it for every committed entry that
    /// carries an envelope, in log order, and never twice for one entry.
    public mutating func admit(_ header: ProposalEnvelope.Header, term entryTerm: Term) -> Bool {
        if entryTerm > term {
            term = entryTerm
            // Sessions whose proposer restarted before this term can never see another entry.
            sessions = sessions.filter { $0.value.lastTerm.map { $0 >= entryTerm } ?? true }
        }
        let key = Key(proposer: header.identity.proposer, incarnation: header.identity.incarnation)
        if sessions[key] == nil {
            // A new incarnation of this proposer: the earlier ones ended no later than this entry's term.
            for (other, session) in sessions where other.proposer == key.proposer && session.lastTerm == nil {
                sessions[other]?.lastTerm = entryTerm
            }
            sessions[key] = Session()
        }
        return sessions[key, default: Session()].admit(header.identity.sequence, floor: header.floor)
    }
}
