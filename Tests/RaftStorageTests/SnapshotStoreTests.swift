import Foundation
import RaftCore
import RaftStorage
import RaftWire
import StorageTesting
import Testing

/// Bytes that look random, the same for a seed.
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var out: [UInt8] = []
    out.reserveCapacity(count + 8)
    while out.count < count { withUnsafeBytes(of: rng.next()) { out.append(contentsOf: $0) } }
    return Array(out.prefix(count))
}

func snapshotMetadata(_ index: UInt64, _ term: UInt64) -> SnapshotMetadata {
    SnapshotMetadata(
        index: LogIndex(index), term: Term(term), voters: [NodeID(3), NodeID(1), NodeID(2)], learners: [NodeID(9)])
}

/// Writes a snapshot through a `SnapshotWriter`, as a state machine would: a count, then the payload as a blob.
@discardableResult
func writeSnapshot(
    _ store: SnapshotStore, _ metadata: SnapshotMetadata, payload: [UInt8], sessions: [UInt8] = Array("s".utf8)
) throws -> SnapshotInfo {
    let file = try store.beginSnapshot(metadata, sessions: sessions)
    var writer = SnapshotWriter(file, bufferSize: 64 << 10)
    try writer.write(integer: UInt64(payload.count))
    try writer.write(blob: payload)
    try writer.flush()
    return try file.finish()
}

/// Reads back what `writeSnapshot` wrote, to its end (so the checksum is checked).
func readSnapshot(_ store: SnapshotStore, _ info: SnapshotInfo) throws -> (SnapshotFileReader, [UInt8]) {
    let file = try store.open(info)
    var reader = SnapshotReader(file, bufferSize: 64 << 10)
    let count = try reader.read(UInt64.self)
    let payload = try reader.readBlob(maxLength: Int(count))
    #expect(try reader.isAtEnd())
    return (file, payload)
}

/// A header written by hand: `counts` replace the voter count, learner count and sessions length.
func handMadeSnapshotFile(
    voterCount: UInt32 = 0, learnerCount: UInt32 = 0, sessionsLength: UInt32 = 0, body: [UInt8] = [],
    payloadLength: UInt64? = nil
) -> [UInt8] {
    var out = Array("RLSNAP".utf8) + [0, 1]
    func le<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
    le(UInt64(5))
    le(UInt64(1))
    le(voterCount)
    le(learnerCount)
    le(sessionsLength)
    out += body
    le(payloadLength ?? 0)
    le(UInt32(0))
    out += Array("RLSE".utf8)
    return out
}

@Suite struct SnapshotStoreTests {
    @Test func aSnapshotOfSomeMegabytesReadsBackTheSame() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let payload = pseudoRandomBytes(3 << 20 + 12345, seed: 7)
        let sessions = pseudoRandomBytes(5000, seed: 8)
        let metadata = snapshotMetadata(1234, 5)
        let info = try writeSnapshot(store, metadata, payload: payload, sessions: sessions)
        #expect(info.metadata == metadata)
        #expect(info.path == dir.path + "/snapshots/snap-1234-5.snap")
        #expect(info.size == UInt64(try bytes(of: info.path).count))
        #expect(try store.latest() == info)

        let (reader, back) = try readSnapshot(store, info)
        #expect(back == payload)
        #expect(reader.metadata == metadata)
        #expect(reader.metadata.voters == [NodeID(1), NodeID(2), NodeID(3)])
        #expect(reader.metadata.learners == [NodeID(9)])
        #expect(reader.sessions == sessions)
        #expect(reader.payloadLength == 8 + 4 + payload.count)
        // Nothing but the snapshot is left in the directory.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots") == ["snap-1234-5.snap"])
    }

    @Test func theNewestSnapshotIsTheLatestAndPruningKeepsItAndNewerOnes() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        #expect(try store.latest() == nil)
        let ten = try writeSnapshot(store, snapshotMetadata(10, 1), payload: [1])
        let twenty = try writeSnapshot(store, snapshotMetadata(20, 2), payload: [2])
        let thirty = try writeSnapshot(store, snapshotMetadata(30, 2), payload: [3])
        _ = try store.incoming(index: LogIndex(15), term: Term(1), totalSize: 100)
        #expect(try store.latest() == thirty)
        try store.prune(keeping: twenty)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots").sorted()
        #expect(names == ["snap-20-2.snap", "snap-30-2.snap"])
        #expect(!FileManager.default.fileExists(atPath: ten.path))
        #expect(try store.latest() == thirty)
    }

    @Test func anOpenRawFileStaysReadableAfterItsSnapshotIsPruned() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let old = try writeSnapshot(store, snapshotMetadata(10, 1), payload: pseudoRandomBytes(100_000, seed: 1))
        let whole = try bytes(of: old.path)
        let raw = try store.openRaw(old)
        let newer = try writeSnapshot(store, snapshotMetadata(20, 1), payload: [7])
        try store.prune(keeping: newer)
        #expect(!FileManager.default.fileExists(atPath: old.path))
        var copy: [UInt8] = []
        while UInt64(copy.count) < raw.size {
            let chunk = try raw.read(at: UInt64(copy.count), count: 30_000)
            #expect(!chunk.isEmpty)
            if chunk.isEmpty { break }
            copy += chunk
        }
        #expect(copy == whole)
        #expect(try raw.read(at: raw.size, count: 10).isEmpty)
        #expect(throws: StorageFailure.self) { try raw.read(at: raw.size + 1, count: 10) }
        raw.close()
        #expect(throws: StorageFailure.self) { try raw.read(at: 0, count: 10) }
        #expect(try store.readRaw(newer, at: 0, count: 8) == Array("RLSNAP".utf8) + [0, 2])
    }

    @Test func anAbandonedSnapshotLeavesNothingAndALeftoverTemporaryIsRemovedOnOpen() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let writer = try store.beginSnapshot(snapshotMetadata(10, 1), sessions: [])
        try writer.write([1, 2, 3])
        writer.abandon()
        #expect(throws: StorageFailure.self) { try writer.write([4]) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots").isEmpty)
        // A crash in the middle leaves a temporary file: the next open removes it.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.path + "/snapshots/snap-11-1.tmp"))
        let reopened = try SnapshotStore(directory: dir.path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots").isEmpty)
        #expect(try reopened.latest() == nil)
    }

    // MARK: - Damage

    /// A store on a simulated disk holding one snapshot, and that snapshot.
    static func damageable(payload: [UInt8] = pseudoRandomBytes(50_000, seed: 3)) throws -> (
        SimulatedFileSystem, SnapshotStore, SnapshotInfo
    ) {
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/node", fileSystem: fs)
        let info = try writeSnapshot(store, snapshotMetadata(40, 3), payload: payload)
        return (fs, store, info)
    }

    @Test func aFlippedPayloadByteFailsTheChecksumWhenThePayloadIsReadToItsEnd() throws {
        let (fs, store, info) = try Self.damageable()
        var content = try #require(fs.contents(of: info.path))
        content[content.count - 16 - 1000] ^= 0x20
        fs.setContents(of: info.path, to: content)
        // The header and trailer are sound: it is still the latest.
        #expect(try store.latest() == info)
        let error = #expect(throws: StorageFailure.self) { try readSnapshot(store, info) }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == info.path)
        // verify() finds it too.
        let reader = try store.open(info)
        let failure = #expect(throws: StorageFailure.self) { try reader.verify() }
        #expect(failure?.kind == .corrupt)
    }

    @Test func anUndamagedSnapshotPassesVerify() throws {
        let (_, store, info) = try Self.damageable()
        let reader = try store.open(info)
        try reader.verify()
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try buffer.withUnsafeMutableBytes { try reader.read(into: $0) } == 0)
    }

    /// A cut-short (or otherwise unreadable) newest snapshot is not skipped for an older one: the log may have been
    /// compacted past the older one. `latest()` throws, naming the file.
    @Test func aTruncatedSnapshotMakesLatestThrowNamingTheFile() throws {
        let (fs, store, info) = try Self.damageable()
        _ = try writeSnapshot(store, snapshotMetadata(30, 2), payload: [1, 2, 3])
        let content = try #require(fs.contents(of: info.path))
        for keep in [content.count - 1, content.count - 16, content.count / 2, 40, 10, 0] {
            fs.setContents(of: info.path, to: Array(content.prefix(keep)))
            let error = #expect(throws: StorageFailure.self) { try store.latest() }
            #expect(error?.kind == .corrupt, "cut to \(keep) bytes")
            #expect(error?.file == info.path, "cut to \(keep) bytes")
        }
        // A reader opened on a file cut later finds it when it reaches the end.
        fs.setContents(of: info.path, to: content)
        let reader = try store.open(info)
        fs.setContents(of: info.path, to: Array(content.prefix(content.count - 20)))
        let error = #expect(throws: StorageFailure.self) { try reader.verify() }
        #expect(error?.kind == .corrupt)
    }

    @Test func aHeaderThatDisagreesWithItsNameIsCorrupt() throws {
        let (fs, store, info) = try Self.damageable()
        var content = try #require(fs.contents(of: info.path))
        content[8] ^= 1  // the index
        fs.setContents(of: info.path, to: content)
        let error = #expect(throws: StorageFailure.self) { try store.latest() }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == info.path)
        #expect(throws: StorageFailure.self) { try store.open(info) }
    }

    @Test(arguments: [
        handMadeSnapshotFile(voterCount: UInt32.max),
        handMadeSnapshotFile(voterCount: 1 << 20 + 1),
        handMadeSnapshotFile(voterCount: 1000),
        handMadeSnapshotFile(learnerCount: 70_000),
        handMadeSnapshotFile(sessionsLength: UInt32.max),
        handMadeSnapshotFile(sessionsLength: 1 << 30 + 1),
        handMadeSnapshotFile(sessionsLength: 100, body: [1, 2, 3]),
        handMadeSnapshotFile(payloadLength: 1),
        handMadeSnapshotFile(payloadLength: UInt64.max),
        handMadeSnapshotFile(body: [1, 2, 3], payloadLength: 2),
        Array(handMadeSnapshotFile().dropFirst(2)),
        Array("RLSNAP".utf8) + [0, 1],
    ])
    func absurdHeadersAreCorruptNotACrash(file: [UInt8]) throws {
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/node", fileSystem: fs)
        let path = "/node/snapshots/snap-5-1.snap"
        let handle = try fs.open(path, .createNew)
        try fs.write(file, to: handle, at: 0, path: path)
        fs.close(handle)
        let error = #expect(throws: StorageFailure.self) { try store.latest() }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == path)
    }

    @Test func aHandMadeFileWithSoundCountsIsReadable() throws {
        // The check above refuses for the counts, not for being hand made: fix the checksum and it is read.
        var file = handMadeSnapshotFile(body: [], payloadLength: 0)
        let crc = file.prefix(file.count - 16).withUnsafeBytes { CRC32C.checksum($0) }
        withUnsafeBytes(of: crc.littleEndian) { raw in for k in 0..<4 { file[file.count - 8 + k] = raw[k] } }
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/node", fileSystem: fs)
        let path = "/node/snapshots/snap-5-1.snap"
        let handle = try fs.open(path, .createNew)
        try fs.write(file, to: handle, at: 0, path: path)
        fs.close(handle)
        let info = try #require(try store.latest())
        #expect(info.metadata == SnapshotMetadata(index: LogIndex(5), term: Term(1), voters: []))
        try store.open(info).verify()
    }

    // MARK: - Incoming

    /// A snapshot's file bytes, made in a store of their own.
    static func snapshotFile(_ index: UInt64, _ term: UInt64, payload: [UInt8]) throws -> [UInt8] {
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/source", fileSystem: fs)
        let info = try writeSnapshot(store, snapshotMetadata(index, term), payload: payload)
        return try store.readRaw(info, at: 0, count: Int(info.size))
    }

    @Test func anIncomingTransferResumesWhereItStoppedAndCompletesToTheSameFile() throws {
        let payload = pseudoRandomBytes(700_000, seed: 11)
        let file = try Self.snapshotFile(50, 4, payload: payload)
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let half = file.count / 2
        do {
            let incoming = try store.incoming(index: LogIndex(50), term: Term(4), totalSize: UInt64(file.count))
            #expect(incoming.received == 0)
            var offset = 0
            while offset < half {
                let end = min(half, offset + 64 << 10)
                try incoming.write(Array(file[offset..<end]), at: UInt64(offset))
                offset = end
            }
            #expect(incoming.received == UInt64(half))
        }
        let incoming = try store.incoming(index: LogIndex(50), term: Term(4), totalSize: UInt64(file.count))
        #expect(incoming.received == UInt64(half))
        // Out of order: refused, nothing written.
        let early = #expect(throws: StorageFailure.self) { try incoming.write([1], at: 0) }
        #expect(early?.kind == .refused)
        #expect(throws: StorageFailure.self) { try incoming.write([1], at: UInt64(half + 1)) }
        #expect(incoming.received == UInt64(half))
        // Not all there yet: refused, and the file is kept.
        #expect(throws: StorageFailure.self) { try incoming.complete() }
        #expect(incoming.received == UInt64(half))
        try incoming.write(Array(file[half...]), at: UInt64(half))
        // Past the end: refused.
        #expect(throws: StorageFailure.self) { try incoming.write([0], at: UInt64(file.count)) }
        let info = try incoming.complete()
        #expect(info.metadata == snapshotMetadata(50, 4))
        #expect(info.size == UInt64(file.count))
        #expect(try bytes(of: info.path) == file)
        #expect(try store.latest() == info)
        #expect(try readSnapshot(store, info).1 == payload)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots") == ["snap-50-4.snap"])
    }

    @Test func aTransferOfAnotherSnapshotReplacesThePartialOne() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let first = try store.incoming(index: LogIndex(10), term: Term(1), totalSize: 1000)
        try first.write([1, 2, 3], at: 0)
        let second = try store.incoming(index: LogIndex(12), term: Term(1), totalSize: 1000)
        #expect(second.received == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots") == ["incoming-12-1.part"])
        second.discard()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/snapshots").isEmpty)
        #expect(throws: StorageFailure.self) {
            try store.incoming(index: LogIndex(10), term: Term(1), totalSize: 10)
        }
    }

    @Test func aDamagedTransferFailsAtCompleteAndLeavesNoSnapshot() throws {
        var file = try Self.snapshotFile(50, 4, payload: pseudoRandomBytes(30_000, seed: 12))
        file[20_000] ^= 0x01
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/node", fileSystem: fs)
        let incoming = try store.incoming(index: LogIndex(50), term: Term(4), totalSize: UInt64(file.count))
        try incoming.write(file, at: 0)
        let error = #expect(throws: StorageFailure.self) { try incoming.complete() }
        #expect(error?.kind == .corrupt)
        #expect(error?.file == incoming.path)
        #expect(try fs.list("/node/snapshots").isEmpty)
        #expect(try store.latest() == nil)
    }

    @Test func aTransferWhoseBytesAreAnotherSnapshotIsRefused() throws {
        let file = try Self.snapshotFile(50, 4, payload: [1, 2, 3])
        let fs = SimulatedFileSystem()
        let store = try SnapshotStore(directory: "/node", fileSystem: fs)
        let incoming = try store.incoming(index: LogIndex(51), term: Term(4), totalSize: UInt64(file.count))
        try incoming.write(file, at: 0)
        let error = #expect(throws: StorageFailure.self) { try incoming.complete() }
        #expect(error?.kind == .corrupt)
        #expect(try fs.list("/node/snapshots").isEmpty)
    }
}
