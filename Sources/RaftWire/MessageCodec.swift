import NIOCore
import RaftCore

/// The binary encoding of Raft messages: fixed-width big-endian integers, length-prefixed byte strings.
///
/// ```
/// message     = from:u64 to:u64 term:u64 kind:u8 body
/// append      = prevIndex:u64 prevTerm:u64 commit:u64 count:u32 entry*      (entry indexes follow prevIndex)
/// entry       = term:u64 kind:u8 length:u32 data
/// appendResp  = success:u8 index:u64 hintIndex:u64 hintTerm:u64
/// vote        = flags:u8 lastIndex:u64 lastTerm:u64                        (flags: 1 preVote, 2 transfer)
/// voteResp    = preVote:u8 granted:u8
/// heartbeat   = commit:u64 context:u64        heartbeatResp = context:u64        commitNotice = commit:u64
/// propose     = count:u32 (length:u32 data)*
/// install     = index:u64 term:u64 length:u32 membership                   (Membership.encoded())
/// chunk       = index:u64 snapshotTerm:u64 offset:u64 totalSize:u64 length:u32 data
/// chunkAck    = index:u64 snapshotTerm:u64 offset:u64 status:u8
/// timeoutNow  = (empty)
/// readIndex   = context:u64        readIndexResp = context:u64 index:u64 granted:u8
/// ```
/// Decoding trusts nothing: every count is checked against the bytes that remain before anything is allocated,
/// every flag must be 0 or 1, every enum value known, and the whole body must be used.
public enum MessageCodec {
    enum Kind: UInt8 {
        case appendEntries = 1
        case appendEntriesResponse = 2
        case requestVote = 3
        case requestVoteResponse = 4
        case heartbeat = 5
        case heartbeatResponse = 6
        case commitNotice = 7
        case propose = 8
        case installSnapshot = 9
        case snapshotChunk = 10
        case snapshotChunkAck = 11
        case timeoutNow = 12
        case readIndex = 13
        case readIndexResponse = 14
    }

    /// Appends the encoding of `message` to `buffer`.
    public static func encode(_ message: Message, into buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(message.from.rawValue, message.to.rawValue, message.term.rawValue)
        switch message.kind {
        case .appendEntries(let a):
            buffer.writeInteger(Kind.appendEntries.rawValue)
            buffer.writeMultipleIntegers(
                a.prevIndex.rawValue, a.prevTerm.rawValue, a.commit.rawValue,
                UInt32(truncatingIfNeeded: a.entries.count))
            for entry in a.entries {
                buffer.writeMultipleIntegers(
                    entry.term.rawValue, entry.kind.rawValue,
                    UInt32(truncatingIfNeeded: entry.data.count))
                buffer.writeBytes(entry.data)
            }
        case .appendEntriesResponse(let r):
            buffer.writeInteger(Kind.appendEntriesResponse.rawValue)
            buffer.writeMultipleIntegers(
                r.success ? UInt8(1) : 0, r.index.rawValue, r.rejectHintIndex.rawValue,
                r.rejectHintTerm.rawValue)
        case .requestVote(let v):
            buffer.writeInteger(Kind.requestVote.rawValue)
            let flags: UInt8 = (v.preVote ? 1 : 0) | (v.transfer ? 2 : 0)
            buffer.writeMultipleIntegers(flags, v.lastLogIndex.rawValue, v.lastLogTerm.rawValue)
        case .requestVoteResponse(let v):
            buffer.writeInteger(Kind.requestVoteResponse.rawValue)
            buffer.writeMultipleIntegers(v.preVote ? UInt8(1) : 0, v.granted ? UInt8(1) : 0)
        case .heartbeat(let h):
            buffer.writeInteger(Kind.heartbeat.rawValue)
            buffer.writeMultipleIntegers(h.commit.rawValue, h.context)
        case .heartbeatResponse(let r):
            buffer.writeInteger(Kind.heartbeatResponse.rawValue)
            buffer.writeInteger(r.context)
        case .commitNotice(let commit):
            buffer.writeInteger(Kind.commitNotice.rawValue)
            buffer.writeInteger(commit.rawValue)
        case .propose(let batch):
            buffer.writeInteger(Kind.propose.rawValue)
            buffer.writeInteger(UInt32(truncatingIfNeeded: batch.count))
            for data in batch {
                buffer.writeInteger(UInt32(truncatingIfNeeded: data.count))
                buffer.writeBytes(data)
            }
        case .installSnapshot(let meta):
            buffer.writeInteger(Kind.installSnapshot.rawValue)
            let membership = meta.membership.encoded()
            buffer.writeMultipleIntegers(
                meta.index.rawValue, meta.term.rawValue, UInt32(truncatingIfNeeded: membership.count))
            buffer.writeBytes(membership)
        case .snapshotChunk(let c):
            buffer.writeInteger(Kind.snapshotChunk.rawValue)
            buffer.writeMultipleIntegers(
                c.index.rawValue, c.snapshotTerm.rawValue, c.offset, c.totalSize,
                UInt32(truncatingIfNeeded: c.data.count))
            buffer.writeBytes(c.data)
        case .snapshotChunkAck(let a):
            buffer.writeInteger(Kind.snapshotChunkAck.rawValue)
            buffer.writeMultipleIntegers(a.index.rawValue, a.snapshotTerm.rawValue, a.offset, a.status.rawValue)
        case .timeoutNow:
            buffer.writeInteger(Kind.timeoutNow.rawValue)
        case .readIndex(let r):
            buffer.writeInteger(Kind.readIndex.rawValue)
            buffer.writeInteger(r.context)
        case .readIndexResponse(let r):
            buffer.writeInteger(Kind.readIndexResponse.rawValue)
            buffer.writeMultipleIntegers(r.context, r.index.rawValue, r.granted ? UInt8(1) : 0)
        }
    }

    /// The encoded size of `message`, in bytes.
    public static func encodedSize(of message: Message) -> Int {
        let header = 8 * 3 + 1
        switch message.kind {
        case .appendEntries(let a): return header + 28 + a.entries.reduce(0) { $0 + 13 + $1.data.count }
        case .appendEntriesResponse: return header + 25
        case .requestVote: return header + 17
        case .requestVoteResponse: return header + 2
        case .heartbeat: return header + 16
        case .commitNotice, .heartbeatResponse, .readIndex: return header + 8
        case .readIndexResponse: return header + 17
        case .timeoutNow: return header
        case .propose(let batch): return header + 4 + batch.reduce(0) { $0 + 4 + $1.count }
        case .installSnapshot(let meta): return header + 20 + meta.membership.encoded().count
        case .snapshotChunk(let c): return header + 36 + c.data.count
        case .snapshotChunkAck: return header + 25
        }
    }

    /// Decodes one message that takes up all of `buffer`'s readable bytes.
    /// - Throws: `WireError` naming what is wrong.
    public static func decode(_ buffer: inout ByteBuffer) throws(WireError) -> Message {
        guard let (from, to, term, tag) = buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt64, UInt8).self) else {
            throw .truncated("message header")
        }
        guard let kind = Kind(rawValue: tag) else { throw .invalid("message kind \(tag)") }
        let body: Message.Kind
        switch kind {
        case .appendEntries:
            guard
                let (prevIndex, prevTerm, commit, count) =
                    buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt64, UInt32).self)
            else { throw .truncated("AppendEntries header") }
            // Every entry takes at least 13 bytes: a count beyond that is a lie, whatever memory it asks for.
            guard Int(count) <= buffer.readableBytes / 13 else { throw .invalid("entry count \(count)") }
            guard prevIndex <= UInt64.max - UInt64(count) else { throw .invalid("entry indexes overflow") }
            var entries: [Entry] = []
            entries.reserveCapacity(Int(count))
            for k in 0..<UInt64(count) {
                guard let (entryTerm, entryKind, length) = buffer.readMultipleIntegers(as: (UInt64, UInt8, UInt32).self)
                else { throw .truncated("entry header") }
                guard let kind = EntryKind(rawValue: entryKind) else { throw .invalid("entry kind \(entryKind)") }
                guard let data = buffer.readBytes(length: Int(length)) else { throw .truncated("entry data") }
                entries.append(Entry(term: Term(entryTerm), index: LogIndex(prevIndex + 1 + k), kind: kind, data: data))
            }
            body = .appendEntries(
                AppendEntries(
                    prevIndex: LogIndex(prevIndex), prevTerm: Term(prevTerm), entries: entries, commit: LogIndex(commit)
                ))
        case .appendEntriesResponse:
            guard
                let (success, index, hintIndex, hintTerm) =
                    buffer.readMultipleIntegers(as: (UInt8, UInt64, UInt64, UInt64).self)
            else { throw .truncated("AppendEntries response") }
            body = .appendEntriesResponse(
                AppendEntriesResponse(
                    success: try flag(success, "success"), index: LogIndex(index), rejectHintIndex: LogIndex(hintIndex),
                    rejectHintTerm: Term(hintTerm)))
        case .requestVote:
            guard let (flags, lastIndex, lastTerm) = buffer.readMultipleIntegers(as: (UInt8, UInt64, UInt64).self)
            else { throw .truncated("RequestVote") }
            guard flags & ~3 == 0 else { throw .invalid("RequestVote flags \(flags)") }
            body = .requestVote(
                RequestVote(
                    preVote: flags & 1 != 0, lastLogIndex: LogIndex(lastIndex), lastLogTerm: Term(lastTerm),
                    transfer: flags & 2 != 0))
        case .requestVoteResponse:
            guard let (preVote, granted) = buffer.readMultipleIntegers(as: (UInt8, UInt8).self) else {
                throw .truncated("RequestVote response")
            }
            body = .requestVoteResponse(
                RequestVoteResponse(
                    preVote: try flag(preVote, "preVote"), granted: try flag(granted, "granted")))
        case .heartbeat:
            guard let (commit, context) = buffer.readMultipleIntegers(as: (UInt64, UInt64).self) else {
                throw .truncated("heartbeat")
            }
            body = .heartbeat(Heartbeat(commit: LogIndex(commit), context: context))
        case .heartbeatResponse:
            guard let context = buffer.readInteger(as: UInt64.self) else { throw .truncated("heartbeat response") }
            body = .heartbeatResponse(HeartbeatResponse(context: context))
        case .commitNotice:
            guard let commit = buffer.readInteger(as: UInt64.self) else { throw .truncated("commit notice") }
            body = .commitNotice(LogIndex(commit))
        case .propose:
            guard let count = buffer.readInteger(as: UInt32.self) else { throw .truncated("proposal count") }
            guard Int(count) <= buffer.readableBytes / 4 else { throw .invalid("proposal count \(count)") }
            var batch: [[UInt8]] = []
            batch.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let length = buffer.readInteger(as: UInt32.self), let data = buffer.readBytes(length: Int(length))
                else { throw .truncated("proposal") }
                batch.append(data)
            }
            body = .propose(batch)
        case .installSnapshot:
            guard let (index, snapshotTerm, length) = buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt32).self)
            else { throw .truncated("snapshot metadata") }
            guard let bytes = buffer.readBytes(length: Int(length)) else { throw .truncated("snapshot membership") }
            guard let membership = Membership(decoding: bytes) else { throw .invalid("snapshot membership") }
            body = .installSnapshot(
                SnapshotMetadata(index: LogIndex(index), term: Term(snapshotTerm), membership: membership))
        case .snapshotChunk:
            guard
                let (index, snapshotTerm, offset, totalSize, length) =
                    buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt64, UInt64, UInt32).self)
            else { throw .truncated("snapshot chunk header") }
            guard let data = buffer.readBytes(length: Int(length)) else { throw .truncated("snapshot chunk data") }
            guard offset <= totalSize, UInt64(data.count) <= totalSize - offset else {
                throw .invalid("snapshot chunk of \(data.count) bytes at \(offset) of \(totalSize)")
            }
            body = .snapshotChunk(
                SnapshotChunk(
                    index: LogIndex(index), snapshotTerm: Term(snapshotTerm), offset: offset, totalSize: totalSize,
                    data: data))
        case .snapshotChunkAck:
            guard
                let (index, snapshotTerm, offset, tag) =
                    buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt64, UInt8).self)
            else { throw .truncated("snapshot chunk ack") }
            guard let status = SnapshotChunkAck.Status(rawValue: tag) else {
                throw .invalid("snapshot chunk ack status \(tag)")
            }
            body = .snapshotChunkAck(
                SnapshotChunkAck(
                    index: LogIndex(index), snapshotTerm: Term(snapshotTerm), offset: offset, status: status))
        case .timeoutNow:
            body = .timeoutNow
        case .readIndex:
            guard let context = buffer.readInteger(as: UInt64.self) else { throw .truncated("read index request") }
            body = .readIndex(ReadIndexRequest(context: context))
        case .readIndexResponse:
            guard let (context, index, granted) = buffer.readMultipleIntegers(as: (UInt64, UInt64, UInt8).self) else {
                throw .truncated("read index response")
            }
            body = .readIndexResponse(
                ReadIndexResponse(context: context, index: LogIndex(index), granted: try flag(granted, "granted")))
        }
        guard buffer.readableBytes == 0 else { throw .invalid("message: \(buffer.readableBytes) bytes left over") }
        return Message(from: NodeID(from), to: NodeID(to), term: Term(term), kind: body)
    }

    private static func flag(_ byte: UInt8, _ name: String) throws(WireError) -> Bool {
        switch byte {
        case 0: return false
        case 1: return true
        default: throw .invalid("\(name) flag \(byte)")
        }
    }
}
