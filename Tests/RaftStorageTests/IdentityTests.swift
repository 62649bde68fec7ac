import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// The IDENTITY of a data directory, at the level of the log.
@Suite struct IdentityTests {
    static func identity(_ name: String, members: [String] = ["a", "b", "c"], cluster: String = "c1")
        -> DataDirectoryIdentity
    {
        DataDirectoryIdentity(
            clusterID: cluster, nodeName: name, nodeID: NodeID(UInt64(name.utf8.first ?? 1)), members: members)
    }

    /// Every file but LOCK, and its content.
    static func files(_ fs: SimulatedFileSystem) -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for path in fs.allFiles() where !path.hasSuffix("/LOCK") { files[path] = fs.contents(of: path) }
        return files
    }

    @Test func aDirectoryOfAnotherNodeIsRefusedBeforeAnythingInItChanges() throws {
        let fs = SimulatedFileSystem()
        let log = try WriteAheadLog(directory: "/node", fileSystem: fs, expectedIdentity: Self.identity("a"))
        try log.persist(entries: entries(1...10, term: 1), hardState: nil)
        // A torn write at the tail, which opening as the right node would cut.
        fs.failAtOperation = fs.operationCount + 2
        #expect(throws: StorageFailure.self) { try log.persist(entries: entries(11...100, term: 1), hardState: nil) }
        log.close()
        let after = fs.powerCut(writes: { _ in .prefix(50) })
        let before = Self.files(after)

        let error = #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", fileSystem: after, expectedIdentity: Self.identity("b"))
        }
        #expect(error?.kind == .identityMismatch)
        #expect(Self.files(after) == before, "nothing was cut, zeroed or written (but the LOCK's pid)")
        let reopened = try WriteAheadLog(directory: "/node", fileSystem: after, expectedIdentity: Self.identity("a"))
        defer { reopened.close() }
        #expect(reopened.initialState().lastIndex == LogIndex(10))
        #expect(reopened.report.tornBytesCut > 0)
        #expect(reopened.identity == Self.identity("a"))
    }

    @Test func withoutAnExpectedIdentityAnyDirectoryOpensAndOneWithoutIdentityIsClaimedOnce() throws {
        let fs = SimulatedFileSystem()
        do {
            let log = try WriteAheadLog(directory: "/node", fileSystem: fs)
            #expect(log.identity == nil)
            log.close()
        }
        #expect(!fs.exists("/node/IDENTITY"))
        do {
            let log = try WriteAheadLog(directory: "/node", fileSystem: fs, expectedIdentity: Self.identity("a"))
            #expect(log.identity == Self.identity("a"))
            log.close()
        }
        #expect(throws: StorageFailure.self) {
            try WriteAheadLog(
                directory: "/node", fileSystem: fs, expectedIdentity: Self.identity("a", members: ["a", "b"]))
        }
        let tool = try WriteAheadLog(directory: "/node", fileSystem: fs)
        defer { tool.close() }
        #expect(tool.identity == Self.identity("a"), "a tool reads the identity without checking it")
    }

    @Test func theIdentityIsDurableBeforeTheDirectoryIsUsed() throws {
        let fs = SimulatedFileSystem()
        let log = try WriteAheadLog(directory: "/node", fileSystem: fs, expectedIdentity: Self.identity("a"))
        log.close()
        let after = fs.powerCut(writes: { _ in .nothing }, keepSizeChanges: false, directoryOperationsKept: 0)
        #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", fileSystem: after, expectedIdentity: Self.identity("b"))
        }
    }
}
