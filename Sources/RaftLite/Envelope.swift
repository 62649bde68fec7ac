import RaftCore

/// How a node wraps each command it proposes, so that whichever node appends it, the proposer recognises it when
/// it is applied:
///
/// ```
/// version:u8 (1)  proposer:u64  incarnation:u64  sequence:u64  idLength:u16  id  command
/// ```
///
/// `incarnation` is drawn at random each time a node starts, so that an entry proposed before a restart is never
/// taken for a proposal of the new run with the same sequence number.
struct Envelope: Hashable {
    static let version: UInt8 = 1
    /// The largest id, in bytes.
    static let maxIDBytes = 1024
    static let headerSize = 27
    /// The most bytes an envelope adds to a command.
    static let overhead = headerSize + maxIDBytes

    var proposer: NodeID
    var incarnation: UInt64
    var sequence: UInt64
    var id: String?
    var command: [UInt8]

    init(proposer: NodeID, incarnation: UInt64, sequence: UInt64, id: String?, command: [UInt8]) {
        self.proposer = proposer
        self.incarnation = incarnation
        self.sequence = sequence
        self.id = id
        self.command = command
    }

    func encoded() -> [UInt8] {
        let idBytes = Array((id ?? "").utf8.prefix(Envelope.maxIDBytes))
        var out: [UInt8] = []
        out.reserveCapacity(Envelope.headerSize + idBytes.count + command.count)
        out.append(Envelope.version)
        Envelope.append(proposer.rawValue, to: &out)
        Envelope.append(incarnation, to: &out)
        Envelope.append(sequence, to: &out)
        out.append(UInt8(idBytes.count >> 8))
        out.append(UInt8(idBytes.count & 0xFF))
        out.append(contentsOf: idBytes)
        out.append(contentsOf: command)
        return out
    }

    /// Decodes an entry's data; nil if it is not an envelope (an entry written by something else).
    init?(decoding data: [UInt8]) {
        let h = Envelope.headerSize
        guard data.count >= h, data[0] == Envelope.version else { return nil }
        func u64(_ at: Int) -> UInt64 { data[at..<at + 8].reduce(0) { $0 << 8 | UInt64($1) } }
        let idLength = Int(data[h - 2]) << 8 | Int(data[h - 1])
        guard idLength <= Envelope.maxIDBytes, data.count >= h + idLength else { return nil }
        proposer = NodeID(u64(1))
        incarnation = u64(9)
        sequence = u64(17)
        id = idLength == 0 ? nil : String(decoding: data[h..<h + idLength], as: UTF8.self)
        command = Array(data[(h + idLength)...])
    }

    private static func append(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
