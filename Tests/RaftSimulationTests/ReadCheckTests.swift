import Foundation
import RaftCore
import RaftSimulation
import Testing

/// The read check of the simulator: it catches broken read paths (the negative tests), and the lease reads it runs
/// in some schedules are safe with the lease `ReadLease` computes (the control).
@Suite struct ReadCheckTests {
    /// Runs `seeds` with `adjust` applied (stopping early once `enough` says the failures so far suffice); returns
    /// the schedules that passed and the failures, by invariant. On a thread of its own, not a task: a simulation
    /// never yields, and on the cooperative pool it would starve the run's network and process tests.
    private func run(
        _ seeds: ClosedRange<UInt64>, enough: @escaping @Sendable ([SimulationFailure]) -> Bool = { _ in false },
        _ adjust: @escaping @Sendable (inout SimulationOptions) -> Bool
    ) async -> (passed: [SimulationResult], failures: [SimulationFailure]) {
        await withCheckedContinuation { done in
            let thread = Thread {
                var passed: [SimulationResult] = []
                var failures: [SimulationFailure] = []
                for seed in seeds {
                    var options = SimulationOptions(seed: seed)
                    guard adjust(&options) else { continue }
                    do throws(SimulationFailure) {
                        passed.append(try Simulation.run(options))
                    } catch {
                        failures.append(error)
                        if enough(failures) { break }
                    }
                }
                done.resume(returning: (passed, failures))
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Lease reads in every schedule that can have them (CheckQuorum on), most reads asked of the leader as lease
    /// reads.
    private static func leaseReads(_ options: inout SimulationOptions) -> Bool {
        guard options.checkQuorum else { return false }
        options.strictLease = true
        options.leaseReadRate = 0.9
        options.leaderReadRate = 0.8
        options.readInterval = 30
        return true
    }

    /// The broken read path — a node serves at its own commit index without asking the core — is caught: a follower
    /// behind the leader, or a deposed leader that does not know it yet, serves a state without a write that had
    /// completed.
    @Test func readsWithoutConfirmationAreCaught() async {
        let (passed, failures) = await run(
            1...40, enough: { $0.filter { $0.violation.invariant == .linearizableReads }.count >= 10 }
        ) { options in
            options.unsafeReadsWithoutConfirmation = true
            return true
        }
        let caught = failures.filter { $0.violation.invariant == .linearizableReads }
        #expect(caught.count >= 10, "only \(caught.count) of \(passed.count + failures.count) schedules caught it")
        let other = failures.filter { $0.violation.invariant != .linearizableReads }
        #expect(other.isEmpty, "\(other.map(\.description).joined(separator: "\n"))")
    }

    /// The broken read path on leaders only — the leadership confirmation skipped, the bug a deposed leader shows —
    /// is caught too.
    @Test func leaderReadsWithoutConfirmationAreCaught() async {
        let isCaught: @Sendable (SimulationFailure) -> Bool = { f in
            f.violation.invariant == .linearizableReads && f.violation.detail.contains("(leading then")
        }
        let (passed, failures) = await run(1...300, enough: { $0.contains(where: isCaught) }) { options in
            options.unsafeReadsWithoutConfirmation = true
            options.leaderReadRate = 1
            options.readInterval = 30
            return true
        }
        let caught = failures.filter(isCaught)
        #expect(!caught.isEmpty, "not caught in \(passed.count + failures.count) schedules")
    }

    /// A lease of three election timeouts outlives the voters' promise: a leader cut off (or paused) goes on
    /// serving lease reads after a new leader has committed writes. The checker must catch it.
    @Test func aLeaseTooLongIsCaught() async {
        let isCaught: @Sendable (SimulationFailure) -> Bool = { f in
            f.violation.invariant == .linearizableReads && f.violation.detail.contains("lease read")
        }
        let (passed, failures) = await run(1...300, enough: { $0.contains(where: isCaught) }) { options in
            guard Self.leaseReads(&options) else { return false }
            options.leaseDurationOverride = 3 * Int64(options.electionTick) * options.tickInterval
            return true
        }
        let caught = failures.filter(isCaught)
        #expect(!caught.isEmpty, "not caught in \(passed.count + failures.count) schedules")
    }

    /// The control for the test above: the same schedules with the lease `ReadLease` computes keep every invariant,
    /// and serve many reads from the lease.
    @Test func theLeaseKeepsReadsLinearizable() async {
        let (passed, failures) = await run(1...100) { options in Self.leaseReads(&options) }
        for failure in failures { Issue.record("\(failure)") }
        let leaseServed = passed.reduce(0) { $0 + $1.leaseReadsServed }
        #expect(passed.filter { $0.leaseReadsServed > 0 }.count * 2 >= passed.count, "\(leaseServed) lease reads")
    }

    /// A bug the simulator found in the shell's read path, as `RaftNode` had it (`NodeReads.nextContext` started from
    /// 0 in every process, and the core takes a `readIndexResponse` for any context): a restarted follower's read got
    /// the leader's late answer to the read of the same context that the previous incarnation asked, with the commit
    /// index from before the crash, and served a stale state (n1's read #29 served at read index 1 while 9 was
    /// committed). Contexts now start at a value of each incarnation's own, in `NodeReads` and `SimulatedReads`.
    @Test func aRestartedShellDoesNotTakeTheAnswerToItsPredecessorsRead() throws {
        // Seed 18 with these settings made a restarted node serve a stale read while its contexts restarted from 1:
        // the leader's late answer to the previous incarnation's read of the same context was taken as its own.
        var options = SimulationOptions(seed: 18)
        options.readInterval = 8
        options.leaderReadRate = 0.1
        options.readTimeoutTicks = 50
        let result = try Simulation.run(options)
        #expect(result.crashes > 0)
    }

    /// The check itself: a read served from a state behind what was committed when it was asked, or from a state no
    /// node had at its index, is a violation; the canonical state at or after the floor is not.
    @Test func theCheckerJudgesTheServedState() throws {
        var checker = InvariantChecker()
        let a = NodeID(1)
        var state = SimulatedState()
        for i: UInt64 in 1...3 {
            let entry = Entry(term: Term(1), index: LogIndex(i), kind: .normal, data: [UInt8(i)])
            state.apply(entry, admitted: true)
            try checker.observeState(a, state)
        }
        try checker.observeRead(a, state, floor: LogIndex(3), "a read")
        try checker.observeRead(a, state, floor: LogIndex(2), "a read")
        #expect(throws: InvariantViolation.self) { try checker.observeRead(a, state, floor: LogIndex(4), "a read") }
        var other = SimulatedState()
        other.apply(Entry(term: Term(2), index: LogIndex(1), kind: .normal, data: [9]), admitted: true)
        #expect(throws: InvariantViolation.self) { try checker.observeRead(a, other, floor: .zero, "a read") }
        state.apply(Entry(term: Term(1), index: LogIndex(4), kind: .normal, data: [4]), admitted: true)
        #expect(throws: InvariantViolation.self) { try checker.observeRead(a, state, floor: .zero, "a read") }
    }
}
