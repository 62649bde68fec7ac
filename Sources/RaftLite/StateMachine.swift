import RaftCore

/// The application's replicated state: what committed commands do.
///
/// `apply` is called on the node's event loop, once for each committed command, in log order; it must be
/// deterministic (every node must reach the same state from the same commands) and quick (the node waits for it).
/// A node's state machine starts empty and, when the node starts, is restored from the node's latest snapshot and
/// brought up to date by applying the log after it.
///
/// **Snapshots.** So that the log does not grow for ever, the node snapshots the state machine from time to time and
/// drops the log before the snapshot. `snapshot()` is called on the event loop, between two applies, and must be
/// cheap: it returns a frozen view of the state (a copy of a persistent or copy-on-write structure) that the node
/// then writes out on another thread while `apply` goes on changing the live state. It must not hold a second copy
/// of the state in memory: a persistent map shares all but what changes. `restore(from:)` replaces the whole state
/// with one read back from such a snapshot (the node's own at start-up, or one received from the leader).
/// A state machine that cannot snapshot keeps the defaults: its node never compacts its log.
public protocol StateMachine: SendableMetatype {
    /// What applying a command gives back to the node that proposed it.
    associatedtype Output: Sendable = Void
    /// A frozen view of the state, written out while the live state goes on changing.
    associatedtype Snapshot: StateMachineSnapshot = SnapshotsUnsupported

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> Output

    /// A consistent, frozen view of the state as it is now (after the last command applied), cheap to take.
    func snapshot() -> Snapshot

    /// Replaces the whole state with the one `reader` holds, as a `Snapshot` wrote it.
    /// - Throws: for bytes that are not such a snapshot (`SnapshotFormatError`, or the state machine's own error);
    ///   the node then refuses the snapshot.
    mutating func restore(from reader: inout SnapshotReader) throws

    /// Whether this state machine can snapshot at all (false for one that kept the defaults).
    static var supportsSnapshots: Bool { get }

    /// **Client sessions** (`RaftNode.registerSession()`, `propose(_:session:id:)`): the node remembers the result
    /// of each session's last write, in the replicated session table, so that a retry of it is answered with the
    /// first result instead of being applied again. The table keeps results as bytes (it is part of snapshots), so
    /// a state machine that takes session writes says how to write its `Output` as bytes and read it back. Both must
    /// be deterministic, and `decodeSessionOutput(encodeSessionOutput(o))` must give `o` back. The defaults (nil)
    /// keep no result; such a state machine leaves `supportsClientSessions` false, and its node refuses session
    /// proposals with `invalidProposal`.
    func encodeSessionOutput(_ output: Output) -> [UInt8]?
    func decodeSessionOutput(_ bytes: [UInt8]) -> Output?

    /// Whether the node takes session proposals for this state machine (false by default).
    static var supportsClientSessions: Bool { get }
}

extension StateMachine {
    public func encodeSessionOutput(_ output: Output) -> [UInt8]? { nil }
    public func decodeSessionOutput(_ bytes: [UInt8]) -> Output? { nil }
    public static var supportsClientSessions: Bool { false }
}

/// A frozen view of a state machine's state, written out on a thread of its own.
public protocol StateMachineSnapshot: Sendable {
    /// Writes the state. Called once, on a background thread; must not touch the live state machine.
    func write(to writer: inout SnapshotWriter) throws
}

/// The snapshot of a state machine that cannot snapshot: writing it fails.
public struct SnapshotsUnsupported: StateMachineSnapshot {
    public init() {}

    public func write(to writer: inout SnapshotWriter) throws {
        throw SnapshotFormatError("this state machine does not support snapshots")
    }
}

extension StateMachine where Snapshot == SnapshotsUnsupported {
    public func snapshot() -> SnapshotsUnsupported { SnapshotsUnsupported() }

    public mutating func restore(from reader: inout SnapshotReader) throws {
        throw SnapshotFormatError("this state machine does not support snapshots")
    }

    public static var supportsSnapshots: Bool { false }
}

extension StateMachine {
    public static var supportsSnapshots: Bool { true }
}

/// A state machine that does nothing: for applications that only read the committed entries, as the seed's did.
/// Its snapshots are empty.
public struct NoStateMachine: StateMachine {
    public struct Snapshot: StateMachineSnapshot {
        public func write(to writer: inout SnapshotWriter) throws {}
    }

    public init() {}
    public func apply(_ command: [UInt8], at index: LogIndex) {}
    public func snapshot() -> Snapshot { Snapshot() }
    public mutating func restore(from reader: inout SnapshotReader) throws {}
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

/// A client session's write: the session's client id (from `RaftNode.registerSession()`) and the write's sequence
/// number in it, from 1 (see `RaftNode.propose(_:session:id:)`).
public struct ClientSession: Sendable, Hashable {
    public var clientID: UInt64
    public var sequence: UInt64

    public init(clientID: UInt64, sequence: UInt64) {
        self.clientID = clientID
        self.sequence = sequence
    }
}
