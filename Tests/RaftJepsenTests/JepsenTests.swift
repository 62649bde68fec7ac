import Foundation
import JepsenKit
import ProcessTesting
import Testing

/// Real `raft-lite serve` processes behind TCP proxies, concurrent clients, a nemesis that kills, pauses and
/// partitions, and a linearizability check of what the clients saw.
///
/// - The bounded suite (part of `swift test`): three 30-second runs with fixed seeds, kill, pause and partition
///   mixed; a 3-node cluster grown to 5 voters and shrunk back to 3 under those faults; two 30-second runs with
///   two spares and membership changes mixed with the other faults.
/// - A long run: `JEPSEN_SECONDS=3600 swift test --filter jepsenLongRun` (or `Scripts/jepsen-long.sh`), with a random
///   seed printed first (`JEPSEN_SEED=S` to choose it, `JEPSEN_NODES=5` for five nodes, `JEPSEN_SPARES=2` for two
///   spares and membership changes among the faults).
/// - A failing run prints the seed, the faults with their times, and for each key that is not linearizable the
///   operation no order could explain with those around it; `JEPSEN_HISTORY=FILE` writes the whole history.
@Suite(.serialized) struct JepsenTests {
    static let environment = ProcessInfo.processInfo.environment

    /// Snapshot thresholds low enough that every node snapshots several times a run and compacts its log soon
    /// after, so that a node killed, paused or cut off for a second or more comes back behind the leader's log start
    /// and must install a snapshot.
    static let snapshotArguments = ["--snapshot-entries", "50", "--compaction-margin", "10"]

    static func report(_ report: JepsenReport) {
        print(report.summary)
        let failed =
            !report.linearizable || !report.crashes.isEmpty || !report.finalValueProblems.isEmpty
            || !report.membershipDisagreements.isEmpty || !report.lagging.isEmpty
        if failed || environment["JEPSEN_VERBOSE"] == "1" {
            print("faults:\n" + report.faultLog.map { "  " + $0 }.joined(separator: "\n"))
        }
        if failed {
            for (label, lines) in report.nodeLogs.sorted(by: { $0.key < $1.key }) where !lines.isEmpty {
                print("\(label), last lines:\n" + lines.map { "  " + $0 }.joined(separator: "\n"))
            }
        }
        if let path = environment["JEPSEN_HISTORY"] {
            let lines = report.history.sorted { $0.invoked < $1.invoked }.map(\.description)
            try? lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            print("history written to \(path)")
        }
    }

    @Test(arguments: [UInt64(11), 22, 33])
    func aBoundedRunUnderEveryKindOfFaultIsLinearizable(seed: UInt64) async throws {
        var options = JepsenOptions()
        options.seed = seed
        options.seconds = 30
        options.nodes = 3
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(
            report.linearizable,
            "seed \(seed): replay with JEPSEN_SEED=\(seed) JEPSEN_SECONDS=30 swift test --filter jepsenLongRun")
        #expect(report.faults.values.reduce(0, +) >= 5, "the nemesis struck")
        #expect(
            report.operations - report.unknown - report.failed >= 200, "enough operations completed to mean something")
        #expect(report.finalValues.count == options.keys, "every key was read after the faults stopped")
        #expect(report.lagging.isEmpty, "every node caught up once the faults stopped")
        #expect(
            report.snapshotsStarted >= 2 * options.nodes,
            "several snapshots per node: \(report.snapshots.sorted { $0.key < $1.key })")
        #expect(
            report.snapshotsInstalled >= 1,
            "a node that fell behind caught up through a snapshot: \(report.snapshots.sorted { $0.key < $1.key })")
    }

    /// A 3-node cluster grown to 5 voters (the two spares added) and shrunk back to 3 (two of the first voters
    /// removed, left running) while the clients and the nemesis (kill, pause, partition) run.
    @Test func growingAClusterToFiveAndShrinkingItBackToThreeUnderFaultsIsLinearizable() async throws {
        var options = JepsenOptions()
        options.seed = 44
        options.seconds = 30
        options.nodes = 3
        options.spares = 2
        options.faults = FaultKind.classic
        options.membershipPlan = [.add("n3"), .add("n4"), .remove("n0"), .remove("n1")]
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.linearizable, "seed \(options.seed): not linearizable")
        #expect(report.finalValues.count == options.keys, "every key was read after the faults stopped")
        #expect(report.finalValueProblems.isEmpty, "no acknowledged write lost")
        #expect(report.crashes.isEmpty, "no node crashed")
        #expect(report.planDone == options.membershipPlan, "every planned change was made")
        #expect(report.membership.mostVoters == 5, "a leader's GET /v1/members showed five voters")
        #expect(report.finalVoters.sorted() == ["n2", "n3", "n4"], "back to three voters: \(report.finalVoters)")
        #expect(report.finalLearners.isEmpty)
        #expect(report.membershipDisagreements.isEmpty, "every member ends with the leader's membership")
        #expect(report.lagging.isEmpty, "every member caught up once the faults stopped")
        #expect(report.faults.values.reduce(0, +) >= 5, "the nemesis struck")
        #expect(
            report.operations - report.unknown - report.failed >= 200, "enough operations completed to mean something")
    }

    /// Two spares, and membership changes (add, remove, replace, transfer) mixed with kill, pause and partition,
    /// half of them made under one of those. A refused or unknown change is counted, never a failure.
    @Test(arguments: [UInt64(55), 66])
    func aBoundedRunWithMembershipChangesAmongTheFaultsIsLinearizable(seed: UInt64) async throws {
        var options = JepsenOptions()
        options.seed = seed
        options.seconds = 30
        options.nodes = 3
        options.spares = 2
        // Membership twice as often as each other kind.
        options.faults = FaultKind.allCases + [.membership]
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(
            report.linearizable,
            "seed \(seed): replay with JEPSEN_SEED=\(seed) JEPSEN_SECONDS=30 JEPSEN_SPARES=2 swift test --filter jepsenLongRun"
        )
        #expect(report.finalValues.count == options.keys, "every key was read after the faults stopped")
        #expect(report.finalValueProblems.isEmpty, "no acknowledged write lost")
        #expect(report.crashes.isEmpty, "no node crashed")
        // (How many strikes fit in 30 s depends on the machine's load: on a loaded CI machine, one.)
        #expect(report.faults["membership", default: 0] >= 1, "the nemesis changed the membership")
        #expect(report.membership.requests >= 1, "membership requests were sent")
        #expect(report.finalMembership != nil, "the membership settled")
        #expect((3...5).contains(report.finalVoters.count), "three to five voters: \(report.finalVoters)")
        #expect(report.membership.fewestVoters >= 3, "never fewer than three voters")
        #expect(report.membershipDisagreements.isEmpty, "every member ends with the leader's membership")
        #expect(report.lagging.isEmpty, "every member caught up once the faults stopped")
        #expect(
            report.operations - report.unknown - report.failed >= 200, "enough operations completed to mean something")
    }

    /// A deliberately broken build — "linearizable" reads served from the node's own state, without a quorum check
    /// (`serve --unsafe-local-reads`) — must be caught: a node cut off from the others, or merely a follower a
    /// moment behind, returns values older than writes that completed before the read began.
    @Test func theCheckerCatchesStaleReadsFromABrokenBuild() async throws {
        var options = JepsenOptions()
        options.seed = 7
        options.seconds = 15
        options.faults = [.partition]
        options.quietSeconds = 0.5...1.0
        options.faultSeconds = 1.5...3.0
        options.serveArguments = ["--unsafe-local-reads"]
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(!report.linearizable, "stale reads went unnoticed")
    }

    @Test(.enabled(if: environment["JEPSEN_SECONDS"] != nil))
    func jepsenLongRun() async throws {
        var options = JepsenOptions()
        options.seconds = Double(Self.environment["JEPSEN_SECONDS"] ?? "") ?? 600
        options.seed = UInt64(Self.environment["JEPSEN_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64(Int64.max))
        options.nodes = Int(Self.environment["JEPSEN_NODES"] ?? "") ?? 3
        options.spares = Int(Self.environment["JEPSEN_SPARES"] ?? "") ?? 0
        if options.spares > 0 { options.faults = FaultKind.allCases }
        options.verbose = Self.environment["JEPSEN_VERBOSE"] == "1"
        options.serveArguments = Self.snapshotArguments
        print(
            "jepsen: long run of \(Int(options.seconds)) s on \(options.nodes) nodes, seed \(options.seed) "
                + "(replay: JEPSEN_SEED=\(options.seed) JEPSEN_SECONDS=\(Int(options.seconds)) JEPSEN_NODES=\(options.nodes) "
                + "JEPSEN_SPARES=\(options.spares) "
                + "swift test -c release --filter jepsenLongRun)")
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.linearizable)
        #expect(report.finalValues.count == options.keys, "every key was read after the faults stopped")
        #expect(report.finalValueProblems.isEmpty, "no acknowledged write lost")
        #expect(report.crashes.isEmpty, "no node crashed")
    }
}
