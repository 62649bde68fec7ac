import HashTreeCollections
import RaftCore
import RaftLite

/// The key-value store's snapshots.
///
/// The payload, in `SnapshotWriter`'s forms (integers little-endian, a blob is `length:u32` and its bytes):
///
/// ```
/// version:u8 (1)  count:u64  (key:blob value:blob) × count
/// ```
///
/// `count` is the number of keys; each key appears once; pairs come in no particular order (the map's, which
/// depends on the process's hash seed, so two nodes with the same state may write different bytes). A key has at
/// most `KVStore.maxKeyBytes` bytes and a value at most `KVStore.maxValueBytes`. The store keeps nothing else that a
/// later command's result depends on (no revision, no expiry), so the pairs are the whole state.
///
/// The payload ends after its last pair; `restore(from:)` reads exactly that much and does not ask whether the
/// stream ends there, so that the runtime may put it inside a larger file (whoever owns the file checks its end).
extension KVStore {
    /// The snapshot payload's version.
    public static let snapshotVersion: UInt8 = 1

    /// A frozen view of the store: the persistent map as it was when the snapshot was taken. It shares its nodes with
    /// the live store, which copies a node before changing it, so nothing it holds is ever changed under it.
    public struct Snapshot: StateMachineSnapshot, Equatable {
        public let values: TreeDictionary<[UInt8], [UInt8]>

        /// How many keys the snapshot holds.
        public var count: Int { values.count }

        public func write(to writer: inout SnapshotWriter) throws {
            try writer.write(integer: KVStore.snapshotVersion)
            try writer.write(integer: UInt64(values.count))
            for (key, value) in values {
                // Only a value proposed past the store's limits can trip these: refuse to write a snapshot that
                // restore would refuse.
                guard key.count <= KVStore.maxKeyBytes else {
                    throw SnapshotFormatError(
                        "a key of \(key.count) bytes is longer than a snapshot allows (\(KVStore.maxKeyBytes))")
                }
                guard value.count <= KVStore.maxValueBytes else {
                    throw SnapshotFormatError(
                        "the value of a key is \(value.count) bytes, longer than a snapshot allows "
                            + "(\(KVStore.maxValueBytes))")
                }
                try writer.write(blob: key)
                try writer.write(blob: value)
            }
        }
    }

    /// The store as it is now, in O(1).
    public func snapshot() -> Snapshot { Snapshot(values: values) }

    /// Replaces the store with the one `reader` holds. Everything is checked before anything changes: on any error
    /// the store is left as it was.
    /// - Throws: `SnapshotFormatError` for bytes that are not a payload of this format: another version, cut short, a
    ///   key or value too long, a key twice.
    public mutating func restore(from reader: inout SnapshotReader) throws {
        values = try Self.readValues(from: &reader)
    }

    static func readValues(from reader: inout SnapshotReader) throws -> TreeDictionary<[UInt8], [UInt8]> {
        let version = try reader.read(UInt8.self)
        guard version == snapshotVersion else {
            throw SnapshotFormatError(
                "the key-value snapshot is of version \(version); this store reads version \(snapshotVersion)")
        }
        let count = try reader.read(UInt64.self)
        // No space is reserved from `count`: a damaged count runs out of bytes and throws, allocating nothing.
        var restored = TreeDictionary<[UInt8], [UInt8]>()
        var read: UInt64 = 0
        while read < count {
            let key: [UInt8]
            let value: [UInt8]
            do {
                key = try reader.readBlob(maxLength: maxKeyBytes)
                value = try reader.readBlob(maxLength: maxValueBytes)
            } catch let error as SnapshotFormatError {
                throw SnapshotFormatError(
                    "the key-value snapshot says it holds \(count) keys, but key \(read + 1) cannot be read: "
                        + error.message)
            }
            guard restored.updateValue(value, forKey: key) == nil else {
                throw SnapshotFormatError(
                    "the key-value snapshot holds a key twice (key \(read + 1), \(key.count) bytes)")
            }
            read += 1
        }
        return restored
    }
}
