import HashTreeCollections
import RaftCore
import RaftLite

/// A command of the replicated key-value store, as it travels in the log:
///
/// ```
/// put     = 1 keyLength:u16 key valueLength:u32 value
/// delete  = 2 keyLength:u16 key
/// cas     = 3 keyLength:u16 key expectedLength:u32 expected valueLength:u32 value
/// get     = 4 keyLength:u16 key                       (a read through the log: linearizable)
/// ```
/// Integers are big-endian.
public enum KVCommand: Sendable, Hashable {
    case put(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    case compareAndSet(key: [UInt8], expected: [UInt8], value: [UInt8])
    case get(key: [UInt8])

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func key(_ k: [UInt8]) {
            out.append(UInt8(truncatingIfNeeded: k.count >> 8))
            out.append(UInt8(truncatingIfNeeded: k.count))
            out.append(contentsOf: k)
        }
        func blob(_ b: [UInt8]) {
            for shift in stride(from: 24, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: b.count >> shift))
            }
            out.append(contentsOf: b)
        }
        switch self {
        case .put(let k, let v):
            out.reserveCapacity(7 + k.count + v.count)
            out.append(1)
            key(k)
            blob(v)
        case .delete(let k):
            out.append(2)
            key(k)
        case .compareAndSet(let k, let expected, let v):
            out.append(3)
            key(k)
            blob(expected)
            blob(v)
        case .get(let k):
            out.append(4)
            key(k)
        }
        return out
    }

    /// Decodes a command; nil for bytes that are not one (they are applied as a no-op).
    public init?(decoding data: [UInt8]) {
        var k = 1
        func key() -> [UInt8]? {
            guard data.count - k >= 2 else { return nil }
            let n = Int(data[k]) << 8 | Int(data[k + 1])
            guard data.count - k - 2 >= n else { return nil }
            defer { k += 2 + n }
            return Array(data[(k + 2)..<(k + 2 + n)])
        }
        func blob() -> [UInt8]? {
            guard data.count - k >= 4 else { return nil }
            let n = data[k..<k + 4].reduce(0) { $0 << 8 | Int($1) }
            guard data.count - k - 4 >= n else { return nil }
            defer { k += 4 + n }
            return Array(data[(k + 4)..<(k + 4 + n)])
        }
        guard let op = data.first else { return nil }
        switch op {
        case 1:
            guard let key = key(), let value = blob() else { return nil }
            self = .put(key: key, value: value)
        case 2:
            guard let key = key() else { return nil }
            self = .delete(key: key)
        case 3:
            guard let key = key(), let expected = blob(), let value = blob() else { return nil }
            self = .compareAndSet(key: key, expected: expected, value: value)
        case 4:
            guard let key = key() else { return nil }
            self = .get(key: key)
        default:
            return nil
        }
        guard k == data.count else { return nil }
    }
}

/// What applying a command gave.
public enum KVResult: Sendable, Hashable {
    /// A put or delete was applied; `existed` says whether the key had a value before.
    case done(existed: Bool)
    /// A get found this value.
    case value([UInt8])
    /// A get or compare-and-set found no value; a delete of a missing key is `done(existed: false)`.
    case notFound
    /// A compare-and-set found another value than expected.
    case preconditionFailed
    /// The entry was not a command of this store.
    case invalid
}

/// The replicated key-value store: a map from byte-string keys to byte-string values.
///
/// The map is a persistent one (`TreeDictionary`, a hash-array mapped prefix tree): a copy of it costs nothing, and
/// a change to one of two copies copies only the few nodes on the path to the key it changes. That is what lets
/// `snapshot()` hand out a frozen view of the whole store in O(1) while `apply` goes on changing the live one: the
/// two share everything but what changed since, and no second copy of the table ever exists (a `Dictionary` would
/// copy its whole table at the first change after the copy). See `KVStore+Snapshot.swift` for the snapshot format.
public struct KVStore: StateMachine, Sendable, Equatable {
    /// The longest key the store holds: a command carries a key's length in 16 bits.
    public static let maxKeyBytes = Int(UInt16.max)
    /// The longest value a snapshot of the store may hold (a restore refuses longer ones as damage, and so writing a
    /// snapshot with one fails rather than make a snapshot that cannot be restored).
    public static let maxValueBytes = 64 << 20

    public internal(set) var values: TreeDictionary<[UInt8], [UInt8]> = [:]

    public init() {}

    /// How many keys have a value.
    public var count: Int { values.count }

    public mutating func apply(_ command: [UInt8], at index: LogIndex) -> KVResult {
        guard let command = KVCommand(decoding: command) else { return .invalid }
        return apply(command)
    }

    public mutating func apply(_ command: KVCommand) -> KVResult {
        switch command {
        case .put(let key, let value):
            return .done(existed: values.updateValue(value, forKey: key) != nil)
        case .delete(let key):
            return .done(existed: values.removeValue(forKey: key) != nil)
        case .compareAndSet(let key, let expected, let value):
            guard let current = values[key] else { return .notFound }
            guard current == expected else { return .preconditionFailed }
            values[key] = value
            return .done(existed: true)
        case .get(let key):
            return values[key].map(KVResult.value) ?? .notFound
        }
    }

    /// The value of `key`, as this node has applied it (not linearizable on its own).
    public func value(for key: [UInt8]) -> [UInt8]? { values[key] }
}

// MARK: - Client sessions

/// The store takes client-session writes (`RaftNode.propose(_:session:id:)`): a result is kept as bytes in the
/// replicated session table, so that a retried write is answered with its first result.
///
/// ```
/// done = 1 existed:u8 (0 or 1)   value = 2 value   notFound = 3   preconditionFailed = 4   invalid = 5
/// ```
extension KVStore {
    public static var supportsClientSessions: Bool { true }

    public func encodeSessionOutput(_ output: KVResult) -> [UInt8]? {
        switch output {
        case .done(let existed): [1, existed ? 1 : 0]
        case .value(let value): [2] + value
        case .notFound: [3]
        case .preconditionFailed: [4]
        case .invalid: [5]
        }
    }

    public func decodeSessionOutput(_ bytes: [UInt8]) -> KVResult? {
        switch (bytes.first, bytes.count) {
        case (1?, 2) where bytes[1] <= 1: .done(existed: bytes[1] == 1)
        case (2?, _): .value(Array(bytes.dropFirst()))
        case (3?, 1): .notFound
        case (4?, 1): .preconditionFailed
        case (5?, 1): .invalid
        default: nil
        }
    }
}
