import RaftCore
import Testing

/// The replicated client-session table (`ClientSessions`), its bytes, and the envelope that carries its operations.
@Suite struct ClientSessionsTests {
    static func result(_ index: UInt64, _ output: [UInt8]? = [7]) -> ClientSessions.StoredResult {
        ClientSessions.StoredResult(index: LogIndex(index), term: Term(2), output: output)
    }

    /// A table with `clients` registered at `timeMs` with `timeoutMs`.
    static func table(_ clients: [UInt64], timeMs: UInt64 = 0, timeoutMs: UInt64 = 1_000, max: UInt64 = 100)
        -> ClientSessions
    {
        var table = ClientSessions()
        for client in clients {
            table.register(clientID: LogIndex(client), timeMs: timeMs, timeoutMs: timeoutMs, maxSessions: max)
        }
        return table
    }

    @Test func aWriteIsAppliedOnceAndItsRetryGetsTheFirstResult() {
        var table = Self.table([5])
        #expect(table.decide(clientID: 5, sequence: 1, timeMs: 10) == .apply)
        table.record(clientID: 5, sequence: 1, result: Self.result(6))
        // The retry, in a later entry: not applied, answered with the first result (its index, not the retry's).
        #expect(table.decide(clientID: 5, sequence: 1, timeMs: 20) == .cached(Self.result(6)))
        #expect(table.decide(clientID: 5, sequence: 2, timeMs: 30) == .apply)
        table.record(clientID: 5, sequence: 2, result: Self.result(9, [8]))
        // An old copy of the first write, committed after the second: never applied.
        #expect(table.decide(clientID: 5, sequence: 1, timeMs: 40) == .superseded)
        #expect(table.decide(clientID: 5, sequence: 2, timeMs: 40) == .cached(Self.result(9, [8])))
        #expect(table.lastSequence(of: 5) == 2)
        // A client the table never registered.
        #expect(table.decide(clientID: 6, sequence: 1, timeMs: 40) == .expired)
        // A sequence of 0 is never a write of the session.
        var fresh = Self.table([5])
        #expect(fresh.decide(clientID: 5, sequence: 0, timeMs: 0) == .superseded)
    }

    @Test func sessionsIdleLongerThanTheirTimeoutExpireWhenASessionIsRegistered() {
        var table = Self.table([1], timeMs: 0, timeoutMs: 1_000)
        table.register(clientID: LogIndex(2), timeMs: 500, timeoutMs: 5_000, maxSessions: 100)
        #expect(table.decide(clientID: 1, sequence: 1, timeMs: 600) == .apply)  // used at 600
        // At 1,600 session 1 has been idle 1,000 ms: not more than its timeout, it stays.
        table.register(clientID: LogIndex(3), timeMs: 1_600, timeoutMs: 1_000, maxSessions: 100)
        #expect(table.contains(1) && table.contains(2) && table.contains(3))
        // At 1,601 it has been idle longer than its own timeout; session 2 has a longer one of its own.
        table.register(clientID: LogIndex(4), timeMs: 1_601, timeoutMs: 1_000, maxSessions: 100)
        #expect(!table.contains(1))
        #expect(table.contains(2) && table.contains(3) && table.contains(4))
        #expect(table.decide(clientID: 1, sequence: 2, timeMs: 1_601) == .expired)
    }

    @Test func aWriteToAnExpiredSessionFailsAndTheClockNeverRunsBack() {
        var table = Self.table([1], timeMs: 1_000, timeoutMs: 100)
        // A proposer with a slow clock stamps an earlier time: the table's clock stays where it was.
        #expect(table.decide(clientID: 1, sequence: 1, timeMs: 0) == .apply)
        #expect(table.clockMs == 1_000)
        table.record(clientID: 1, sequence: 1, result: Self.result(2))
        #expect(table.decide(clientID: 1, sequence: 2, timeMs: 1_101) == .expired)
        #expect(!table.contains(1))
        // Expired for good: a retry of the first write does not get its result either.
        #expect(table.decide(clientID: 1, sequence: 1, timeMs: 0) == .expired)
    }

    @Test func beyondTheMaximumTheLeastRecentlyUsedGoTiesByClientID() {
        var table = Self.table([10, 11, 12], timeMs: 0, timeoutMs: 1_000_000)
        _ = table.decide(clientID: 10, sequence: 1, timeMs: 5)  // 10 is now the most recently used of the three
        table.register(clientID: LogIndex(13), timeMs: 5, timeoutMs: 1_000_000, maxSessions: 3)
        // 11 and 12 were last used at 0: 11 has the lower id and goes.
        #expect(!table.contains(11))
        #expect(table.contains(10) && table.contains(12) && table.contains(13))
        table.register(clientID: LogIndex(14), timeMs: 5, timeoutMs: 1_000_000, maxSessions: 1)
        #expect(table.count == 1 && table.contains(14), "the new session stays, whatever the maximum")
    }

    @Test func aResultTooLongToKeepIsNotKept() {
        var table = Self.table([1])
        _ = table.decide(clientID: 1, sequence: 1, timeMs: 0)
        table.record(
            clientID: 1, sequence: 1,
            result: Self.result(2, [UInt8](repeating: 1, count: ClientSessions.maxResultBytes + 1)))
        #expect(table.decide(clientID: 1, sequence: 1, timeMs: 0) == .cached(Self.result(2, nil)))
    }

    /// A table with every kind of session: fresh, with a result, with a result whose output was not kept.
    static func sample() -> ClientSessions {
        var table = Self.table([3, 1, 8], timeMs: 50, timeoutMs: 1_000)
        _ = table.decide(clientID: 1, sequence: 4, timeMs: 70)
        table.record(clientID: 1, sequence: 4, result: Self.result(9, [1, 2, 3]))
        _ = table.decide(clientID: 8, sequence: 1, timeMs: 60)
        table.record(clientID: 8, sequence: 1, result: Self.result(10, nil))
        return table
    }

    @Test func theTableRoundTripsThroughItsBytesCanonically() throws {
        let table = Self.sample()
        let bytes = table.encoded()
        let decoded = try ClientSessions(decoding: bytes)
        #expect(decoded == table)
        #expect(decoded.encoded() == bytes)
        var copy = decoded
        #expect(copy.decide(clientID: 1, sequence: 4, timeMs: 80) == .cached(Self.result(9, [1, 2, 3])))
        #expect(try ClientSessions(decoding: ClientSessions().encoded()) == ClientSessions())
    }

    @Test func damagedTableBytesAreRefused() {
        let bytes = Self.sample().encoded()
        // Cut anywhere, or followed by a byte more.
        for cut in 0..<bytes.count {
            #expect(throws: SnapshotFormatError.self) { try ClientSessions(decoding: Array(bytes[..<cut])) }
        }
        #expect(throws: SnapshotFormatError.self) { try ClientSessions(decoding: bytes + [0]) }
        func patched(_ at: Int, _ values: [UInt8]) -> [UInt8] {
            var b = bytes
            b.replaceSubrange(at..<at + values.count, with: values)
            return b
        }
        let cases: [(String, [UInt8])] = [
            ("version 2", patched(0, [2])),
            ("an absurd count", patched(9, [0xFF, 0xFF, 0xFF, 0xFF])),
            // The first session is client 1: give it id 3, the same as the next one.
            ("sessions out of order", patched(13, [3])),
            // Its last use (offset 21) after the clock (70).
            ("a last use after the clock", patched(21, [71])),
            // Its result flag (offset 45) of 2; of 0 while its last sequence is 4.
            ("a result flag of 2", patched(45, [2])),
            ("a sequence without a result", patched(45, [0])),
        ]
        for (what, damaged) in cases {
            #expect(throws: SnapshotFormatError.self, "\(what)") { try ClientSessions(decoding: damaged) }
        }
    }

    @Test func snapshotBookkeepingHoldsBothTablesAndReadsTheOldFormat() throws {
        var proposals = ProposalSessions()
        let header = try #require(
            ProposalEnvelope.Header(
                decoding: ProposalEnvelope(proposer: NodeID(1), incarnation: 2, sequence: 1, floor: 1, command: [1])
                    .encoded()))
        let admitted = proposals.admit(header, term: Term(1))
        #expect(admitted)
        let both = SnapshotBookkeeping(proposals: proposals, clients: Self.sample())
        #expect(try SnapshotBookkeeping(decoding: both.encoded()) == both)
        // A snapshot written before client sessions holds the proposal sessions' bytes alone.
        let old = try SnapshotBookkeeping(decoding: proposals.encoded())
        #expect(old.proposals == proposals && old.clients == ClientSessions())
        let bytes = both.encoded()
        for cut in 0..<bytes.count {
            #expect(throws: SnapshotFormatError.self) { try SnapshotBookkeeping(decoding: Array(bytes[..<cut])) }
        }
        #expect(throws: SnapshotFormatError.self) { try SnapshotBookkeeping(decoding: [3] + bytes.dropFirst()) }
    }

    @Test func envelopesCarrySessionOperationsInVersion3AndPlainOnesStayVersion2() throws {
        let plain = ProposalEnvelope(proposer: NodeID(9), incarnation: 4, sequence: 3, floor: 2, id: "x", command: [5])
        #expect(plain.encoded().first == 2)
        #expect(ProposalEnvelope.Header(decoding: plain.encoded())?.sessionOperation == nil)
        for operation in [
            SessionOperation.register(timeMs: 1_700_000_000_000, timeoutMs: 3_600_000, maxSessions: 50_000),
            .write(clientID: 17, sequence: 2, timeMs: 1_700_000_000_123),
        ] {
            var envelope = plain
            envelope.sessionOperation = operation
            let bytes = envelope.encoded()
            #expect(bytes.first == 3)
            #expect(bytes.count == plain.encoded().count + ProposalEnvelope.sessionSize)
            #expect(ProposalEnvelope(decoding: bytes) == envelope)
            let header = try #require(ProposalEnvelope.Header(decoding: bytes))
            #expect(header.sessionOperation == operation)
            #expect(header.identity == plain.identity)
            // An unknown kind, or bytes cut inside the session part, are not an envelope.
            var unknown = bytes
            unknown[ProposalEnvelope.headerSize] = 3
            #expect(ProposalEnvelope.Header(decoding: unknown) == nil)
            #expect(ProposalEnvelope.Header(decoding: Array(bytes[..<(ProposalEnvelope.headerSize + 10)])) == nil)
        }
    }
}
