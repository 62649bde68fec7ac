import RaftCore
import RaftWire

/// The on-disk format of the write-ahead log (data format 2).
///
/// A segment file starts with a 32-byte header, then records:
///
/// ```
/// segment = magic:"RLWAL\0\0\2" sequence:u64 salt:u64 headerCRC:u32 reserved:u32 record*
/// record  = length:u32 lengthCheck:u32 crc:u32 body
/// body    = batch:u64 type:u8 payload
///           length counts the body; lengthCheck is the CRC-32C of the length's 4 bytes and crc the CRC-32C of the
///           body, both seeded with the segment's salt (the CRC of its 8 bytes); batch is the segment offset at which
///           the write (one write and one sync: a group commit) holding this record began
/// entries = firstIndex:u64 count:u32 (term:u64 kind:u8 length:u32 data)*
/// hard    = term:u64 hasVote:u8 vote:u64 commit:u64
/// base    = index:u64 term:u64                        the log starts after this entry (after compaction)
/// ```
/// Integers are little-endian; headerCRC is the CRC-32C of the header's first 24 bytes. Replaying the records in
/// order rebuilds the log: an `entries` record whose first index is at or below the current end cuts the log there
/// first (a follower's log repaired by a new leader), so truncation needs no record of its own. A `base` record
/// opens a segment whose predecessors are deleted, after a compaction (the segment holds the entries retained
/// after the base) or a reset to an installed snapshot (it holds none). Replay begins at the latest segment that
/// opens with a base (older ones are what a crash left of the deletion, and are deleted on open), so nothing
/// written before a reset survives it, entries beyond its index included.
///
/// The salt is random, chosen when the segment is created, and never leaves the disk, so the bytes of a payload (a
/// value a client put) cannot pass for a record: the checksums of anything not written as a record of this segment
/// match by chance only (about one in 2^64 for both). It is not a cryptographic seal: someone who can read the
/// segment can forge records in it.
enum Records {
    static let segmentMagic: [UInt8] = Array("RLWAL".utf8) + [0, 0, 2]
    /// The magic of data format 1's segments, recognised only to say so.
    static let formatOneMagic: [UInt8] = Array("RLWAL".utf8) + [0, 0, 1]
    static let segmentHeaderSize = 32
    /// length, lengthCheck, crc.
    static let recordHeaderSize = 12
    /// batch and type: the smallest body.
    static let minimumBodySize = 9
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

    /// A segment's salt, with the checksum state it seeds every checksum of the segment with.
    struct Salt: Equatable {
        let value: UInt64
        let seed: UInt32

        init(_ value: UInt64) {
            self.value = value
            seed = withUnsafeBytes(of: value.littleEndian) { CRC32C.checksum($0) }
        }

        /// A new random salt (never zero, the value a forger would guess first).
        static func random() -> Salt {
            Salt(UInt64.random(in: 1...UInt64.max))
        }
    }

    // MARK: - Writing

    static func appendSegmentHeader(sequence: UInt64, salt: Salt, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: segmentMagic)
        appendLE(sequence, to: &out)
        appendLE(salt.value, to: &out)
        let crc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        appendLE(crc, to: &out)
        appendLE(UInt32(0), to: &out)
    }

    /// Appends one framed record to `out`, as part of the write that begins at segment offset `batch`.
    static func append(_ record: Record, batch: UInt64, salt: Salt, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        appendLE(batch, to: &out)
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
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + recordHeaderSize)...]), continuing: salt.seed)
        }
        setLE(length, at: start, in: &out)
        setLE(lengthCheck(length, salt), at: start + 4, in: &out)
        setLE(crc, at: start + 8, in: &out)
    }

    /// Appends entries as one or more records, none larger than `maxEntriesRecordSize`.
    static func append(entries: [Entry], batch: UInt64, salt: Salt, to out: inout [UInt8]) {
        var start = 0
        while start < entries.count {
            var end = start
            var size = 0
            while end < entries.count && (end == start || size + entries[end].data.count + 13 <= maxEntriesRecordSize) {
                size += entries[end].data.count + 13
                end += 1
            }
            append(.entries(Array(entries[start..<end])), batch: batch, salt: salt, to: &out)
            start = end
        }
    }

    // MARK: - Reading

    static func lengthCheck(_ length: UInt32, _ salt: Salt) -> UInt32 {
        withUnsafeBytes(of: length.littleEndian) { CRC32C.checksum($0, continuing: salt.seed) }
    }

    /// Why a segment's header cannot be used.
    enum HeaderProblem: Error, Equatable {
        /// Shorter than a header, or zeros: a segment whose creation never finished.
        case empty
        /// A segment of data format 1.
        case formatOne
        /// Anything else: the wrong magic, a failing checksum, the wrong sequence number.
        case damaged(String)
    }

    /// The salt of a segment, if its header is sound and says it is segment `sequence`.
    static func readSegmentHeader(_ bytes: UnsafeRawBufferPointer, sequence: UInt64) -> Result<Salt, HeaderProblem> {
        guard bytes.count >= segmentHeaderSize,
            !UnsafeRawBufferPointer(rebasing: bytes[..<segmentHeaderSize]).allSatisfy({ $0 == 0 })
        else { return .failure(.empty) }
        let magic = Array(UnsafeRawBufferPointer(rebasing: bytes[..<8]))
        if magic == formatOneMagic { return .failure(.formatOne) }
        guard magic == segmentMagic else { return .failure(.damaged("not a segment of this format (wrong magic)")) }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[..<24]))
        guard loadLE(UInt32.self, bytes, 24) == crc else {
            return .failure(.damaged("the segment header fails its checksum"))
        }
        let found = loadLE(UInt64.self, bytes, 8)
        guard found == sequence else {
            return .failure(
                .damaged("the segment header says it is segment \(found), not \(sequence) as its name says"))
        }
        return .success(Salt(loadLE(UInt64.self, bytes, 16)))
    }

    /// The batch offset of the record at `offset`, if a record with a sound header and checksum for this salt starts
    /// there (its content is not decoded).
    static func soundRecordBatch(_ bytes: UnsafeRawBufferPointer, at offset: Int, salt: Salt) -> UInt64? {
        guard offset >= 0, bytes.count - offset >= recordHeaderSize else { return nil }
        let length = loadLE(UInt32.self, bytes, offset)
        guard Int(length) >= minimumBodySize, Int(length) <= maxRecordSize,
            loadLE(UInt32.self, bytes, offset + 4) == lengthCheck(length, salt),
            bytes.count - offset - recordHeaderSize >= Int(length)
        else { return nil }
        let body = UnsafeRawBufferPointer(
            rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + Int(length))])
        guard CRC32C.checksum(body, continuing: salt.seed) == loadLE(UInt32.self, bytes, offset + 8) else { return nil }
        return loadLE(UInt64.self, body, 0)
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

        var text: String {
            switch self {
            case .badHeader: "a record's header is damaged"
            case .truncated: "a record is cut short"
            case .checksum: "a record fails its checksum"
            case .malformed(let m): "a record is malformed (\(m))"
            }
        }
    }

    /// A record read back: what it says, the batch it was written in, and the offset after it.
    struct Read {
        var record: Record
        var batch: UInt64
        var next: Int
    }

    /// Reads the record at `offset` of `bytes`, a segment with this salt.
    static func read(_ bytes: UnsafeRawBufferPointer, at offset: Int, salt: Salt) -> Result<Read, ReadFailure> {
        guard offset >= 0, bytes.count - offset >= recordHeaderSize else { return .failure(.badHeader) }
        let rawLength = loadLE(UInt32.self, bytes, offset)
        guard loadLE(UInt32.self, bytes, offset + 4) == lengthCheck(rawLength, salt) else {
            return .failure(.badHeader)
        }
        let length = Int(rawLength)
        let crc = loadLE(UInt32.self, bytes, offset + 8)
        guard length >= minimumBodySize, length <= maxRecordSize else {
            return .failure(.malformed("record length \(length)"))
        }
        guard bytes.count - offset - recordHeaderSize >= length else { return .failure(.truncated) }
        let body = UnsafeRawBufferPointer(
            rebasing: bytes[(offset + recordHeaderSize)..<(offset + recordHeaderSize + length)])
        guard CRC32C.checksum(body, continuing: salt.seed) == crc else { return .failure(.checksum) }
        let batch = loadLE(UInt64.self, body, 0)
        var reader = Reader(bytes: body, offset: 9)
        let record: Record
        switch RecordType(rawValue: body[8]) {
        case .entries:
            guard let first = reader.u64(), let count = reader.u32() else {
                return .failure(.malformed("entries header"))
            }
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
            record = .hardState(
                HardState(term: Term(term), votedFor: hasVote == 1 ? NodeID(vote) : nil, commit: LogIndex(commit)))
        case .base:
            guard let index = reader.u64(), let term = reader.u64() else { return .failure(.malformed("base")) }
            record = .base(index: LogIndex(index), term: Term(term))
        case nil:
            return .failure(.malformed("record type \(body[8])"))
        }
        guard reader.offset == body.count else {
            return .failure(.malformed("\(body.count - reader.offset) bytes left in record"))
        }
        return .success(Read(record: record, batch: batch, next: offset + recordHeaderSize + length))
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
