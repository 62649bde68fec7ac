import NIOCore
import RaftCore
import RaftWire
import Testing

/// Random messages of every kind, for round trips and fuzzing.
struct MessageGenerator {
    var random: SplitMix64

    mutating func value(_ bound: UInt64) -> UInt64 { random.next() % bound }
    mutating func bytes() -> [UInt8] { (0..<value(40)).map { _ in UInt8(truncatingIfNeeded: random.next()) } }

    mutating func message() -> Message {
        let kind: Message.Kind
        switch value(10) {
        case 0:
            let prev = value(1 << 40)
            let count = value(5)
            kind = .appendEntries(
                AppendEntries(
                    prevIndex: LogIndex(prev), prevTerm: Term(value(100)),
                    entries: (0..<count).map { k in
                        Entry(
                            term: Term(value(100)), index: LogIndex(prev + 1 + k),
                            kind: value(4) == 0 ? .noop : .normal,
                            data: bytes())
                    },
                    commit: LogIndex(value(1 << 40))))
        case 1:
            kind = .appendEntriesResponse(
                AppendEntriesResponse(
                    success: value(2) == 0, index: LogIndex(random.next()), rejectHintIndex: LogIndex(random.next()),
                    rejectHintTerm: Term(random.next())))
        case 2:
            kind = .requestVote(
                RequestVote(
                    preVote: value(2) == 0, lastLogIndex: LogIndex(random.next()),
                    lastLogTerm: Term(random.next())))
        case 3: kind = .requestVoteResponse(RequestVoteResponse(preVote: value(2) == 0, granted: value(2) == 0))
        case 4: kind = .heartbeat(Heartbeat(commit: LogIndex(random.next()), context: random.next()))
        case 5: kind = .heartbeatResponse(HeartbeatResponse(context: random.next()))
        case 7: kind = .readIndex(ReadIndexRequest(context: random.next()))
        case 8:
            kind = .readIndexResponse(
                ReadIndexResponse(context: random.next(), index: LogIndex(random.next()), granted: value(2) == 0))
        case 6: kind = .commitNotice(LogIndex(random.next()))
        default: kind = .propose((0..<1 + value(3)).map { _ in bytes() })
        }
        return Message(from: NodeID(random.next()), to: NodeID(random.next()), term: Term(random.next()), kind: kind)
    }
}

@Suite struct WireTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // Continuing a checksum over two halves gives the checksum of the whole.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = CRC32C.checksum(data)
        let first = data[..<377].withUnsafeBytes { CRC32C.checksum($0) }
        let both = data[377...].withUnsafeBytes { CRC32C.checksum($0, continuing: first) }
        #expect(whole == both)
        "123456789".utf8.withContiguousStorageIfAvailable { bytes in
            #expect(CRC32C.softwareChecksum(UnsafeRawBufferPointer(bytes)) == 0xE306_9283)
        }
    }

    /// The CPU's instructions and the tables agree on every length (the tail loops included), every alignment and
    /// continued checksums. (On a CPU without the instructions both sides are the tables.)
    @Test func theHardwareChecksumIsTheSoftwareOne() {
        var random = SplitMix64(seed: 7)
        let data = (0..<5000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        data.withUnsafeBytes { all in
            for length in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4093] {
                for offset in 0..<9 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let seed = UInt32(truncatingIfNeeded: random.next())
                    #expect(
                        CRC32C.checksum(slice, continuing: seed) == CRC32C.softwareChecksum(slice, continuing: seed),
                        "length \(length) offset \(offset)")
                }
            }
        }
        print("crc32c: CPU instructions \(CRC32C.usesHardware ? "used" : "not available: tables only")")
    }

    @Test func everyKindOfMessageSurvivesARoundTrip() throws {
        var generator = MessageGenerator(random: SplitMix64(seed: 42))
        for _ in 0..<5000 {
            let message = generator.message()
            var buffer = ByteBuffer()
            MessageCodec.encode(message, into: &buffer)
            #expect(buffer.readableBytes == MessageCodec.encodedSize(of: message))
            let decoded = try MessageCodec.decode(&buffer)
            #expect(decoded == message)
        }
    }

    @Test func framesCarryMessagesAndHellosIntact() throws {
        var generator = MessageGenerator(random: SplitMix64(seed: 7))
        var stream = ByteBuffer()
        let hello = Hello(clusterID: "c1", sender: NodeID(5), senderName: "node5", receiver: NodeID(6))
        hello.write(into: &stream)
        let messages = (0..<200).map { _ in generator.message() }
        for m in messages { Frame.write(m, into: &stream) }
        var first = try #require(try Frame.read(from: &stream, maxSize: 1 << 20))
        #expect(first.type == .hello)
        #expect(try Hello.decode(&first.payload) == hello)
        for m in messages {
            var frame = try #require(try Frame.read(from: &stream, maxSize: 1 << 20))
            #expect(frame.type == .message)
            #expect(try MessageCodec.decode(&frame.payload) == m)
        }
        #expect(try Frame.read(from: &stream, maxSize: 1 << 20) == nil)
    }

    @Test func aPartialFrameWaitsForTheRest() throws {
        var whole = ByteBuffer()
        Frame.write(
            Message(from: NodeID(1), to: NodeID(2), term: Term(3), kind: .heartbeatResponse(HeartbeatResponse())),
            into: &whole)
        for cut in 0..<whole.readableBytes {
            var part = whole.getSlice(at: 0, length: cut) ?? ByteBuffer()
            #expect(try Frame.read(from: &part, maxSize: 1024) == nil)
        }
    }

    @Test func badFramesAreRejectedWithAReason() {
        var oversized = ByteBuffer()
        oversized.writeMultipleIntegers(UInt32(100_007), UInt8(1), UInt8(2), UInt32(0))
        #expect(throws: WireError.self) { try Frame.read(from: &oversized, maxSize: 100_000) }

        var good = ByteBuffer()
        Frame.write(
            Message(from: NodeID(1), to: NodeID(2), term: Term(3), kind: .heartbeatResponse(HeartbeatResponse())),
            into: &good)
        var corrupt = good
        corrupt.setInteger(UInt8(0xFF), at: corrupt.writerIndex - 1)
        #expect(throws: WireError.checksumMismatch) { try Frame.read(from: &corrupt, maxSize: 1024) }
        var badVersion = good
        badVersion.setInteger(UInt8(9), at: 4)
        #expect(throws: WireError.unsupportedVersion(9)) { try Frame.read(from: &badVersion, maxSize: 1024) }
    }

    @Test func messagesThatLieAboutTheirSizeAreRejectedBeforeAllocating() {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(UInt64(1), UInt64(2), UInt64(3), UInt8(1))  // AppendEntries
        buffer.writeMultipleIntegers(UInt64(0), UInt64(0), UInt64(0), UInt32.max)  // four billion entries
        #expect(throws: WireError.self) { try MessageCodec.decode(&buffer) }
        var proposals = ByteBuffer()
        proposals.writeMultipleIntegers(UInt64(1), UInt64(2), UInt64(3), UInt8(8), UInt32.max)
        #expect(throws: WireError.self) { try MessageCodec.decode(&proposals) }
        var flag = ByteBuffer()
        flag.writeMultipleIntegers(UInt64(1), UInt64(2), UInt64(3), UInt8(4), UInt8(2), UInt8(1))
        #expect(throws: WireError.invalid("preVote flag 2")) { try MessageCodec.decode(&flag) }
        var overflow = ByteBuffer()
        overflow.writeMultipleIntegers(UInt64(1), UInt64(2), UInt64(3), UInt8(1))
        overflow.writeMultipleIntegers(UInt64.max, UInt64(0), UInt64(0), UInt32(1))
        overflow.writeMultipleIntegers(UInt64(1), UInt8(0), UInt32(0))
        #expect(throws: WireError.invalid("entry indexes overflow")) { try MessageCodec.decode(&overflow) }
    }

    /// Random and mutated byte streams never crash the decoder, and everything it accepts from a mutated stream is
    /// a message that was sent: a flipped bit is caught by the checksum, not passed on.
    @Test func fuzzedStreamsNeverCrashAndNeverYieldAMessageThatWasNotSent() {
        var generator = MessageGenerator(random: SplitMix64(seed: 2026))
        var random = SplitMix64(seed: 99)
        var accepted = 0
        var rejected = 0
        for round in 0..<3000 {
            let sent = (0..<1 + random.next() % 4).map { _ in generator.message() }
            var stream = ByteBuffer()
            for m in sent { Frame.write(m, into: &stream) }
            var bytes = Array(stream.readableBytesView)
            switch round % 4 {
            case 0:  // pure noise
                bytes = (0..<Int(random.next() % 200)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            case 1:  // flip bits
                for _ in 0..<1 + random.next() % 3 where !bytes.isEmpty {
                    let k = Int(random.next() % UInt64(bytes.count))
                    bytes[k] ^= UInt8(1 << (random.next() % 8))
                }
            case 2:  // cut short, or insert garbage
                if random.next() % 2 == 0 {
                    bytes.removeLast(Int(random.next() % UInt64(bytes.count + 1)))
                } else {
                    let k = Int(random.next() % UInt64(bytes.count + 1))
                    bytes.insert(contentsOf: (0..<8).map { _ in UInt8(truncatingIfNeeded: random.next()) }, at: k)
                }
            default:  // overwrite a length field
                if bytes.count >= 4 {
                    for k in 0..<4 { bytes[k] = UInt8(truncatingIfNeeded: random.next()) }
                }
            }
            var buffer = ByteBuffer(bytes: bytes)
            do {
                while var frame = try Frame.read(from: &buffer, maxSize: 1 << 16) {
                    guard frame.type == .message else { continue }
                    let message = try MessageCodec.decode(&frame.payload)
                    #expect(sent.contains(message), "round \(round): a message that was never sent came out")
                    accepted += 1
                }
            } catch {
                rejected += 1
            }
        }
        #expect(accepted > 0 && rejected > 0)
    }
}

/// `WireError`: every code distinct, equal only with equal details, and described as before it had codes.
@Suite struct WireErrorTests {
    static let described: [(WireError, String)] = [
        (.truncated("frame"), "truncated frame"),
        (.invalid("frame type 7"), "invalid frame type 7"),
        (.oversized(size: 200, limit: 100), "frame of 200 bytes exceeds the limit of 100 bytes"),
        (.unsupportedVersion(9), "unsupported frame version 9"),
        (.checksumMismatch, "frame checksum mismatch"),
        (.unexpected("hello meant for another node"), "hello meant for another node"),
    ]

    @Test func descriptionsCodesAndEquality() {
        for (error, text) in Self.described { #expect(error.description == text) }
        #expect(Set(Self.described.map(\.0.code)).count == Self.described.count)
        for (k, (a, _)) in Self.described.enumerated() {
            for (j, (b, _)) in Self.described.enumerated() { #expect((a == b) == (k == j), "\(a) vs \(b)") }
        }
        #expect(WireError.truncated("frame") != .truncated("hello"))
        #expect(WireError.truncated("x") != .invalid("x"))
        #expect(WireError.oversized(size: 200, limit: 100) != .oversized(size: 200, limit: 101))
        #expect(WireError.unsupportedVersion(9) != .unsupportedVersion(8))
        #expect(WireError.oversized(size: 200, limit: 100).size == 200)
    }
}
