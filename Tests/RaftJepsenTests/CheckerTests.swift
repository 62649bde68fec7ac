import JepsenKit
import RaftCore
import Testing

/// The checker on small hand-written histories, linearizable and not: it must catch every violation.
@Suite struct LinearizabilityCheckerTests {
    static func op(
        _ client: Int, _ call: HistoryOperation.Call, _ outcome: HistoryOperation.Outcome, _ from: Int64, _ to: Int64,
        key: String = "x"
    ) -> HistoryOperation {
        HistoryOperation(client: client, key: key, call: call, outcome: outcome, invoked: from, completed: to)
    }

    static func linearizable(_ ops: [HistoryOperation]) -> Bool {
        LinearizabilityChecker.check(ops).allSatisfy(\.linearizable)
    }

    @Test func aSequentialHistoryIsLinearizable() {
        #expect(
            Self.linearizable([
                Self.op(1, .write("a"), .ok, 0, 10), Self.op(1, .read, .read("a"), 20, 30),
                Self.op(2, .write("b"), .ok, 40, 50), Self.op(2, .read, .read("b"), 60, 70),
            ]))
    }

    @Test func aReadOfTheInitialValueAfterACompletedWriteIsNot() {
        #expect(!Self.linearizable([Self.op(1, .write("a"), .ok, 0, 10), Self.op(2, .read, .read(nil), 20, 30)]))
    }

    @Test func overlappingOperationsMayTakeEffectInEitherOrder() {
        #expect(Self.linearizable([Self.op(1, .write("a"), .ok, 0, 100), Self.op(2, .read, .read(nil), 10, 20)]))
        #expect(Self.linearizable([Self.op(1, .write("a"), .ok, 0, 100), Self.op(2, .read, .read("a"), 10, 20)]))
        // But a read cannot see a value go back once a later read saw the new one.
        #expect(
            !Self.linearizable([
                Self.op(1, .write("a"), .ok, 0, 100), Self.op(2, .read, .read("a"), 10, 20),
                Self.op(3, .read, .read(nil), 30, 40),
            ]))
    }

    @Test func aStaleReadIsCaught() {
        #expect(
            !Self.linearizable([
                Self.op(1, .write("1"), .ok, 0, 10), Self.op(1, .write("2"), .ok, 20, 30),
                Self.op(2, .read, .read("1"), 40, 50),
            ]))
    }

    @Test func compareAndSetMustSeeTheValueItExpects() {
        #expect(
            Self.linearizable([
                Self.op(1, .write("1"), .ok, 0, 10), Self.op(2, .compareAndSet(expected: "1", new: "2"), .ok, 20, 30),
                Self.op(1, .read, .read("2"), 40, 50),
            ]))
        // Two compare-and-sets from the same value cannot both succeed one after the other.
        #expect(
            !Self.linearizable([
                Self.op(1, .write("1"), .ok, 0, 10), Self.op(2, .compareAndSet(expected: "1", new: "2"), .ok, 20, 30),
                Self.op(3, .compareAndSet(expected: "1", new: "3"), .ok, 40, 50),
            ]))
        // A failed compare-and-set is information too: the value was not the one expected.
        #expect(
            !Self.linearizable([
                Self.op(1, .write("1"), .ok, 0, 10),
                Self.op(2, .compareAndSet(expected: "1", new: "2"), .casFailed, 20, 30),
            ]))
        #expect(
            Self.linearizable([
                Self.op(1, .write("1"), .ok, 0, 10),
                Self.op(2, .compareAndSet(expected: "5", new: "2"), .casFailed, 20, 30),
                Self.op(3, .read, .read("1"), 40, 50),
            ]))
    }

    @Test func anUnknownOutcomeMayTakeEffectLateOrNever() {
        // Never observed: fine.
        #expect(Self.linearizable([Self.op(1, .write("a"), .unknown, 0, 0), Self.op(2, .read, .read(nil), 100, 110)]))
        // Observed long after its client gave up: fine (it took effect late).
        #expect(
            Self.linearizable([
                Self.op(1, .write("a"), .unknown, 0, 0), Self.op(2, .read, .read(nil), 100, 110),
                Self.op(2, .read, .read("a"), 200, 210),
            ]))
        // Observed, then gone again with nothing else written: not possible.
        #expect(
            !Self.linearizable([
                Self.op(1, .write("a"), .unknown, 0, 0), Self.op(2, .read, .read("a"), 100, 110),
                Self.op(2, .read, .read(nil), 200, 210),
            ]))
        // But it can never take effect before it was invoked.
        #expect(!Self.linearizable([Self.op(2, .read, .read("a"), 0, 10), Self.op(1, .write("a"), .unknown, 50, 0)]))
        // A definitely failed write never takes effect.
        #expect(!Self.linearizable([Self.op(1, .write("a"), .failed, 0, 10), Self.op(2, .read, .read("a"), 100, 110)]))
    }

    @Test func aLostWriteIsCaughtByTheFinalRead() {
        #expect(
            !Self.linearizable([
                Self.op(1, .write("a"), .ok, 0, 10), Self.op(2, .write("b"), .ok, 20, 30),
                Self.op(1000, .read, .read("a"), 100, 110),
            ]))
    }

    @Test func keysAreCheckedIndependentlyAndTheFailingOneIsNamed() {
        let results = LinearizabilityChecker.check([
            Self.op(1, .write("1"), .ok, 0, 10, key: "good"), Self.op(2, .read, .read("1"), 20, 30, key: "good"),
            Self.op(1, .write("1"), .ok, 0, 10, key: "bad"), Self.op(2, .read, .read(nil), 20, 30, key: "bad"),
        ])
        #expect(results.map(\.key) == ["bad", "good"])
        #expect(results.map(\.linearizable) == [false, true])
        #expect(results[0].explanation.first?.contains("read") == true)
    }

    /// Thousands of operations from concurrent clients on one key: a history produced by a correct register passes,
    /// and the same history with one read made stale fails.
    @Test func aLongConcurrentHistoryIsCheckedAndOneStaleReadIsFound() {
        var random = SplitMix64(seed: 42)
        var value: String? = nil
        var history: [HistoryOperation] = []
        var clock: Int64 = 0
        // Eight clients; each operation takes effect at one instant inside its [invoked, completed] window.
        var open: [(Int, Int64)] = (0..<8).map { ($0, 0) }
        for k in 0..<4000 {
            clock += Int64(random.next() % 50) + 1
            let slot = Int(random.next() % UInt64(open.count))
            let (client, invoked) = open[slot]
            let call: HistoryOperation.Call
            let outcome: HistoryOperation.Outcome
            switch random.next() % 3 {
            case 0:
                call = .read
                outcome = .read(value)
            case 1:
                call = .write("v\(k)")
                value = "v\(k)"
                outcome = .ok
            default:
                let expected = random.next() % 2 == 0 ? (value ?? "none") : "other"
                call = .compareAndSet(expected: expected, new: "v\(k)")
                if value == expected {
                    value = "v\(k)"
                    outcome = .ok
                } else {
                    outcome = .casFailed
                }
            }
            let completed = clock + Int64(random.next() % 40)
            history.append(
                HistoryOperation(
                    client: client, key: "x", call: call, outcome: outcome,
                    invoked: min(invoked, clock), completed: completed))
            open[slot] = (client, clock + 1)
        }
        let t0 = ContinuousClock.now
        let result = LinearizabilityChecker.check(history)
        print(
            "check of \(history.count) ops: \(ContinuousClock.now - t0), explored \(result.first?.statesExplored ?? 0)")
        #expect(result.count == 1 && result[0].linearizable, "\(result.first?.explanation ?? [])")
        // Make one late read see a value from long before.
        var broken = history
        if let k = broken.indices.reversed().first(where: { i in
            if case .read(let v?) = broken[i].outcome, v != "v5" { return true }
            return false
        }) {
            broken[k].outcome = .read("v5")
        }
        let t1 = ContinuousClock.now
        let brokenResult = LinearizabilityChecker.check(broken)[0]
        print("check of broken: \(ContinuousClock.now - t1), explored \(brokenResult.statesExplored)")
        #expect(!brokenResult.linearizable)
    }
}
