/// Who proposed a command, carried inside the command's log entry, so that whichever node appends it, every node can
/// tell — from the log alone — whether it was applied before (see `ProposalSessions`) and the proposer can recognise
/// it when it is applied (see `ProposalTracker`).
///
/// ```
/// version:u8 (2)  proposer:u64  incarnation:u64  sequence:u64  floor:u64  idLength:u16  id  command
/// ```
/// Integers are big-endian.
///
/// - `incarnation` tells one run of the proposer from the next: a restarted node draws a new one, so the sequence
///   numbers of its new run are never mistaken for those of the old.
/// - `sequence` numbers the proposer's proposals in this incarnation, from 1. A proposal sent again (retried, or
///   duplicated by the network) keeps its sequence: that is what makes the copy recognisable.
/// - `floor` is a promise of the proposer: every proposal of this incarnation numbered below it is settled (it was
///   applied, or its caller was given its outcome), so any copy of one of them that commits later is not applied.
public struct ProposalEnvelope: Sendable, Hashable {
    public static let version: UInt8 = 2
    /// The longest `id`, in bytes.
    public static let maxIDBytes = 1024
    public static let headerSize = 35
    /// The most bytes an envelope adds to a command.
    public static let overhead = headerSize + maxIDBytes

    public var proposer: NodeID
    public var incarnation: UInt64
    public var sequence: UInt64
    public var floor: UInt64
    /// The name the caller gave the entry, if any (`RaftNode.committedEntry(id:)` finds entries by it).
    public var id: String?
    public var command: [UInt8]

    public init(
        proposer: NodeID, incarnation: UInt64, sequence: UInt64, floor: UInt64, id: String? = nil, command: [UInt8]
    ) {
        self.proposer = proposer
        self.incarnation = incarnation
        self.sequence = sequence
        self.floor = floor
        self.id = id
        self.command = command
    }

    /// The proposal's identity: the same for every copy of it.
    public var identity: ProposalIdentity {
        ProposalIdentity(proposer: proposer, incarnation: incarnation, sequence: sequence)
    }

    public func encoded() -> [UInt8] {
        let idBytes = Array((id ?? "").utf8.prefix(ProposalEnvelope.maxIDBytes))
        var out: [UInt8] = []
        out.reserveCapacity(ProposalEnvelope.headerSize + idBytes.count + command.count)
        out.append(ProposalEnvelope.version)
        ProposalEnvelope.append(proposer.rawValue, to: &out)
        ProposalEnvelope.append(incarnation, to: &out)
        ProposalEnvelope.append(sequence, to: &out)
        ProposalEnvelope.append(floor, to: &out)
        out.append(UInt8(idBytes.count >> 8))
        out.append(UInt8(idBytes.count & 0xFF))
        out.append(contentsOf: idBytes)
        out.append(contentsOf: command)
        return out
    }

    /// Decodes an entry's data; nil if it is not an envelope (an entry written by something else, or damaged).
    public init?(decoding data: [UInt8]) {
        guard let header = ProposalEnvelope.Header(decoding: data) else { return nil }
        let h = ProposalEnvelope.headerSize
        proposer = header.identity.proposer
        incarnation = header.identity.incarnation
        sequence = header.identity.sequence
        floor = header.floor
        id = header.idLength == 0 ? nil : String(decoding: data[h..<h + header.idLength], as: UTF8.self)
        command = Array(data[(h + header.idLength)...])
    }

    /// The fixed part of an envelope: enough to decide whether a copy is applied, without copying the command.
    public struct Header: Sendable, Hashable {
        public var identity: ProposalIdentity
        public var floor: UInt64
        public var idLength: Int

        public init?(decoding data: [UInt8]) {
            let h = ProposalEnvelope.headerSize
            guard data.count >= h, data[0] == ProposalEnvelope.version else { return nil }
            func u64(_ at: Int) -> UInt64 {
                var value: UInt64 = 0
                for k in at..<at + 8 { value = value << 8 | UInt64(data[k]) }
                return value
            }
            let idLength = Int(data[h - 2]) << 8 | Int(data[h - 1])
            guard idLength <= ProposalEnvelope.maxIDBytes, data.count >= h + idLength else { return nil }
            identity = ProposalIdentity(proposer: NodeID(u64(1)), incarnation: u64(9), sequence: u64(17))
            floor = u64(25)
            self.idLength = idLength
        }
    }

    private static func append(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}

/// What every copy of one proposal has in common.
public struct ProposalIdentity: Sendable, Hashable, CustomStringConvertible {
    public var proposer: NodeID
    public var incarnation: UInt64
    public var sequence: UInt64

    public init(proposer: NodeID, incarnation: UInt64, sequence: UInt64) {
        self.proposer = proposer
        self.incarnation = incarnation
        self.sequence = sequence
    }

    public var description: String { "\(proposer)/\(incarnation)#\(sequence)" }
}
