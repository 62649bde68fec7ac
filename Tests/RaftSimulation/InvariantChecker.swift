import RaftCore

/// A property that a correct Raft cluster never breaks.
public enum Invariant: String, Sendable, Hashable {
    /// At most one leader in a term (Raft Figure 3).
    case electionSafety = "Election Safety"
    /// A leader never overwrites or deletes entries in its log; it only appends.
    case leaderAppendOnly = "Leader Append-Only"
    /// If two logs hold an entry with the same index and term, the logs are identical up to that index.
    case logMatching = "Log Matching"
    /// An entry committed in a term is in the log of every leader of a later term.
    case leaderCompleteness = "Leader Completeness"
    /// No two nodes apply different entries at the same index; each node applies in order, each index once.
    case stateMachineSafety = "State Machine Safety"
    /// The I/O contract: a node acknowledges entries and grants votes only once they are durable; commit and
    /// apply marks never move backwards; a node applies only what the cluster committed; a restarted node's commit
    /// index is one the cluster reached.
    case durability = "Durability"
    /// Every proposal takes effect at most once, whatever copies of it reach the log; every node decides the same
    /// at each index; a proposal settled as applied was applied there, and one settled as lost never is.
    case exactlyOnce = "Exactly Once"
    /// Membership: every node's configuration in effect is the latest in its own log (a truncated entry's
    /// reverted, a committed one never truncated); only voters campaign or win; a leader that is no longer a voter
    /// steps down once that configuration commits; one uncommitted configuration entry at a time.
    case membership = "Membership"
    /// A linearizable read sees every write completed before it began: it is served from a state machine that has
    /// applied at least every index committed anywhere when it was asked, and that is the state every node has at
    /// its applied index.
    case linearizableReads = "Linearizable Reads"
    /// Once faults stop, a leader is elected and every proposal accepted afterwards commits in bounded time.
    case liveness = "Liveness"
}

/// A broken invariant, with what was seen.
public struct InvariantViolation: Error, Sendable, CustomStringConvertible {
    public var invariant: Invariant
    public var detail: String

    public init(_ invariant: Invariant, _ detail: String) {
        self.invariant = invariant
        self.detail = detail
    }

    public var description: String { "\(invariant.rawValue) violated: \(detail)" }
}

/// Checks Raft's safety properties incrementally, from observations of every node after every step.
///
/// It keeps a global record of what the cluster has done — which node led each term, every entry ever appended
/// (keyed by index and term), every index known committed and every entry applied — so that each check costs
/// time in proportion to what changed, not to the size of the logs.
public struct InvariantChecker: Sendable {
    private struct EntryKey: Hashable {
        var index: LogIndex
        var term: Term
    }

    private struct EntryRecord {
        var previousTerm: Term?
        var kind: EntryKind
        var data: [UInt8]
        /// The nodes that appended it.
        var holders: Set<NodeID> = []
    }

    private struct CommittedRecord {
        /// The term of the committed entry.
        var term: Term
        /// The lowest term of any node seen with this index committed: the entry was committed in this term or
        /// earlier, so every leader of a later term must hold it.
        var committedBy: Term
    }

    private struct NodeTrack {
        var leaderTerm: Term?
        var leaderLastIndex = LogIndex.zero
        var leaderLastTerm = Term.zero
        var committed = LogIndex.zero
        var applied = LogIndex.zero
    }

    private var leaderOfTerm: [Term: NodeID] = [:]
    private var entries: [EntryKey: EntryRecord] = [:]
    /// `committed[i - 1]` describes index i.
    private var committed: [CommittedRecord] = []
    /// `applied[i - 1]` is the entry first applied at index i, by any node.
    private var applied: [Entry] = []
    private var nodes: [NodeID: NodeTrack] = [:]
    /// `admissions[i - 1]`: the proposal whose copy at index i took effect, or nil if none did (a duplicate, or not
    /// a proposal), as the first node to apply index i decided.
    private var admissions: [ProposalIdentity?] = []
    /// Where each proposal took effect.
    private var effectiveAt: [ProposalIdentity: LogIndex] = [:]
    /// Proposals their proposer settled as definitely not applied.
    private var settledLost: Set<ProposalIdentity> = []
    /// `digests[i - 1]`: the state machine's digest after applying index i, on the first node to apply it.
    private var digests: [UInt64] = []
    /// The contents of the first snapshot seen at each index.
    private var snapshots: [LogIndex: SimulatedSnapshot] = [:]

    /// Each node's configurations, derived from its own log (`MembershipChecks.swift`).
    var configShadows: [NodeID: ConfigShadow] = [:]

    /// Copies of proposals refused as duplicates (counted once per index).
    public private(set) var duplicatesRefused = 0

    public init() {}

    /// The highest index known committed anywhere.
    public var highestCommitted: LogIndex { LogIndex(UInt64(committed.count)) }
    /// The highest index applied anywhere.
    public var highestApplied: LogIndex { LogIndex(UInt64(applied.count)) }
    /// The leader of each term seen so far.
    public var leaders: [Term: NodeID] { leaderOfTerm }

    /// Checks a node's role, term and marks after a step.
    public mutating func observe(_ node: NodeID, _ raft: Raft) throws(InvariantViolation) {
        var track = nodes[node] ?? NodeTrack()
        defer { nodes[node] = track }
        let log = raft.log
        try updateConfigs(node, raft, restarted: false)
        var newLeader = false

        if raft.role == .leader {
            if let other = leaderOfTerm[raft.term], other != node {
                throw InvariantViolation(.electionSafety, "\(other) and \(node) are both leaders of \(raft.term)")
            }
            leaderOfTerm[raft.term] = node
            if track.leaderTerm == raft.term {
                if log.lastIndex < track.leaderLastIndex || log.term(at: track.leaderLastIndex) != track.leaderLastTerm
                {
                    throw InvariantViolation(
                        .leaderAppendOnly,
                        "leader \(node) of \(raft.term) had (\(track.leaderLastIndex), \(track.leaderLastTerm)) and "
                            + "now ends at (\(log.lastIndex), \(log.lastTerm)) holding "
                            + "\(log.term(at: track.leaderLastIndex).map { "\($0)" } ?? "nothing") there")
                }
            } else {
                newLeader = true
                try checkCompleteness(ofLeader: node, raft)
            }
            track.leaderTerm = raft.term
            track.leaderLastIndex = log.lastIndex
            track.leaderLastTerm = log.lastTerm
        } else {
            track.leaderTerm = nil
        }

        if log.committed < track.committed {
            throw InvariantViolation(
                .durability, "\(node)'s commit index went back from \(track.committed) to \(log.committed)")
        }
        if log.committed > log.lastIndex {
            throw InvariantViolation(
                .durability, "\(node)'s commit index \(log.committed) is past its last entry \(log.lastIndex)")
        }
        var index = track.committed.next
        while index <= log.committed {
            try recordCommitted(index, by: node, raft)
            index = index.next
        }
        track.committed = log.committed
        try checkMembershipRoles(node, raft, newLeader: newLeader)
    }

    private mutating func recordCommitted(_ index: LogIndex, by node: NodeID, _ raft: Raft) throws(InvariantViolation) {
        guard let term = raft.log.term(at: index) else { return }  // compacted: already checked when applied
        let k = Int(index.rawValue) - 1
        if k < committed.count {
            if committed[k].term != term {
                throw InvariantViolation(
                    .stateMachineSafety,
                    "\(node) has \(index) committed with \(term), but it was committed with \(committed[k].term)")
            }
            if raft.term < committed[k].committedBy { committed[k].committedBy = raft.term }
        } else if k == committed.count {
            committed.append(CommittedRecord(term: term, committedBy: raft.term))
        } else {
            // Commit indexes are prefixes: anything below was committed by someone else first. Fill in from this
            // node's log; later observations are compared against it.
            var i = highestCommitted.next
            while i <= index {
                guard let t = raft.log.term(at: i) else { return }
                committed.append(CommittedRecord(term: t, committedBy: raft.term))
                i = i.next
            }
        }
    }

    /// Leader Completeness: a new leader of term T holds every entry committed in a term before T. By Log Matching
    /// (checked separately) it suffices to find the highest such entry.
    private func checkCompleteness(ofLeader node: NodeID, _ raft: Raft) throws(InvariantViolation) {
        var k = committed.count - 1
        while k >= 0 {
            let record = committed[k]
            if record.committedBy < raft.term {
                let index = LogIndex(UInt64(k + 1))
                let held = raft.log.term(at: index)
                if held != record.term && index > raft.log.snapshotIndex {
                    throw InvariantViolation(
                        .leaderCompleteness,
                        "\(node) became leader of \(raft.term) holding \(held.map { "\($0)" } ?? "nothing") at "
                            + "\(index), where \(record.term) was committed in \(record.committedBy) or before")
                }
                return
            }
            k -= 1
        }
    }

    /// Log Matching, checked as entries enter a log: an entry with a given index and term always has the same
    /// content and follows an entry of the same term. By induction on the index, two logs that share an entry
    /// then share every entry before it.
    public mutating func observeAppended(_ node: NodeID, _ newEntries: [Entry], in log: RaftLog)
        throws(InvariantViolation)
    {
        var previousTerm = newEntries.first.flatMap { log.term(at: $0.index.previous) }
        for entry in newEntries {
            let key = EntryKey(index: entry.index, term: entry.term)
            if var known = entries[key] {
                if known.holders.insert(node).inserted { entries[key] = known }
                if known.kind != entry.kind || known.data != entry.data {
                    throw InvariantViolation(
                        .logMatching, "\(node) holds a different entry at (\(entry.index), \(entry.term))")
                }
                if let p = previousTerm, let q = known.previousTerm, p != q {
                    throw InvariantViolation(
                        .logMatching,
                        "\(node)'s entry (\(entry.index), \(entry.term)) follows an entry of \(p), elsewhere of \(q)")
                }
            } else {
                entries[key] = EntryRecord(
                    previousTerm: previousTerm, kind: entry.kind, data: entry.data, holders: [node])
            }
            previousTerm = entry.term
        }
    }

    /// A node crashed: an entry only it ever appended, which its durable log does not hold, is gone — it was never
    /// durable and never left the node (a leader sends nothing in a term that is not durable yet). A single voter,
    /// which wins an election without asking anyone, may then append another entry at the same index and term.
    public mutating func forgetLostEntries(of node: NodeID, durableTerm: (LogIndex) -> Term?) {
        entries = entries.filter { key, record in record.holders != [node] || durableTerm(key.index) == key.term }
    }

    /// State Machine Safety: every node applies the same entry at each index, in order, each index once — and only
    /// entries it knows committed (`committed` is its commit index) and the cluster committed.
    public mutating func observeApplied(_ node: NodeID, _ entries: [Entry], committed: LogIndex)
        throws(InvariantViolation)
    {
        var track = nodes[node] ?? NodeTrack()
        defer { nodes[node] = track }
        for entry in entries {
            if entry.index != track.applied.next {
                throw InvariantViolation(
                    .stateMachineSafety, "\(node) applied \(entry.index) right after \(track.applied)")
            }
            if entry.index > committed {
                throw InvariantViolation(
                    .durability, "\(node) applied \(entry.index) beyond its commit index \(committed)")
            }
            let c = Int(entry.index.rawValue) - 1
            if c >= self.committed.count || self.committed[c].term != entry.term {
                throw InvariantViolation(
                    .durability,
                    "\(node) applied (\(entry.index), \(entry.term)), which the cluster never committed "
                        + (c < self.committed.count
                            ? "(it committed \(self.committed[c].term) there)"
                            : "(it committed up to \(highestCommitted))"))
            }
            let k = Int(entry.index.rawValue) - 1
            if k < applied.count {
                let first = applied[k]
                if first.term != entry.term || first.kind != entry.kind || first.data != entry.data {
                    throw InvariantViolation(
                        .stateMachineSafety,
                        "\(node) applied (\(entry.index), \(entry.term)) but another node applied "
                            + "(\(first.index), \(first.term)) there")
                }
            } else {
                applied.append(entry)
            }
            track.applied = entry.index
        }
    }

    /// A node restarted from its storage with its state machine at `applied`: marks that could not survive the
    /// crash start again from what did — but its commit index must be one the cluster reached, with the entries the
    /// cluster committed below it.
    public mutating func observeRestart(_ node: NodeID, _ raft: Raft, applied: LogIndex) throws(InvariantViolation) {
        let log = raft.log
        if log.committed > highestCommitted {
            throw InvariantViolation(
                .durability,
                "\(node) restarted with commit index \(log.committed), beyond anything committed (\(highestCommitted))")
        }
        var index = log.snapshotIndex.next
        while index <= log.committed {
            let k = Int(index.rawValue) - 1
            if log.term(at: index) != committed[k].term {
                throw InvariantViolation(
                    .durability,
                    "\(node) restarted with \(index) committed holding \(log.term(at: index).map { "\($0)" } ?? "nothing"), "
                        + "but the cluster committed \(committed[k].term) there")
            }
            index = index.next
        }
        var track = NodeTrack()
        track.committed = log.committed
        track.applied = applied
        nodes[node] = track
        try updateConfigs(node, raft, restarted: true)
    }

    /// State Machine Safety for the state itself: every node's state machine is the same after each index.
    public mutating func observeState(_ node: NodeID, _ state: SimulatedState) throws(InvariantViolation) {
        let k = Int(state.applied.rawValue) - 1
        guard k >= 0 else { return }
        if k < digests.count {
            if digests[k] != state.digest {
                throw InvariantViolation(
                    .stateMachineSafety, "\(node)'s state after \(state.applied) differs from another node's there")
            }
        } else if k == digests.count {
            digests.append(state.digest)
        } else {
            throw InvariantViolation(
                .stateMachineSafety,
                "\(node) reached \(state.applied) before any node had the state at \(digests.count)")
        }
    }

    /// A node made a snapshot durable: it holds the state every node had at its index, and any other node's
    /// snapshot at that index holds the same (the same term, state and proposal sessions).
    public mutating func observeSnapshot(_ node: NodeID, _ snapshot: SimulatedSnapshot) throws(InvariantViolation) {
        let index = snapshot.meta.index
        if snapshot.state.applied != index {
            throw InvariantViolation(
                .stateMachineSafety,
                "\(node)'s \(snapshot.meta) holds the state machine at \(snapshot.state.applied), not at its index")
        }
        try observeState(node, snapshot.state)
        if let known = snapshots[index] {
            if known.meta.term != snapshot.meta.term || known.state != snapshot.state {
                throw InvariantViolation(
                    .stateMachineSafety,
                    "\(node)'s \(snapshot.meta) differs from another node's snapshot at \(index) (\(known.meta.term))"
                        + (known.state.sessions != snapshot.state.sessions ? ": their proposal sessions differ" : ""))
            }
        } else {
            snapshots[index] = snapshot
        }
        if let term = committedTerm(at: index), term != snapshot.meta.term {
            throw InvariantViolation(
                .stateMachineSafety, "\(node) has a \(snapshot.meta), but the cluster committed \(term) there")
        }
    }

    /// A node restored its state machine from a snapshot it received: it never goes back behind what it had
    /// applied, and what it restored is a snapshot some node made (so the state every node had at that index).
    public mutating func observeInstalled(_ node: NodeID, _ snapshot: SimulatedSnapshot, restored: SimulatedState)
        throws(InvariantViolation)
    {
        var track = nodes[node] ?? NodeTrack()
        defer { nodes[node] = track }
        let index = snapshot.meta.index
        if index < track.applied {
            throw InvariantViolation(
                .stateMachineSafety, "\(node) installed a \(snapshot.meta), going back from \(track.applied)")
        }
        guard let known = snapshots[index], known == snapshot else {
            throw InvariantViolation(
                .stateMachineSafety, "\(node) installed a \(snapshot.meta) that no node made with these contents")
        }
        if restored != snapshot.state {
            throw InvariantViolation(
                .stateMachineSafety, "\(node) installed a \(snapshot.meta) but its state machine is not the snapshot's")
        }
        try observeState(node, restored)
        track.applied = index
    }

    /// A node restarted with its state machine as it kept it or as restored from its latest durable snapshot: never
    /// behind that snapshot, and the state every node had at that index.
    public mutating func observeRestoredState(
        _ node: NodeID, _ state: SimulatedState, durableSnapshot: LogIndex
    ) throws(InvariantViolation) {
        if state.applied < durableSnapshot {
            throw InvariantViolation(
                .durability,
                "\(node) restarted with its state machine at \(state.applied), behind its snapshot at \(durableSnapshot)"
            )
        }
        try observeState(node, state)
    }

    /// A proposer settled a proposal as applied because a snapshot it installed shows it took effect (where, it
    /// cannot tell): it must have taken effect somewhere.
    public func observeSettledBySnapshot(_ proposal: ProposalIdentity, at index: LogIndex) throws(InvariantViolation) {
        guard let effective = effectiveAt[proposal], effective <= index else {
            throw InvariantViolation(
                .exactlyOnce,
                "proposal \(proposal) was settled as applied by the snapshot at \(index), but took effect "
                    + (effectiveAt[proposal].map { "at \($0)" } ?? "nowhere"))
        }
    }

    /// A read asked when the cluster had committed up to `floor` (every write acknowledged before it is at or below)
    /// is served from `state`: it must have applied at least `floor`, and be the state every node had there.
    public func observeRead(
        _ node: NodeID, _ state: SimulatedState, floor: LogIndex, _ how: @autoclosure () -> String
    ) throws(InvariantViolation) {
        if state.applied < floor {
            throw InvariantViolation(
                .linearizableReads,
                "\(node) served \(how()) from its state at \(state.applied), but \(floor) was committed when it was asked"
            )
        }
        let k = Int(state.applied.rawValue) - 1
        guard k >= 0 else { return }
        if k >= digests.count || digests[k] != state.digest {
            throw InvariantViolation(
                .linearizableReads,
                "\(node) served \(how()) from a state at \(state.applied) that "
                    + (k >= digests.count ? "no node had reached" : "differs from the state every node had there"))
        }
    }

    func committedTerm(at index: LogIndex) -> Term? {
        let k = Int(index.rawValue) - 1
        return k >= 0 && k < committed.count ? committed[k].term : nil
    }

    /// Exactly once: at each index every node makes the same decision (`ProposalSessions` is a function of the log),
    /// and no proposal takes effect at two indexes, or after its proposer settled it as lost.
    public mutating func observeAdmission(
        _ node: NodeID, _ entry: Entry, proposal: ProposalIdentity?, admitted: Bool
    ) throws(InvariantViolation) {
        let effective = admitted ? proposal : nil
        let k = Int(entry.index.rawValue) - 1
        if k < admissions.count {
            if admissions[k] != effective {
                throw InvariantViolation(
                    .exactlyOnce,
                    "\(node) decided \(effective.map { "\($0) takes effect" } ?? "nothing takes effect") at \(entry.index), "
                        + "another node \(admissions[k].map { "\($0) takes effect" } ?? "nothing takes effect")")
            }
            return
        }
        guard k == admissions.count else {
            throw InvariantViolation(
                .exactlyOnce, "\(node) applied \(entry.index) before any node applied \(admissions.count)")
        }
        admissions.append(effective)
        if proposal != nil && !admitted { duplicatesRefused += 1 }
        guard let effective else { return }
        if let earlier = effectiveAt[effective] {
            throw InvariantViolation(
                .exactlyOnce, "proposal \(effective) took effect twice: at \(earlier) and at \(entry.index)")
        }
        if settledLost.contains(effective) {
            throw InvariantViolation(
                .exactlyOnce, "proposal \(effective) was settled as never applied, then took effect at \(entry.index)")
        }
        effectiveAt[effective] = entry.index
    }

    /// A proposer settled one of its proposals: applied (it must have taken effect there), lost or never handed out
    /// (it must never take effect), or unknown (anything goes).
    public mutating func observeSettled<W>(
        _ proposal: ProposalIdentity, _ settlement: ProposalTracker<W>.Settlement
    ) throws(InvariantViolation) {
        switch settlement {
        case .applied(let index, _):
            if effectiveAt[proposal] != index {
                throw InvariantViolation(
                    .exactlyOnce,
                    "proposal \(proposal) was settled as applied at \(index), but took effect "
                        + (effectiveAt[proposal].map { "at \($0)" } ?? "nowhere"))
            }
        case .lost, .neverHanded:
            if let index = effectiveAt[proposal] {
                throw InvariantViolation(
                    .exactlyOnce, "proposal \(proposal) was settled as never applied, but took effect at \(index)")
            }
            settledLost.insert(proposal)
        case .unknown:
            break
        }
    }

    /// Durability: an acknowledgement or a vote is sent only once what it promises is durable. A vote in term T is
    /// safe once storage holds that vote in T, or any later term (the node can no longer vote in T at all).
    public func observeSent(_ message: Message, durable: PersistentState) throws(InvariantViolation) {
        let hs = durable.hardState
        switch message.kind {
        case .appendEntriesResponse(let response) where response.success:
            if durable.lastIndex < response.index || durable.term(at: response.index) ?? .zero > message.term {
                throw InvariantViolation(
                    .durability,
                    "\(message.from) acknowledged entries up to \(response.index) but its storage ends at \(durable.lastIndex)"
                )
            }
        case .requestVoteResponse(let response) where response.granted && !response.preVote:
            if hs.term < message.term || (hs.term == message.term && hs.votedFor != message.to) {
                throw InvariantViolation(
                    .durability,
                    "\(message.from) granted its vote in \(message.term) to \(message.to) but its storage says \(hs)")
            }
        case .requestVote(let request) where !request.preVote:
            if hs.term < message.term || (hs.term == message.term && hs.votedFor != message.from) {
                throw InvariantViolation(
                    .durability, "\(message.from) asked for votes in \(message.term) before storing its own vote: \(hs)"
                )
            }
        default:
            break
        }
    }
}
