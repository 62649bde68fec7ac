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

/// A failure to store or read back Raft state: what kind of failure it is, what happened, and the file (and
/// offset) at fault when there is one. The one storage error of RaftLite: the in-memory log, the write-ahead log,
/// its file systems and `LogRepair` all throw it.
///
/// `Kind` is a struct with one static member per kind rather than an enum, so that new kinds can be added without
/// breaking anyone's `switch`: compare it (`failure.kind == .noSpace`, `catch let f where f.kind == .locked`).
public struct StorageFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case corrupt, missingSegment, locked, unsupportedFormat, identityMismatch, io, noSpace, closed
            case invalidAppend, refused
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// A record in the middle of the log is damaged: the node must not start (nothing is silently dropped).
        public static let corrupt = Kind(.corrupt)
        /// A segment of the log is missing.
        public static let missingSegment = Kind(.missingSegment)
        /// Another process has the data directory open.
        public static let locked = Kind(.locked)
        /// The data directory was written by an incompatible version.
        public static let unsupportedFormat = Kind(.unsupportedFormat)
        /// The data directory belongs to another node, another cluster, or another member set.
        public static let identityMismatch = Kind(.identityMismatch)
        /// The operating system refused a read, write or sync.
        public static let io = Kind(.io)
        /// The disk (or the user's quota) is full.
        public static let noSpace = Kind(.noSpace)
        /// The log is closed (or failed earlier and refuses further writes).
        public static let closed = Kind(.closed)
        /// An append that would leave a hole in the log or rewrite compacted entries.
        public static let invalidAppend = Kind(.invalidAppend)
        /// A repair that cannot be done as asked (`LogRepair`).
        public static let refused = Kind(.refused)

        public var description: String { base.rawValue }
    }

    public var kind: Kind
    public var message: String
    public var file: String?
    public var offset: Int?

    public init(_ kind: Kind, _ message: String, file: String? = nil, offset: Int? = nil) {
        self.kind = kind
        self.message = message
        self.file = file
        self.offset = offset
    }

    public var description: String {
        var text = message
        if let file { text += " (\(file)" + (offset.map { " at offset \($0)" } ?? "") + ")" }
        return text
    }
}

/// The log and hard state of one node, in memory: a plain value with the append rule every storage follows.
///
/// It is not a storage protocol of its own (the runtime's is `NodeStorage`, in RaftStorage): it is the value that
/// `InMemoryNodeStorage` keeps behind a lock, and that the deterministic simulator, which runs without threads,
/// uses directly. The core never calls storage itself: the runtime takes each `Ready` from the core, persists its
/// entries and then its hard state, and only then sends the messages and applies the entries that depend on them.
public struct MemoryStorage: Sendable, Hashable {
    public private(set) var state: PersistentState

    public init(_ state: PersistentState = PersistentState()) {
        self.state = state
    }

    /// Everything stored so far.
    public func initialState() -> PersistentState { state }

    /// Stores `entries` and then `hardState` (if given).
    ///
    /// The first of `entries` may have an index at or below the last stored one: the stored log is cut just before
    /// it (a follower's log being repaired by a new leader, Raft §5.3) and the new entries take its place.
    /// - Throws: `StorageFailure` of kind `.invalidAppend` for entries that would leave a hole in the log or
    ///   overwrite its compacted part; nothing is changed then.
    public mutating func persist(entries: [Entry], hardState: HardState?) throws(StorageFailure) {
        try append(entries)
        if let hardState { state.hardState = hardState }
    }

    /// Appends entries as `persist` does, without touching the hard state.
    public mutating func append(_ entries: some Collection<Entry>) throws(StorageFailure) {
        guard let first = entries.first else { return }
        let next = state.lastIndex.next
        guard first.index <= next else {
            throw StorageFailure(
                .invalidAppend,
                "log append would leave a gap: the next index is \(next) but the entries start at \(first.index)")
        }
        guard first.index > state.snapshotIndex else {
            throw StorageFailure(
                .invalidAppend,
                "log append at \(first.index) would overwrite the snapshot, which covers up to \(state.snapshotIndex)")
        }
        let keep = Int(first.index.rawValue - state.snapshotIndex.rawValue - 1)
        if keep < state.entries.count { state.entries.removeSubrange(keep...) }
        state.entries.append(contentsOf: entries)
    }

    /// Stores the hard state alone.
    public mutating func setHardState(_ hardState: HardState) {
        state.hardState = hardState
    }

    /// Forgets every entry up to `index` (whose term is `term`), which a snapshot now covers: the log holds
    /// `retained` after it, the entries after `index` up to the end of the log (the node's copy of them, which
    /// replaces the stored one). Compacting through an index at or below `snapshotIndex` does nothing.
    /// - Throws: `StorageFailure` of kind `.invalidAppend` if `retained` does not start right after `index` or does
    ///   not reach the end of the log; nothing is changed then.
    public mutating func compact(through index: LogIndex, term: Term, retaining retained: [Entry])
        throws(StorageFailure)
    {
        guard index > state.snapshotIndex else { return }
        guard retained.first.map({ $0.index == index.next }) ?? true,
            (retained.last?.index ?? index) >= state.lastIndex
        else {
            throw StorageFailure(
                .invalidAppend,
                "a compaction through \(index) must retain the entries after it, up to \(state.lastIndex)")
        }
        state.snapshotIndex = index
        state.snapshotTerm = term
        state.entries = retained
    }

    /// Empties the log after `index` (whose term is `term`), whatever it held, and stores `hardState`: what a
    /// follower's storage becomes when it installs a snapshot at `index`.
    public mutating func reset(to index: LogIndex, term: Term, hardState: HardState) {
        state = PersistentState(hardState: hardState, snapshotIndex: index, snapshotTerm: term)
    }
}
