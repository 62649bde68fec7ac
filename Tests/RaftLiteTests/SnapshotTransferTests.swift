import NIOCore
import NIOPosix
@testable import RaftCore
@testable import RaftLite
import Testing

/// A sender and a receiver against each other on one real event loop, with the file reads, the writes and the link
/// under the test's control: "threads" complete only when the harness runs them, and the link delivers one message
/// at a time (acknowledgements last, so that the sender fills its window). Each scenario runs on the loop and returns
/// what it saw; the expectations are checked on the test's own thread.
@Suite struct SnapshotTransferTests {
    static let leader = NodeID(1)
    static let leaderTerm = Term(7)

    @Test func aMultiMegabyteSnapshotArrivesByteForByte() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: (3 << 20) + 1234, seed: 1)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            let sender = h.sender(file, chunkSize: 16 << 10, window: 64 << 10)
            sender.start()
            h.drive(sender)
            return h.report(sender)
        }
        #expect(seen.violations == [])
        #expect(seen.finishes == [true])
        #expect(seen.outcome == .complete)
        #expect(seen.installs == [Install(index: 42, term: 5, leader: Self.leader, leaderTerm: Self.leaderTerm)])
        #expect(seen.installed == file.bytes)
        #expect(seen.bytesSent == UInt64(file.bytes.count))
        let chunks = (file.bytes.count + (16 << 10) - 1) / (16 << 10)
        #expect(seen.chunksSent == chunks + 1)  // and the hello
        // The window was filled (so the bound below it was really tested), never exceeded.
        #expect(seen.maxInFlight == 64 << 10)
        #expect(seen.maxBuffered <= (64 << 10) + (16 << 10))
        #expect(seen.finished)
    }

    @Test func theWindowIsNeverExceeded() throws {
        // A window that is not a multiple of the chunk: three chunks fit, a fourth never does (the file is a whole
        // number of chunks, so that a short last chunk cannot squeeze in beside three).
        let file = SnapshotFile.make(index: 9, term: 2, payload: 1_000_000 - 24, seed: 2)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            let sender = h.sender(file, chunkSize: 10_000, window: 35_000)
            sender.start()
            h.drive(sender)
            return h.report(sender)
        }
        #expect(seen.violations == [])
        #expect(seen.outcome == .complete)
        #expect(seen.maxInFlight == 30_000)
        #expect(seen.maxLinkInFlight == 30_000)
        #expect(seen.installed == file.bytes)
    }

    @Test func aDroppedChunkIsSentAgain() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 500_000, seed: 3)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            var dropped = false
            h.dropChunk = { chunk in
                guard !dropped, chunk.offset == 5 * 8192 else { return false }
                dropped = true
                return true
            }
            let sender = h.sender(file, chunkSize: 8192, window: 32_768)
            sender.start()
            h.drive(sender)
            var r = h.report(sender)
            r.note = dropped ? "dropped" : "never dropped"
            return r
        }
        #expect(seen.note == "dropped")
        #expect(seen.violations == [])
        #expect(seen.outcome == .complete)
        #expect(seen.installed == file.bytes)
        #expect(seen.installs.count == 1)
        // The lost chunk and what followed it in the window went again; nothing more.
        #expect(seen.bytesSent > UInt64(file.bytes.count))
        #expect(seen.bytesSent <= UInt64(file.bytes.count) + 32_768)
    }

    /// A link that fails part-way: the sender gives up; a new sender of the same snapshot resumes from the bytes the
    /// follower holds (with the same receiver, or with a new one on the same storage: a restarted follower).
    @Test(arguments: [false, true]) func aTransferCutShortResumesWhereItStopped(restartFollower: Bool) throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 400_000, seed: 4)
        let cut: UInt64 = 10 * 8192
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            h.dropChunk = { $0.offset >= cut }
            let first = h.sender(file, chunkSize: 8192, window: 32_768)
            first.start()
            h.drive(first)
            var r = h.report(first)
            r.partialAfterCut = h.store.partial?.bytes.count
            h.dropChunk = { _ in false }
            if restartFollower { h.restartReceiver() }
            let firstFinishes = h.finishes
            h.finishes = []
            h.sentData = []
            let second = h.sender(file, chunkSize: 8192, window: 32_768)
            second.start()
            h.drive(second)
            let r2 = h.report(second)
            r.note = "first: \(firstFinishes) \(first.outcome.map { "\($0)" } ?? "running")"
            r.second = Report.Second(
                finishes: r2.finishes, outcome: r2.outcome, bytesSent: r2.bytesSent,
                firstDataOffset: h.sentData.first?.offset, installed: r2.installed, installs: r2.installs.count,
                violations: r2.violations)
            return r
        }
        #expect(seen.note == "first: [false] timed out")
        #expect(seen.partialAfterCut == Int(cut))
        let second = try #require(seen.second)
        #expect(second.violations == [])
        #expect(second.finishes == [true])
        #expect(second.outcome == .complete)
        #expect(second.firstDataOffset == cut)
        #expect(second.bytesSent == UInt64(file.bytes.count) - cut)
        #expect(second.installed == file.bytes)
        #expect(second.installs == 1)
    }

    @Test func aFileThatFailsItsCheckIsRejectedAndSentAgainFromScratch() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 200_000, seed: 5)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            h.store.corruptOffset = 123_456
            let first = h.sender(file, chunkSize: 8192, window: 32_768)
            first.start()
            h.drive(first)
            var r = h.report(first)
            r.note =
                "rejected \(h.receiver.snapshotsRejected), partial \(h.store.partial == nil ? "gone" : "kept"), "
                + "installed \(h.store.installed == nil ? "none" : "some")"
            h.store.corruptOffset = nil
            h.finishes = []
            let second = h.sender(file, chunkSize: 8192, window: 32_768)
            second.start()
            h.drive(second)
            let r2 = h.report(second)
            r.second = Report.Second(
                finishes: r2.finishes, outcome: r2.outcome, bytesSent: r2.bytesSent, firstDataOffset: nil,
                installed: r2.installed, installs: r2.installs.count, violations: r2.violations)
            return r
        }
        #expect(seen.violations == [])
        #expect(seen.outcome == .rejected)
        #expect(seen.finishes == [false])
        #expect(seen.installs == [])
        #expect(seen.note == "rejected 1, partial gone, installed none")
        let second = try #require(seen.second)
        #expect(second.outcome == .complete)
        #expect(second.bytesSent == UInt64(file.bytes.count))
        #expect(second.installed == file.bytes)
        #expect(second.installs == 1)
    }

    @Test func aLostVerdictIsAskedForAgainAndTheSnapshotInstalledOnce() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 100_000, seed: 6)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            var dropped = 0
            h.dropAck = { ack in
                guard ack.status == .complete, dropped == 0 else { return false }
                dropped += 1
                return true
            }
            let sender = h.sender(file, chunkSize: 8192, window: 32_768)
            sender.start()
            h.drive(sender)
            var r = h.report(sender)
            r.note = "dropped \(dropped)"
            return r
        }
        #expect(seen.note == "dropped 1")
        #expect(seen.outcome == .complete)
        #expect(seen.finishes == [true])
        #expect(seen.installs.count == 1)
        #expect(seen.installed == file.bytes)
    }

    @Test func aNewerSnapshotReplacesAnOlderOneButNotTheReverse() throws {
        let older = SnapshotFile.make(index: 10, term: 5, payload: 100_000, seed: 7)
        let newer = SnapshotFile.make(index: 20, term: 5, payload: 120_000, seed: 8)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            var notes: [String] = []
            // The older one gets part of the way.
            let a = h.sender(older, chunkSize: 8192, window: 32_768)
            a.start()
            while (h.store.partial?.bytes.count ?? 0) < 40_000, h.step(a) {}
            notes.append("older partial \(h.store.partial?.bytes.count ?? -1) of index \(h.store.partial?.index ?? 0)")
            a.cancel()
            h.clearLink()
            // The newer one replaces it.
            let b = h.sender(newer, chunkSize: 8192, window: 32_768)
            b.start()
            h.drive(b)
            notes.append("discards \(h.store.discards), newer \(b.outcome.map { "\($0)" } ?? "running")")
            // The older one's chunks, from the same leader in the same term, change nothing.
            let before = (h.store.begins, h.receiver.transfer, h.toLeader.count)
            h.receiver.receive(
                SnapshotChunk(
                    index: LogIndex(10), snapshotTerm: Term(5), offset: 0, totalSize: UInt64(older.bytes.count),
                    data: []), from: Harness.leader, term: Harness.leaderTerm, send: { h.toLeader.append($0) })
            h.receiver.receive(
                SnapshotChunk(
                    index: LogIndex(10), snapshotTerm: Term(5), offset: 0, totalSize: UInt64(older.bytes.count),
                    data: Array(older.bytes[0..<8192])), from: Harness.leader, term: Harness.leaderTerm,
                send: { h.toLeader.append($0) })
            h.runIO()
            let after = (h.store.begins, h.receiver.transfer, h.toLeader.count)
            notes.append(before == after ? "older ignored" : "older changed \(before) → \(after)")
            notes.append("installed index \(h.store.installed?.meta.index.rawValue ?? 0)")
            var r = h.report(b)
            r.note = notes.joined(separator: "; ")
            return r
        }
        #expect(
            seen.note
                == "older partial 40960 of index 10; discards 1, newer complete; older ignored; installed index 20")
        #expect(seen.installed == newer.bytes)
        #expect(seen.installs == [Install(index: 20, term: 5, leader: Self.leader, leaderTerm: Self.leaderTerm)])
        #expect(seen.violations == [])
    }

    @Test func aChunkOfAnotherSnapshotWaitsForTheWriteInFlightThenReplaces() throws {
        let older = SnapshotFile.make(index: 10, term: 5, payload: 50_000, seed: 9)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            let ack = { (a: SnapshotChunkAck) in h.toLeader.append(a) }
            let total = UInt64(older.bytes.count)
            h.receiver.receive(
                SnapshotChunk(index: LogIndex(10), snapshotTerm: Term(5), offset: 0, totalSize: total, data: []),
                from: Harness.leader, term: Harness.leaderTerm, send: ack)
            h.receiver.receive(
                SnapshotChunk(
                    index: LogIndex(10), snapshotTerm: Term(5), offset: 0, totalSize: total,
                    data: Array(older.bytes[0..<1000])), from: Harness.leader, term: Harness.leaderTerm, send: ack)
            // A new leader's hello for another snapshot arrives while that write is in flight.
            h.receiver.receive(
                SnapshotChunk(index: LogIndex(30), snapshotTerm: Term(8), offset: 0, totalSize: 777, data: []),
                from: NodeID(2), term: Term(8), send: ack)
            var notes = ["before io: acks \(h.toLeader.count), begins \(h.store.begins)"]
            h.runIO()
            notes.append("after io: \(h.toLeader.map { "\($0.index.rawValue)/\($0.offset)/\($0.status)" })")
            notes.append("partial of \(h.store.partial?.index ?? 0) with \(h.store.partial?.bytes.count ?? -1)")
            notes.append(
                "transfer from \(h.receiver.transfer?.leader.rawValue ?? 0) in \(h.receiver.transfer?.leaderTerm.rawValue ?? 0)"
            )
            notes.append("discards \(h.store.discards)")
            return notes
        }
        #expect(
            seen == [
                "before io: acks 1, begins 1",
                "after io: [\"10/0/accepted\", \"30/0/accepted\"]",
                "partial of 30 with 0",
                "transfer from 2 in 8",
                "discards 1",
            ])
    }

    @Test func garbageAcknowledgementsChangeNothing() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 200_000, seed: 10)
        let seen = try onLoop { loop in
            let h = Harness(loop: loop)
            let sender = h.sender(file, chunkSize: 8192, window: 32_768)
            sender.start()
            // The hello's answer, then the window fills; one ack moves it along.
            h.deliverChunks()
            h.deliverAcks()
            h.runIO()
            h.deliverChunks()
            h.runIO()
            h.toLeader.removeAll()
            sender.receive(
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: 8192, status: .accepted))
            h.runIO()
            func state() -> String {
                "acked \(sender.acknowledged) inFlight \(sender.inFlight) chunks \(sender.chunksSent) "
                    + "bytes \(sender.bytesSent) outcome \(sender.outcome.map { "\($0)" } ?? "none") "
                    + "finishes \(h.finishes)"
            }
            let before = state()
            let total = UInt64(file.bytes.count)
            let garbage: [SnapshotChunkAck] = [
                SnapshotChunkAck(index: LogIndex(41), snapshotTerm: Term(5), offset: 16384, status: .accepted),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(4), offset: 16384, status: .accepted),
                SnapshotChunkAck(index: LogIndex(43), snapshotTerm: Term(5), offset: total, status: .complete),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(6), offset: 0, status: .rejected),
                // Backwards, beyond what was sent, beyond the end, a verdict before the end.
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: 4096, status: .accepted),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: 8192 * 6, status: .accepted),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: total + 1, status: .accepted),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: .max, status: .accepted),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: total - 1, status: .complete),
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: 0, status: .complete),
            ]
            for ack in garbage {
                sender.receive(ack)
                h.runIO()
            }
            let after = state()
            // A real acknowledgement still moves it.
            sender.receive(
                SnapshotChunkAck(index: LogIndex(42), snapshotTerm: Term(5), offset: 16384, status: .accepted))
            h.runIO()
            return [before, after, state()]
        }
        #expect(seen[0] == "acked 8192 inFlight 32768 chunks 6 bytes 40960 outcome none finishes []")
        #expect(seen[1] == seen[0])
        #expect(seen[2] == "acked 16384 inFlight 32768 chunks 7 bytes 49152 outcome none finishes []")
    }

    @Test func garbageChunksChangeNothing() throws {
        let file = SnapshotFile.make(index: 42, term: 5, payload: 100_000, seed: 11)
        let seen = try onLoop { loop in
            var options = SnapshotReceiver.Options()
            options.maxChunkSize = 16_384
            options.maxTotalSize = 1 << 20
            let h = Harness(loop: loop, receiverOptions: options)
            let ack = { (a: SnapshotChunkAck) in h.toLeader.append(a) }
            let total = UInt64(file.bytes.count)
            func chunk(_ offset: UInt64, _ count: Int, index: UInt64 = 42, total size: UInt64? = nil) -> SnapshotChunk {
                let end = min(Int(offset) + count, file.bytes.count)
                let data =
                    Int(offset) < end ? Array(file.bytes[Int(offset)..<end]) : [UInt8](repeating: 1, count: count)
                return SnapshotChunk(
                    index: LogIndex(index), snapshotTerm: Term(5), offset: offset, totalSize: size ?? total, data: data)
            }
            h.receiver.receive(chunk(0, 0), from: Harness.leader, term: Harness.leaderTerm, send: ack)
            h.receiver.receive(chunk(0, 8192), from: Harness.leader, term: Harness.leaderTerm, send: ack)
            h.runIO()
            func state() -> String {
                let t = h.receiver.transfer
                return
                    "written \(t?.written ?? 0) of \(t?.index.rawValue ?? 0) partial \(h.store.partial?.bytes.count ?? -1) "
                    + "begins \(h.store.begins) discards \(h.store.discards)"
            }
            h.toLeader.removeAll()
            let before = state()
            var answers: [String] = []
            let cases: [(String, SnapshotChunk, Term)] = [
                (
                    "offset beyond the size",
                    SnapshotChunk(
                        index: LogIndex(42), snapshotTerm: Term(5), offset: total + 1, totalSize: total, data: []),
                    Harness.leaderTerm
                ),
                (
                    "data beyond the size",
                    SnapshotChunk(
                        index: LogIndex(42), snapshotTerm: Term(5), offset: total - 10, totalSize: total,
                        data: [UInt8](repeating: 0, count: 11)), Harness.leaderTerm
                ),
                ("earlier term", chunk(0, 0, index: 99), Term(6)),
                ("same term, older", chunk(0, 0, index: 41), Harness.leaderTerm),
                ("chunk too large", chunk(8192, 16_385), Harness.leaderTerm),
                ("snapshot too large", chunk(0, 0, index: 50, total: (1 << 20) + 1), Harness.leaderTerm),
                ("a gap", chunk(16_384, 8192), Harness.leaderTerm),
                ("a duplicate", chunk(0, 8192), Harness.leaderTerm),
            ]
            for (name, c, term) in cases {
                h.receiver.receive(c, from: Harness.leader, term: term, send: ack)
                h.runIO()
                answers.append("\(name): \(h.toLeader.map { "\($0.index.rawValue)/\($0.offset)/\($0.status)" })")
                h.toLeader.removeAll()
            }
            return [before, state()] + answers
        }
        #expect(seen[0] == "written 8192 of 42 partial 8192 begins 1 discards 0")
        #expect(seen[1] == seen[0])
        #expect(
            Array(seen.dropFirst(2)) == [
                "offset beyond the size: []",
                "data beyond the size: []",
                "earlier term: []",
                "same term, older: []",
                "chunk too large: [\"42/0/rejected\"]",
                "snapshot too large: [\"50/0/rejected\"]",
                "a gap: [\"42/8192/accepted\"]",
                "a duplicate: [\"42/8192/accepted\"]",
            ])
    }

    // MARK: - Harness

    struct Install: Sendable, Hashable {
        var index: UInt64
        var term: UInt64
        var leader: NodeID
        var leaderTerm: Term
    }

    struct Report: Sendable {
        struct Second: Sendable {
            var finishes: [Bool]
            var outcome: SnapshotSender.Outcome?
            var bytesSent: UInt64
            var firstDataOffset: UInt64?
            var installed: [UInt8]?
            var installs: Int
            var violations: [String]
        }

        var violations: [String]
        var finishes: [Bool]
        var outcome: SnapshotSender.Outcome?
        var installs: [Install]
        var installed: [UInt8]?
        var bytesSent: UInt64
        var chunksSent: Int
        var maxInFlight: UInt64
        var maxLinkInFlight: UInt64
        var maxBuffered: Int
        var finished: Bool
        var note = ""
        var partialAfterCut: Int?
        var second: Second?
    }

    /// Runs `body` on a loop of its own and returns what it returned.
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (any EventLoop) -> T) throws -> T {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        return try loop.submit { body(loop) }.wait()
    }
}

/// A snapshot file: a header (index and term, little-endian), a payload, and an FNV-1a checksum of all before it.
struct SnapshotFile {
    var bytes: [UInt8]

    static func make(index: UInt64, term: UInt64, payload: Int, seed: UInt64) -> SnapshotFile {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(payload + 24)
        withUnsafeBytes(of: index.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: term.littleEndian) { bytes.append(contentsOf: $0) }
        var random = SplitMix64(seed: seed)
        while bytes.count < payload + 16 {
            let word = random.next()
            withUnsafeBytes(of: word) { bytes.append(contentsOf: $0.prefix(payload + 16 - bytes.count)) }
        }
        let sum = checksum(bytes[...])
        withUnsafeBytes(of: sum.littleEndian) { bytes.append(contentsOf: $0) }
        return SnapshotFile(bytes: bytes)
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    static func integer(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for k in 0..<8 { value |= UInt64(bytes[offset + k]) << (8 * k) }
        return value
    }
}

struct StoreError: Error, CustomStringConvertible {
    var description: String
}

/// The receiver's storage in memory: one partial file, one installed snapshot; every write and check completes when
/// the harness runs its "thread".
final class MemoryStore: SnapshotReceiverStorage {
    struct Partial {
        var index: UInt64
        var term: UInt64
        var totalSize: UInt64
        var bytes: [UInt8]
    }

    let harness: Harness
    var partial: Partial?
    var installed: (meta: SnapshotMetadata, bytes: [UInt8])?
    var begins = 0
    var discards = 0
    /// A byte flipped as it is written (a bad disk, or a bad sender).
    var corruptOffset: UInt64?
    var inFlight = 0

    init(harness: Harness) { self.harness = harness }

    func begin(index: LogIndex, term: Term, totalSize: UInt64) throws -> UInt64 {
        begins += 1
        if let partial, partial.index == index.rawValue, partial.term == term.rawValue,
            partial.totalSize == totalSize
        {
            return UInt64(partial.bytes.count)
        }
        partial = Partial(index: index.rawValue, term: term.rawValue, totalSize: totalSize, bytes: [])
        return 0
    }

    func write(_ bytes: [UInt8], at offset: UInt64, completion: @escaping (Result<Void, any Error>) -> Void) {
        inFlight += 1
        if inFlight > 1 { harness.violate("two writes at once") }
        harness.io.append { [self] in
            inFlight -= 1
            guard var p = partial, UInt64(p.bytes.count) == offset else {
                harness.violate("a write at \(offset) out of order")
                return completion(.failure(StoreError(description: "out of order")))
            }
            var data = bytes
            if let corrupt = corruptOffset, corrupt >= offset, corrupt < offset + UInt64(bytes.count) {
                data[Int(corrupt - offset)] ^= 0x40
            }
            p.bytes += data
            partial = p
            completion(.success(()))
        }
    }

    func complete(completion: @escaping (Result<SnapshotMetadata, any Error>) -> Void) {
        inFlight += 1
        if inFlight > 1 { harness.violate("a check during a write") }
        harness.io.append { [self] in
            inFlight -= 1
            guard let p = partial, p.bytes.count >= 24, UInt64(p.bytes.count) == p.totalSize else {
                return completion(.failure(StoreError(description: "incomplete")))
            }
            let body = p.bytes[..<(p.bytes.count - 8)]
            guard SnapshotFile.checksum(body) == SnapshotFile.integer(p.bytes, at: p.bytes.count - 8) else {
                return completion(.failure(StoreError(description: "checksum")))
            }
            let meta = SnapshotMetadata(
                index: LogIndex(SnapshotFile.integer(p.bytes, at: 0)), term: Term(SnapshotFile.integer(p.bytes, at: 8)),
                voters: [NodeID(1), NodeID(2), NodeID(3)])
            installed = (meta, p.bytes)
            partial = nil
            completion(.success(meta))
        }
    }

    func discard() {
        discards += 1
        partial = nil
    }
}

/// The leader's file reads, the link both ways, and the follower's receiver, all driven one step at a time.
final class Harness {
    static let leader = SnapshotTransferTests.leader
    static let leaderTerm = SnapshotTransferTests.leaderTerm

    let loop: any EventLoop
    /// Completions of I/O "threads", in the order they were started.
    var io: [() -> Void] = []
    var toFollower: [SnapshotChunk] = []
    var toLeader: [SnapshotChunkAck] = []
    var dropChunk: (SnapshotChunk) -> Bool = { _ in false }
    var dropAck: (SnapshotChunkAck) -> Bool = { _ in false }
    /// Every rule broken, each once.
    var violations: [String] = []
    var finishes: [Bool] = []
    var installs: [SnapshotTransferTests.Install] = []
    /// The data chunks the sender sent (offset, size), resends included.
    var sentData: [(offset: UInt64, count: Int)] = []
    var store: MemoryStore!
    var receiver: SnapshotReceiver!
    let receiverOptions: SnapshotReceiver.Options

    // What the link saw: the end of the furthest chunk sent, the furthest offset acknowledged to the sender.
    var maxEndSent: UInt64 = 0
    var ackedToSender: UInt64 = 0
    var maxLinkInFlight: UInt64 = 0
    var maxInFlight: UInt64 = 0
    var readsInFlight = 0
    /// Bytes the sender holds: being read, or read and not yet acknowledged.
    var maxBuffered = 0

    init(loop: any EventLoop, receiverOptions: SnapshotReceiver.Options = SnapshotReceiver.Options()) {
        self.loop = loop
        self.receiverOptions = receiverOptions
        store = MemoryStore(harness: self)
        restartReceiver()
    }

    func violate(_ what: String) {
        if !violations.contains(what) { violations.append(what) }
    }

    func restartReceiver() {
        receiver?.stop()
        receiver = SnapshotReceiver(storage: store, options: receiverOptions, eventLoop: loop) {
            [unowned self] meta, leader, term in
            installs.append(
                SnapshotTransferTests.Install(
                    index: meta.index.rawValue, term: meta.term.rawValue, leader: leader, leaderTerm: term))
        }
    }

    func sender(_ file: SnapshotFile, chunkSize: Int, window: Int) -> SnapshotSender {
        var options = SnapshotSender.Options()
        options.chunkSize = chunkSize
        options.window = window
        let index = SnapshotFile.integer(file.bytes, at: 0)
        let term = SnapshotFile.integer(file.bytes, at: 8)
        maxEndSent = 0
        ackedToSender = 0
        weak var made: SnapshotSender?
        let sender = SnapshotSender(
            peer: NodeID(2), index: LogIndex(index), snapshotTerm: Term(term), totalSize: UInt64(file.bytes.count),
            options: options, eventLoop: loop,
            read: { [unowned self] offset, count, completion in
                readsInFlight += 1
                if readsInFlight > 1 { violate("two reads at once") }
                io.append { [unowned self] in
                    readsInFlight -= 1
                    completion(.success(Array(file.bytes[Int(offset)..<Int(offset) + count])))
                }
                if let made {
                    let held = Int(made.inFlight) + count
                    maxBuffered = max(maxBuffered, held)
                }
            },
            send: { [unowned self] chunk in
                if !chunk.data.isEmpty { sentData.append((chunk.offset, chunk.data.count)) }
                maxEndSent = max(maxEndSent, chunk.offset + UInt64(chunk.data.count))
                if !dropChunk(chunk) { toFollower.append(chunk) }
            },
            onFinish: { [unowned self] success in finishes.append(success) })
        made = sender
        currentSender = sender
        return sender
    }

    /// One thing happens: an I/O completion, else a chunk delivered, else an acknowledgement delivered. False when
    /// nothing is left to do.
    @discardableResult
    func step(_ sender: SnapshotSender? = nil) -> Bool {
        defer { if let sender { check(sender) } }
        if !io.isEmpty {
            io.removeFirst()()
            return true
        }
        if !toFollower.isEmpty {
            let chunk = toFollower.removeFirst()
            receiver.receive(chunk, from: Self.leader, term: Self.leaderTerm) { [unowned self] ack in
                if !dropAck(ack) { toLeader.append(ack) }
            }
            return true
        }
        if !toLeader.isEmpty, let sender {
            let ack = toLeader.removeFirst()
            if ack.status == .accepted, ack.index == sender.index { ackedToSender = max(ackedToSender, ack.offset) }
            sender.receive(ack)
            return true
        }
        return false
    }

    private func check(_ sender: SnapshotSender) {
        let window = UInt64(sender.options.window)
        maxInFlight = max(maxInFlight, sender.inFlight)
        if sender.inFlight > window { violate("in flight \(sender.inFlight) > \(window)") }
        let onLink = maxEndSent > ackedToSender ? maxEndSent - ackedToSender : 0
        maxLinkInFlight = max(maxLinkInFlight, onLink)
        if onLink > window { violate("on the link \(onLink) > \(window)") }
    }

    /// Runs until the sender finishes, ticking it whenever nothing else happens.
    func drive(_ sender: SnapshotSender, maxTicks: Int = 1000) {
        var ticks = 0
        while !sender.isFinished {
            if step(sender) { continue }
            ticks += 1
            if ticks > maxTicks {
                violate("still running after \(maxTicks) idle ticks")
                return
            }
            sender.tick()
            check(sender)
        }
        // What is still on its way lands, and changes nothing.
        while step(sender) {}
    }

    func runIO() {
        while !io.isEmpty { io.removeFirst()() }
    }

    func deliverChunks() {
        while !toFollower.isEmpty {
            let chunk = toFollower.removeFirst()
            receiver.receive(chunk, from: Self.leader, term: Self.leaderTerm) { [unowned self] in toLeader.append($0) }
        }
    }

    /// Every acknowledgement waiting, to the last sender made.
    func deliverAcks() {
        let acks = toLeader
        toLeader = []
        for ack in acks { currentSender?.receive(ack) }
    }

    weak var currentSender: SnapshotSender?

    /// Lets the I/O in flight finish, then forgets every message on the link.
    func clearLink() {
        runIO()
        toFollower = []
        toLeader = []
    }

    func report(_ sender: SnapshotSender) -> SnapshotTransferTests.Report {
        SnapshotTransferTests.Report(
            violations: violations, finishes: finishes, outcome: sender.outcome, installs: installs,
            installed: store.installed?.bytes, bytesSent: sender.bytesSent, chunksSent: sender.chunksSent,
            maxInFlight: maxInFlight, maxLinkInFlight: maxLinkInFlight, maxBuffered: maxBuffered,
            finished: sender.startedAt != nil && sender.finishedAt != nil)
    }
}
