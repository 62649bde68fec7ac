import RaftCore

/// One node's configurations as the checker derives them from the node's own log, independently of the core: the
/// base (the bootstrap configuration, or the membership of the snapshot the node restarted from or installed), then
/// one point per configuration entry in the log after it, each the change applied to the one before (a change that
/// does not apply changes nothing, as on every node). Kept incrementally: only entries new since the last
/// observation are read, and a truncated suffix takes its points with it.
struct ConfigShadow: Sendable {
    struct Point: Sendable {
        var index: LogIndex
        var term: Term
        var membership: Membership
    }

    var baseIndex: LogIndex
    var base: Membership
    var points: [Point] = []
    /// The last log entry read: while the log still holds it, nothing before it changed (Log Matching).
    var scannedIndex: LogIndex
    var scannedTerm: Term
    /// The node's latest snapshot when last observed.
    var snapshotIndex: LogIndex
    var snapshotTerm: Term
    /// The log's marks when last compared: while they stay, so does the membership (it changes only with the log).
    var compared: Marks?

    struct Marks: Equatable, Sendable {
        var lastIndex: LogIndex
        var lastTerm: Term
        var logStart: LogIndex
        var committed: LogIndex
        var snapshot: LogIndex

        init(_ raft: Raft) {
            lastIndex = raft.log.lastIndex
            lastTerm = raft.log.lastTerm
            logStart = raft.log.snapshotIndex
            committed = raft.log.committed
            snapshot = raft.snapshot?.index ?? .zero
        }
    }

    /// The configurations of a node that has just started: its snapshot's, or the bootstrap configuration.
    init(starting raft: Raft) {
        if let snapshot = raft.snapshot {
            base = snapshot.membership
            baseIndex = snapshot.index
            snapshotIndex = snapshot.index
            snapshotTerm = snapshot.term
        } else {
            let c = raft.configuration
            base = Membership(voters: c.voters, learners: c.learners, contexts: c.contexts)
            baseIndex = .zero
            snapshotIndex = .zero
            snapshotTerm = .zero
        }
        scannedIndex = max(baseIndex, raft.log.snapshotIndex)
        scannedTerm = raft.log.term(at: scannedIndex) ?? snapshotTerm
    }

    var latest: Membership { points.last?.membership ?? base }
    var latestIndex: LogIndex { points.last?.index ?? baseIndex }

    func membership(at index: LogIndex) -> Membership {
        points.last { $0.index <= index }?.membership ?? base
    }

    /// Reads the log entries after `start` up to the log's end.
    mutating func scan(_ log: RaftLog, after start: LogIndex) {
        var i = max(start, baseIndex, log.snapshotIndex).next
        while i <= log.lastIndex {
            if let entry = log.entry(at: i), entry.kind == .configChange {
                var next = latest
                if let change = ConfigChange(decoding: entry.data), case .success(let m) = change.applied(to: next) {
                    next = m
                }
                points.append(Point(index: entry.index, term: entry.term, membership: next))
            }
            i = i.next
        }
        scannedIndex = log.lastIndex
        scannedTerm = log.lastTerm
    }
}

extension InvariantChecker {
    /// Brings node `node`'s derived configurations up to date with its log and checks the core agrees: the
    /// membership in effect is the latest configuration in the log, a truncated configuration entry takes its effect
    /// with it, and a committed one is never truncated; a snapshot records the membership the log makes at its
    /// index. With `restarted`, the node has just started from its storage and is derived afresh.
    mutating func updateConfigs(_ node: NodeID, _ raft: Raft, restarted: Bool) throws(InvariantViolation) {
        let log = raft.log
        let marks = ConfigShadow.Marks(raft)
        if !restarted && configShadows[node]?.compared == marks { return }
        guard var shadow = restarted ? nil : configShadows[node] else {
            var fresh = ConfigShadow(starting: raft)
            fresh.scan(log, after: fresh.scannedIndex)
            fresh.compared = marks
            configShadows[node] = fresh
            try compareConfigs(node, raft, fresh)
            return
        }
        shadow.compared = marks
        defer { configShadows[node] = shadow }
        let holdsScanned = log.term(at: shadow.scannedIndex) == shadow.scannedTerm
        if let snapshot = raft.snapshot, snapshot.index != shadow.snapshotIndex || snapshot.term != shadow.snapshotTerm
        {
            shadow.snapshotIndex = snapshot.index
            shadow.snapshotTerm = snapshot.term
            if holdsScanned && shadow.scannedIndex >= snapshot.index && log.term(at: snapshot.index) == snapshot.term {
                // A snapshot of this node's own log: it must record the membership that log makes at its index.
                let derived = shadow.membership(at: snapshot.index)
                if derived != snapshot.membership {
                    throw InvariantViolation(
                        .membership,
                        "\(node)'s \(snapshot) records the membership \(snapshot.membership), but its log makes "
                            + "\(derived) there")
                }
            } else {
                // A snapshot installed from a leader: the log was replaced.
                for point in shadow.points where point.index > snapshot.index && log.term(at: point.index) != point.term
                {
                    try checkNotCommitted(point, of: node, "replaced by a snapshot")
                }
                shadow.base = snapshot.membership
                shadow.baseIndex = snapshot.index
                shadow.points = []
                shadow.scan(log, after: snapshot.index)
                try compareConfigs(node, raft, shadow)
                return
            }
        }
        var start = shadow.scannedIndex
        if !holdsScanned {
            // A suffix was truncated: its configuration entries are reverted; the log matches the one read up to
            // the last point it still holds.
            while let point = shadow.points.last, point.index > log.snapshotIndex,
                log.term(at: point.index) != point.term
            {
                try checkNotCommitted(point, of: node, "truncated away")
                shadow.points.removeLast()
            }
            start = shadow.latestIndex
        }
        if start < log.lastIndex || !holdsScanned { shadow.scan(log, after: start) }
        try compareConfigs(node, raft, shadow)
    }

    private func checkNotCommitted(_ point: ConfigShadow.Point, of node: NodeID, _ what: String)
        throws(InvariantViolation)
    {
        if committedTerm(at: point.index) == point.term {
            throw InvariantViolation(
                .membership,
                "\(node)'s committed configuration entry (\(point.index), \(point.term)) making \(point.membership) "
                    + "was \(what)")
        }
    }

    private func compareConfigs(_ node: NodeID, _ raft: Raft, _ shadow: ConfigShadow) throws(InvariantViolation) {
        try checkOneUncommitted(node, raft, shadow)
        if raft.membership != shadow.latest {
            throw InvariantViolation(
                .membership,
                "\(node)'s membership in effect is \(raft.membership), but its log makes \(shadow.latest) "
                    + "(the latest configuration entry at \(shadow.latestIndex))")
        }
        let committed = raft.log.committed
        if committed >= raft.log.snapshotIndex && raft.membership(at: committed) != shadow.membership(at: committed) {
            throw InvariantViolation(
                .membership,
                "\(node)'s membership at its commit index \(committed) is \(raft.membership(at: committed)), but its "
                    + "log makes \(shadow.membership(at: committed)) there")
        }
    }

    /// The role checks of membership: only a voter of the configuration in effect stands for election or wins one
    /// (`newLeader`: first seen leading this term); a leader that is no longer a voter leads only until that
    /// configuration commits; and no log holds two configuration entries beyond what the cluster committed (one
    /// change at a time: a leader proposes a change only once the previous one is committed).
    mutating func checkMembershipRoles(_ node: NodeID, _ raft: Raft, newLeader: Bool) throws(InvariantViolation) {
        guard raft.role != .follower, let shadow = configShadows[node] else { return }
        let membership = shadow.latest
        // Who may stand: a voter of the configuration in effect, or of the committed one while a later one is not
        // committed (thesis §4.2.2) — never a learner or a node outside both.
        let committed = raft.log.committed
        let mayStand =
            membership.isVoter(node)
            || (shadow.latestIndex > committed && shadow.membership(at: committed).isVoter(node))
        switch raft.role {
        case .candidate, .preCandidate:
            if !mayStand {
                throw InvariantViolation(
                    .membership,
                    "\(node) is a \(raft.role.rawValue) of \(raft.term) but a voter neither of \(membership) nor of "
                        + "\(shadow.membership(at: committed)) (committed)")
            }
        case .leader:
            if newLeader && !mayStand {
                throw InvariantViolation(
                    .membership,
                    "\(node) became leader of \(raft.term) but is a voter neither of \(membership) nor of "
                        + "\(shadow.membership(at: committed)) (committed)")
            }
            if !membership.isVoter(node) && shadow.latestIndex <= raft.log.committed {
                throw InvariantViolation(
                    .membership,
                    "\(node) still leads \(raft.term) after committing \(membership) (at \(shadow.latestIndex)), "
                        + "of which it is no voter")
            }
        case .follower:
            break
        }
    }

    /// No log holds two configuration entries beyond the highest index committed anywhere (checked whenever the
    /// log changes: a higher commit index only makes fewer).
    private func checkOneUncommitted(_ node: NodeID, _ raft: Raft, _ shadow: ConfigShadow) throws(InvariantViolation) {
        let committed = max(highestCommitted, raft.log.committed)
        var uncommitted = 0
        for point in shadow.points.reversed() {
            guard point.index > committed else { break }
            uncommitted += 1
        }
        if uncommitted > 1 {
            throw InvariantViolation(
                .membership,
                "\(node)'s log (\(raft.role.rawValue) of \(raft.term)) holds \(uncommitted) configuration entries "
                    + "beyond the highest index committed (\(committed)): "
                    + shadow.points.suffix(uncommitted).map { "\($0.index): \($0.membership)" }.joined(separator: "; "))
        }
    }

    /// The membership node `node` is derived to have (for the simulator's counters and liveness judgement).
    public func derivedMembership(of node: NodeID) -> Membership? { configShadows[node]?.latest }
}
