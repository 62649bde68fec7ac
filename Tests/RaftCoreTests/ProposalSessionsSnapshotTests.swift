import RaftCore
import Testing

/// The proposal de-duplication table as it travels in a snapshot: `encoded()`, `init(decoding:)`, `isApplied`.
@Suite struct ProposalSessionsSnapshotTests {
    static func header(_ proposer: UInt64, _ incarnation: UInt64, _ sequence: UInt64, floor: UInt64 = 0)
        -> ProposalEnvelope.Header
    {
        let envelope = ProposalEnvelope(
            proposer: NodeID(proposer), incarnation: incarnation, sequence: sequence, floor: floor, command: [1])
        return ProposalEnvelope.Header(decoding: envelope.encoded())!  // safe: a test's own well-formed envelope
    }

    static func admit(_ sessions: inout ProposalSessions, _ log: [(ProposalEnvelope.Header, UInt64)]) -> [Bool] {
        log.map { sessions.admit($0.0, term: Term($0.1)) }
    }

    /// A log of committed envelopes as a cluster makes them: four proposers, proposals that commit out of order
    /// (forwarded through different leaders), copies of applied ones, floors that rise, terms that rise, and
    /// proposers that restart with a new incarnation (whose old session is then forgotten).
    static func realisticLog(seed: UInt64, length: Int) -> [(ProposalEnvelope.Header, Term)] {
        struct Proposer {
            var id: UInt64
            var incarnation: UInt64
            var next: UInt64 = 1
            var floor: UInt64 = 0
            var sent: [ProposalEnvelope.Header] = []
        }
        var random = SplitMix64(seed: seed)
        var proposers = (1...4).map { Proposer(id: $0 * 1_000, incarnation: random.next()) }
        var waiting: [ProposalEnvelope.Header] = []
        var term: UInt64 = 1
        var log: [(ProposalEnvelope.Header, Term)] = []
        while log.count < length {
            let p = Int.random(in: 0..<proposers.count, using: &random)
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<50:  // a new proposal, committed now or later
                let h = header(
                    proposers[p].id, proposers[p].incarnation, proposers[p].next, floor: proposers[p].floor)
                proposers[p].next += 1
                proposers[p].sent.append(h)
                if Bool.random(using: &random) { log.append((h, Term(term))) } else { waiting.append(h) }
            case 50..<70 where !waiting.isEmpty:  // a proposal waiting commits, out of order
                log.append((waiting.remove(at: Int.random(in: 0..<waiting.count, using: &random)), Term(term)))
            case 70..<82 where !proposers[p].sent.isEmpty:  // a copy of something sent before
                log.append((proposers[p].sent.randomElement(using: &random)!, Term(term)))  // safe: not empty
            case 82..<92:  // the proposer settles a prefix
                proposers[p].floor = UInt64.random(in: proposers[p].floor...proposers[p].next, using: &random)
            case 92..<97:
                term += 1
            case 97..<100:
                // A restart: a new incarnation, numbering from 1 again. What the old one had in flight commits now
                // or never (no entry of it can commit in a term after the new incarnation's first).
                let id = proposers[p].id
                for h in waiting where h.identity.proposer.rawValue == id { log.append((h, Term(term))) }
                waiting.removeAll { $0.identity.proposer.rawValue == id }
                proposers[p] = Proposer(id: id, incarnation: random.next())
            default:
                break
            }
        }
        return log
    }

    /// Every identity the log mentions, and a few it does not.
    static func probes(_ log: [(ProposalEnvelope.Header, Term)]) -> [ProposalIdentity] {
        var out = Set(log.map(\.0.identity))
        for identity in Array(out) {
            out.insert(
                ProposalIdentity(
                    proposer: identity.proposer, incarnation: identity.incarnation, sequence: identity.sequence + 500))
        }
        out.insert(ProposalIdentity(proposer: NodeID(77), incarnation: 1, sequence: 1))
        return Array(out)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func aTableSurvivesARoundTripAndThenDecidesAsTheOriginal(seed: UInt64) throws {
        let log = Self.realisticLog(seed: seed, length: 3_000)
        let probes = Self.probes(log)
        var sawRefusal = false
        var sawForgetting = false
        for cut in [0, 1, 17, 400, 1_500, 2_999, 3_000] {
            var original = ProposalSessions()
            var largest = 0
            for (header, term) in log[..<cut] {
                sawRefusal = !original.admit(header, term: term) || sawRefusal
                largest = max(largest, original.count)
            }
            sawForgetting = sawForgetting || original.count < largest
            let bytes = original.encoded()
            var copy = try ProposalSessions(decoding: bytes)
            #expect(copy == original, "cut at \(cut)")
            #expect(copy.encoded() == bytes)
            for p in probes {
                #expect(
                    copy.isApplied(proposer: p.proposer, incarnation: p.incarnation, sequence: p.sequence)
                        == original.isApplied(proposer: p.proposer, incarnation: p.incarnation, sequence: p.sequence))
            }
            // From here on, the two decide every further entry the same, and stay equal.
            for (k, (header, term)) in log[cut...].enumerated() {
                let expected = original.admit(header, term: term)
                #expect(copy.admit(header, term: term) == expected, "cut at \(cut), entry \(cut + k)")
            }
            #expect(copy == original)
        }
        #expect(sawRefusal, "the log has copies that are refused")
        #expect(sawForgetting, "the log has restarted proposers whose old sessions are forgotten")
    }

    @Test func isAppliedIsTrueForAppliedAndSettledSequencesOnly() {
        var sessions = ProposalSessions()
        let admitted = Self.admit(
            &sessions,
            [(Self.header(1, 9, 4, floor: 3), 1), (Self.header(1, 9, 6, floor: 3), 1), (Self.header(2, 5, 1), 1)])
        #expect(admitted == [true, true, true])
        let applied = { (p: UInt64, i: UInt64, s: UInt64) in
            sessions.isApplied(proposer: NodeID(p), incarnation: i, sequence: s)
        }
        #expect(applied(1, 9, 1) && applied(1, 9, 2), "below the floor: settled")
        #expect(!applied(1, 9, 3) && !applied(1, 9, 5) && !applied(1, 9, 7), "at or above the floor, not applied")
        #expect(applied(1, 9, 4) && applied(1, 9, 6) && applied(2, 5, 1))
        #expect(!applied(1, 8, 1) && !applied(3, 9, 1), "sessions the table does not know")
        // Node 1 restarts; once an entry of a later term applies, its old session is forgotten.
        #expect(Self.admit(&sessions, [(Self.header(1, 10, 1), 1)]) == [true])
        #expect(applied(1, 9, 4))
        #expect(Self.admit(&sessions, [(Self.header(2, 5, 2), 2)]) == [true])
        #expect(!applied(1, 9, 4) && applied(1, 10, 1))
    }

    /// A table's bytes written by hand, to damage them in exactly one way.
    struct Session {
        var proposer: UInt64
        var incarnation: UInt64
        var floor: UInt64 = 0
        var lastTerm: UInt64?
        var flag: UInt8?
        var applied: [UInt64] = []
        var appliedCount: UInt32?
    }

    static func bytes(version: UInt8 = 1, term: UInt64 = 3, sessions: [Session], sessionCount: UInt32? = nil)
        -> [UInt8]
    {
        var out: [UInt8] = [version]
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        u64(term)
        u32(sessionCount ?? UInt32(sessions.count))
        for s in sessions {
            u64(s.proposer)
            u64(s.incarnation)
            u64(s.floor)
            out.append(s.flag ?? (s.lastTerm == nil ? 0 : 1))
            if let t = s.lastTerm { u64(t) }
            u32(s.appliedCount ?? UInt32(s.applied.count))
            for a in s.applied { u64(a) }
        }
        return out
    }

    @Test func handWrittenBytesDecodeAsTheTableTheyDescribe() throws {
        var expected = ProposalSessions()
        let admitted = Self.admit(
            &expected,
            [(Self.header(1, 7, 2, floor: 2), 3), (Self.header(1, 7, 5, floor: 2), 3), (Self.header(1, 8, 1), 3)])
        #expect(admitted == [true, true, true])
        let bytes = Self.bytes(sessions: [
            Session(proposer: 1, incarnation: 7, floor: 2, lastTerm: 3, applied: [2, 5]),
            Session(proposer: 1, incarnation: 8, applied: [1]),
        ])
        #expect(try ProposalSessions(decoding: bytes) == expected)
        #expect(expected.encoded() == bytes)
    }

    @Test func damagedBytesAreRefused() throws {
        var table = ProposalSessions()
        for (header, term) in Self.realisticLog(seed: 9, length: 300) { _ = table.admit(header, term: term) }
        let good = table.encoded()
        #expect(try ProposalSessions(decoding: good) == table)

        let a = Session(proposer: 1, incarnation: 7, floor: 2, lastTerm: 3, applied: [2, 5])
        let b = Session(proposer: 1, incarnation: 8, applied: [1])
        var damaged: [(String, [UInt8])] = (0..<good.count).map { ("cut at \($0)", Array(good.prefix($0))) }
        damaged += [
            ("a byte too many", good + [0]),
            ("version 2", Self.bytes(version: 2, sessions: [a, b])),
            ("absurd session count", Self.bytes(sessions: [a, b], sessionCount: .max)),
            ("one session too many", Self.bytes(sessions: [a, b], sessionCount: 3)),
            ("absurd applied count", Self.bytes(sessions: [Session(proposer: 1, incarnation: 1, appliedCount: .max)])),
            ("applied decreasing", Self.bytes(sessions: [Session(proposer: 1, incarnation: 1, applied: [5, 3])])),
            ("applied twice", Self.bytes(sessions: [Session(proposer: 1, incarnation: 1, applied: [4, 4])])),
            (
                "applied below the floor",
                Self.bytes(sessions: [Session(proposer: 1, incarnation: 1, floor: 6, applied: [5])])
            ),
            ("an end flag of 2", Self.bytes(sessions: [Session(proposer: 1, incarnation: 1, flag: 2)])),
            ("sessions out of order", Self.bytes(sessions: [b, a])),
            ("a session twice", Self.bytes(sessions: [a, a])),
            (
                "two open sessions of one proposer",
                Self.bytes(sessions: [Session(proposer: 1, incarnation: 1), Session(proposer: 1, incarnation: 2)])
            ),
        ]
        for (what, bytes) in damaged {
            #expect(throws: SnapshotFormatError.self, "\(what)") { try ProposalSessions(decoding: bytes) }
        }
    }

    @Test func garbageNeverCrashesAndWhatDecodesIsCanonical() {
        var random = SplitMix64(seed: 42)
        var table = ProposalSessions()
        for (header, term) in Self.realisticLog(seed: 5, length: 200) { _ = table.admit(header, term: term) }
        let good = table.encoded()
        var decodedSome = 0
        var refusedSome = 0
        for round in 0..<3_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                // A valid table with one to three bytes changed.
                bytes = good
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            } else {
                // Random bytes behind a valid version and a small session count.
                bytes = [1] + (0..<8).map { _ in UInt8.random(in: 0...255, using: &random) } + [1, 0, 0, 0]
                bytes += (0..<Int.random(in: 0..<80, using: &random)).map { _ in
                    UInt8.random(in: 0...3, using: &random)
                }
            }
            if let decoded = try? ProposalSessions(decoding: bytes) {
                decodedSome += 1
                #expect(decoded.encoded() == bytes, "bytes that decode are the bytes of their table")
            } else {
                refusedSome += 1
            }
        }
        #expect(decodedSome > 0 && refusedSome > 0)
    }
}
