import CoreMetrics
import NIOCore
import RaftCore

/// What a node reports through swift-metrics (exported as Prometheus text by `raft-lite serve`). Every metric has a
/// `node` dimension, so several nodes in one process stay apart.
struct NodeMetrics: Sendable {
    let proposals: Counter
    let proposalsFailed: Counter
    let proposalDuration: Timer
    let storageWriteDuration: Timer
    let term: Gauge
    let commitIndex: Gauge
    let appliedIndex: Gauge
    let role: Gauge
    let isLeader: Gauge
    let elections: Counter
    let leaderChanges: Counter
    let sent: [NodeID: Counter]
    let received: [NodeID: Counter]
    let snapshotsStarted: Counter
    let snapshotsFailed: Counter
    let snapshotDuration: Timer
    let snapshotBytes: Gauge
    let snapshotIndex: Gauge
    let snapshotsInstalled: Counter
    let snapshotsSent: Counter
    let snapshotSendsFailed: Counter
    let snapshotBytesSent: Counter
    let snapshotBytesReceived: Counter
    let compactions: Counter
    /// `raft_members{role="voter"}` (voters of the configuration being entered and of the one being left) and
    /// `raft_members{role="learner"}`, in the membership in effect on this node.
    let voters: Gauge
    let learners: Gauge
    /// `raft_membership_joint`: 1 while a joint configuration is in effect.
    let joint: Gauge
    /// `raft_membership_changes_total`: how often the membership in effect on this node changed (a configuration
    /// entry appended, or one truncated away), since the process started.
    let membershipChanges: Counter
    /// `raft_leadership_transfers_total`: leadership transfers this node started as leader (asked for, or on stop).
    let leadershipTransfers: Counter
    /// Reads asked for, by consistency (`raft_reads_total{consistency}`).
    let reads: [ReadConsistency: Counter]
    /// Reads served, by how (`raft_reads_served_total{path}`): `read_index` (confirmed by a round, here or by the
    /// leader for a follower), `lease` (the leader's lease, no round), `local` (serializable: this node's copy).
    let readsServed: [ReadPath: Counter]

    init(node: String, peers: [(NodeID, String)]) {
        let d = [("node", node)]
        proposals = Counter(label: "raft_proposals_total", dimensions: d)
        proposalsFailed = Counter(label: "raft_proposals_failed_total", dimensions: d)
        proposalDuration = Timer(label: "raft_proposal_duration_seconds", dimensions: d)
        storageWriteDuration = Timer(label: "raft_storage_write_duration_seconds", dimensions: d)
        term = Gauge(label: "raft_term", dimensions: d)
        commitIndex = Gauge(label: "raft_commit_index", dimensions: d)
        appliedIndex = Gauge(label: "raft_applied_index", dimensions: d)
        role = Gauge(label: "raft_role", dimensions: d)
        isLeader = Gauge(label: "raft_is_leader", dimensions: d)
        elections = Counter(label: "raft_elections_total", dimensions: d)
        leaderChanges = Counter(label: "raft_leader_changes_total", dimensions: d)
        snapshotsStarted = Counter(label: "raft_snapshot_started_total", dimensions: d)
        snapshotsFailed = Counter(label: "raft_snapshot_failed_total", dimensions: d)
        snapshotDuration = Timer(label: "raft_snapshot_duration_seconds", dimensions: d)
        snapshotBytes = Gauge(label: "raft_snapshot_bytes", dimensions: d)
        snapshotIndex = Gauge(label: "raft_snapshot_index", dimensions: d)
        snapshotsInstalled = Counter(label: "raft_snapshot_installed_total", dimensions: d)
        snapshotsSent = Counter(label: "raft_snapshot_sent_total", dimensions: d)
        snapshotSendsFailed = Counter(label: "raft_snapshot_send_failed_total", dimensions: d)
        snapshotBytesSent = Counter(label: "raft_snapshot_sent_bytes_total", dimensions: d)
        snapshotBytesReceived = Counter(label: "raft_snapshot_received_bytes_total", dimensions: d)
        compactions = Counter(label: "raft_log_compactions_total", dimensions: d)
        voters = Gauge(label: "raft_members", dimensions: d + [("role", "voter")])
        learners = Gauge(label: "raft_members", dimensions: d + [("role", "learner")])
        joint = Gauge(label: "raft_membership_joint", dimensions: d)
        membershipChanges = Counter(label: "raft_membership_changes_total", dimensions: d)
        leadershipTransfers = Counter(label: "raft_leadership_transfers_total", dimensions: d)
        readsServed = Dictionary(
            uniqueKeysWithValues: ReadPath.allCases.map {
                ($0, Counter(label: "raft_reads_served_total", dimensions: d + [("path", $0.rawValue)]))
            })
        reads = Dictionary(
            uniqueKeysWithValues: ReadConsistency.allCases.map {
                ($0, Counter(label: "raft_reads_total", dimensions: d + [("consistency", $0.rawValue)]))
            })
        sent = Dictionary(
            uniqueKeysWithValues: peers.map { id, name in
                (id, Counter(label: "raft_messages_sent_total", dimensions: d + [("peer", name)]))
            })
        received = Dictionary(
            uniqueKeysWithValues: peers.map { id, name in
                (id, Counter(label: "raft_messages_received_total", dimensions: d + [("peer", name)]))
            })
    }

    /// A change of role, term or leader: the gauges, and the counts of elections and of leader changes.
    func record(_ now: LeadershipChange, after previous: LeadershipChange?) {
        if now.role == .candidate && previous?.role != .candidate { elections.increment() }
        if now.leader != previous?.leader && now.leader != nil { leaderChanges.increment() }
        term.record(Int64(truncatingIfNeeded: now.term.rawValue))
        role.record(Self.code(now.role))
        isLeader.record(now.role == .leader ? 1 : 0)
    }

    /// The membership in effect changed from `previous` (nil: the first one this node has, at start-up, which is
    /// not counted as a change) to `now`.
    func record(membership now: Membership, after previous: Membership?) {
        if previous != nil && previous != now { membershipChanges.increment() }
        voters.record(now.voters.union(now.outgoing).count)
        learners.record(now.learners.count)
        joint.record(now.isJoint ? 1 : 0)
    }

    /// The role as a number: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    static func code(_ role: Raft.Role) -> Int {
        switch role {
        case .follower: 0
        case .preCandidate: 1
        case .candidate: 2
        case .leader: 3
        }
    }
}

extension NIODeadline {
    /// Nanoseconds since `start`, for timers.
    func nanoseconds(since start: NIODeadline) -> Int64 {
        (self - start).nanoseconds
    }
}
