/// Reading segments back, and the rule that tells a torn write from damage: shared by opening the log and by
/// `LogRepair`. Pure functions of the bytes.
enum Replay {
    /// What reading one segment's records in order found.
    struct Scan {
        /// Where the sound records read in order end (right after the header if there are none).
        var end: Int
        /// The first record that could not be read, unless only zeros follow the records.
        var damage: (offset: Int, reason: Records.ReadFailure)?
        /// The offset just after the segment's last nonzero byte.
        var lastNonZero: Int
        /// How many records were read.
        var recordCount: Int
    }

    /// Why reading stopped early: a record that cannot follow the ones before it.
    struct Stop: Error {
        var kind: StorageFailure.Kind
        var problem: String
        var offset: Int
    }

    static func lastNonZero(_ bytes: UnsafeRawBufferPointer) -> Int {
        var end = bytes.count
        // Eight bytes at a time over the zeros of a preallocated segment, then byte by byte.
        while end >= 8 && bytes.loadUnaligned(fromByteOffset: end - 8, as: UInt64.self) == 0 { end -= 8 }
        while end > 0 && bytes[end - 1] == 0 { end -= 1 }
        return end
    }

    /// Reads the records after the header in order, handing each to `visit` with its offset, until the first one
    /// that cannot be read (or only zeros are left). `visit` may stop the scan by throwing.
    static func scan(
        _ bytes: UnsafeRawBufferPointer, salt: Records.Salt, visit: (Records.Read, Int) throws(Stop) -> Void
    ) throws(Stop) -> Scan {
        let nonZero = lastNonZero(bytes)
        var offset = Records.segmentHeaderSize
        var count = 0
        while offset < nonZero {
            switch Records.read(bytes, at: offset, salt: salt) {
            case .success(let read):
                try visit(read, offset)
                count += 1
                offset = read.next
            case .failure(let reason):
                return Scan(end: offset, damage: (offset, reason), lastNonZero: nonZero, recordCount: count)
            }
        }
        return Scan(end: offset, damage: nil, lastNonZero: nonZero, recordCount: count)
    }

    /// The sound records (header and checksums, for this salt) that start after `offset` and before `limit`, with
    /// the offset each one's write began at. Stops at the first whose write began after `offset`, if `untilLater`.
    static func soundRecords(
        _ bytes: UnsafeRawBufferPointer, salt: Records.Salt, after offset: Int, before limit: Int, untilLater: Bool
    ) -> [(offset: Int, batch: UInt64)] {
        var found: [(offset: Int, batch: UInt64)] = []
        var p = offset + 1
        while p < limit && p + Records.recordHeaderSize <= bytes.count {
            if bytes[p] | bytes[p + 1] | bytes[p + 2] | bytes[p + 3] != 0,
                let batch = Records.soundRecordBatch(bytes, at: p, salt: salt)
            {
                found.append((p, batch))
                if untilLater && batch > UInt64(offset) { return found }
                p += Records.recordHeaderSize + Int(Records.loadLE(UInt32.self, bytes, p))
                continue
            }
            p += 1
        }
        return found
    }

    /// What the end of a segment is, once its records were read.
    enum Tail: Equatable {
        /// The records end, then zeros (or the end of the file).
        case clean
        /// The last write was torn by a crash: cut the bytes from `at` up to `through` (nothing there was ever
        /// acknowledged, since a write is acknowledged only once synced, and only the last write can be unsynced).
        case torn(at: Int, through: Int)
        /// Damage in data that had been synced: the log must not open. `laterWrite` is a sound record of a write
        /// that began after the damage, if that is how it is known.
        case corrupt(at: Int, reason: Records.ReadFailure, laterWrite: Int?)
    }

    /// The rule. Writes are synced one after another, so only the last can be torn; every record says where its
    /// write began. At damage at offset D in the last segment: if no sound record follows, or every sound record
    /// after it belongs to a write that began at or before D, the damage is inside the last, unsynced write — torn,
    /// cut at D. If a sound record after D belongs to a write that began after D, the damaged write had been synced:
    /// corrupt. Damage in any other segment is corrupt (a segment is synced before the next one is started), and so
    /// is a record whose checksums match but whose content makes no sense (no crash makes that).
    static func judge(_ bytes: UnsafeRawBufferPointer, salt: Records.Salt, scan: Scan, isLast: Bool) -> Tail {
        guard let damage = scan.damage else { return .clean }
        guard isLast else { return .corrupt(at: damage.offset, reason: damage.reason, laterWrite: nil) }
        if case .malformed = damage.reason { return .corrupt(at: damage.offset, reason: damage.reason, laterWrite: nil) }
        let later = soundRecords(bytes, salt: salt, after: damage.offset, before: scan.lastNonZero, untilLater: true)
        if let synced = later.first(where: { $0.batch > UInt64(damage.offset) }) {
            return .corrupt(at: damage.offset, reason: damage.reason, laterWrite: synced.offset)
        }
        return .torn(at: damage.offset, through: scan.lastNonZero)
    }
}
