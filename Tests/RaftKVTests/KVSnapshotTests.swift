import RaftCore
import RaftKV
import RaftLite
import Testing

/// The key-value store's snapshots: a frozen view taken in O(1), written while the live store changes, read back
/// checked.
@Suite struct KVSnapshotTests {
    static func key(_ n: Int) -> [UInt8] { Array("key-\(n)".utf8) }
    static func value(_ n: Int, _ version: Int = 0) -> [UInt8] {
        (0..<32).map { UInt8(truncatingIfNeeded: n &* 31 &+ version &* 7 &+ $0) }
    }

    static func bytes(of snapshot: KVStore.Snapshot) throws -> [UInt8] {
        let buffer = SnapshotBuffer()
        var writer = SnapshotWriter(buffer, bufferSize: 4096)
        try snapshot.write(to: &writer)
        try writer.flush()
        return buffer.bytes
    }

    /// Restores a new store from `bytes`, and checks that the payload took all of them.
    static func restored(from bytes: [UInt8]) throws -> KVStore {
        var store = KVStore()
        var reader = SnapshotReader(SnapshotBuffer(bytes), bufferSize: 4096)
        try store.restore(from: &reader)
        #expect(try reader.isAtEnd(), "the payload ends where the snapshot's bytes do")
        return store
    }

    /// The store's content, as a plain dictionary (so that a comparison does not go through the store's own map).
    static func contents(_ store: KVStore, keys: Range<Int>) -> [[UInt8]: [UInt8]] {
        var out: [[UInt8]: [UInt8]] = [:]
        for n in keys { if let v = store.value(for: key(n)) { out[key(n)] = v } }
        return out
    }

    @Test func aSnapshotIsTheStateWhenItWasTakenNotAfter() async throws {
        var store = KVStore()
        var model: [[UInt8]: [UInt8]] = [:]
        for n in 0..<5_000 {
            _ = store.apply(.put(key: Self.key(n), value: Self.value(n)))
            model[Self.key(n)] = Self.value(n)
        }
        let snapshot = store.snapshot()
        let atSnapshot = store
        #expect(snapshot.count == 5_000)

        // The snapshot is written on another thread while the live store goes on changing: overwrites, deletes,
        // new keys, compare-and-sets.
        let writing = Task.detached { try Self.bytes(of: snapshot) }
        for n in 0..<5_000 where n % 3 == 0 {
            #expect(store.apply(.put(key: Self.key(n), value: Self.value(n, 1))) == .done(existed: true))
        }
        for n in 0..<5_000 where n % 5 == 1 { #expect(store.apply(.delete(key: Self.key(n))) == .done(existed: true)) }
        for n in 5_000..<6_000 { _ = store.apply(.put(key: Self.key(n), value: Self.value(n))) }
        #expect(
            store.apply(.compareAndSet(key: Self.key(2), expected: Self.value(2), value: [0])) == .done(existed: true))
        let bytes = try await writing.value

        let restored = try Self.restored(from: bytes)
        #expect(restored.count == 5_000)
        #expect(Self.contents(restored, keys: 0..<6_000) == model)
        #expect(restored == atSnapshot)
        #expect(restored != store, "the live store moved on")
        // The snapshot itself did not change either: written again, it holds the same state.
        #expect(try Self.restored(from: try Self.bytes(of: snapshot)) == restored)
        #expect(store.value(for: Self.key(3)) == Self.value(3, 1) && store.value(for: Self.key(1)) == nil)
    }

    @Test func restoreReplacesEverythingTheStoreHeld() throws {
        var source = KVStore()
        _ = source.apply(.put(key: [1], value: [10]))
        _ = source.apply(.put(key: [], value: []))
        var target = KVStore()
        _ = target.apply(.put(key: [1], value: [99]))
        _ = target.apply(.put(key: [2], value: [20]))
        var reader = SnapshotReader(SnapshotBuffer(try Self.bytes(of: source.snapshot())))
        try target.restore(from: &reader)
        #expect(target == source)
        #expect(target.value(for: [2]) == nil && target.value(for: [1]) == [10] && target.value(for: []) == [])
    }

    /// Bytes of a payload written by hand, for the damaged cases.
    static func payload(version: UInt8 = 1, count: UInt64, pairs: [([UInt8], [UInt8])]) throws -> [UInt8] {
        let buffer = SnapshotBuffer()
        var writer = SnapshotWriter(buffer)
        try writer.write(integer: version)
        try writer.write(integer: count)
        for (k, v) in pairs {
            try writer.write(blob: k)
            try writer.write(blob: v)
        }
        try writer.flush()
        return buffer.bytes
    }

    @Test func damagedBytesAreRefusedAndLeaveTheStoreAsItWas() throws {
        var source = KVStore()
        for n in 0..<20 { _ = source.apply(.put(key: Self.key(n), value: Self.value(n))) }
        let good = try Self.bytes(of: source.snapshot())
        #expect(try Self.restored(from: good) == source)

        var store = KVStore()
        _ = store.apply(.put(key: Array("mine".utf8), value: [1, 2, 3]))
        let before = store

        var damaged: [(String, [UInt8])] = []
        for length in 0..<good.count { damaged.append(("cut at \(length)", Array(good.prefix(length)))) }
        var version = good
        version[0] = 2
        damaged.append(("version 2", version))
        let pair = (Self.key(1), Self.value(1))
        damaged.append(("absurd count", try Self.payload(count: UInt64.max, pairs: [pair])))
        damaged.append(("count one too many", try Self.payload(count: 2, pairs: [pair])))
        damaged.append(("a key twice", try Self.payload(count: 2, pairs: [pair, (Self.key(1), [7])])))
        damaged.append(
            ("a key too long", try Self.payload(count: 1, pairs: [(Array(repeating: 1, count: 70_000), [1])])))
        // A value length beyond the limit, with no bytes behind it: refused before anything is allocated for it.
        var tooLong = try Self.payload(count: 1, pairs: [([1], [])])
        tooLong.removeLast(4)
        withUnsafeBytes(of: UInt32(KVStore.maxValueBytes + 1).littleEndian) { tooLong.append(contentsOf: $0) }
        damaged.append(("a value too long", tooLong))

        for (what, bytes) in damaged {
            var reader = SnapshotReader(SnapshotBuffer(bytes), bufferSize: 64)
            #expect(throws: SnapshotFormatError.self, "\(what)") { try store.restore(from: &reader) }
            #expect(store == before, "\(what): the store is unchanged")
        }
    }

    @Test func aLargeStoreSurvivesARoundTrip() throws {
        var store = KVStore()
        for n in 0..<200_000 { _ = store.apply(.put(key: Self.key(n), value: Self.value(n))) }
        let bytes = try Self.bytes(of: store.snapshot())
        // version, count, and per key two lengths, the key and its 32-byte value.
        let keyBytes = (0..<200_000).reduce(0) { $0 + Self.key($1).count }
        #expect(bytes.count == 1 + 8 + 200_000 * (8 + 32) + keyBytes)
        let restored = try Self.restored(from: bytes)
        #expect(restored == store)
        #expect(restored.value(for: Self.key(199_999)) == Self.value(199_999))
    }
}
