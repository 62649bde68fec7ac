import RaftCore

/// How a node wraps each command it proposes, so that whichever node appends it, the proposer recognises it when
/// it is applied:
///
/// ```
/// version:u8 (1)  proposer:u64  sequence:u64  idLength:u16  id  command
/// ```
struct Envelope: Hashable {
    static let version: UInt8 = 1
    /// The largest id, in bytes.
    static let maxIDBytes = 1024
    /// The most bytes an envelope adds to a command.
    static let overhead = 19 + maxIDBytes

    var proposer: NodeID
    var sequence: UInt64
    var id: String?
    var command: [UInt8]

    func encoded() -> [UInt8] {
        let idBytes = Array((id ?? "").utf8.prefix(Int(UInt16.max)))
        var out: [UInt8] = []
        out.reserveCapacity(19 + idBytes.count + command.count)
        out.append(Envelope.version)
        Envelope.append(proposer.rawValue, to: &out)
        Envelope.append(sequence, to: &out)
        out.append(UInt8(idBytes.count >> 8))
        out.append(UInt8(idBytes.count & 0xFF))
        out.append(contentsOf: idBytes)
        out.append(contentsOf: command)
        return out
    }

    /// Decodes an entry's data; nil if it is not an envelope (an entry written by something else).
    init?(decoding data: [UInt8]) {
        guard data.count >= 19, data[0] == Envelope.version else { return nil }
        func u64(_ at: Int) -> UInt64 { data[at..<at + 8].reduce(0) { $0 << 8 | UInt64($1) } }
        let idLength = Int(data[17]) << 8 | Int(data[18])
        guard data.count >= 19 + idLength else { return nil }
        proposer = NodeID(u64(1))
        sequence = u64(9)
        id = idLength == 0 ? nil : String(decoding: data[19..<19 + idLength], as: UTF8.self)
        command = Array(data[(19 + idLength)...])
    }

    init(proposer: NodeID, sequence: UInt64, id: String?, command: [UInt8]) {
        self.proposer = proposer
        self.sequence = sequence
        self.id = id
        self.command = command
    }

    private static func append(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
