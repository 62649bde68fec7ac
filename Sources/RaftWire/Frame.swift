import NIOCore
import RaftCore

/// What a frame carries.
public enum FrameType: UInt8, Sendable {
    /// The first frame on a connection: who is speaking, in which cluster.
    case hello = 1
    /// One Raft message.
    case message = 2
    /// A liveness probe on a connection a node opened: 8 bytes that the receiver echoes back in a `pong` on the
    /// same connection (the sender's clock reading, so the echo gives the round trip without remembering anything).
    case ping = 3
    /// The answer to a `ping`: its 8 bytes, unchanged. The only frame that travels back on a connection's opener.
    case pong = 4
}

/// One unit on the wire:
///
/// ```
/// length:u32   bytes after this field (6 + payload)
/// version:u8   1
/// type:u8      FrameType
/// crc:u32      CRC-32C of the payload
/// payload
/// ```
public struct Frame: Sendable {
    public var type: FrameType
    public var payload: ByteBuffer

    public static let version: UInt8 = 1
    /// Bytes before the payload.
    public static let headerSize = 10

    public init(type: FrameType, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// Appends a frame to `buffer`, its payload written by `body`; the length and checksum are filled in after.
    public static func write(_ type: FrameType, into buffer: inout ByteBuffer, body: (inout ByteBuffer) -> Void) {
        let start = buffer.writerIndex
        buffer.writeMultipleIntegers(UInt32(0), version, type.rawValue, UInt32(0))
        let payloadStart = buffer.writerIndex
        body(&buffer)
        let payloadLength = buffer.writerIndex - payloadStart
        let crc = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(payloadStart - buffer.readerIndex)...]))
        }
        buffer.setInteger(UInt32(truncatingIfNeeded: payloadLength + 6), at: start)
        buffer.setInteger(crc, at: start + 6)
    }

    /// Appends a frame holding one Raft message.
    public static func write(_ message: Message, into buffer: inout ByteBuffer) {
        write(.message, into: &buffer) { MessageCodec.encode(message, into: &$0) }
    }

    /// The payload size of a `ping` or `pong` frame.
    public static let probeSize = 8

    /// Appends a `ping` (or, echoing one, a `pong`) frame carrying `value`.
    /// - Precondition: `type` is `.ping` or `.pong` (a programming error otherwise, not something from the network).
    public static func writeProbe(_ type: FrameType, _ value: UInt64, into buffer: inout ByteBuffer) {
        assert(type == .ping || type == .pong, "a probe is a ping or a pong")
        write(type, into: &buffer) { $0.writeInteger(value) }
    }

    /// The value a `ping` or `pong` frame carries.
    /// - Throws: `WireError.invalid` if the frame is of another type or its payload is not exactly 8 bytes.
    public func probeValue() throws(WireError) -> UInt64 {
        guard type == .ping || type == .pong else { throw .invalid("expected a ping or a pong, got \(type)") }
        guard payload.readableBytes == Frame.probeSize,
            let value = payload.getInteger(at: payload.readerIndex, as: UInt64.self)
        else { throw .invalid("\(type) of \(payload.readableBytes) bytes, expected \(Frame.probeSize)") }
        return value
    }

    /// Takes one whole frame off the front of `buffer`, or returns nil if more bytes are needed.
    /// - Throws: `WireError` for a frame that is oversized, of an unknown version or type, or fails its checksum.
    public static func read(from buffer: inout ByteBuffer, maxSize: Int) throws(WireError) -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 6 else { throw .invalid("frame length \(length)") }
        guard Int(length) - 6 <= maxSize else {
            throw .oversized(size: Int(length) - 6, limit: maxSize)
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        guard let (version, rawType, crc) = buffer.readMultipleIntegers(as: (UInt8, UInt8, UInt32).self),
            let payload = buffer.readSlice(length: Int(length) - 6)
        else { throw .truncated("frame") }
        guard version == Frame.version else { throw .unsupportedVersion(version) }
        guard let type = FrameType(rawValue: rawType) else { throw .invalid("frame type \(rawType)") }
        let actual = payload.withUnsafeReadableBytes { CRC32C.checksum($0) }
        guard actual == crc else { throw .checksumMismatch }
        return Frame(type: type, payload: payload)
    }
}

/// Splits a byte stream into frames (see `Frame`), closing the connection on the first bad one.
///
/// The first frame of a connection is its hello, which is small: it may not exceed `maxFirstFrameSize`, so a
/// stranger's bytes that happen to announce a long frame are refused at once rather than waited for.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame
    public let maxFrameSize: Int
    public let maxFirstFrameSize: Int
    private var sawFirstFrame = false

    public init(maxFrameSize: Int, maxFirstFrameSize: Int = 4096) {
        self.maxFrameSize = maxFrameSize
        self.maxFirstFrameSize = min(maxFirstFrameSize, maxFrameSize)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let limit = sawFirstFrame ? maxFrameSize : maxFirstFrameSize
        guard let frame = try Frame.read(from: &buffer, maxSize: limit) else { return .needMoreData }
        sawFirstFrame = true
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// The first frame a node sends on a connection it opens.
public struct Hello: Sendable, Hashable {
    /// "RAFTLITE", so that a stray client of another protocol is told apart from a peer at once.
    public static let magic: UInt64 = 0x5241_4654_4C49_5445
    public var clusterID: String
    public var sender: NodeID
    public var senderName: String
    /// Whom the sender believes it is talking to (a guard against crossed addresses).
    public var receiver: NodeID

    public init(clusterID: String, sender: NodeID, senderName: String, receiver: NodeID) {
        self.clusterID = clusterID
        self.sender = sender
        self.senderName = senderName
        self.receiver = receiver
    }

    public func write(into buffer: inout ByteBuffer) {
        Frame.write(.hello, into: &buffer) { b in
            b.writeInteger(Hello.magic)
            Hello.writeString(clusterID, into: &b)
            b.writeInteger(sender.rawValue)
            Hello.writeString(senderName, into: &b)
            b.writeInteger(receiver.rawValue)
        }
    }

    public static func decode(_ buffer: inout ByteBuffer) throws(WireError) -> Hello {
        guard buffer.readInteger(as: UInt64.self) == magic else { throw .invalid("hello: not a RaftLite peer") }
        let cluster = try readString(&buffer, "cluster id")
        guard let sender = buffer.readInteger(as: UInt64.self) else { throw .truncated("hello") }
        let name = try readString(&buffer, "sender name")
        guard let receiver = buffer.readInteger(as: UInt64.self), buffer.readableBytes == 0 else {
            throw .invalid("hello")
        }
        return Hello(clusterID: cluster, sender: NodeID(sender), senderName: name, receiver: NodeID(receiver))
    }

    private static func writeString(_ s: String, into buffer: inout ByteBuffer) {
        let bytes = Array(s.utf8.prefix(Int(UInt16.max)))
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    private static func readString(_ buffer: inout ByteBuffer, _ what: String) throws(WireError) -> String {
        guard let length = buffer.readInteger(as: UInt16.self), let bytes = buffer.readBytes(length: Int(length)) else {
            throw .truncated("hello \(what)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
