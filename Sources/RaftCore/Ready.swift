/// Work the core hands to its caller: what to persist, what to send, what to apply.
///
/// The I/O ordering contract. For each `Ready`, in the order the readies were taken:
/// 1. `messages` may be sent at once, before or while the rest is persisted. They are a leader's AppendEntries,
///    heartbeats and commit notices, and proposals forwarded in a term already durable (one forwarded in a term
///    not yet durable waits in `messagesAfterPersist`): none depends on anything in this ready being durable
///    (thesis §10.2.1: a leader may replicate an entry before its own write finishes; it counts itself towards a
///    quorum only once `advance(_:)` says the write is done).
/// 2. `entries` and then `hardState` must be made durable (`NodeStorage.persist`). The first entry may overwrite
///    stored entries from its index on. Readies must be persisted in the order they were taken: a later ready's
///    writes never overtake an earlier one's (so a vote is never reordered after a log write that followed it).
/// 3. Only then may `messagesAfterPersist` be sent (votes, acknowledgements, campaigns: every message that
///    promises something about this node's durable state) and `committedEntries` be applied, in order.
/// 4. Finally `Raft.advance(_:)` is called with the ready, so the core knows its entries are durable.
///
/// Taking a new ready before the previous one is advanced is allowed, as long as the order above holds.
public struct Ready: Sendable {
    /// A snapshot received from the leader, to install before anything else in this ready: make it the node's
    /// durable snapshot and empty the stored log after it (`NodeStorage.reset`), then restore the state machine from
    /// it before applying `committedEntries` (which follow it). Its bytes are with the shell, which received them.
    public var snapshot: SnapshotMetadata?
    /// Entries to persist, in index order.
    public var entries: [Entry] = []
    /// The hard state to persist after `entries`: present when the term or vote changed, or along with entries when
    /// the commit index moved. (The commit index is a hint for restarts; a change of it alone is never a reason to
    /// write, so applying committed entries never waits for a write of its own.)
    public var hardState: HardState?
    /// Messages that may be sent without waiting for this ready to be persisted.
    public var messages: [Message] = []
    /// Messages to send only once `entries` and `hardState` are durable.
    public var messagesAfterPersist: [Message] = []
    /// Committed entries to apply, in index order, once `entries` and `hardState` are durable. Includes no-op entries,
    /// which the application skips but which still advance its applied index.
    public var committedEntries: [Entry] = []
    /// Linearizable reads confirmed (`Raft.readIndex(context:)`): serve each once the state machine has applied up
    /// to its index. They depend on nothing in this ready being durable.
    public var readStates: [ReadState] = []
    /// This node's reads that will never be confirmed (it stopped leading, or the leader refused them): ask again.
    public var readsDropped: [UInt64] = []

    public init() {}

    /// Whether there is nothing at all to do.
    public var isEmpty: Bool {
        snapshot == nil && entries.isEmpty && hardState == nil && messages.isEmpty && messagesAfterPersist.isEmpty
            && committedEntries.isEmpty && readStates.isEmpty && readsDropped.isEmpty
    }
}
