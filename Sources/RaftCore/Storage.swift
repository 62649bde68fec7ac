/// What a node finds in its storage when it starts: everything it persisted before it stopped or crashed.
public struct PersistentState: Sendable, Hashable {
    public var hardState: HardState
    /// The index and term of the entry just before `entries[0]` (zero for a log that was never compacted).
    public var snapshotIndex: LogIndex
    public var snapshotTerm: Term
    /// The log after `snapshotIndex`, in order.
    public var entries: [Entry]

    public init(
        hardState: HardState = HardState(),
        snapshotIndex: LogIndex = .zero,
        snapshotTerm: Term = .zero,
        entries: [Entry] = []
    ) {
        self.hardState = hardState
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
    }

    /// The index of the last entry held.
    public var lastIndex: LogIndex { LogIndex(snapshotIndex.rawValue + UInt64(entries.count)) }

    /// The term of the entry at `index`, if held (or of the snapshot's last entry).
    public func term(at index: LogIndex) -> Term? {
        if index == snapshotIndex { return snapshotTerm }
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(index.rawValue - snapshotIndex.rawValue - 1)].term
    }
}

/// Where a node keeps its term, vote and log so that they survive a crash.
///
/// The core never calls storage itself: the runtime takes each `Ready` from the core, calls `persist` with its
/// entries and hard state, and only then sends the messages and applies the entries that depend on them. An
/// implementation must make both durable before `persist` returns, entries first and hard state second, and must
/// never reorder one call's writes after a later call's.
public protocol LogStorage {
    /// Reads back everything persisted so far.
    func initialState() throws -> PersistentState

    /// Durably stores `entries` and then `hardState` (if given).
    ///
    /// The first of `entries` may have an index at or below the last stored one: the stored log is cut just before
    /// it (a follower's log being repaired by a new leader, Raft §5.3) and the new entries take its place.
    mutating func persist(entries: [Entry], hardState: HardState?) throws
}

/// A failure to store or read back Raft state.
public enum StorageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// An append would leave a hole in the log.
    case gap(expected: LogIndex, got: LogIndex)
    /// Entries would overwrite the compacted part of the log.
    case beforeSnapshot(index: LogIndex, snapshotIndex: LogIndex)

    public var description: String {
        switch self {
        case .gap(let expected, let got):
            "log append would leave a gap: the next index is \(expected) but the entries start at \(got)"
        case .beforeSnapshot(let index, let snapshotIndex):
            "log append at \(index) would overwrite the snapshot, which covers up to \(snapshotIndex)"
        }
    }
}

/// A `LogStorage` in memory: for tests, the simulator, and nodes that need no durability.
public struct MemoryStorage: LogStorage, Sendable, Hashable {
    public private(set) var state: PersistentState

    public init(_ state: PersistentState = PersistentState()) {
        self.state = state
    }

    public func initialState() -> PersistentState { state }

    public mutating func persist(entries: [Entry], hardState: HardState?) throws(StorageError) {
        try append(entries)
        if let hardState { state.hardState = hardState }
    }

    /// Appends entries as `persist` does, without touching the hard state.
    public mutating func append(_ entries: some Collection<Entry>) throws(StorageError) {
        guard let first = entries.first else { return }
        let next = state.lastIndex.next
        guard first.index <= next else { throw .gap(expected: next, got: first.index) }
        guard first.index > state.snapshotIndex else {
            throw .beforeSnapshot(index: first.index, snapshotIndex: state.snapshotIndex)
        }
        let keep = Int(first.index.rawValue - state.snapshotIndex.rawValue - 1)
        if keep < state.entries.count { state.entries.removeSubrange(keep...) }
        state.entries.append(contentsOf: entries)
    }

    /// Stores the hard state alone.
    public mutating func setHardState(_ hardState: HardState) {
        state.hardState = hardState
    }
}
