import Foundation
import NIOConcurrencyHelpers
import RaftCore
import RaftStorage
import RaftTesting
import StorageTesting
import Testing

/// The storage conformance suite (RaftTesting) against every storage RaftLite ships, and against broken ones, to
/// show that it catches them.
@Suite struct ConformanceTests {
    static func options() -> WriteAheadLog.Options {
        var options = WriteAheadLog.Options()
        // Small segments: the checks' writes span several of them.
        options.segmentBytes = 1024
        return options
    }

    static func checks(named name: String) -> [StorageConformance.Check] {
        let found = StorageConformance.allChecks.filter { $0.name == name }
        #expect(found.count == 1, "no check named \(name)")
        return found
    }

    @Test func theWriteAheadLogOnRealFilesConforms() async {
        let root = TemporaryDirectory()
        let rootPath = root.path
        try? FileManager.default.createDirectory(atPath: rootPath, withIntermediateDirectories: true)
        let counter = NIOLockedValueBox(0)
        let failures = await StorageConformance.run {
            let n = counter.withLockedValue { n in
                n += 1
                return n
            }
            let directory = rootPath + "/place-\(n)"
            return StorageConformance.Place { try WriteAheadLog(directory: directory, options: Self.options()) }
        }
        withExtendedLifetime(root) {}
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func theWriteAheadLogOnASimulatedDiskConformsAndSurvivesPowerCuts(seed: UInt64) async {
        let failures = await StorageConformance.run {
            let disk = NIOLockedValueBox((fs: SimulatedFileSystem(), rng: SplitMix64(seed: seed)))
            return StorageConformance.Place(
                open: {
                    try WriteAheadLog(
                        directory: "/node", options: Self.options(),
                        fileSystem: disk.withLockedValue { $0.fs })
                },
                crash: {
                    disk.withLockedValue { disk in disk.fs = disk.fs.powerCut(using: &disk.rng) }
                })
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func inMemoryStorageConforms() async {
        let failures = await StorageConformance.run {
            // The storage outlives the node that uses it: a restart is the same storage, a crash loses nothing.
            let storage = InMemoryNodeStorage()
            return StorageConformance.Place(open: { storage }, crash: {})
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func aStorageThatCompletesOutOfOrderFails() async {
        // Only the check made of an even number of writes: the storage holds an odd last one back for ever.
        let failures = await StorageConformance.run(Self.checks(named: "writes complete in order")) {
            let storage = SwappingStorage()
            return StorageConformance.Place(open: { storage }, crash: {})
        }
        #expect(failures.contains { $0.check == "writes complete in order" }, "\(failures)")
    }

    @Test func aStorageThatLosesItsLastEntryOnRestartFails() async {
        let failures = await StorageConformance.run {
            let inner = InMemoryNodeStorage()
            return StorageConformance.Place(open: { ForgetfulStorage(inner) })
        }
        #expect(failures.contains { $0.check == "restart reads back what completed" }, "\(failures)")
        #expect(failures.contains { $0.check == "truncation on conflict" }, "\(failures)")
    }

    @Test func aStorageThatAcceptsAGapFails() async {
        let failures = await StorageConformance.run(Self.checks(named: "a gap is refused and loses nothing")) {
            let storage = GapAcceptingStorage()
            return StorageConformance.Place(open: { storage })
        }
        #expect(
            !failures.isEmpty && failures.allSatisfy { $0.check == "a gap is refused and loses nothing" }, "\(failures)"
        )
    }
}

/// Completes each pair of writes in the wrong order: the second, then the first.
final class SwappingStorage: NodeStorage {
    private let inner = InMemoryNodeStorage()
    private let held = NIOLockedValueBox<(@Sendable ((any Error)?) -> Void, (any Error)?)?>(nil)

    func initialState() -> PersistentState { inner.initialState() }

    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void) {
        inner.persist(entries: entries, hardState: hardState) { error in
            let earlier = self.held.withLockedValue { held in
                defer { held = held == nil ? (completion, error) : nil }
                return held
            }
            if let earlier {
                completion(error)
                earlier.0(earlier.1)
            }
        }
    }

    func close() {}
}

/// Forgets the last entry whenever it is opened again.
final class ForgetfulStorage: NodeStorage {
    private let inner: InMemoryNodeStorage

    init(_ inner: InMemoryNodeStorage) { self.inner = inner }

    func initialState() -> PersistentState {
        var state = inner.initialState()
        if !state.entries.isEmpty { state.entries.removeLast() }
        return state
    }

    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void) {
        inner.persist(entries: entries, hardState: hardState, completion: completion)
    }

    func close() {}
}

/// Accepts an append that leaves a gap, as if the entries followed on.
final class GapAcceptingStorage: NodeStorage {
    private let state = NIOLockedValueBox(PersistentState())

    func initialState() -> PersistentState { state.withLockedValue { $0 } }

    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void) {
        state.withLockedValue { state in
            if let first = entries.first {
                state.entries.removeAll { $0.index >= first.index }
                state.entries += entries
            }
            if let hardState { state.hardState = hardState }
        }
        completion(nil)
    }

    func close() {}
}

extension ConformanceTests {
    @Test func aLogThatCompletesWritesBeforeTheyAreSyncedFailsTheDurabilityCheck() async {
        let failures = await StorageConformance.run(Self.checks(named: "completion only once durable")) {
            let fs = NIOLockedValueBox(SimulatedFileSystem())
            var options = Self.options()
            options.sync = false
            return StorageConformance.Place(
                open: { [options] in
                    try WriteAheadLog(directory: "/node", options: options, fileSystem: fs.withLockedValue { $0 })
                },
                crash: {
                    // The worst cut: nothing unsynced survives.
                    fs.withLockedValue { fs in
                        fs = fs.powerCut(writes: { _ in .nothing }, keepSizeChanges: false, directoryOperationsKept: 0)
                    }
                })
        }
        #expect(!failures.isEmpty && failures.allSatisfy { $0.check == "completion only once durable" }, "\(failures)")
        #expect(failures.contains { $0.problem.contains("survived") }, "\(failures)")
    }
}
