import RaftCore

/// What an operator needs when a node refuses to start because its log is damaged: what recovery finds, what a cut
/// at a chosen point would lose, and the cut itself (`raft-lite repair` is a thin shell over it).
///
/// A `LogRepair` holds the directory's lock from `init` to `close()`, so it refuses a directory a node is using and
/// no node can start on one it is repairing. It reads damaged directories without trapping on anything in them.
///
/// A cut keeps the cut bytes aside (`wal/cut-SEQUENCE-OFFSET.bin`) and moves every later segment aside
/// (`wal/cut-NAME`), zeroes the segment from the cut on, syncs, and then writes a hard state whose term is one above
/// the highest term readable anywhere in the log, with no vote: the cut may have removed the record of a vote, and
/// this way the node can never vote twice in a term. Entries cut away may have been acknowledged to a leader: if
/// this node was part of the majority that committed them, the cluster relies on the other members' copies.
public final class LogRepair {
    /// A record, as a repair shows it.
    public struct RecordSummary: Sendable, Hashable {
        public enum Content: Sendable, Hashable {
            /// Entries `first...last` (none if `last < first`), their lowest and highest term.
            case entries(first: LogIndex, last: LogIndex, lowestTerm: Term, highestTerm: Term)
            case hardState(HardState)
            case base(index: LogIndex, term: Term)
        }

        public var offset: Int
        public var content: Content

        var highestTerm: Term {
            switch content {
            case .entries(_, let last, _, let highest): last.rawValue > 0 ? highest : .zero
            case .hardState(let hs): hs.term
            case .base(_, let term): term
            }
        }
    }

    /// Where reading a segment in order stopped before its end.
    public struct Damage: Sendable, Hashable {
        public var offset: Int
        public var what: String
        /// Opening would cut it (the last write, torn by a crash) rather than refuse.
        public var isTornWrite: Bool
        /// A sound record of a later write after it, which proves the damaged one had been synced.
        public var laterWrite: Int?
        /// How many bytes from the damage to the last nonzero byte.
        public var bytes: Int
        /// Sound records found after the damage (by scanning for them).
        public var readableAfter: [RecordSummary]
    }

    /// One segment file, as read.
    public struct Segment: Sendable, Hashable {
        public var name: String
        public var path: String
        public var sequence: UInt64
        /// Up to the last nonzero byte (segments are preallocated: zeros follow).
        public var size: Int
        /// Why the header cannot be used, if it cannot (then nothing in the segment can be read).
        public var headerProblem: String?
        /// The records read in order from the start.
        public var records: [RecordSummary]
        /// Where they end.
        public var end: Int
        public var damage: Damage?
        /// A segment older than a compaction's base segment: opening deletes it.
        public var leftOverFromCompaction = false
    }

    /// What recovery finds in the directory.
    public struct Inspection: Sendable, CustomStringConvertible {
        public var directory: String
        public var format: String?
        public var identity: DataDirectoryIdentity?
        public var segments: [Segment]
        /// Why opening the log would refuse (with file and offset), or nil if it opens.
        public var refusal: StorageFailure?
        /// The highest term readable anywhere in the log (0 if none).
        public var highestTerm: Term

        public var opens: Bool { refusal == nil }

        public var description: String {
            var lines: [String] = []
            lines.append(
                "data directory \(directory): format \(format.map { "\"\($0)\"" } ?? "missing")"
                    + (identity.map { "; \($0)" } ?? "; no identity"))
            if segments.isEmpty { lines.append("  no segments") }
            for segment in segments {
                var line = "  \(segment.name): written up to offset \(max(segment.size, segment.end))"
                if segment.leftOverFromCompaction { line += " (left over from a compaction: opening deletes it)" }
                if let problem = segment.headerProblem {
                    line += "; header unusable: \(problem)"
                } else {
                    line += ", \(segment.records.count) records read in order"
                    let summary = LogRepair.summarise(segment.records)
                    if !summary.isEmpty { line += ": " + summary }
                }
                lines.append(line)
                if let damage = segment.damage {
                    lines.append(
                        "    damage at offset \(damage.offset): \(damage.what)"
                            + (damage.laterWrite.map { "; a later write (at offset \($0)) follows it" } ?? "")
                            + (damage.isTornWrite ? " — the last write, torn by a crash: opening cuts it" : ""))
                    if !damage.readableAfter.isEmpty {
                        lines.append(
                            "    readable after it: \(damage.readableAfter.count) records: "
                                + LogRepair.summarise(damage.readableAfter))
                    }
                }
            }
            lines.append("highest term seen: \(highestTerm.rawValue)")
            if let refusal {
                lines.append("the log does not open: \(refusal)")
                if let file = refusal.file, let offset = refusal.offset, refusal.kind == .corrupt {
                    let name = file.split(separator: "/").last.map(String.init) ?? file
                    lines.append(
                        "to see what cutting there would lose: raft-lite repair --data-dir \(directory) "
                            + "--cut-at \(name):\(offset)")
                }
            } else if let torn = segments.last?.damage, torn.isTornWrite {
                lines.append("the log is sound but for a torn last write, which opening cuts: nothing to repair")
            } else {
                lines.append("the log is sound")
            }
            return lines.joined(separator: "\n")
        }
    }

    /// What a cut would lose and leave.
    public struct CutPlan: Sendable, CustomStringConvertible {
        /// What would be lost of one segment: from `offset` on (0: the whole segment).
        public struct Loss: Sendable {
            public var name: String
            public var offset: Int
            public var bytes: Int
            /// The readable records among them.
            public var records: [RecordSummary]
        }

        public var segment: String
        public var offset: Int
        public var losses: [Loss]
        /// What the log holds after the cut (before the new hard state).
        public var kept: PersistentState
        public var highestTerm: Term
        /// Written after the cut: one term above the highest seen, no vote.
        public var newHardState: HardState
        /// Segments whose header is unusable, whose terms could not be read.
        public var unreadable: [String]

        public var description: String {
            var lines = ["cutting \(segment) at offset \(offset) would lose:"]
            for loss in losses {
                let what = loss.records.isEmpty ? "nothing readable" : LogRepair.summarise(loss.records)
                lines.append(
                    loss.offset == 0
                        ? "  \(loss.name), the whole segment (\(loss.bytes) bytes): \(what)"
                        : "  \(loss.name) from offset \(loss.offset) (\(loss.bytes) bytes): \(what)")
            }
            let range =
                kept.entries.isEmpty
                ? "no entries" : "entries \(kept.entries[0].index.rawValue)-\(kept.lastIndex.rawValue)"
            let compacted = kept.snapshotIndex.rawValue > 0 ? " (after \(kept.snapshotIndex.rawValue) compacted)" : ""
            lines.append("the log would keep \(range)\(compacted) and hard state " + LogRepair.describe(kept.hardState))
            lines.append(
                "then it writes hard state \(LogRepair.describe(newHardState)): one term above the highest "
                    + "seen (\(highestTerm.rawValue)), with no vote, so that this node never votes twice in a term")
            if !unreadable.isEmpty {
                lines.append(
                    "warning: no term could be read from \(unreadable.joined(separator: ", ")) (header "
                        + "unusable): the node may have voted in a higher term than \(highestTerm.rawValue)")
            }
            lines.append(
                "warning: entries cut may have been acknowledged to a leader; the cluster then relies on the "
                    + "other members' copies")
            return lines.joined(separator: "\n")
        }
    }

    /// What a cut did.
    public struct CutResult: Sendable, CustomStringConvertible {
        public var keptAside: [String]
        public var hardState: HardState
        public var state: PersistentState

        public var description: String {
            "cut done: kept aside \(keptAside.joined(separator: ", ")); wrote hard state \(LogRepair.describe(hardState)). "
                + "The log opens with "
                + (state.entries.isEmpty
                    ? "no entries" : "entries \(state.entries[0].index.rawValue)-\(state.lastIndex.rawValue)")
        }
    }

    public let directory: String
    public let fileSystem: any FileSystem
    /// The options of the log the cut opens to write the new hard state (those the node uses).
    public let logOptions: WriteAheadLog.Options
    private var lockFile: OpenFile?
    private let walDirectory: String

    /// Takes the directory's lock.
    /// - Throws: `StorageFailure`: `.locked` while a node (or another repair) uses it, `.io` if there is no data
    ///   directory there.
    public init(
        directory: String, fileSystem: any FileSystem = PosixFileSystem(), logOptions: WriteAheadLog.Options = .init()
    ) throws(StorageFailure) {
        self.directory = directory
        self.fileSystem = fileSystem
        self.logOptions = logOptions
        self.walDirectory = directory + "/wal"
        guard fileSystem.exists(directory + "/FORMAT") || fileSystem.exists(walDirectory) else {
            throw StorageFailure(.io, "there is no data directory here (no FORMAT, no wal/)", file: directory)
        }
        lockFile = try DataDirectory.lock(directory, fileSystem)
    }

    deinit { close() }

    /// Releases the directory's lock. Safe to call twice.
    public func close() {
        if let lockFile { fileSystem.close(lockFile) }
        lockFile = nil
    }

    // MARK: - Inspecting

    /// Reads every segment as recovery would, and says what it finds.
    public func inspect() throws(StorageFailure) -> Inspection {
        guard lockFile != nil else { throw StorageFailure(.closed, "the repair was closed", file: directory) }
        let formatPath = directory + "/FORMAT"
        let format =
            fileSystem.exists(formatPath)
            ? String(decoding: try fileSystem.read(formatPath, upTo: 4096), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines)
            : nil
        let identity =
            fileSystem.exists(directory + "/IDENTITY")
            ? DataDirectoryIdentity.decode(try fileSystem.read(directory + "/IDENTITY", upTo: 1 << 20)) : nil
        let sequences =
            fileSystem.exists(walDirectory)
            ? try fileSystem.list(walDirectory).compactMap(DataDirectory.sequence(ofSegment:)).sorted() : []
        var segments: [Segment] = []
        for (k, sequence) in sequences.enumerated() {
            segments.append(try read(sequence, isLast: k == sequences.count - 1))
        }
        // As opening does: segments before the latest one that starts with a compaction base are deleted.
        if let base = segments.lastIndex(where: { segment in
            if case .base = segment.records.first?.content { return true }
            return false
        }) {
            for k in 0..<base { segments[k].leftOverFromCompaction = true }
        }
        let highest =
            segments.flatMap { $0.records + ($0.damage?.readableAfter ?? []) }.map(\.highestTerm).max() ?? .zero
        var refusal: StorageFailure?
        if format != DataDirectory.formatLine {
            refusal = StorageFailure(
                .unsupportedFormat,
                "the format is \(format.map { "\"\($0)\"" } ?? "missing"); this "
                    + "version reads \"\(DataDirectory.formatLine)\"", file: formatPath)
        }
        let live = segments.filter { !$0.leftOverFromCompaction }
        if refusal == nil {
            for (previous, next) in zip(live, live.dropFirst()) where next.sequence != previous.sequence + 1 {
                refusal = StorageFailure(
                    .missingSegment, "segment \(previous.sequence + 1) is missing",
                    file: walDirectory + "/" + Self.name(previous.sequence + 1))
                break
            }
        }
        if refusal == nil {
            for (k, segment) in live.enumerated() {
                let isLast = k == live.count - 1
                if let problem = segment.headerProblem {
                    if isLast && segment.size == 0 { continue }  // an empty last segment: opening makes it again
                    refusal = StorageFailure(.corrupt, problem, file: segment.path, offset: 0)
                    break
                }
                if let damage = segment.damage, !damage.isTornWrite {
                    refusal = StorageFailure(
                        .corrupt,
                        "the log is damaged before its end: \(damage.what)"
                            + (damage.laterWrite.map { "; a later write (at offset \($0)) follows it" } ?? ""),
                        file: segment.path, offset: damage.offset)
                    break
                }
            }
        }
        return Inspection(
            directory: directory, format: format, identity: identity, segments: segments,
            refusal: refusal, highestTerm: highest)
    }

    static func name(_ sequence: UInt64) -> String {
        DataDirectory.segmentName(sequence)
    }

    static func summary(_ read: Records.Read, at offset: Int) -> RecordSummary {
        switch read.record {
        case .entries(let entries):
            let terms = entries.map(\.term)
            return RecordSummary(
                offset: offset,
                content: .entries(
                    first: entries.first?.index ?? .zero, last: entries.last?.index ?? .zero,
                    lowestTerm: terms.min() ?? .zero, highestTerm: terms.max() ?? .zero))
        case .hardState(let hs): return RecordSummary(offset: offset, content: .hardState(hs))
        case .base(let index, let term): return RecordSummary(offset: offset, content: .base(index: index, term: term))
        }
    }

    private func read(_ sequence: UInt64, isLast: Bool) throws(StorageFailure) -> Segment {
        let name = Self.name(sequence)
        let path = walDirectory + "/" + name
        let bytes = try fileSystem.read(path)
        return bytes.withUnsafeBytes { raw -> Segment in
            let size = Replay.lastNonZero(raw)
            var segment = Segment(
                name: name, path: path, sequence: sequence, size: size, headerProblem: nil, records: [],
                end: 0, damage: nil)
            let salt: Records.Salt
            switch Records.readSegmentHeader(raw, sequence: sequence) {
            case .success(let found): salt = found
            case .failure(.empty):
                segment.headerProblem = "no header (a crash while the segment was created)"
                return segment
            case .failure(.formatOne):
                segment.headerProblem = "a segment of data format 1"
                return segment
            case .failure(.damaged(let why)):
                segment.headerProblem = why
                return segment
            }
            var records: [RecordSummary] = []
            // The visitor never throws: a repair reads everything it can.
            let scan =
                (try? Replay.scan(raw, salt: salt) { (read, offset) throws(Replay.Stop) in
                    records.append(Self.summary(read, at: offset))
                }) ?? Replay.Scan(end: Records.segmentHeaderSize, damage: nil, lastNonZero: size, recordCount: 0)
            segment.records = records
            segment.end = scan.end
            if let damage = scan.damage {
                let tail = Replay.judge(raw, salt: salt, scan: scan, isLast: isLast)
                var torn = false
                var later: Int?
                switch tail {
                case .torn: torn = true
                case .corrupt(_, _, let laterWrite): later = laterWrite
                case .clean: break
                }
                let after = Replay.soundRecords(raw, salt: salt, after: damage.offset, before: size, untilLater: false)
                    .compactMap { found -> RecordSummary? in
                        guard case .success(let read) = Records.read(raw, at: found.offset, salt: salt) else {
                            return nil
                        }
                        return Self.summary(read, at: found.offset)
                    }
                segment.damage = Damage(
                    offset: damage.offset, what: damage.reason.text, isTornWrite: torn,
                    laterWrite: later, bytes: size - damage.offset, readableAfter: after)
            }
            return segment
        }
    }

    // MARK: - Cutting

    /// What cutting segment `segmentName` (a file name, or a path ending in one) at `offset` would lose; changes
    /// nothing.
    /// - Throws: `StorageFailure(.refused)` if the cut would not leave a log that opens: the offset is not where a
    ///   record starts or where the readable records end, or there is damage before it.
    public func plan(cutAt segmentName: String, offset: Int) throws(StorageFailure) -> CutPlan {
        let inspection = try inspect()
        let name = segmentName.split(separator: "/").last.map(String.init) ?? segmentName
        let live = inspection.segments.filter { !$0.leftOverFromCompaction }
        guard let k = live.firstIndex(where: { $0.name == name }) else {
            throw StorageFailure(
                .refused,
                "no segment \(name) in the log (segments: "
                    + live.map(\.name).joined(separator: ", ") + ")", file: walDirectory)
        }
        let segment = live[k]
        guard inspection.format == DataDirectory.formatLine else {
            throw StorageFailure(
                .refused,
                "the data directory's format is not \"\(DataDirectory.formatLine)\": this "
                    + "version cannot repair it", file: directory + "/FORMAT")
        }
        for earlier in live[..<k] {
            if let problem = earlier.headerProblem {
                throw StorageFailure(
                    .refused,
                    "segment \(earlier.name) is damaged before the cut (\(problem)): cut "
                        + "there, or earlier", file: earlier.path, offset: 0)
            }
            if let damage = earlier.damage {
                throw StorageFailure(
                    .refused,
                    "segment \(earlier.name) is damaged at offset \(damage.offset), before "
                        + "the cut: cut there, or earlier", file: earlier.path, offset: damage.offset)
            }
        }
        let wholeSegment = offset < Records.segmentHeaderSize
        if wholeSegment {
            guard offset == 0 else {
                throw StorageFailure(
                    .refused,
                    "offset \(offset) is inside the segment's header: cut at 0 (the whole "
                        + "segment) or at \(Records.segmentHeaderSize) or later", file: segment.path)
            }
            guard k > 0 || segment.sequence == 1 else {
                throw StorageFailure(
                    .refused,
                    "\(segment.name) is the log's first segment after a compaction: without "
                        + "it the log does not say where it begins", file: segment.path)
            }
        } else {
            if let problem = segment.headerProblem {
                throw StorageFailure(
                    .refused,
                    "the segment's header is unusable (\(problem)): only a cut at offset 0 "
                        + "(the whole segment) is possible", file: segment.path)
            }
            let boundaries = Set(segment.records.map(\.offset) + [segment.end])
            guard boundaries.contains(offset) else {
                let nearest = boundaries.sorted().min { abs($0 - offset) < abs($1 - offset) } ?? segment.end
                throw StorageFailure(
                    .refused,
                    "offset \(offset) is not where a record starts or where the readable "
                        + "records end (nearest: \(nearest))", file: segment.path, offset: offset)
            }
            if k == 0 && segment.sequence != 1, case .base = segment.records.first?.content,
                offset <= Records.segmentHeaderSize
            {
                throw StorageFailure(
                    .refused,
                    "the cut would remove the compaction base that says where the log "
                        + "begins: cut after it", file: segment.path, offset: offset)
            }
        }
        var losses: [CutPlan.Loss] = []
        let cutRecords = segment.records.filter { $0.offset >= offset } + (segment.damage?.readableAfter ?? [])
        losses.append(
            CutPlan.Loss(name: segment.name, offset: offset, bytes: max(0, segment.size - offset), records: cutRecords))
        for later in live[(k + 1)...] {
            losses.append(
                CutPlan.Loss(
                    name: later.name, offset: 0, bytes: later.size,
                    records: later.records + (later.damage?.readableAfter ?? [])))
        }
        let kept = try replay(live[..<k].map(\.sequence), then: wholeSegment ? nil : (segment.sequence, offset))
        let unreadable = inspection.segments.filter { $0.headerProblem != nil && $0.size > 0 }.map(\.name)
        let term = Term(inspection.highestTerm.rawValue + 1)
        let newHardState = HardState(term: term, votedFor: nil, commit: min(kept.hardState.commit, kept.lastIndex))
        return CutPlan(
            segment: segment.name, offset: offset, losses: losses, kept: kept,
            highestTerm: inspection.highestTerm, newHardState: newHardState, unreadable: unreadable)
    }

    /// The state the records of these segments (and of one more, up to an offset) rebuild.
    private func replay(_ sequences: [UInt64], then last: (UInt64, Int)?) throws(StorageFailure) -> PersistentState {
        var state = PersistentState()
        var entries: [Entry] = []
        let all = sequences.map { ($0, Int.max) } + (last.map { [$0] } ?? [])
        for (sequence, limit) in all {
            let path = walDirectory + "/" + Self.name(sequence)
            let bytes = try fileSystem.read(path)
            let problem: StorageFailure? = bytes.withUnsafeBytes { raw -> StorageFailure? in
                guard case .success(let salt) = Records.readSegmentHeader(raw, sequence: sequence) else {
                    return StorageFailure(.refused, "the segment's header is unusable", file: path, offset: 0)
                }
                var offset = Records.segmentHeaderSize
                while offset < limit, case .success(let read) = Records.read(raw, at: offset, salt: salt) {
                    if let why = Replay.apply(read.record, to: &state, entries: &entries) {
                        return StorageFailure(
                            .refused, "the records before the cut do not make a log: \(why)",
                            file: path, offset: offset)
                    }
                    offset = read.next
                }
                return nil
            }
            if let problem { throw problem }
        }
        state.entries = entries
        return state
    }

    /// Does the cut `plan` describes (made by `plan(cutAt:offset:)` on this repair), and writes the new hard state.
    /// The repair's lock passes to the log it opens for that, which releases it: the repair is closed afterwards.
    public func cut(_ plan: CutPlan) throws(StorageFailure) -> CutResult {
        // Plan again, so that what is cut is what was shown (nothing can have changed: the lock is held).
        let fresh = try self.plan(cutAt: plan.segment, offset: plan.offset)
        guard fresh.losses.map(\.name) == plan.losses.map(\.name), fresh.newHardState == plan.newHardState else {
            throw StorageFailure(.refused, "the log changed since the plan was made", file: walDirectory)
        }
        guard let lock = lockFile else { throw StorageFailure(.closed, "the repair was closed", file: directory) }
        var keptAside: [String] = []
        let path = walDirectory + "/" + plan.segment
        if plan.offset < Records.segmentHeaderSize {
            let aside = walDirectory + "/cut-" + plan.segment
            try fileSystem.rename(path, to: aside)
            keptAside.append(aside)
        } else {
            let bytes = try fileSystem.read(path)
            let end = bytes.withUnsafeBytes { Replay.lastNonZero($0) }
            if end > plan.offset {
                let sequence = DataDirectory.sequence(ofSegment: plan.segment) ?? 0
                let aside = "\(walDirectory)/cut-\(sequence)-\(plan.offset).bin"
                try fileSystem.writeAtomically(Array(bytes[plan.offset..<end]), to: aside, directory: walDirectory)
                keptAside.append(aside)
                let file = try fileSystem.open(path, .write)
                do throws(StorageFailure) {
                    try fileSystem.write(
                        [UInt8](repeating: 0, count: end - plan.offset), to: file, at: plan.offset, path: path)
                    try fileSystem.syncData(file, path: path)
                } catch {
                    fileSystem.close(file)
                    throw error
                }
                fileSystem.close(file)
            }
        }
        for loss in plan.losses.dropFirst() {
            let aside = walDirectory + "/cut-" + loss.name
            try fileSystem.rename(walDirectory + "/" + loss.name, to: aside)
            keptAside.append(aside)
        }
        try fileSystem.syncDirectory(walDirectory)
        // The log opens on what is left; the new hard state goes through it like any other write.
        lockFile = nil
        let log = try WriteAheadLog(
            directory: directory, options: logOptions, fileSystem: fileSystem,
            expectedIdentity: nil, heldLock: lock)
        defer { log.close() }
        try log.persist(entries: [], hardState: plan.newHardState)
        var state = log.initialState()
        state.hardState = plan.newHardState
        return CutResult(keptAside: keptAside, hardState: plan.newHardState, state: state)
    }

    // MARK: - Text

    static func describe(_ hs: HardState) -> String {
        "term \(hs.term.rawValue), " + (hs.votedFor.map { "vote \(String($0.rawValue, radix: 16))" } ?? "no vote")
            + ", commit \(hs.commit.rawValue)"
    }

    /// Records in a line: entry index ranges with their terms, hard states, bases.
    static func summarise(_ records: [RecordSummary]) -> String {
        var parts: [String] = []
        var run: (first: UInt64, last: UInt64, low: UInt64, high: UInt64)?
        func flush() {
            if let r = run {
                parts.append(
                    "entries \(r.first)-\(r.last) (" + (r.low == r.high ? "term \(r.low)" : "terms \(r.low)-\(r.high)")
                        + ")")
            }
            run = nil
        }
        var hardStates: [HardState] = []
        for record in records {
            switch record.content {
            case .entries(let first, let last, let low, let high):
                guard last >= first, last.rawValue > 0 else { continue }
                if var r = run, first.rawValue == r.last + 1 {
                    r.last = last.rawValue
                    r.low = min(r.low, low.rawValue)
                    r.high = max(r.high, high.rawValue)
                    run = r
                } else {
                    flush()
                    run = (first.rawValue, last.rawValue, low.rawValue, high.rawValue)
                }
            case .hardState(let hs):
                hardStates.append(hs)
            case .base(let index, let term):
                flush()
                parts.append("compaction base at \(index.rawValue) (term \(term.rawValue))")
            }
        }
        flush()
        if let last = hardStates.last {
            let highest = hardStates.map(\.term.rawValue).max() ?? 0
            parts.append(
                "\(hardStates.count) hard state\(hardStates.count == 1 ? "" : "s") (last: \(describe(last))"
                    + (highest > last.term.rawValue ? "; highest term \(highest)" : "") + ")")
        }
        return parts.joined(separator: ", ")
    }
}
