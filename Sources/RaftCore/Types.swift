/// The identity of a node in a Raft cluster.
///
/// A small wrapper so that node ids, terms and log indexes cannot be mixed up. The runtime maps
/// human-readable node names (`"node0"`) to ids; the core only ever compares them.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    @inlinable
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "n\(rawValue)" }
}

/// A Raft term: a logical clock that only moves forward (Raft §5.1).
public struct Term: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The term before any election: no leader has ever existed in it.
    public static let zero = Term(0)

    /// The highest term a node accepts or reaches: 2^62. No cluster holds that many elections, so a term above it
    /// comes from a corrupt or hostile peer, and refusing it keeps `next` far from overflowing.
    public static let ceiling = Term(1 << 62)

    @inlinable
    public static func < (lhs: Term, rhs: Term) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The term after this one.
    @inlinable
    public var next: Term { Term(rawValue &+ 1) }

    public var description: String { "t\(rawValue)" }
}

/// A position in the replicated log. The first entry has index 1; index 0 means "before the log".
public struct LogIndex: Hashable, Comparable, Strideable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The index before the first entry.
    public static let zero = LogIndex(0)

    @inlinable
    public static func < (lhs: LogIndex, rhs: LogIndex) -> Bool { lhs.rawValue < rhs.rawValue }

    @inlinable
    public func distance(to other: LogIndex) -> Int64 {
        Int64(bitPattern: other.rawValue &- rawValue)
    }

    @inlinable
    public func advanced(by n: Int64) -> LogIndex {
        LogIndex(UInt64(bitPattern: Int64(bitPattern: rawValue) &+ n))
    }

    /// The index after this one.
    @inlinable
    public var next: LogIndex { LogIndex(rawValue &+ 1) }

    /// The index before this one (`zero` stays `zero`).
    @inlinable
    public var previous: LogIndex { LogIndex(rawValue == 0 ? 0 : rawValue - 1) }

    public var description: String { "i\(rawValue)" }
}

/// What an entry of the log carries.
public enum EntryKind: UInt8, Sendable {
    /// An application command, handed to the state machine once committed.
    case normal = 0
    /// The empty entry a new leader appends to commit entries of earlier terms (Raft §5.4.2, §8).
    /// The state machine never sees it, but it occupies an index.
    case noop = 1
    /// A change of membership (`ConfigChange`, encoded). It takes effect when it is appended, committed or not
    /// (thesis §4.1); the state machine never sees it.
    case configChange = 2
}

/// One entry of the replicated log.
public struct Entry: Hashable, Sendable {
    /// The term of the leader that created the entry.
    public var term: Term
    /// The entry's position in the log.
    public var index: LogIndex
    public var kind: EntryKind
    /// The application's command (empty for a no-op).
    public var data: [UInt8]

    @inlinable
    public init(term: Term, index: LogIndex, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// Bytes this entry counts for when messages are bounded by size: its payload plus a fixed header.
    @inlinable
    public var byteSize: Int { data.count + Entry.headerSize }

    /// The fixed per-entry overhead counted by `byteSize` (term, index, kind and a length).
    public static let headerSize = 24
}

/// The state every node must persist before it answers anyone (Raft Figure 2: `currentTerm`,
/// `votedFor`), plus the commit index, which is kept as a hint for a fast restart.
public struct HardState: Hashable, Sendable, CustomStringConvertible {
    public var term: Term
    public var votedFor: NodeID?
    public var commit: LogIndex

    public init(term: Term = .zero, votedFor: NodeID? = nil, commit: LogIndex = .zero) {
        self.term = term
        self.votedFor = votedFor
        self.commit = commit
    }

    public var description: String {
        "HardState(term: \(term), vote: \(votedFor.map(String.init(describing:)) ?? "none"), commit: \(commit))"
    }
}
