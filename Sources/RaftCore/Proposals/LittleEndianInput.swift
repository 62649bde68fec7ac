/// Reads little-endian integers and byte strings from a byte array (the session tables' snapshot formats), throwing
/// a `SnapshotFormatError` that names what was being read for bytes that end too soon.
struct LittleEndianInput {
    private let bytes: [UInt8]
    private var position = 0
    /// What the bytes are, for errors: "the proposal sessions".
    private let subject: String

    init(_ bytes: [UInt8], of subject: String) {
        self.bytes = bytes
        self.subject = subject
    }

    var remaining: Int { bytes.count - position }

    mutating func byte(_ what: @autoclosure () -> String) throws(SnapshotFormatError) -> UInt8 {
        UInt8(try integer(1, what()))
    }

    mutating func u32(_ what: @autoclosure () -> String) throws(SnapshotFormatError) -> UInt32 {
        UInt32(try integer(4, what()))
    }

    mutating func u64(_ what: @autoclosure () -> String) throws(SnapshotFormatError) -> UInt64 {
        try integer(8, what())
    }

    mutating func bytes(_ count: Int, _ what: @autoclosure () -> String) throws(SnapshotFormatError) -> [UInt8] {
        guard count >= 0, remaining >= count else {
            throw SnapshotFormatError(
                "\(subject): the bytes end at byte \(bytes.count), in the middle of \(what()) (\(count) bytes)")
        }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    private mutating func integer(_ size: Int, _ what: @autoclosure () -> String) throws(SnapshotFormatError) -> UInt64
    {
        guard remaining >= size else {
            throw SnapshotFormatError("\(subject): the bytes end at byte \(bytes.count), in the middle of \(what())")
        }
        var value: UInt64 = 0
        for k in 0..<size { value |= UInt64(bytes[position + k]) << (8 * k) }
        position += size
        return value
    }
}
