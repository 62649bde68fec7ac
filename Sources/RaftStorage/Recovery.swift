import RaftCore

extension WriteAheadLog {
    /// Opening the log, the part that touches files: lists and reads the segments, has `Replay` (pure) rebuild the
    /// state from their bytes, then does to the files what it says — finishing an interrupted compaction, removing
    /// or remaking a segment a crash left empty, keeping torn bytes aside and zeroing them — and leaves `writer` on
    /// the segment to append to.
    ///
    /// Nothing here may need new space, so that a node on a full disk can always restart: preallocating is tried,
    /// keeping torn bytes aside is best effort (both only leave a warning in `report`).
    static func recover(
        _ layout: DataDirectory, writer: SegmentWriter, requireSegments: Bool, report: inout RecoveryReport
    ) throws(StorageFailure) -> PersistentState {
        let fileSystem = layout.fileSystem
        let walDirectory = layout.walDirectory
        // A segment still under its temporary name was never finished: nothing in it was acknowledged.
        for name in try fileSystem.list(walDirectory) where name.hasSuffix(".log.tmp") {
            try fileSystem.remove(walDirectory + "/" + name)
        }
        var sequences = try fileSystem.list(walDirectory).compactMap(DataDirectory.sequence(ofSegment:)).sorted()
        guard !sequences.isEmpty else {
            if requireSegments {
                throw StorageFailure(
                    .missingSegment, "the data directory was initialised but its log has no segments",
                    file: walDirectory)
            }
            try writer.startSegment(sequence: 1)
            return PersistentState()
        }
        // A compaction interrupted while deleting leaves older segments before its base segment: finish the job.
        let startsWithBase = { (sequence: UInt64) -> Bool in
            guard let head = try? fileSystem.read(layout.segmentPath(sequence), upTo: Replay.baseProbeBytes)
            else { return false }
            return Replay.startsWithBase(head, sequence: sequence)
        }
        if let base = sequences.reversed().first(where: startsWithBase), base != sequences[0] {
            for sequence in sequences where sequence < base { try fileSystem.remove(layout.segmentPath(sequence)) }
            try fileSystem.syncDirectory(walDirectory)
            sequences.removeAll { $0 < base }
        }
        try Replay.checkContiguous(sequences, walDirectory: walDirectory)
        var replay = Replay.Recovery(walDirectory: walDirectory)
        for (k, sequence) in sequences.enumerated() {
            try replay.add(
                sequence: sequence, bytes: try fileSystem.read(layout.segmentPath(sequence)),
                isLast: k == sequences.count - 1)
        }
        guard let recovered = replay.finish() else {
            // Cannot happen: the last segment added always says where the log goes on, or throws.
            throw StorageFailure(.corrupt, "the log's replay did not reach its last segment", file: walDirectory)
        }
        report.segments += recovered.segments
        report.records += recovered.records
        let state = recovered.state
        writer.snapshotIndex = state.snapshotIndex
        writer.lastIndex = state.lastIndex
        writer.recoveredHardState = state.hardState

        let resume: (sequence: UInt64, end: Int, salt: Records.Salt, cut: Range<Int>?)
        switch recovered.resume {
        case .append(let sequence, let end, let salt, let cut):
            resume = (sequence, end, salt, cut)
        case .dropEmpty(let empty, let bytes, let sequence, let end, let salt):
            // A segment left empty by a crash while it was being created: go on in the segment before it (no new
            // space needed; the next one is started when that one is full).
            let path = layout.segmentPath(empty)
            report.tornBytesCut = bytes
            report.tornRecordAt = (path, 0)
            try fileSystem.remove(path)
            try fileSystem.syncDirectory(walDirectory)
            resume = (sequence, end, salt, nil)
        case .remake(let sequence, let bytes):
            // The log's only segment, left empty: it must be made again, which needs space. The new one replaces
            // it only once it is whole, so that a failure leaves the directory as it was.
            let path = layout.segmentPath(sequence)
            report.tornBytesCut = bytes
            report.tornRecordAt = (path, 0)
            do {
                try writer.startSegment(sequence: sequence)
            } catch let failure where failure.kind == .noSpace {
                throw StorageFailure(
                    .noSpace,
                    "no space left on device to make the log's first segment again (a crash left it "
                        + "empty); nothing is lost: free space, then restart the node", file: path)
            }
            return state
        }

        // Continue the last segment where its records end.
        let path = layout.segmentPath(resume.sequence)
        let file = try fileSystem.open(path, .write)
        writer.resume(file, path: path, sequence: resume.sequence, size: resume.end, salt: resume.salt)
        do {
            try fileSystem.preallocate(file, length: writer.options.segmentBytes, path: path)
        } catch {
            report.warnings.append("the last segment could not be preallocated, so it grows as it is written: \(error)")
        }
        if let cut = resume.cut {
            // Keep the torn bytes aside (for an operator), then zero them, so that the segment again ends in zeros
            // where its records end. Zeroing overwrites bytes the file holds already: it needs no new space.
            report.tornBytesCut = cut.count
            report.tornRecordAt = (path, cut.lowerBound)
            let torn = Array(try fileSystem.read(path).dropFirst(cut.lowerBound).prefix(cut.count))
            let aside = "\(walDirectory)/torn-\(resume.sequence)-\(cut.lowerBound).bin"
            do {
                try fileSystem.writeAtomically(torn, to: aside, directory: walDirectory)
            } catch {
                try? fileSystem.remove(aside + ".tmp")
                report.warnings.append(
                    "the \(torn.count) torn bytes cut at offset \(cut.lowerBound) of \(path) could "
                        + "not be kept aside in \(aside): \(error)")
            }
            try fileSystem.write([UInt8](repeating: 0, count: cut.count), to: file, at: cut.lowerBound, path: path)
            try fileSystem.syncData(file, path: path)
        }
        return state
    }
}
