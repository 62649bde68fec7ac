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

    /// Forgets every entry up to `index` (whose term is `term`), which a snapshot now covers. `retained` are the
    /// entries after `index` up to the end of the log, as the node handed them out for writing (writes made before
    /// this may still be in progress: this is ordered after them, as writes are ordered among themselves). The
    /// latest hard state is kept. A compaction through an index the storage is compacted through already does
    /// nothing. `completion` runs once it is durable.
    func compact(
        through index: LogIndex, term: Term, retaining: [Entry], completion: @escaping @Sendable ((any Error)?) -> Void)

    /// Empties the log after `index` (whose term is `term`), whatever it held — entries beyond `index` too — and
    /// makes `hardState` the hard state: a follower that installs a snapshot at `index`. Ordered after every write
    /// made before it; `completion` runs once it is durable. A crash leaves the log as it was or as it is after.
    func reset(
        to index: LogIndex, term: Term, hardState: HardState, completion: @escaping @Sendable ((any Error)?) -> Void)

    /// Releases the storage (files, locks). Called once the node has stopped.
    func close()
}

extension NodeStorage {
    /// For a storage written before compaction existed: refuses it, with a `StorageFailure` of kind `.refused`.
    public func compact(
        through index: LogIndex, term: Term, retaining: [Entry], completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        completion(StorageFailure(.refused, "this storage (\(type(of: self))) cannot compact its log"))
    }

    /// For a storage written before snapshots existed: refuses it, with a `StorageFailure` of kind `.refused`.
    public func reset(
        to index: LogIndex, term: Term, hardState: HardState, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        completion(StorageFailure(.refused, "this storage (\(type(of: self))) cannot install a snapshot"))
    }
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

    public func compact(
        through index: LogIndex, term: Term, retaining: [Entry], completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let error = storage.withLockedValue { s -> StorageFailure? in
            do throws(StorageFailure) {
                try s.compact(through: index, term: term, retaining: retaining)
                return nil
            } catch {
                return error
            }
        }
        completion(error)
    }

    public func reset(
        to index: LogIndex, term: Term, hardState: HardState, completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        storage.withLockedValue { $0.reset(to: index, term: term, hardState: hardState) }
        completion(nil)
    }

    public func close() {}
}
