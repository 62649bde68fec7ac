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

// MARK: - Snapshots

extension ProposalSessions {
    /// The version of `encoded()`'s format.
    public static let encodingVersion: UInt8 = 1

    /// Whether this sequence of this proposer incarnation's session was applied, or is below its floor (settled: any
    /// copy of it that commits from now on is refused). False for a session the table does not know, or no longer
    /// does (a restarted proposer's old one). After installing a snapshot, the proposer asks it of each proposal it
    /// still waits for: the snapshot may hold the proposal's effect without the node ever applying its entry.
    public func isApplied(proposer: NodeID, incarnation: UInt64, sequence: UInt64) -> Bool {
        guard let session = sessions[Key(proposer: proposer, incarnation: incarnation)] else { return false }
        return sequence < session.floor || session.contains(sequence)
    }

    /// The table as bytes, for a snapshot. Integers are little-endian:
    ///
    /// ```
    /// version:u8 (1)  term:u64  sessionCount:u32  session × sessionCount
    /// session = proposer:u64  incarnation:u64  floor:u64  hasLastTerm:u8 (0 or 1)  [lastTerm:u64 if 1]
    ///           appliedCount:u32  applied:u64 × appliedCount
    /// ```
    ///
    /// Sessions come in increasing (proposer, incarnation) order, so equal tables encode to equal bytes; `applied`
    /// is strictly increasing and every element is at or above `floor`; a proposer has at most one session without
    /// a `lastTerm` (its current incarnation).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func append(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        func append(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        let ordered = sessions.sorted {
            ($0.key.proposer.rawValue, $0.key.incarnation) < ($1.key.proposer.rawValue, $1.key.incarnation)
        }
        out.reserveCapacity(13 + ordered.reduce(0) { $0 + 37 + 8 * $1.value.applied.count })
        out.append(Self.encodingVersion)
        append(term.rawValue)
        append(UInt32(truncatingIfNeeded: ordered.count))
        for (key, session) in ordered {
            append(key.proposer.rawValue)
            append(key.incarnation)
            append(session.floor)
            if let lastTerm = session.lastTerm {
                out.append(1)
                append(lastTerm.rawValue)
            } else {
                out.append(0)
            }
            append(UInt32(truncatingIfNeeded: session.applied.count))
            for sequence in session.applied { append(sequence) }
        }
        return out
    }

    /// Decodes `encoded()`'s bytes. Every count is checked against the bytes that remain before anything is
    /// allocated for it, and the table must be one `admit` could have built, in `encoded()`'s order (so bytes that
    /// decode are exactly the bytes their table encodes to).
    /// - Throws: `SnapshotFormatError` saying what is wrong, for bytes that are not such a table.
    public init(decoding bytes: [UInt8]) throws(SnapshotFormatError) {
        var input = LittleEndianInput(bytes, of: "the proposal sessions")
        let version = try input.byte("the version")
        guard version == Self.encodingVersion else {
            throw SnapshotFormatError(
                "the proposal sessions are of version \(version); this node reads version \(Self.encodingVersion)")
        }
        let term = Term(try input.u64("the term"))
        let sessionCount = Int(try input.u32("the number of sessions"))
        // The smallest session: proposer, incarnation, floor, the flag and an applied count of 0.
        guard sessionCount <= input.remaining / 29 else {
            throw SnapshotFormatError(
                "the proposal sessions claim \(sessionCount) sessions, more than their \(input.remaining) bytes hold")
        }
        var sessions: [Key: Session] = [:]
        sessions.reserveCapacity(sessionCount)
        var open = Set<NodeID>()
        var previous: Key?
        for number in 0..<sessionCount {
            let what = "session \(number + 1) of \(sessionCount)"
            let key = Key(
                proposer: NodeID(try input.u64("the proposer of \(what)")),
                incarnation: try input.u64("the incarnation of \(what)"))
            if let previous,
                (previous.proposer.rawValue, previous.incarnation) >= (key.proposer.rawValue, key.incarnation)
            {
                throw SnapshotFormatError(
                    "\(what) (proposer \(key.proposer), incarnation \(key.incarnation)) does not come after the one "
                        + "before it (proposer \(previous.proposer), incarnation \(previous.incarnation)): sessions "
                        + "must be in increasing order, each once")
            }
            previous = key
            var session = Session()
            session.floor = try input.u64("the floor of \(what)")
            switch try input.byte("whether \(what) ended") {
            case 0:
                guard open.insert(key.proposer).inserted else {
                    throw SnapshotFormatError(
                        "proposer \(key.proposer) has two sessions that have not ended (\(what) is the second)")
                }
            case 1: session.lastTerm = Term(try input.u64("the last term of \(what)"))
            case let flag: throw SnapshotFormatError("\(what) has an end flag of \(flag) (0 or 1 expected)")
            }
            let appliedCount = Int(try input.u32("the number of applied sequences of \(what)"))
            guard appliedCount <= input.remaining / 8 else {
                throw SnapshotFormatError(
                    "\(what) claims \(appliedCount) applied sequences, more than the \(input.remaining) bytes left hold"
                )
            }
            session.applied.reserveCapacity(appliedCount)
            for _ in 0..<appliedCount {
                let sequence = try input.u64("an applied sequence of \(what)")
                guard sequence >= session.floor else {
                    throw SnapshotFormatError(
                        "\(what) has applied sequence \(sequence) below its floor \(session.floor)")
                }
                if let last = session.applied.last, sequence <= last {
                    throw SnapshotFormatError(
                        "\(what) has applied sequence \(sequence) after \(last): they must be strictly increasing")
                }
                session.applied.append(sequence)
            }
            sessions[key] = session
        }
        guard input.remaining == 0 else {
            throw SnapshotFormatError(
                "the proposal sessions are followed by \(input.remaining) bytes that belong to none")
        }
        self.init()
        self.sessions = sessions
        self.term = term
    }
}

extension ProposalSessions.Session {
    /// Whether `sequence` is in `applied`.
    func contains(_ sequence: UInt64) -> Bool {
        let k = position(of: sequence)
        return k < applied.count && applied[k] == sequence
    }
}
