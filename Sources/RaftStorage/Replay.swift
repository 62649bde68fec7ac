import RaftCore

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
        if case .malformed = damage.reason {
            return .corrupt(at: damage.offset, reason: damage.reason, laterWrite: nil)
        }
        let later = soundRecords(bytes, salt: salt, after: damage.offset, before: scan.lastNonZero, untilLater: true)
        if let synced = later.first(where: { $0.batch > UInt64(damage.offset) }) {
            return .corrupt(at: damage.offset, reason: damage.reason, laterWrite: synced.offset)
        }
        return .torn(at: damage.offset, through: scan.lastNonZero)
    }
}

// MARK: - Recovery

extension Replay {
    /// Where the log goes on after it was replayed: the segment new writes land in, and what must be done to the
    /// files first.
    enum Resume: Equatable {
        /// Append to segment `sequence` from offset `end` (with its salt), once the torn bytes `cut`, if any, were
        /// kept aside and zeroed.
        case append(sequence: UInt64, end: Int, salt: Records.Salt, cut: Range<Int>?)
        /// The last segment, `empty` (`bytes` long), holds nothing: a crash while it was being created. It is
        /// removed, and the log appends to the segment before it, `sequence`, from offset `end`.
        case dropEmpty(empty: UInt64, bytes: Int, sequence: UInt64, end: Int, salt: Records.Salt)
        /// The log's only segment, `sequence` (1, `bytes` long), holds nothing: it is made again.
        case remake(sequence: UInt64, bytes: Int)
    }

    /// What replaying a log's segments found.
    struct Recovered: Equatable {
        /// Everything the log holds.
        var state: PersistentState
        var segments: Int
        var records: Int
        var resume: Resume
    }

    /// A log's segments that must all be there: an error for the first one missing between the first and the last.
    static func checkContiguous(_ sequences: [UInt64], walDirectory: String) throws(StorageFailure) {
        for (previous, next) in zip(sequences, sequences.dropFirst()) where next != previous + 1 {
            throw StorageFailure(
                .missingSegment, "segment \(previous + 1) is missing (found \(previous) and \(next))",
                file: walDirectory + "/" + DataDirectory.segmentName(previous + 1))
        }
    }

    /// Whether a segment's first record is a compaction base, from the segment's first bytes.
    static func startsWithBase(_ head: [UInt8], sequence: UInt64) -> Bool {
        head.withUnsafeBytes { bytes -> Bool in
            guard case .success(let salt) = Records.readSegmentHeader(bytes, sequence: sequence),
                case .success(let read) = Records.read(bytes, at: Records.segmentHeaderSize, salt: salt),
                case .base = read.record
            else { return false }
            return true
        }
    }

    /// How many of a segment's first bytes `startsWithBase` needs.
    static let baseProbeBytes = Records.segmentHeaderSize + Records.recordHeaderSize + 64

    /// Replays a whole log held in memory: its segments in order, as (sequence number, bytes). Nil for no segments.
    /// `walDirectory` only names the files in errors.
    ///
    /// Pure: the same bytes always give the same state, resume point or error, and no file is touched. A damaged
    /// record at the end of the last segment that belongs to the last write (which was never acknowledged) is
    /// torn: the state stops before it and `resume` says what to cut. Damage anywhere else throws a
    /// `StorageFailure` (`.corrupt`, `.missingSegment`, `.unsupportedFormat`) naming the file and offset.
    static func recover(
        _ segments: [(sequence: UInt64, bytes: [UInt8])], walDirectory: String
    ) throws(StorageFailure) -> Recovered? {
        try checkContiguous(segments.map(\.sequence), walDirectory: walDirectory)
        var recovery = Recovery(walDirectory: walDirectory)
        for (k, segment) in segments.enumerated() {
            try recovery.add(sequence: segment.sequence, bytes: segment.bytes, isLast: k == segments.count - 1)
        }
        return recovery.finish()
    }

    /// Replay one segment at a time (so that only one is in memory): `add` each segment in order, the last one
    /// saying so, then `finish`. Pure, as `recover` is.
    struct Recovery {
        let walDirectory: String
        private var state = PersistentState()
        private var entries: [Entry] = []
        private var segments = 0
        private var records = 0
        private var lastSequence: UInt64?
        /// The last segment added, once it ended cleanly (and was not the last).
        private var previous: (sequence: UInt64, end: Int, salt: Records.Salt)?
        private var resume: Resume?

        init(walDirectory: String) {
            self.walDirectory = walDirectory
        }

        /// Replays the next segment, `sequence` (the one after the last added).
        mutating func add(sequence: UInt64, bytes: [UInt8], isLast: Bool) throws(StorageFailure) {
            let path = walDirectory + "/" + DataDirectory.segmentName(sequence)
            if let lastSequence, sequence != lastSequence + 1 {
                throw StorageFailure(
                    .missingSegment,
                    "segment \(lastSequence + 1) is missing (found \(lastSequence) "
                        + "and \(sequence))",
                    file: walDirectory + "/"
                        + DataDirectory.segmentName(lastSequence + 1))
            }
            let isFirst = lastSequence == nil
            lastSequence = sequence
            segments += 1
            let header = bytes.withUnsafeBytes { Records.readSegmentHeader($0, sequence: sequence) }
            let salt: Records.Salt
            switch header {
            case .success(let found):
                salt = found
            case .failure(.empty) where isLast:
                // A crash while the segment was being created: it holds nothing.
                if let previous {
                    resume = .dropEmpty(
                        empty: sequence, bytes: bytes.count, sequence: previous.sequence,
                        end: previous.end, salt: previous.salt)
                } else {
                    guard sequence == 1 else {
                        throw StorageFailure(
                            .missingSegment,
                            "the log's first segment is \(sequence) but it is empty: "
                                + "it does not say where the log begins", file: path, offset: 0)
                    }
                    resume = .remake(sequence: sequence, bytes: bytes.count)
                }
                return
            case .failure(.empty):
                throw StorageFailure(
                    .corrupt, "a segment has no header, and later segments follow it", file: path, offset: 0)
            case .failure(.formatOne):
                throw StorageFailure(
                    .unsupportedFormat,
                    "a segment of data format 1 in a format-"
                        + "\(WriteAheadLog.formatVersion) directory", file: path, offset: 0)
            case .failure(.damaged(let why)):
                throw StorageFailure(.corrupt, why, file: path, offset: 0)
            }
            let mustStartWithBase = isFirst && sequence != 1
            var sawFirst = false
            // Moved out of `self` (not copied) for the closure below, and back.
            var state = PersistentState()
            var entries: [Entry] = []
            swap(&state, &self.state)
            swap(&entries, &self.entries)
            let verdict = bytes.withUnsafeBytes { raw -> Result<(Scan, Tail), Stop> in
                do throws(Stop) {
                    let scan = try Replay.scan(raw, salt: salt) { (read, offset) throws(Stop) in
                        if mustStartWithBase && !sawFirst {
                            guard case .base = read.record else {
                                throw Stop(
                                    kind: .missingSegment,
                                    problem:
                                        "the log's first segment is \(sequence) but it does not say where the log begins",
                                    offset: offset)
                            }
                        }
                        sawFirst = true
                        if let problem = Replay.apply(read.record, to: &state, entries: &entries) {
                            throw Stop(kind: .corrupt, problem: problem, offset: offset)
                        }
                    }
                    return .success((scan, Replay.judge(raw, salt: salt, scan: scan, isLast: isLast)))
                } catch {
                    return .failure(error)
                }
            }
            swap(&state, &self.state)
            swap(&entries, &self.entries)
            switch verdict {
            case .failure(let stop):
                throw StorageFailure(stop.kind, stop.problem, file: path, offset: stop.offset)
            case .success(let (scan, tail)):
                records += scan.recordCount
                switch tail {
                case .clean:
                    if isLast {
                        resume = .append(sequence: sequence, end: scan.end, salt: salt, cut: nil)
                    } else {
                        previous = (sequence, scan.end, salt)
                    }
                case .torn(let at, let through):
                    resume = .append(sequence: sequence, end: at, salt: salt, cut: at..<through)
                case .corrupt(let at, let reason, let later):
                    let after =
                        later.map { "; a later write (at offset \($0)) follows it, so this one had been synced" } ?? ""
                    throw StorageFailure(
                        .corrupt,
                        "the log is damaged before its end: \(reason.text)\(after); refusing to start rather "
                            + "than lose committed entries", file: path, offset: at)
                }
            }
        }

        /// What the segments added hold, and where the log goes on; nil if none was added (or not the last).
        func finish() -> Recovered? {
            guard let resume else { return nil }
            var state = self.state
            state.entries = entries
            return Recovered(state: state, segments: segments, records: records, resume: resume)
        }
    }

    /// Applies one record to the state being rebuilt; returns a problem if the record cannot follow the log so far.
    static func apply(_ record: Records.Record, to state: inout PersistentState, entries: inout [Entry]) -> String? {
        switch record {
        case .entries(let batch):
            guard let first = batch.first?.index else { return nil }
            let last = LogIndex(state.snapshotIndex.rawValue + UInt64(entries.count))
            guard first <= last.next else { return "entries start at \(first) but the log ends at \(last)" }
            var batch = batch[...]
            if first <= state.snapshotIndex {
                batch = batch.drop { $0.index <= state.snapshotIndex }
            }
            guard let from = batch.first?.index else { return nil }
            let keep = Int(from.rawValue - state.snapshotIndex.rawValue - 1)
            if keep < entries.count { entries.removeSubrange(keep...) }
            entries.append(contentsOf: batch)
        case .hardState(let hs):
            state.hardState = hs
        case .base(let index, let term):
            let last = LogIndex(state.snapshotIndex.rawValue + UInt64(entries.count))
            if index >= last {
                entries.removeAll()
            } else if index > state.snapshotIndex {
                entries.removeFirst(Int(index.rawValue - state.snapshotIndex.rawValue))
            }
            state.snapshotIndex = index
            state.snapshotTerm = term
        }
        return nil
    }
}
