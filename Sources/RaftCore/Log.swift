/// The replicated log as one node sees it, with the marks that say how far it is durable, committed and applied.
///
/// The whole log since the last snapshot lives in memory (as etcd's server keeps it in its `MemoryStorage`); the
/// storage layer only ever writes it and reads it back on restart. Marks, always in this order:
///
///     snapshotIndex ≤ applied ≤ committed ≤ lastIndex      (what is known)
///     snapshotIndex ≤ stable ≤ handedOut ≤ lastIndex       (what is durable, what was handed out to persist)
///     applied ≤ handedOut                                  (only entries handed out for persisting are applied)
///
/// `committed` may exceed `stable` on a leader: a quorum of followers can commit an entry before the leader's own
/// write finishes (thesis §10.2.1); the entry is applied only after the write, because the caller applies a
/// `Ready`'s committed entries after persisting it.
public struct RaftLog: Sendable {
    /// The index and term of the entry just before the first one held (0 and term 0 for a log never compacted).
    public private(set) var snapshotIndex: LogIndex
    public private(set) var snapshotTerm: Term
    /// The entries after `snapshotIndex`; `entries[k].index == snapshotIndex + 1 + k`.
    @usableFromInline
    private(set) var entries: [Entry]
    /// The highest index known to be committed.
    public internal(set) var committed: LogIndex
    /// The highest index handed to the caller to apply.
    public internal(set) var applied: LogIndex
    /// The highest index known to be durable on this node.
    public internal(set) var stable: LogIndex
    /// The highest index handed to the caller to persist.
    public internal(set) var handedOut: LogIndex

    /// A log restored from storage: everything in it is durable.
    init(snapshotIndex: LogIndex, snapshotTerm: Term, entries: [Entry], committed: LogIndex, applied: LogIndex) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
        self.committed = committed
        self.applied = applied
        let last = LogIndex(snapshotIndex.rawValue + UInt64(entries.count))
        self.stable = last
        self.handedOut = last
        checkMarks()
    }

    /// Checks, in debug builds, that the marks are in the order the type's documentation promises. Every mutating
    /// method ends with this check; a release build skips it.
    func checkMarks() {
        assert(
            snapshotIndex <= applied && applied <= committed && committed <= lastIndex,
            "log marks out of order: snapshot \(snapshotIndex), applied \(applied), committed \(committed), last \(lastIndex)"
        )
        assert(
            snapshotIndex <= stable && stable <= handedOut && handedOut <= lastIndex,
            "log marks out of order: snapshot \(snapshotIndex), stable \(stable), handed out \(handedOut), last \(lastIndex)"
        )
        assert(applied <= handedOut, "log applied \(applied) beyond what was handed out to persist \(handedOut)")
    }

    public var firstIndex: LogIndex { snapshotIndex.next }
    public var lastIndex: LogIndex { LogIndex(snapshotIndex.rawValue &+ UInt64(entries.count)) }
    public var lastTerm: Term { entries.last?.term ?? snapshotTerm }
    /// The number of entries held in memory.
    public var count: Int { entries.count }

    /// The term of the entry at `index`, or nil when the log does not hold it (compacted or beyond the end).
    @inlinable
    public func term(at index: LogIndex) -> Term? {
        if index == snapshotIndex { return snapshotTerm }
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(truncatingIfNeeded: index.rawValue &- snapshotIndex.rawValue &- 1)].term
    }

    /// The entry at `index`, if the log holds it.
    public func entry(at index: LogIndex) -> Entry? {
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[offset(of: index)]
    }

    /// Whether the log holds an entry with this index and term. By the Log Matching property, the logs then agree
    /// on every entry up to `index`.
    func matches(index: LogIndex, term: Term) -> Bool { self.term(at: index) == term }

    /// Whether a log ending at (`lastIndex`, `lastTerm`) is at least as up to date as this one (Raft §5.4.1): a later
    /// last term wins; with equal last terms, the longer log wins.
    func isUpToDate(lastIndex: LogIndex, lastTerm: Term) -> Bool {
        lastTerm > self.lastTerm || (lastTerm == self.lastTerm && lastIndex >= self.lastIndex)
    }

    @inline(__always)
    private func offset(of index: LogIndex) -> Int {
        Int(truncatingIfNeeded: index.rawValue &- snapshotIndex.rawValue &- 1)
    }

    /// Entries from `start` on, at most `maxCount` of them and at most `maxBytes` of them (but at least one, if any).
    func entries(from start: LogIndex, maxBytes: Int, maxCount: Int) -> [Entry] {
        guard start > snapshotIndex, start <= lastIndex else { return [] }
        let lower = offset(of: start)
        let upper = lower + min(entries.count - lower, max(1, maxCount))
        var end = lower + 1
        var bytes = entries[lower].byteSize
        while end < upper {
            bytes += entries[end].byteSize
            if bytes > maxBytes { break }
            end += 1
        }
        return Array(entries[lower..<end])
    }

    /// The entries after `index` that were handed out to persist: what storage compacted through `index` must keep.
    public func handedOutEntries(after index: LogIndex) -> [Entry] {
        entries(max(index, snapshotIndex).next, through: handedOut)
    }

    /// The entries in `start ... end` (both held by the log).
    func entries(_ start: LogIndex, through end: LogIndex) -> [Entry] {
        guard start <= end, start > snapshotIndex, end <= lastIndex else { return [] }
        return Array(entries[offset(of: start)...offset(of: end)])
    }

    // MARK: - Changing the log

    /// Appends an entry created by this node as leader. Its index must be `lastIndex + 1`.
    mutating func appendAsLeader(_ entry: Entry) {
        assert(entry.index == lastIndex.next, "leader append must extend the log")
        entries.append(entry)
        checkMarks()
    }

    /// The outcome of offering a leader's entries to a follower's log.
    enum AppendOutcome: Equatable {
        /// The log did not hold (`prevIndex`, `prevTerm`): the consistency check failed (Raft §5.3).
        case mismatch
        /// The log now holds every offered entry; the index of the last one.
        case appended(lastNewIndex: LogIndex)
        /// The entries conflict with a committed entry: no correct leader sends this. The log is left unchanged.
        case conflictsWithCommitted(LogIndex)
    }

    /// Appends a leader's entries after (`prevIndex`, `prevTerm`), following Raft §5.3: if an existing entry
    /// conflicts with a new one (same index, different term), delete it and everything after it; append any new
    /// entries not already in the log. Entries the log already holds are left alone, so a delayed or duplicated
    /// message never truncates the log.
    mutating func append(after prevIndex: LogIndex, prevTerm: Term, entries newEntries: [Entry]) -> AppendOutcome {
        guard matches(index: prevIndex, term: prevTerm) else { return .mismatch }
        let lastNew = LogIndex(prevIndex.rawValue &+ UInt64(newEntries.count))
        // Find the first new entry that the log does not already hold.
        var k = 0
        while k < newEntries.count {
            let e = newEntries[k]
            guard let existing = term(at: e.index) else { break }
            if existing != e.term {
                if e.index <= committed { return .conflictsWithCommitted(e.index) }
                truncate(after: e.index.previous)
                break
            }
            k += 1
        }
        if k < newEntries.count {
            entries.append(contentsOf: newEntries[k...])
        }
        checkMarks()
        return .appended(lastNewIndex: lastNew)
    }

    /// Removes every entry after `index`. Durability marks fall back with it.
    private mutating func truncate(after index: LogIndex) {
        assert(index >= committed, "never truncate committed entries")
        entries.removeSubrange(offset(of: index.next)...)
        if stable > index { stable = index }
        if handedOut > index { handedOut = index }
    }

    /// Moves the commit index forward to `index` (never backwards, never past the end of the log).
    mutating func commit(to index: LogIndex) {
        let target = min(index, lastIndex)
        if target > committed { committed = target }
        checkMarks()
    }

    /// The largest index at or below `index` whose term is at most `term`, and that term: where a log that has
    /// `term` at `index` can first match this one. Used on both sides of a rejected AppendEntries. Terms never
    /// decrease along a log, so this is a binary search: a hint from a peer costs O(log n), whatever it says.
    func lastIndex(atOrBelow index: LogIndex, withTermAtMost term: Term) -> (index: LogIndex, term: Term) {
        let upper = min(index, lastIndex)
        guard upper > snapshotIndex else { return (upper, self.term(at: upper) ?? .zero) }
        // Find how many entries in entries[0 ..< count] have a term at most `term`.
        var low = 0
        var high = offset(of: upper) + 1
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].term <= term { low = mid + 1 } else { high = mid }
        }
        let found = LogIndex(snapshotIndex.rawValue + UInt64(low))
        return (found, self.term(at: found) ?? .zero)
    }

    // MARK: - Handing out work

    /// Entries appended since the last call, to be persisted; marks them handed out.
    mutating func takeUnpersisted() -> [Entry] {
        guard handedOut < lastIndex else { return [] }
        let out = Array(entries[offset(of: handedOut.next)...])
        handedOut = lastIndex
        checkMarks()
        return out
    }

    /// Whether there are entries to persist.
    var hasUnpersisted: Bool { handedOut < lastIndex }

    /// Records that entries up to (`index`, `term`) are durable. Ignored when the log no longer holds that entry
    /// (it was overwritten while being written; a later write will cover its replacement).
    mutating func persisted(upTo index: LogIndex, term: Term) {
        guard index > stable, index <= handedOut, matches(index: index, term: term) else { return }
        stable = index
        checkMarks()
    }

    /// Committed entries not yet handed out for applying, limited to those handed out for persisting.
    mutating func takeCommitted() -> [Entry] {
        let end = min(committed, handedOut)
        guard end > applied else { return [] }
        let out = entries(applied.next, through: end)
        applied = end
        checkMarks()
        return out
    }

    /// Whether there are committed entries to apply.
    var hasCommittedToApply: Bool { min(committed, handedOut) > applied }

    // MARK: - Snapshots

    /// Drops every entry up to `index`, which a snapshot covers: only entries that are applied and durable.
    /// Returns the index the log now starts after (unchanged if `index` is not beyond it).
    @discardableResult
    mutating func compact(through index: LogIndex) -> LogIndex {
        let target = min(index, applied, stable)
        guard target > snapshotIndex, let term = term(at: target) else { return snapshotIndex }
        entries.removeSubrange(..<offset(of: target.next))
        snapshotTerm = term
        snapshotIndex = target
        checkMarks()
        return snapshotIndex
    }

    /// Replaces the whole log with a snapshot's end: empty after (`index`, `term`), everything up to it committed
    /// and applied (the caller restores the state machine from the snapshot before applying anything after it).
    mutating func restore(index: LogIndex, term: Term) {
        entries.removeAll()
        snapshotIndex = index
        snapshotTerm = term
        committed = index
        applied = index
        stable = index
        handedOut = index
        checkMarks()
    }
}
