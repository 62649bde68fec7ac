/// The ordered write pipeline: carries out the core's readies in the order `Ready` requires. It exists once, and
/// every shell runs it — `RaftNode`, the simulator, the lockstep cluster — so the code the simulator proves is the
/// code production runs.
///
/// The pipeline decides *when*; the shell does the I/O:
/// 1. `take(from:)` takes one ready from the core. The shell sends its `messages` at once and, if it carries a
///    `write`, starts that write after every write started before it (any number may be in progress; they must
///    become durable in the order they were started).
/// 2. When a write is durable, the shell calls `writeCompleted(_:)`.
/// 3. Both return the readies that are durable now, oldest first, already reported to the core (`Raft.advance`).
///    For each, in order, the shell sends `messagesAfterPersist` and applies `committedEntries`, before it takes
///    the next ready.
///
/// A ready with nothing to write still waits for the writes ahead of it (its committed entries may need them), but
/// costs no write of its own.
public struct ReadyPipeline: Sendable {
    /// What one ready asks to be made durable: a snapshot received (the stored log reset to it), the entries, then
    /// the hard state.
    public struct Write: Sendable, Hashable {
        public var snapshot: SnapshotMetadata?
        public var entries: [Entry]
        public var hardState: HardState?
    }

    /// What to do with one ready taken from the core.
    public struct Step: Sendable {
        /// To send now: they promise nothing about what is durable.
        public var messages: [Message]
        /// To start, after every write started before it; `writeCompleted(_:)` reports its end.
        public var write: Write?
        /// Readies durable now (this one, when it had nothing to write and no write was ahead of it).
        public var durable: [Ready]
        /// Reads confirmed, and reads dropped: they wait for no write (see `Ready.readStates`).
        public var readStates: [ReadState] = []
        public var readsDropped: [UInt64] = []
    }

    /// Readies taken and not yet durable, oldest first, with whether each has a write of its own.
    private var waiting: [(ready: Ready, hasWrite: Bool)] = []
    /// Writes started and not yet reported durable.
    public private(set) var writesInProgress = 0

    public init() {}

    /// Whether every ready taken so far is durable.
    public var isIdle: Bool { waiting.isEmpty }

    /// Takes the core's next ready, if it has one, and says what to do with it.
    public mutating func take(from raft: inout Raft) -> Step? {
        guard raft.hasReady else { return nil }
        let ready = raft.ready()
        let hasWrite = ready.snapshot != nil || !ready.entries.isEmpty || ready.hardState != nil
        var step = Step(
            messages: ready.messages, write: nil, durable: [], readStates: ready.readStates,
            readsDropped: ready.readsDropped)
        if !hasWrite && waiting.isEmpty {
            raft.advance(ready)
            step.durable = [ready]
        } else {
            waiting.append((ready, hasWrite))
            if hasWrite {
                writesInProgress += 1
                step.write = Write(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
            }
        }
        return step
    }

    /// The oldest write in progress is durable. Returns the readies durable now: its own, and those queued behind
    /// it that had nothing to write — oldest first, each already reported to the core.
    public mutating func writeCompleted(_ raft: inout Raft) -> [Ready] {
        guard writesInProgress > 0, let first = waiting.first else { return [] }
        assert(first.hasWrite, "the oldest waiting ready must be the one whose write completed")
        writesInProgress -= 1
        var durable = [first.ready]
        var taken = 1
        while taken < waiting.count, !waiting[taken].hasWrite {
            durable.append(waiting[taken].ready)
            taken += 1
        }
        waiting.removeFirst(taken)
        for ready in durable { raft.advance(ready) }
        return durable
    }

    /// Forgets everything in progress (the node crashed or stopped; its core is gone with it).
    public mutating func reset() {
        waiting = []
        writesInProgress = 0
    }
}
