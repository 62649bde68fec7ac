import RaftCore

/// The application's replicated state: what committed commands do.
///
/// `apply` is called on the node's event loop, once for each committed command, in log order; it must be
/// deterministic (every node must reach the same state from the same commands) and quick (the node waits for it).
/// A node's state machine starts empty and, when the node starts, is brought up to date by applying the log
/// from the beginning.
public protocol StateMachine: SendableMetatype {
    /// What applying a command gives back to the node that proposed it.
    associatedtype Output: Sendable = Void

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> Output
}

/// A state machine that does nothing: for applications that only read the committed entries, as the seed's did.
public struct NoStateMachine: StateMachine {
    public init() {}
    public func apply(_ command: [UInt8], at index: LogIndex) {}
}

/// A committed command, as the seed's `check_committed_entry` returned it.
public struct CommittedEntry: Sendable, Hashable, CustomStringConvertible {
    public var index: LogIndex
    public var term: Term
    /// The command as proposed.
    public var data: [UInt8]
    /// The id the proposer gave it, if any.
    public var id: String?

    /// The command as UTF-8 text, if it is.
    public var text: String? { String(validating: data, as: UTF8.self) }

    public var description: String {
        "#\(index.rawValue) (term \(term.rawValue)): " + (text ?? "\(data.count) bytes")
            + (id.map { " [id \($0)]" } ?? "")
    }
}

/// What `RaftNode.propose` returns once the command is committed and applied on the proposing node.
public struct Committed<Output: Sendable>: Sendable {
    public var index: LogIndex
    public var term: Term
    /// What the state machine returned for the command.
    public var output: Output
}

/// A change of who leads, as one node sees it.
public struct LeadershipChange: Sendable, Hashable, CustomStringConvertible {
    public var role: Raft.Role
    public var term: Term
    /// The leader's name, if known.
    public var leader: String?

    public var description: String {
        "\(role.rawValue) in term \(term.rawValue), leader: \(leader ?? "unknown")"
    }
}
