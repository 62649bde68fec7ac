import Foundation
import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// Power cuts at every file-system operation of a snapshot's creation and of an incoming snapshot's completion: a
/// restart finds the old snapshot or the new one whole, never a damaged one.
@Suite struct SnapshotCrashTests {
    static let oldPayload = pseudoRandomBytes(9000, seed: 21)
    /// Over a megabyte: the writer writes it in more than one piece.
    static let newPayload = pseudoRandomBytes((1 << 20) + 300_000, seed: 22)

    /// What a restart after the cut finds: the old snapshot or the new one, readable whole with its own payload.
    /// Returns whether it is the new one.
    static func checkAfterCut(_ fs: SimulatedFileSystem, seed: UInt64, step: Int) throws -> Bool {
        var rng = SplitMix64(seed: seed)
        let survivor = fs.powerCut(using: &rng)
        let store = try SnapshotStore(directory: "/node", fileSystem: survivor)
        let latest = try #require(try store.latest(), "cut at step \(step), seed \(seed): no snapshot at all")
        let isNew = latest.metadata.index == LogIndex(20)
        #expect(latest.metadata == snapshotMetadata(isNew ? 20 : 10, isNew ? 2 : 1))
        let (_, payload) = try readSnapshot(store, latest)
        #expect(payload == (isNew ? newPayload : oldPayload), "cut at step \(step), seed \(seed)")
        // Nothing temporary or partial survives the reopening.
        for name in try survivor.list("/node/snapshots") {
            #expect(name.hasSuffix(".snap"), "cut at step \(step), seed \(seed): \(name) left")
        }
        return isNew
    }

    @Test func aCutWhileASnapshotIsCreatedLeavesTheOldOneOrTheNewOneWhole() throws {
        var step = 1
        var sawOld = false
        var sawNew = false
        while true {
            var finishedAll = true
            for seed in UInt64(1)...6 {
                let fs = SimulatedFileSystem()
                let store = try SnapshotStore(directory: "/node", fileSystem: fs)
                try writeSnapshot(store, snapshotMetadata(10, 1), payload: Self.oldPayload)
                fs.failAtOperation = fs.operationCount + step
                var finished = false
                do {
                    try writeSnapshot(store, snapshotMetadata(20, 2), payload: Self.newPayload)
                    finished = true
                } catch {
                    finishedAll = false
                }
                let isNew = try Self.checkAfterCut(fs, seed: seed, step: step)
                if finished { #expect(isNew, "the snapshot was finished, then lost (seed \(seed))") }
                if isNew { sawNew = true } else { sawOld = true }
            }
            // Once the creation finishes before the chosen operation, every step has been cut.
            if finishedAll { break }
            step += 1
        }
        #expect(step > 4, "the creation took only \(step) operations")
        #expect(sawOld && sawNew)
    }

    @Test func aCutWhileAnIncomingSnapshotCompletesLeavesTheOldOneOrTheNewOneWhole() throws {
        let file = try SnapshotStoreTests.snapshotFile(20, 2, payload: Self.newPayload)
        var step = 1
        var sawOld = false
        var sawNew = false
        while true {
            var finishedAll = true
            for seed in UInt64(1)...6 {
                let fs = SimulatedFileSystem()
                let store = try SnapshotStore(directory: "/node", fileSystem: fs)
                try writeSnapshot(store, snapshotMetadata(10, 1), payload: Self.oldPayload)
                let incoming = try store.incoming(index: LogIndex(20), term: Term(2), totalSize: UInt64(file.count))
                var offset = 0
                while offset < file.count {
                    let end = min(file.count, offset + 256 << 10)
                    try incoming.write(Array(file[offset..<end]), at: UInt64(offset))
                    offset = end
                }
                fs.failAtOperation = fs.operationCount + step
                var finished = false
                do {
                    _ = try incoming.complete()
                    finished = true
                } catch {
                    finishedAll = false
                }
                let isNew = try Self.checkAfterCut(fs, seed: seed, step: step)
                if finished { #expect(isNew, "the snapshot was completed, then lost (seed \(seed))") }
                if isNew { sawNew = true } else { sawOld = true }
            }
            if finishedAll { break }
            step += 1
        }
        #expect(step > 3, "completing took only \(step) operations")
        #expect(sawOld && sawNew)
    }
}
