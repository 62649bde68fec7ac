import NIOConcurrencyHelpers
import RaftCore

/// Where a `RaftNode` keeps its term, vote and log so that they survive a crash: the one storage protocol.
///
/// The core never calls storage itself: the runtime takes each `Ready` from the core, calls `persist` with its
/// entries and hard state, and holds back what depends on them until that completes. Writes may complete
/// asynchronously (a write-ahead log syncs in the background and covers many writes with one sync), but they must
/// complete in the order they were made, and `completion` may only run once `entries` and then `hardState` are
/// durable. A write that cannot be done (an append that would leave a hole in the log) is refused with a
/// `StorageFailure` of kind `.invalidAppend` and changes nothing. `StorageConformance`, in the RaftTesting library,
/// checks these promises against an implementation.
public protocol NodeStorage: AnyObject, Sendable {
    /// Everything persisted so far.
    func initialState() throws -> PersistentState

    /// Makes `entries` (cutting any stored entries from the first one's index on) and then `hardState` durable, then
    /// calls `completion` — on any thread — with nil, or with the error that stopped it.
    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void)

    /// Releases the storage (files, locks). Called once the node has stopped.
    func close()
}

/// Storage in memory. It outlives the node that uses it, so a node stopped and started again in the same process
/// keeps its term, vote and log; a process that exits forgets everything.
public final class InMemoryNodeStorage: NodeStorage {
    private let storage: NIOLockedValueBox<MemoryStorage>

    public init(_ state: PersistentState = PersistentState()) {
        storage = NIOLockedValueBox(MemoryStorage(state))
    }

    public func initialState() -> PersistentState {
        storage.withLockedValue { $0.initialState() }
    }

    public func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void)
    {
        let error = storage.withLockedValue { s -> StorageFailure? in
            do throws(StorageFailure) {
                try s.persist(entries: entries, hardState: hardState)
                return nil
            } catch {
                return error
            }
        }
        completion(error)
    }

    public func close() {}
}
