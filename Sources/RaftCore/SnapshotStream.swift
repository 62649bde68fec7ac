/// Where a snapshot's bytes go as they are written: a file, a buffer in memory, a socket. `SnapshotWriter` buffers
/// in front of it, so each call carries a large piece.
public protocol SnapshotSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// Where a snapshot's bytes come from as they are read. `read` fills as much of `buffer` as it can and returns how
/// many bytes it wrote there: 0 only at the end of the snapshot.
public protocol SnapshotSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A snapshot's bytes that cannot be what a snapshot writer wrote: cut short, or holding a length or value that
/// cannot be right. A state machine's `restore` throws it (or its own error) for bytes it cannot read.
public struct SnapshotFormatError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// Writes a snapshot's bytes to a sink through a buffer: integers little-endian, byte strings with a length before
/// them. What a state machine's snapshot writes its state with.
public struct SnapshotWriter {
    private let sink: any SnapshotSink
    private var buffer: [UInt8] = []
    private let bufferSize: Int
    /// Bytes written so far (buffered or not).
    public private(set) var count: UInt64 = 0

    public init(_ sink: any SnapshotSink, bufferSize: Int = 1 << 20) {
        self.sink = sink
        self.bufferSize = max(64, bufferSize)
        buffer.reserveCapacity(self.bufferSize)
    }

    public mutating func write(_ bytes: some Collection<UInt8>) throws {
        count += UInt64(bytes.count)
        if buffer.count + bytes.count > bufferSize { try flush() }
        if bytes.count >= bufferSize {
            let contiguous = Array(bytes)
            try contiguous.withUnsafeBytes { try sink.write($0) }
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    public mutating func write<T: FixedWidthInteger>(integer value: T) throws {
        count += UInt64(MemoryLayout<T>.size)
        if buffer.count + MemoryLayout<T>.size > bufferSize { try flush() }
        withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
    }

    /// A byte string, with its length (u32) before it.
    public mutating func write(blob bytes: some Collection<UInt8>) throws {
        guard bytes.count <= Int(UInt32.max) else {
            throw SnapshotFormatError("a byte string of \(bytes.count) bytes is too long for a snapshot")
        }
        try write(integer: UInt32(bytes.count))
        try write(bytes)
    }

    /// Hands every buffered byte to the sink.
    public mutating func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try sink.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads a snapshot's bytes from a source through a buffer, in the forms `SnapshotWriter` writes. Every read that
/// the bytes cannot satisfy throws `SnapshotFormatError`; nothing a damaged snapshot holds can crash the reader.
public struct SnapshotReader {
    private let source: any SnapshotSource
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    private var exhausted = false
    /// Bytes read so far.
    public private(set) var count: UInt64 = 0

    public init(_ source: any SnapshotSource, bufferSize: Int = 1 << 20) {
        self.source = source
        buffer = [UInt8](repeating: 0, count: max(64, bufferSize))
    }

    /// Whether every byte has been read.
    public mutating func isAtEnd() throws -> Bool {
        try fill(1)
        return start == end
    }

    /// Exactly `length` bytes.
    public mutating func read(count length: Int) throws -> [UInt8] {
        guard length >= 0 else { throw SnapshotFormatError("a negative length") }
        var out: [UInt8] = []
        out.reserveCapacity(min(length, 1 << 24))
        while out.count < length {
            try fill(1)
            guard start < end else {
                throw SnapshotFormatError("the snapshot ends \(length - out.count) bytes early (at byte \(count))")
            }
            let take = min(end - start, length - out.count)
            out.append(contentsOf: buffer[start..<start + take])
            start += take
            count += UInt64(take)
        }
        return out
    }

    public mutating func read<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        try fill(size)
        guard end - start >= size else {
            throw SnapshotFormatError("the snapshot ends in the middle of a \(size)-byte integer (at byte \(count))")
        }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { raw in
            for k in 0..<size { raw[k] = buffer[start + k] }
        }
        start += size
        count += UInt64(size)
        return T(littleEndian: value)
    }

    /// A byte string written by `write(blob:)`, refused if longer than `maxLength`.
    public mutating func readBlob(maxLength: Int) throws -> [UInt8] {
        let length = try read(UInt32.self)
        guard Int(length) <= maxLength else {
            throw SnapshotFormatError("a byte string of \(length) bytes where at most \(maxLength) are allowed")
        }
        return try read(count: Int(length))
    }

    /// Makes at least `wanted` bytes available, unless the source ends first.
    private mutating func fill(_ wanted: Int) throws {
        guard end - start < wanted, !exhausted else { return }
        if start > 0 {
            buffer.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                base.copyMemory(from: base + start, byteCount: end - start)
            }
            end -= start
            start = 0
        }
        while end - start < wanted && !exhausted {
            let got = try buffer.withUnsafeMutableBytes { raw in
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
            }
            if got == 0 { exhausted = true } else { end += got }
        }
    }
}

/// A snapshot's bytes in memory: a sink to write them to and a source to read them back. For tests, the simulator,
/// and small state machines.
public final class SnapshotBuffer: SnapshotSink, SnapshotSource, @unchecked Sendable {
    // @unchecked Sendable: a buffer is used by one thread at a time (written, then handed over, then read).
    public private(set) var bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    public func write(_ raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }

    public func read(into raw: UnsafeMutableRawBufferPointer) -> Int {
        let take = min(raw.count, bytes.count - position)
        guard take > 0, let base = raw.baseAddress else { return 0 }
        bytes.withUnsafeBytes { source in
            if let from = source.baseAddress { base.copyMemory(from: from + position, byteCount: take) }
        }
        position += take
        return take
    }
}
