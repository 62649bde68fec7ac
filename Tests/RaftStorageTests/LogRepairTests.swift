import RaftCore
import RaftStorage
import StorageTesting
import Testing

/// `LogRepair`: what an operator sees and does when a node refuses to start on a damaged log.
@Suite struct LogRepairTests {
    static var options: WriteAheadLog.Options {
        var options = WriteAheadLog.Options()
        options.segmentBytes = 2048
        return options
    }

    /// Thirty writes of ten entries and a hard state each; the term rises every five writes, and votes are cast.
    static func fill(_ fs: SimulatedFileSystem) throws {
        let log = try WriteAheadLog(directory: "/node", options: options, fileSystem: fs)
        defer { log.close() }
        for k in UInt64(0)..<30 {
            let term = k / 5 + 1
            try log.persist(
                entries: entries(k * 10 + 1...k * 10 + 10, term: term),
                hardState: HardState(term: Term(term), votedFor: NodeID(1 + k % 3), commit: LogIndex(k * 10)))
        }
    }

    static let highestTermWritten = Term(6)

    static func segments(_ fs: SimulatedFileSystem) -> [String] {
        fs.allFiles().filter { $0.hasPrefix("/node/wal/0") && $0.hasSuffix(".log") }
    }

    /// Flips a bit in the body of the second record of the given segment.
    static func damage(_ fs: SimulatedFileSystem, segment: String) throws -> Int {
        var bytes = try #require(fs.contents(of: segment))
        let (starts, _) = recordOffsets(bytes)
        let victim = starts[1]
        bytes[victim + 30] ^= 0x20
        fs.setContents(of: segment, to: bytes)
        return victim
    }

    @Test func aLogDamagedInTheMiddleIsShownCutAndOpensWithATermAboveEveryTermSeen() throws {
        let fs = SimulatedFileSystem()
        try Self.fill(fs)
        let segments = Self.segments(fs)
        #expect(segments.count >= 4)
        let damaged = segments[1]
        let offset = try Self.damage(fs, segment: damaged)
        let refusal = #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
        }
        #expect(refusal?.kind == .corrupt && refusal?.file == damaged && refusal?.offset == offset)

        let repair = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        let inspection = try repair.inspect()
        #expect(!inspection.opens)
        #expect(inspection.refusal?.file == damaged && inspection.refusal?.offset == offset)
        #expect(inspection.highestTerm == Self.highestTermWritten)
        let text = "\(inspection)"
        #expect(text.contains("damage at offset \(offset)") && text.contains("--cut-at"), "\(text)")

        let name = String(damaged.split(separator: "/").last ?? "")
        let plan = try repair.plan(cutAt: name, offset: offset)
        #expect(plan.losses.count == segments.count - 1, "the damaged segment from the offset, and every later one")
        #expect(plan.losses.dropFirst().allSatisfy { $0.offset == 0 })
        #expect(
            plan.newHardState
                == HardState(term: Term(7), votedFor: nil, commit: min(plan.kept.hardState.commit, plan.kept.lastIndex))
        )
        let shown = "\(plan)"
        #expect(shown.contains("would lose") && shown.contains("entries ") && shown.contains("hard state"), "\(shown)")
        // Planning changes nothing.
        #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
        }

        let result = try repair.cut(plan)
        #expect(result.keptAside.count == segments.count - 1)
        let log = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
        defer { log.close() }
        let state = log.initialState()
        #expect(state.lastIndex == plan.kept.lastIndex)
        #expect(state.lastIndex > LogIndex(0))
        #expect(
            state.entries
                == Array(entries(1...300, term: 1).prefix(state.entries.count)).enumerated().map { k, e in
                    Entry(term: Term(UInt64(k) / 50 + 1), index: e.index, data: e.data)
                })
        #expect(state.hardState.term > Self.highestTermWritten)
        #expect(state.hardState.votedFor == nil)
        #expect(fs.allFiles().contains { $0.contains("/wal/cut-") })
    }

    @Test func aRepairRefusesADirectoryInUseAndANodeRefusesOneBeingRepaired() throws {
        let fs = SimulatedFileSystem()
        try Self.fill(fs)
        let log = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
        let error = #expect(throws: StorageFailure.self) {
            try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        }
        #expect(error?.kind == .locked)
        log.close()
        let repair = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        #expect(throws: StorageFailure.self) {
            try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
        }
        repair.close()
    }

    @Test func aSoundLogIsSaidToBeSoundAndATornTailToBeCutOnOpen() throws {
        let fs = SimulatedFileSystem()
        try Self.fill(fs)
        let repair = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        let inspection = try repair.inspect()
        #expect(inspection.opens)
        #expect("\(inspection)".hasSuffix("the log is sound"))
        repair.close()
        // The last write torn: its last record fails its checksum.
        let last = try #require(Self.segments(fs).last)
        var bytes = try #require(fs.contents(of: last))
        let (_, end) = recordOffsets(bytes)
        bytes[end - 8] ^= 0x40  // in its commit index
        fs.setContents(of: last, to: bytes)
        let again = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        defer { again.close() }
        let torn = try again.inspect()
        #expect(torn.opens)
        #expect("\(torn)".contains("torn"), "\(torn)")
    }

    @Test func aCutThatWouldNotLeaveASoundLogIsRefused() throws {
        let fs = SimulatedFileSystem()
        try Self.fill(fs)
        let segments = Self.segments(fs)
        let offset = try Self.damage(fs, segment: segments[1])
        let repair = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
        defer { repair.close() }
        let name = { (path: String) in String(path.split(separator: "/").last ?? "") }
        // Not at a record boundary.
        #expect(throws: StorageFailure.self) { try repair.plan(cutAt: name(segments[1]), offset: offset - 3) }
        // After the damage: the damage would stay.
        #expect(throws: StorageFailure.self) { try repair.plan(cutAt: name(segments[2]), offset: 32) }
        // No such segment.
        #expect(throws: StorageFailure.self) { try repair.plan(cutAt: "00000000000000000099.log", offset: 32) }
        // At or before the damage is fine.
        _ = try repair.plan(cutAt: name(segments[1]), offset: 32)
        _ = try repair.plan(cutAt: name(segments[0]), offset: 32)
    }

    @Test func aRepairNeverTrapsOnADamagedDirectory() throws {
        var rng = SplitMix64(seed: 7)
        var cuts = 0
        for round in 0..<150 {
            let fs = SimulatedFileSystem()
            try Self.fill(fs)
            let segments = Self.segments(fs)
            for _ in 0..<(1 + rng.next() % 3) {
                let path = segments[Int(rng.next() % UInt64(segments.count))]
                var bytes = try #require(fs.contents(of: path))
                guard !bytes.isEmpty else { continue }
                switch rng.next() % 4 {
                case 0: bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
                case 1:
                    for _ in 0..<(1 + rng.next() % 20) {
                        bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: rng.next())
                    }
                case 2:
                    let start = Int(rng.next() % UInt64(bytes.count))
                    for k in start..<min(bytes.count, start + Int(rng.next() % 600)) {
                        bytes[k] = UInt8(truncatingIfNeeded: rng.next())
                    }
                default: bytes = []
                }
                fs.setContents(of: path, to: bytes)
            }
            let repair = try LogRepair(directory: "/node", fileSystem: fs, logOptions: Self.options)
            let inspection = try repair.inspect()
            _ = "\(inspection)"
            // Where a cut is offered, it is possible, and then the log opens.
            if let refusal = inspection.refusal, refusal.kind == .corrupt, let file = refusal.file,
                let offset = refusal.offset,
                let plan = try? repair.plan(cutAt: file, offset: offset)
            {
                _ = "\(plan)"
                _ = try repair.cut(plan)
                cuts += 1
                let log = try WriteAheadLog(directory: "/node", options: Self.options, fileSystem: fs)
                #expect(log.initialState().hardState.term > inspection.highestTerm, "round \(round)")
                log.close()
            }
            repair.close()
        }
        #expect(cuts >= 30, "enough damaged directories were cut: \(cuts)")
    }
}
