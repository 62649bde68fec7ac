/// Who proposed a command, carried inside the command's log entry, so that whichever node appends it, every node can
/// tell — from the log alone — whether it was applied before (see `ProposalSessions`) and the proposer can recognise
/// it when it is applied (see `ProposalTracker`).
///
/// ```
/// version:u8 (2)  proposer:u64  incarnation:u64  sequence:u64  floor:u64  idLength:u16  id  command
/// version:u8 (3)  proposer:u64  incarnation:u64  sequence:u64  floor:u64  idLength:u16  kind:u8  session  id  command
///   kind 1 (register a client session):  timeMs:u64  timeoutMs:u64  maxSessions:u64
///   kind 2 (a write of a client session): clientID:u64  clientSequence:u64  timeMs:u64
/// ```
/// Integers are big-endian. A proposal without a client-session operation is written in version 2 (the bytes it
/// always had); version 3 carries one (`SessionOperation`, see `ClientSessions`). Both decode.
///
/// - `incarnation` tells one run of the proposer from the next: a restarted node draws a new one, so the sequence
///   numbers of its new run are never mistaken for those of the old.
/// - `sequence` numbers the proposer's proposals in this incarnation, from 1. A proposal sent again (retried, or
///   duplicated by the network) keeps its sequence: that is what makes the copy recognisable.
/// - `floor` is a promise of the proposer: every proposal of this incarnation numbered below it is settled (it was
///   applied, or its caller was given its outcome), so any copy of one of them that commits later is not applied.
public struct ProposalEnvelope: Sendable, Hashable {
    /// The version of an envelope without a client-session operation.
    public static let version: UInt8 = 2
    /// The version of an envelope with one.
    public static let sessionVersion: UInt8 = 3
    /// The longest `id`, in bytes.
    public static let maxIDBytes = 1024
    /// The fixed part of every version (a version 3 envelope follows it with `sessionSize` bytes).
    public static let headerSize = 35
    /// What a client-session operation adds to the header: its kind and three integers.
    public static let sessionSize = 25
    /// The most bytes an envelope adds to a command.
    public static let overhead = headerSize + sessionSize + maxIDBytes

    public var proposer: NodeID
    public var incarnation: UInt64
    public var sequence: UInt64
    public var floor: UInt64
    /// The name the caller gave the entry, if any (`RaftNode.committedEntry(id:)` finds entries by it).
    public var id: String?
    public var command: [UInt8]
    /// The client-session operation the entry carries, if any (a version 3 envelope).
    public var sessionOperation: SessionOperation?

    public init(
        proposer: NodeID, incarnation: UInt64, sequence: UInt64, floor: UInt64, id: String? = nil, command: [UInt8],
        sessionOperation: SessionOperation? = nil
    ) {
        self.proposer = proposer
        self.incarnation = incarnation
        self.sequence = sequence
        self.floor = floor
        self.id = id
        self.command = command
        self.sessionOperation = sessionOperation
    }

    /// The proposal's identity: the same for every copy of it.
    public var identity: ProposalIdentity {
        ProposalIdentity(proposer: proposer, incarnation: incarnation, sequence: sequence)
    }

    public func encoded() -> [UInt8] {
        let idBytes = Array((id ?? "").utf8.prefix(ProposalEnvelope.maxIDBytes))
        var out: [UInt8] = []
        out.reserveCapacity(
            ProposalEnvelope.headerSize + ProposalEnvelope.sessionSize + idBytes.count + command.count)
        out.append(sessionOperation == nil ? ProposalEnvelope.version : ProposalEnvelope.sessionVersion)
        ProposalEnvelope.append(proposer.rawValue, to: &out)
        ProposalEnvelope.append(incarnation, to: &out)
        ProposalEnvelope.append(sequence, to: &out)
        ProposalEnvelope.append(floor, to: &out)
        out.append(UInt8(idBytes.count >> 8))
        out.append(UInt8(idBytes.count & 0xFF))
        switch sessionOperation {
        case nil: break
        case .register(let timeMs, let timeoutMs, let maxSessions):
            out.append(1)
            ProposalEnvelope.append(timeMs, to: &out)
            ProposalEnvelope.append(timeoutMs, to: &out)
            ProposalEnvelope.append(maxSessions, to: &out)
        case .write(let clientID, let clientSequence, let timeMs):
            out.append(2)
            ProposalEnvelope.append(clientID, to: &out)
            ProposalEnvelope.append(clientSequence, to: &out)
            ProposalEnvelope.append(timeMs, to: &out)
        }
        out.append(contentsOf: idBytes)
        out.append(contentsOf: command)
        return out
    }

    /// Decodes an entry's data; nil if it is not an envelope (an entry written by something else, or damaged).
    public init?(decoding data: [UInt8]) {
        guard let header = ProposalEnvelope.Header(decoding: data) else { return nil }
        let h = header.idOffset
        proposer = header.identity.proposer
        incarnation = header.identity.incarnation
        sequence = header.identity.sequence
        floor = header.floor
        id = header.idLength == 0 ? nil : String(decoding: data[h..<h + header.idLength], as: UTF8.self)
        command = Array(data[(h + header.idLength)...])
        sessionOperation = header.sessionOperation
    }

    /// The fixed part of an envelope: enough to decide whether a copy is applied, without copying the command.
    public struct Header: Sendable, Hashable {
        public var identity: ProposalIdentity
        public var floor: UInt64
        public var idLength: Int
        /// The client-session operation, for a version 3 envelope.
        public var sessionOperation: SessionOperation?
        /// Where the id begins (the command follows it).
        public var idOffset: Int

        public init?(decoding data: [UInt8]) {
            let h = ProposalEnvelope.headerSize
            guard data.count >= h else { return nil }
            let version = data[0]
            guard version == ProposalEnvelope.version || version == ProposalEnvelope.sessionVersion else { return nil }
            func u64(_ at: Int) -> UInt64 {
                var value: UInt64 = 0
                for k in at..<at + 8 { value = value << 8 | UInt64(data[k]) }
                return value
            }
            var offset = h
            if version == ProposalEnvelope.sessionVersion {
                guard data.count >= h + ProposalEnvelope.sessionSize else { return nil }
                switch data[h] {
                case 1:
                    sessionOperation = .register(timeMs: u64(h + 1), timeoutMs: u64(h + 9), maxSessions: u64(h + 17))
                case 2:
                    sessionOperation = .write(clientID: u64(h + 1), sequence: u64(h + 9), timeMs: u64(h + 17))
                default:
                    return nil
                }
                offset += ProposalEnvelope.sessionSize
            }
            let idLength = Int(data[h - 2]) << 8 | Int(data[h - 1])
            guard idLength <= ProposalEnvelope.maxIDBytes, data.count >= offset + idLength else { return nil }
            identity = ProposalIdentity(proposer: NodeID(u64(1)), incarnation: u64(9), sequence: u64(17))
            floor = u64(25)
            self.idLength = idLength
            self.idOffset = offset
        }
    }

    private static func append(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}

/// What a proposal asks of the replicated client-session table (`ClientSessions`), beside its command.
public enum SessionOperation: Sendable, Hashable {
    /// Open a session: its client id will be the index of this entry. `timeMs` is the proposer's wall clock in
    /// milliseconds; `timeoutMs` and `maxSessions` are the proposer's limits, carried so that every node applies
    /// the same ones.
    case register(timeMs: UInt64, timeoutMs: UInt64, maxSessions: UInt64)
    /// A command of the session `clientID`, numbered `sequence` by its client (from 1); `timeMs` as for `register`.
    case write(clientID: UInt64, sequence: UInt64, timeMs: UInt64)
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
