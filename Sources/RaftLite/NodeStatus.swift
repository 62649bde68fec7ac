import RaftCore

/// A node's view of the cluster.
public struct NodeStatus: Sendable, Hashable {
    public var name: String
    public var role: Raft.Role
    public var term: Term
    public var leader: String?
    public var commitIndex: LogIndex
    /// The last entry the state machine has applied: everything up to it is in the state a read on this node sees.
    public var appliedIndex: LogIndex
    public var lastIndex: LogIndex
    /// The index the latest snapshot ends at (0: none).
    public var snapshotIndex: LogIndex = .zero
    /// The log's first entry held (after compaction, the entry after the compaction point).
    public var firstIndex: LogIndex = LogIndex(1)
    public var paused: Bool
    public var started: Bool
}

extension NodeStatus {
    /// The status of a node that is not running (never started, or its loop is gone).
    static func notRunning(name: String) -> NodeStatus {
        NodeStatus(
            name: name, role: .follower, term: .zero, leader: nil, commitIndex: .zero, appliedIndex: .zero,
            lastIndex: .zero, paused: false, started: false)
    }
}
