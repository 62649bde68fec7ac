import RaftCore
import RaftWire

/// The on-disk format of the write-ahead log.
///
/// A segment file starts with a 16-byte header, then records:
///
/// ```
/// segment = magic:"RLWAL\0\0\1" sequence:u64 record*
/// record  = length:u32 lengthCheck:u32 crc:u32 type:u8 payload
///           length counts type + payload; lengthCheck is the CRC-32C of the length's 4 bytes, so that a damaged
///           length is recognised as damage (not taken at its word); crc is the CRC-32C of type + payload
/// entries = firstIndex:u64 count:u32 (term:u64 kind:u8 length:u32 data)*
/// hard    = term:u64 hasVote:u8 vote:u64 commit:u64
/// base    = index:u64 term:u64                        the log starts after this entry (after compaction)
/// ```
/// Integers are little-endian. Replaying the records in order rebuilds the log: an `entries` record whose first
/// index is at or below the current end cuts the log there first (a follower's log repaired by a new leader), so
/// truncation needs no record of its own. A `base` record opens a segment whose predecessors were deleted after
/// a snapshot.
enum Records {
    static let segmentMagic: [UInt8] = Array("RLWAL".utf8) + [0, 0, 1]
    static let segmentHeaderSize = 16
    /// length, lengthCheck, crc.
    static let recordHeaderSize = 12
    /// Sanity bound on one record when reading: anything larger is corruption, not data.
    static let maxRecordSize = 1 << 30
    /// Writers split entry batches so that no record exceeds this.
    static let maxEntriesRecordSize = 64 << 20

    enum RecordType: UInt8 {
        case entries = 1
        case hardState = 2
        case base = 3
    }

    enum Record: Equatable {
        case entries([Entry])
        case hardState(HardState)
        case base(index: LogIndex, term: Term)
    }

    // MARK: - Writing

    static func appendSegmentHeader(sequence: UInt64, to out: inout [UInt8]) {
        out.append(contentsOf: segmentMagic)
        appendLE(sequence, to: &out)
    }

    /// Appends one framed record to `out`.
    static func append(_ record: Record, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        switch record {
        case .entries(let entries):
            out.append(RecordType.entries.rawValue)
            appendLE(entries.first?.index.rawValue ?? 0, to: &out)
            appendLE(UInt32(truncatingIfNeeded: entries.count), to: &out)
            for entry in entries {
                appendLE(entry.term.rawValue, to: &out)
                out.append(entry.kind.rawValue)
                appendLE(UInt32(truncatingIfNeeded: entry.data.count), to: &out)
                out.append(contentsOf: entry.data)
            }
        case .hardState(let hs):
            out.append(RecordType.hardState.rawValue)
            appendLE(hs.term.rawValue, to: &out)
            out.append(hs.votedFor == nil ? 0 : 1)
            appendLE(hs.votedFor?.rawValue ?? 0, to: &out)
            appendLE(hs.commit.rawValue, to: &out)
        case .base(let index, let term):
            out.append(RecordType.base.rawValue)
            appendLE(index.rawValue, to: &out)
            appendLE(term.rawValue, to: &out)
        }
        let length = UInt32(out.count - start - recordHeaderSize)
        let crc = out.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + recordHeaderSize)...]))
        }
        setLE(length, at: start, in: &out)
        setLE(lengthCheck(length), at: start + 4, in: &out)
        setLE(crc, at: start + 8, in: &out)
    }

    /// Appends entries as one or more records, none larger than `maxEntriesRecordSize`.
    static func append(entries: [Entry], to out: inout [UInt8]) {
        var start = 0
        while start < entries.count {
            var end = start
            var size = 0
            while end < entries.count && (end == start || size + entries[end].data.count + 13 <= maxEntriesRecordSize) {
                size += entries[end].data.count + 13
                end += 1
            }
            append(.entries(Array(entries[start..<end])), to: &out)
            start = end
        }
    }

    // MARK: - Reading

    static func lengthCheck(_ length: UInt32) -> UInt32 {
        withUnsafeBytes(of: length.littleEndian) { CRC32C.checksum($0) }
    }

    /// Whether a record with a sound header and checksum starts at `offset` (its content is not decoded).
    static func isValidRecord(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard bytes.count - offset >= recordHeaderSize else { return false }
        let length = loadLE(UInt32.self, bytes, offset)
        guard length >= 1, Int(length) <= maxRecordSize, loadLE(UInt32.self, bytes, offset + 4) == lengthCheck(length),
            bytes.count - offset - recordHeaderSize >= Int(length)
        else { return false }
        let body = UnsafeRawBufferPointer(rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + Int(length))])
        return CRC32C.checksum(body) == loadLE(UInt32.self, bytes, offset + 8)
    }

    /// Why a record could not be read.
    enum ReadFailure: Error, Equatable {
        /// The header is cut short or damaged (its length fails its check).
        case badHeader
        /// The header is sound but the bytes end before the record does.
        case truncated
        /// The record is complete but its checksum does not match.
        case checksum
        /// The checksum matches but the content makes no sense.
        case malformed(String)
    }

    /// Reads the record at `offset` of `bytes`; returns it and the offset after it.
    static func read(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Result<(Record, Int), ReadFailure> {
        guard bytes.count - offset >= recordHeaderSize else { return .failure(.badHeader) }
        let rawLength = loadLE(UInt32.self, bytes, offset)
        guard loadLE(UInt32.self, bytes, offset + 4) == lengthCheck(rawLength) else { return .failure(.badHeader) }
        let length = Int(rawLength)
        let crc = loadLE(UInt32.self, bytes, offset + 8)
        guard length >= 1, length <= maxRecordSize else { return .failure(.malformed("record length \(length)")) }
        guard bytes.count - offset - recordHeaderSize >= length else { return .failure(.truncated) }
        let body = UnsafeRawBufferPointer(rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + length)])
        guard CRC32C.checksum(body) == crc else { return .failure(.checksum) }
        var reader = Reader(bytes: body, offset: 1)
        let record: Record
        switch RecordType(rawValue: body[0]) {
        case .entries:
            guard let first = reader.u64(), let count = reader.u32() else { return .failure(.malformed("entries header")) }
            guard Int(count) <= (body.count - reader.offset) / 13, first <= UInt64.max - UInt64(count) else {
                return .failure(.malformed("entry count \(count)"))
            }
            var entries: [Entry] = []
            entries.reserveCapacity(Int(count))
            for k in 0..<UInt64(count) {
                guard let term = reader.u64(), let kindByte = reader.u8(), let kind = EntryKind(rawValue: kindByte),
                    let length = reader.u32(), let data = reader.bytes(Int(length))
                else { return .failure(.malformed("entry \(first + k)")) }
                entries.append(Entry(term: Term(term), index: LogIndex(first + k), kind: kind, data: data))
            }
            record = .entries(entries)
        case .hardState:
            guard let term = reader.u64(), let hasVote = reader.u8(), hasVote <= 1, let vote = reader.u64(),
                let commit = reader.u64()
            else { return .failure(.malformed("hard state")) }
            record = .hardState(HardState(term: Term(term), votedFor: hasVote == 1 ? NodeID(vote) : nil, commit: LogIndex(commit)))
        case .base:
            guard let index = reader.u64(), let term = reader.u64() else { return .failure(.malformed("base")) }
            record = .base(index: LogIndex(index), term: Term(term))
        case nil:
            return .failure(.malformed("record type \(body[0])"))
        }
        guard reader.offset == body.count else { return .failure(.malformed("\(body.count - reader.offset) bytes left in record")) }
        return .success((record, offset + recordHeaderSize + length))
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset: Int

        mutating func u8() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func u32() -> UInt32? {
            guard bytes.count - offset >= 4 else { return nil }
            defer { offset += 4 }
            return Records.loadLE(UInt32.self, bytes, offset)
        }

        mutating func u64() -> UInt64? {
            guard bytes.count - offset >= 8 else { return nil }
            defer { offset += 8 }
            return Records.loadLE(UInt64.self, bytes, offset)
        }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard count >= 0, bytes.count - offset >= count else { return nil }
            defer { offset += count }
            return Array(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count]))
        }
    }

    // MARK: - Little-endian helpers

    static func appendLE<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    static func setLE<T: FixedWidthInteger>(_ value: T, at offset: Int, in out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for k in 0..<raw.count { out[offset + k] = raw[k] }
        }
    }

    static func loadLE<T: FixedWidthInteger>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
        T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
