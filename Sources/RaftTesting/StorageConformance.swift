import Foundation
import RaftCore
import RaftStorage

/// Checks that a `NodeStorage` keeps the promises a `RaftNode` relies on, whatever it stores to: an application's
/// own storage can be run through the same checks as RaftLite's write-ahead log.
///
/// It is a plain library, not tied to a test framework: `run` returns the failures it found (empty: the storage
/// conforms), for the caller to report from its own tests:
///
/// ```swift
/// let failures = await StorageConformance.run {
///     let directory = makeTemporaryDirectory()
///     return StorageConformance.Place { try WriteAheadLog(directory: directory) }
/// }
/// #expect(failures.isEmpty, "\(failures)")
/// ```
///
/// Each check gets a place of its own from `makePlace` (an empty directory, disk or memory cell) and opens a storage
/// over it with `Place.open`, as many times as it needs: to restart, it closes the storage it has and opens a new
/// one over the same place, which must read back exactly what completed. A storage that never calls a completion
/// makes its check wait forever.
public enum StorageConformance {
    /// Where a storage lives, and how to open one over it.
    public struct Place: Sendable {
        /// Opens a storage over the place; the checks close the one they had first.
        public var open: @Sendable () throws -> any NodeStorage
        /// Cuts the power: what is not durable is lost (the storage open over the place is abandoned, then closed),
        /// and `open` then opens over what survived. Nil if the place cannot crash; the durability check is skipped.
        /// It is called from a completion, so on the storage's own thread perhaps: it must not wait for the storage.
        public var crash: (@Sendable () throws -> Void)?

        public init(open: @escaping @Sendable () throws -> any NodeStorage, crash: (@Sendable () throws -> Void)? = nil)
        {
            self.open = open
            self.crash = crash
        }
    }

    /// A promise a storage did not keep.
    public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
        /// The name of the check that found it.
        public var check: String
        public var problem: String

        public init(check: String, problem: String) {
            self.check = check
            self.problem = problem
        }

        public var description: String { "\(check): \(problem)" }
    }

    /// One named check: it returns the problems it found, and may throw (which is a failure too).
    public struct Check: Sendable {
        public let name: String
        public let run: @Sendable (Place) async throws -> [String]

        public init(name: String, run: @escaping @Sendable (Place) async throws -> [String]) {
            self.name = name
            self.run = run
        }
    }

    /// Every check, in the order `run` runs them.
    public static let allChecks: [Check] = [
        Check(name: "empty at first", run: emptyAtFirst),
        Check(name: "writes complete in order", run: writesCompleteInOrder),
        Check(name: "completion only once durable", run: completionOnlyOnceDurable),
        Check(name: "truncation on conflict", run: truncationOnConflict),
        Check(name: "restart reads back what completed", run: restartReadsBack),
        Check(name: "a gap is refused and loses nothing", run: gapIsRefused),
        Check(name: "hard state alone", run: hardStateAlone),
        Check(name: "empty writes", run: emptyWrites),
        Check(name: "compaction keeps the entries after it", run: compactionKeepsTheRest),
        Check(name: "a reset empties the log after it", run: resetEmptiesTheLog),
    ]

    /// Runs `checks` (all of them unless told), each on a new place from `makePlace`; returns what failed.
    public static func run(
        _ checks: [Check] = allChecks, makePlace: @Sendable () throws -> Place
    ) async -> [Failure] {
        var failures: [Failure] = []
        for check in checks {
            do {
                let place = try makePlace()
                for problem in try await check.run(place) {
                    failures.append(Failure(check: check.name, problem: problem))
                }
            } catch {
                failures.append(Failure(check: check.name, problem: "threw \(error)"))
            }
        }
        return failures
    }

    // MARK: - The checks

    static func emptyAtFirst(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        defer { storage.close() }
        let state = try storage.initialState()
        return state == PersistentState() ? [] : ["a new place holds \(describe(state)), not nothing"]
    }

    /// Many writes made without waiting complete in the order they were made, each once, and all are read back.
    static func writesCompleteInOrder(_ place: Place) async throws -> [String] {
        let writes = (1...40).map { i in
            Write(
                entries: [entry(i)], hardState: i % 3 == 0 ? HardState(term: Term(1), commit: LogIndex(UInt64(i))) : nil
            )
        }
        let storage = try place.open()
        let outcome = await persist(writes, to: storage)
        storage.close()
        var problems = outcome.problems(expectingSuccessOf: writes.count)
        if outcome.order != Array(writes.indices) {
            problems.append("writes 0..<\(writes.count) completed in the order \(outcome.order)")
        }
        let expected = PersistentState(
            hardState: HardState(term: Term(1), commit: LogIndex(39)), entries: (1...40).map(entry))
        problems += try readBack(place, expecting: expected)
        return problems
    }

    /// A crash right after a write completed keeps it and everything before it; what survives is a prefix of the
    /// writes made, and a hard state only with the entries written before it (entries are durable first).
    static func completionOnlyOnceDurable(_ place: Place) async throws -> [String] {
        guard let crash = place.crash else { return [] }
        let count = 12
        let crashAfter = 5
        // Write i holds entry i+1 and then a hard state committing it.
        let writes = (0..<count).map { i in
            Write(entries: [entry(i + 1)], hardState: HardState(term: Term(1), commit: LogIndex(UInt64(i + 1))))
        }
        let storage = try place.open()
        let crashError = Locked<(any Error)?>(nil)
        let outcome = await persist(writes, to: storage) { index, error in
            guard index == crashAfter, error == nil else { return }
            do { try crash() } catch { crashError.set(error) }
        }
        storage.close()
        if let error = crashError.get() { throw error }
        var problems: [String] = []
        if outcome.order.prefix(crashAfter + 1) != ArraySlice(0...crashAfter) {
            problems.append("writes completed in the order \(outcome.order)")
        }
        let failedEarly = outcome.errors.filter { $0.key <= crashAfter }
        for (k, error) in failedEarly.sorted(by: { $0.key < $1.key }) {
            problems.append("write \(k), before the crash, failed: \(error)")
        }
        let reopened = try place.open()
        defer { reopened.close() }
        let state = try reopened.initialState()
        let kept = state.entries.count
        if state.snapshotIndex != .zero || state.entries != (0..<kept).map({ entry($0 + 1) }) {
            problems.append("after the crash the log is \(describe(state)), not a prefix of the entries written")
        }
        if kept < crashAfter + 1 {
            problems.append("write \(crashAfter) had completed before the crash, but only \(kept) entries survived it")
        }
        if state.hardState.commit.rawValue < UInt64(crashAfter + 1) {
            problems.append(
                "write \(crashAfter) had completed before the crash, but the hard state that survived is "
                    + "\(state.hardState)")
        }
        if state.hardState.commit > state.lastIndex {
            problems.append(
                "the hard state of a write survived the crash (\(state.hardState)) but not the entries "
                    + "written before it (the log ends at \(state.lastIndex))")
        }
        return problems
    }

    /// An append starting at or below the last index replaces the log from there.
    static func truncationOnConflict(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let writes = [
            Write(entries: (1...5).map(entry), hardState: HardState(term: Term(1), commit: LogIndex(2))),
            Write(
                entries: [entry(3, term: 2), entry(4, term: 2)],
                hardState: HardState(term: Term(2), commit: LogIndex(2))),
            // At the end exactly: nothing is cut.
            Write(entries: [entry(5, term: 2)], hardState: nil),
            // Replacing the last entry alone.
            Write(entries: [entry(5, term: 3)], hardState: nil),
        ]
        let outcome = await persist(writes, to: storage)
        storage.close()
        var problems = outcome.problems(expectingSuccessOf: writes.count)
        let expected = PersistentState(
            hardState: HardState(term: Term(2), commit: LogIndex(2)),
            entries: [entry(1), entry(2), entry(3, term: 2), entry(4, term: 2), entry(5, term: 3)])
        problems += try readBack(place, expecting: expected)
        return problems
    }

    /// A new storage over the same place reads back exactly what completed, and goes on from there; more than once.
    static func restartReadsBack(_ place: Place) async throws -> [String] {
        var expected = PersistentState()
        var problems: [String] = []
        for round in 0..<3 {
            let storage = try place.open()
            let found = try storage.initialState()
            if found != expected {
                problems.append(
                    "opened for the \(round + 1). time it holds \(describe(found)), not \(describe(expected))")
            }
            let first = 1 + 4 * round
            let writes = [
                Write(entries: [entry(first), entry(first + 1)], hardState: HardState(term: Term(UInt64(round + 1)))),
                Write(
                    entries: [entry(first + 2), entry(first + 3)],
                    hardState: HardState(
                        term: Term(UInt64(round + 1)), votedFor: NodeID(7), commit: LogIndex(UInt64(first)))),
            ]
            let outcome = await persist(writes, to: storage)
            storage.close()
            problems += outcome.problems(expectingSuccessOf: writes.count)
            for write in writes {
                expected.entries += write.entries
                if let hardState = write.hardState { expected.hardState = hardState }
            }
        }
        problems += try readBack(place, expecting: expected)
        return problems
    }

    /// An append that would leave a hole is refused with a `StorageFailure` of kind `.invalidAppend`, changes
    /// nothing (its hard state included), and the storage takes the next valid write.
    static func gapIsRefused(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let before = HardState(term: Term(1), commit: LogIndex(1))
        let writes = [
            Write(entries: (1...3).map(entry), hardState: before),
            Write(entries: [entry(5)], hardState: HardState(term: Term(9))),
            Write(entries: [entry(4)], hardState: nil),
        ]
        let outcome = await persist(writes, to: storage)
        storage.close()
        var problems: [String] = []
        if outcome.order != [0, 1, 2] { problems.append("writes completed in the order \(outcome.order)") }
        for k in [0, 2] where outcome.errors[k] != nil {
            problems.append("write \(k) failed: \(outcome.errors[k].map { "\($0)" } ?? "")")
        }
        switch outcome.errors[1] {
        case nil:
            problems.append("an append at 5 onto a log ending at 3 was accepted")
        case let failure as StorageFailure where failure.kind == .invalidAppend:
            break
        case let error?:
            problems.append(
                "an append leaving a gap was refused with \(error), not a StorageFailure of kind invalidAppend")
        }
        problems += try readBack(place, expecting: PersistentState(hardState: before, entries: (1...4).map(entry)))
        return problems
    }

    /// A hard state written alone changes the hard state and nothing else.
    static func hardStateAlone(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let last = HardState(term: Term(3), votedFor: NodeID(2), commit: LogIndex(1))
        let writes = [
            Write(entries: [entry(1), entry(2)], hardState: nil),
            Write(entries: [], hardState: HardState(term: Term(2), votedFor: NodeID(1))),
            Write(entries: [], hardState: last),
        ]
        let outcome = await persist(writes, to: storage)
        storage.close()
        var problems = outcome.problems(expectingSuccessOf: writes.count)
        problems += try readBack(place, expecting: PersistentState(hardState: last, entries: [entry(1), entry(2)]))
        return problems
    }

    /// A write of nothing completes, in its turn, and changes nothing.
    static func emptyWrites(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let hardState = HardState(term: Term(1), commit: LogIndex(1))
        let writes = [
            Write(entries: [], hardState: nil),
            Write(entries: [entry(1)], hardState: hardState),
            Write(entries: [], hardState: nil),
            Write(entries: [], hardState: nil),
        ]
        let outcome = await persist(writes, to: storage)
        storage.close()
        var problems = outcome.problems(expectingSuccessOf: writes.count)
        if outcome.order != Array(writes.indices) {
            problems.append("writes completed in the order \(outcome.order)")
        }
        problems += try readBack(place, expecting: PersistentState(hardState: hardState, entries: [entry(1)]))
        return problems
    }

    /// A compaction queued behind writes still in progress completes after them, in order; the storage then starts
    /// after the compacted index with the retained entries and the latest hard state, takes writes after them, and
    /// refuses an append into the compacted part.
    static func compactionKeepsTheRest(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let hardState = HardState(term: Term(2), votedFor: NodeID(1), commit: LogIndex(8))
        let operations: [Operation] = [
            .write(Write(entries: (1...5).map(entry), hardState: nil)),
            .write(Write(entries: (6...10).map(entry), hardState: hardState)),
            // The node's copy of the entries after 6, up to the end: the writes above may still be in progress.
            .compact(index: 6, term: 1, retaining: (7...10).map(entry)),
            .write(Write(entries: [entry(11, term: 2)], hardState: nil)),
            // Into the compacted part: refused.
            .write(Write(entries: [entry(5, term: 2)], hardState: nil)),
            // Compacted through there already: nothing happens.
            .compact(index: 3, term: 1, retaining: (4...11).map(entry)),
        ]
        let outcome = await perform(operations, on: storage)
        storage.close()
        var problems: [String] = []
        if outcome.order != Array(operations.indices) {
            problems.append("the operations completed in the order \(outcome.order)")
        }
        for k in [0, 1, 2, 3, 5] where outcome.errors[k] != nil {
            problems.append("operation \(k) failed: \(outcome.errors[k].map { "\($0)" } ?? "")")
        }
        if outcome.errors[4] == nil {
            problems.append("an append at 5 into a log compacted through 6 was accepted")
        }
        problems += try readBack(
            place,
            expecting: PersistentState(
                hardState: hardState, snapshotIndex: LogIndex(6), snapshotTerm: Term(1),
                entries: (7...10).map(entry) + [entry(11, term: 2)]))
        return problems
    }

    /// A reset empties the log after its index, whatever it held (entries beyond the index too), records its hard
    /// state, and the storage takes writes after it; a reset beyond the log's end works the same.
    static func resetEmptiesTheLog(_ place: Place) async throws -> [String] {
        let storage = try place.open()
        let first = HardState(term: Term(3), votedFor: NodeID(2), commit: LogIndex(4))
        let second = HardState(term: Term(4), votedFor: nil, commit: LogIndex(20))
        let operations: [Operation] = [
            .write(Write(entries: (1...10).map(entry), hardState: HardState(term: Term(1), commit: LogIndex(3)))),
            // Below the end: entries 5...10 conflict with the snapshot and must go.
            .reset(index: 4, term: 2, hardState: first),
        ]
        let outcome = await perform(operations, on: storage)
        storage.close()
        var problems = outcome.problems(expectingSuccessOf: operations.count)
        problems += try readBack(
            place, expecting: PersistentState(hardState: first, snapshotIndex: LogIndex(4), snapshotTerm: Term(2)))

        let again = try place.open()
        let more: [Operation] = [
            .write(Write(entries: [entry(5, term: 3)], hardState: nil)),
            // Beyond the end.
            .reset(index: 20, term: 4, hardState: second),
            .write(Write(entries: [entry(21, term: 4)], hardState: nil)),
        ]
        let later = await perform(more, on: again)
        again.close()
        problems += later.problems(expectingSuccessOf: more.count)
        if later.order != Array(more.indices) {
            problems.append("the operations completed in the order \(later.order)")
        }
        problems += try readBack(
            place,
            expecting: PersistentState(
                hardState: second, snapshotIndex: LogIndex(20), snapshotTerm: Term(4), entries: [entry(21, term: 4)]))
        return problems
    }

    // MARK: - Helpers

    struct Write: Sendable {
        var entries: [Entry]
        var hardState: HardState?
    }

    /// One call to a storage.
    enum Operation: Sendable {
        case write(Write)
        case compact(index: UInt64, term: UInt64, retaining: [Entry])
        case reset(index: UInt64, term: UInt64, hardState: HardState)
    }

    /// Makes the calls one after another without waiting, and waits for all their completions.
    static func perform(_ operations: [Operation], on storage: any NodeStorage) async -> Outcome {
        guard !operations.isEmpty else { return Outcome() }
        let recorded = Locked(Outcome())
        let resumed = Locked(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            for (k, operation) in operations.enumerated() {
                let completion: @Sendable ((any Error)?) -> Void = { error in
                    let all = recorded.update { outcome -> Outcome? in
                        outcome.order.append(k)
                        if let error { outcome.errors[k] = error }
                        return outcome.order.count == operations.count ? outcome : nil
                    }
                    if let all,
                        resumed.update({ done -> Bool in
                            defer { done = true }
                            return !done
                        })
                    {
                        continuation.resume(returning: all)
                    }
                }
                switch operation {
                case .write(let write):
                    storage.persist(entries: write.entries, hardState: write.hardState, completion: completion)
                case .compact(let index, let term, let retained):
                    storage.compact(
                        through: LogIndex(index), term: Term(term), retaining: retained, completion: completion)
                case .reset(let index, let term, let hardState):
                    storage.reset(to: LogIndex(index), term: Term(term), hardState: hardState, completion: completion)
                }
            }
        }
    }

    /// What the completions of a run of writes said.
    struct Outcome: Sendable {
        /// The writes' positions, in the order their completions ran.
        var order: [Int] = []
        /// The errors completions gave, by position.
        var errors: [Int: any Error] = [:]

        func problems(expectingSuccessOf count: Int) -> [String] {
            var problems: [String] = []
            if order.count != count || Set(order).count != count {
                problems.append("\(count) writes made \(order.count) completions, for writes \(order)")
            }
            for (k, error) in errors.sorted(by: { $0.key < $1.key }) { problems.append("write \(k) failed: \(error)") }
            return problems
        }
    }

    /// Makes the writes one after another without waiting, and waits for all their completions. `observe` runs in
    /// each completion, after it is recorded.
    static func persist(
        _ writes: [Write], to storage: any NodeStorage,
        observe: @escaping @Sendable (Int, (any Error)?) -> Void = { _, _ in }
    ) async -> Outcome {
        guard !writes.isEmpty else { return Outcome() }
        let recorded = Locked(Outcome())
        let resumed = Locked(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            for (k, write) in writes.enumerated() {
                storage.persist(entries: write.entries, hardState: write.hardState) { error in
                    let all = recorded.update { outcome -> Outcome? in
                        outcome.order.append(k)
                        if let error { outcome.errors[k] = error }
                        return outcome.order.count == writes.count ? outcome : nil
                    }
                    observe(k, error)
                    // Once, even if a storage completes a write twice (the extra completions are not seen).
                    if let all,
                        resumed.update({ done -> Bool in
                            defer { done = true }
                            return !done
                        })
                    {
                        continuation.resume(returning: all)
                    }
                }
            }
        }
    }

    /// Opens the place again and compares what it holds with `expected`.
    static func readBack(_ place: Place, expecting expected: PersistentState) throws -> [String] {
        let storage = try place.open()
        defer { storage.close() }
        let found = try storage.initialState()
        guard found != expected else { return [] }
        return ["opened again it holds \(describe(found)), not \(describe(expected))"]
    }

    static func entry(_ index: Int) -> Entry { entry(index, term: 1) }

    static func entry(_ index: Int, term: UInt64) -> Entry {
        Entry(term: Term(term), index: LogIndex(UInt64(index)), data: Array("value \(index) of term \(term)".utf8))
    }

    static func describe(_ state: PersistentState) -> String {
        let entries = state.entries.map { "\($0.index.rawValue)@\($0.term.rawValue)" }.joined(separator: " ")
        return "[\(entries)] after \(state.snapshotIndex.rawValue)@\(state.snapshotTerm.rawValue), \(state.hardState)"
    }
}

/// A value behind a lock, for the completions (which run on any thread).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func get() -> Value { lock.withLock { value } }

    func set(_ newValue: Value) { lock.withLock { value = newValue } }

    func update<T>(_ body: (inout Value) -> T) -> T { lock.withLock { body(&value) } }
}
