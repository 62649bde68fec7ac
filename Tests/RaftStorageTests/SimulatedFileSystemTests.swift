import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// The test double itself: what survives a power cut is what POSIX promises, and no more.
@Suite struct SimulatedFileSystemTests {
    /// A file /d/f holding `bytes`, its data and its name synced.
    func durableFile(_ bytes: [UInt8]) throws -> (SimulatedFileSystem, OpenFile) {
        let fs = SimulatedFileSystem()
        _ = try fs.makeDirectory("/d")
        try fs.syncDirectory("/")
        let file = try fs.open("/d/f", .createNew)
        try fs.write(bytes, to: file, at: 0, path: "/d/f")
        try fs.syncData(file, path: "/d/f")
        try fs.syncDirectory("/d")
        return (fs, file)
    }

    @Test func syncedDataSurvivesAndAnUnsyncedWriteSurvivesAsTheCutDecides() throws {
        let (fs, file) = try durableFile([1, 2, 3])
        try fs.write([9, 9], to: file, at: 3, path: "/d/f")
        #expect(fs.contents(of: "/d/f") == [1, 2, 3, 9, 9])
        #expect(fs.powerCut(writes: { _ in .nothing }).contents(of: "/d/f") == [1, 2, 3])
        let (fs2, file2) = try durableFile([1, 2, 3])
        try fs2.write([9, 9], to: file2, at: 3, path: "/d/f")
        #expect(fs2.powerCut(writes: { _ in .whole }).contents(of: "/d/f") == [1, 2, 3, 9, 9])
        let (fs3, file3) = try durableFile([1, 2, 3])
        try fs3.write([9, 8], to: file3, at: 3, path: "/d/f")
        #expect(fs3.powerCut(writes: { _ in .prefix(1) }).contents(of: "/d/f") == [1, 2, 3, 9])
    }

    @Test func anUnsyncedWriteMayKeepAnySubsetOfItsPages() throws {
        let (fs, file) = try durableFile([])
        let page = SimulatedFileSystem.pageSize
        let data = [UInt8](repeating: 7, count: 3 * page)
        try fs.write(data, to: file, at: 0, path: "/d/f")
        var seen: SimulatedFileSystem.UnsyncedWrite?
        let after = fs.powerCut(writes: { write in
            seen = write
            return .pages([2])
        })
        #expect(seen?.pages == 3)
        let kept = try #require(after.contents(of: "/d/f"))
        #expect(kept.count == 3 * page)
        #expect(kept[0..<(2 * page)].allSatisfy { $0 == 0 }, "the first two pages never reached the disk")
        #expect(kept[(2 * page)...].allSatisfy { $0 == 7 })
    }

    @Test func aFileWhoseNameWasNeverSyncedIsLostEvenIfItsDataWas() throws {
        let fs = SimulatedFileSystem()
        _ = try fs.makeDirectory("/d")
        try fs.syncDirectory("/")
        let file = try fs.open("/d/f", .createNew)
        try fs.write([1], to: file, at: 0, path: "/d/f")
        try fs.syncData(file, path: "/d/f")
        #expect(fs.powerCut(writes: { _ in .whole }, directoryOperationsKept: 0).contents(of: "/d/f") == nil)
    }

    @Test func aDirectoryWhoseParentWasNeverSyncedIsLostWithEverythingInIt() throws {
        let fs = SimulatedFileSystem()
        _ = try fs.makeDirectory("/d")
        let file = try fs.open("/d/f", .createNew)
        try fs.write([1], to: file, at: 0, path: "/d/f")
        try fs.syncData(file, path: "/d/f")
        try fs.syncDirectory("/d")
        let after = fs.powerCut(writes: { _ in .whole }, directoryOperationsKept: 0)
        #expect(!after.exists("/d"))
        #expect(after.allFiles().isEmpty)
    }

    @Test func aRenameIsDurableOnlyOnceItsDirectoryIsSynced() throws {
        let (fs, _) = try durableFile([1])
        let other = try fs.open("/d/g", .createNew)
        try fs.write([2], to: other, at: 0, path: "/d/g")
        try fs.syncData(other, path: "/d/g")
        try fs.rename("/d/g", to: "/d/f")
        #expect(fs.contents(of: "/d/f") == [2])
        #expect(fs.powerCut(writes: { _ in .whole }, directoryOperationsKept: 0).contents(of: "/d/f") == [1])
        let (fs2, _) = try durableFile([1])
        let other2 = try fs2.open("/d/g", .createNew)
        try fs2.write([2], to: other2, at: 0, path: "/d/g")
        try fs2.syncData(other2, path: "/d/g")
        try fs2.rename("/d/g", to: "/d/f")
        try fs2.syncDirectory("/d")
        let after = fs2.powerCut(writes: { _ in .nothing }, directoryOperationsKept: 0)
        #expect(after.contents(of: "/d/f") == [2])
        #expect(after.contents(of: "/d/g") == nil)
    }

    @Test func aPreallocationIsVolatileUntilTheFileIsSynced() throws {
        let (fs, file) = try durableFile([1])
        try fs.preallocate(file, length: 100, path: "/d/f")
        #expect(fs.contents(of: "/d/f")?.count == 100)
        #expect(fs.powerCut(writes: { _ in .whole }, keepSizeChanges: false).contents(of: "/d/f") == [1])
    }

    @Test func afterACutEveryOperationFailsWithAnIOError() throws {
        let (fs, file) = try durableFile([1])
        var rng = SplitMix64(seed: 1)
        _ = fs.powerCut(using: &rng)
        #expect(fs.isFrozen)
        #expect(throws: StorageFailure.self) { try fs.write([1], to: file, at: 0, path: "/d/f") }
        #expect(throws: StorageFailure.self) { try fs.read("/d/f") }
        #expect(throws: StorageFailure.self) { try fs.syncDirectory("/d") }
    }

    @Test func theChosenOperationFailsAndFreezesTheFileSystem() throws {
        let (fs, file) = try durableFile([1])
        fs.failAtOperation = fs.operationCount + 2
        try fs.write([2], to: file, at: 1, path: "/d/f")
        let error = #expect(throws: StorageFailure.self) { try fs.syncData(file, path: "/d/f") }
        #expect(error?.message.contains("Input/output error") == true)
        #expect(fs.isFrozen)
        // The write before the failed sync may or may not survive.
        #expect(fs.powerCut(writes: { _ in .nothing }).contents(of: "/d/f") == [1])
    }

    @Test func aFullDiskRefusesGrowthButNotOverwritesUntilSpaceIsFreed() throws {
        let (fs, file) = try durableFile([UInt8](repeating: 1, count: 100))
        fs.capacity = 150
        try fs.preallocate(file, length: 150, path: "/d/f")
        try fs.write([2, 2], to: file, at: 10, path: "/d/f")  // within the file: no new space needed
        #expect(throws: StorageFailure.self) { try fs.write([3], to: file, at: 150, path: "/d/f") }
        #expect(throws: StorageFailure.self) { try fs.preallocate(file, length: 151, path: "/d/f") }
        #expect(throws: StorageFailure.self) { _ = try fs.open("/d/g", .createNew) }
        #expect(fs.contents(of: "/d/f")?.count == 150, "a refused write changes nothing")
        fs.capacity = nil
        try fs.write([3], to: file, at: 150, path: "/d/f")
        _ = try fs.open("/d/g", .createNew)
    }

    @Test func anExclusiveLockIsHeldUntilItsFileIsClosed() throws {
        let fs = SimulatedFileSystem()
        let lock = try fs.lockExclusively("/LOCK")
        let error = #expect(throws: StorageFailure.self) { _ = try fs.lockExclusively("/LOCK") }
        #expect(error?.kind == .locked)
        fs.close(lock)
        fs.close(try fs.lockExclusively("/LOCK"))
    }

    @Test func randomCutsKeepEverythingDurableAndOnlyBytesThatWereWritten() throws {
        for seed in UInt64(1)...100 {
            var rng = SplitMix64(seed: seed)
            let (fs, file) = try durableFile([UInt8](repeating: 1, count: 5000))
            try fs.write([UInt8](repeating: 2, count: 9000), to: file, at: 3000, path: "/d/f")
            let after = fs.powerCut(using: &rng)
            let kept = try #require(after.contents(of: "/d/f"), "seed \(seed)")
            #expect(kept.count >= 5000, "seed \(seed)")
            for (k, byte) in kept.enumerated() {
                let allowed: Set<UInt8> = k < 3000 ? [1] : k < 5000 ? [1, 2] : [0, 2]
                if !allowed.contains(byte) {
                    Issue.record("seed \(seed): byte \(k) is \(byte)")
                    break
                }
            }
        }
    }
}
