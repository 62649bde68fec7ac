import Foundation
import JepsenKit
import ProcessTesting
import Testing

/// Real `raft-lite serve` processes behind TCP proxies, concurrent clients, a nemesis that kills, pauses and
/// partitions, and a linearizability check of what the clients saw.
///
/// - The bounded suite (part of `swift test`): three 30-second runs with fixed seeds, kill, pause and partition
///   mixed, one per read mode (seed 11 reads at the leader, 22 at random nodes — follower reads —, 33 lease reads);
///   a 3-node cluster grown to 5 voters and shrunk back to 3 under those faults (leader and follower reads); two
///   30-second runs with two spares and membership changes mixed with the other faults (55: leader and follower
///   reads, 66: lease and follower reads); one 30-second run with peers over mutual TLS under kill, pause and
///   partition (79, leader reads), every peer connection seen beginning with a TLS handshake.
/// - Two broken builds the checker must catch: reads from the node's own copy (`--unsafe-local-reads`), and reads at
///   the node's own commit index with no leadership confirmation (`--unsafe-reads-without-confirmation`), caught on a
///   leader isolated with clients that keep reading from it; and the same schedule on a correct build, which passes.
/// - A long run: `JEPSEN_SECONDS=3600 swift test --filter jepsenLongRun` (or `Scripts/jepsen-long.sh`), with a random
///   seed printed first (`JEPSEN_SEED=S` to choose it, `JEPSEN_NODES=5` for five nodes, `JEPSEN_SPARES=2` for two
///   spares and membership changes among the faults, `JEPSEN_READS=leader,follower,lease` for the read modes,
///   dealt out to the clients in turn; default follower; `JEPSEN_PEER_TLS=1` for peers over mutual TLS).
/// - A failing run prints the seed, the faults with their times, and for each key that is not linearizable the
///   operation no order could explain with those around it; `JEPSEN_HISTORY=FILE` writes the whole history.
@Suite(.serialized, .clusterSlot) struct JepsenTests {
    static let environment = ProcessInfo.processInfo.environment

    /// Snapshot thresholds low enough that every node snapshots several times a run and compacts its log soon
    /// after, so that a node killed, paused or cut off for a second or more comes back behind the leader's log start
    /// and must install a snapshot.
    static let snapshotArguments = [
        "--snapshot-entries", "25", "--compaction-margin", "5", "--snapshot-state-factor", "0",
    ]

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

    /// The read mode of each bounded run: every mode under kill, pause and partition.
    static let readModes: [UInt64: ReadMode] = [11: .leader, 22: .follower, 33: .lease]

    @Test(arguments: [UInt64(11), 22, 33])
    func aBoundedRunUnderEveryKindOfFaultIsLinearizable(seed: UInt64) async throws {
        var options = JepsenOptions()
        options.seed = seed
        options.seconds = 30
        options.nodes = 3
        options.readModes = [Self.readModes[seed] ?? .follower]
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
        #expect(
            report.linearizable,
            "seed \(seed): replay with JEPSEN_SEED=\(seed) JEPSEN_SECONDS=30 swift test --filter jepsenLongRun")
        Self.expectBoundedRunMadeProgress(report, options)
    }

    /// What every bounded run under faults must show besides linearizability: the nemesis struck, enough operations
    /// completed, every key was read and every node caught up afterwards, and snapshots were taken and installed.
    static func expectBoundedRunMadeProgress(_ report: JepsenReport, _ options: JepsenOptions) {
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

    /// Peers over mutual TLS (a development CA in the run's scratch directory, a certificate per node naming it) and
    /// clients over HTTPS, under kill, pause and partition, leader reads, with the checks of the plain bounded runs.
    /// The proxies forward the TLS bytes untouched; every connection between the nodes must have begun with a TLS
    /// handshake (counted at the proxies, which carry every peer connection), so the run cannot pass with TLS
    /// silently off.
    @Test func aBoundedRunWithPeersOverMutualTLSAndClientsOverHTTPSIsLinearizable() async throws {
        var options = JepsenOptions()
        options.seed = 79
        options.seconds = 30
        options.nodes = 3
        options.readModes = [.leader]
        options.peerTLS = true
        options.clientTLS = true
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.peerTLS)
        // The nodes serve HTTPS only (a plain request gets 400 tls_required), so every completed operation went
        // over HTTPS.
        #expect(report.clientTLS)
        #expect(report.peerTransportProblem == nil, "\(report.peerTransportProblem ?? "")")
        #expect(
            report.peerConnections.tls >= options.nodes * (options.nodes - 1),
            "every link between the nodes carried TLS: \(report.peerConnections)")
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
        #expect(
            report.linearizable,
            "seed 79: replay with JEPSEN_SEED=79 JEPSEN_SECONDS=30 JEPSEN_READS=leader JEPSEN_PEER_TLS=1 swift test --filter jepsenLongRun"
        )
        #expect(report.crashes.isEmpty, "no node crashed")
        Self.expectBoundedRunMadeProgress(report, options)
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
        options.readModes = [.leader, .follower]
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
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
        // Every read mode under membership changes: 55 at the leader and at random nodes, 66 lease reads too.
        options.readModes = seed == 66 ? [.lease, .follower] : [.leader, .follower]
        options.serveArguments = Self.snapshotArguments
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
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

    /// The schedule that catches a read path that skips the leadership confirmation: every fault isolates the
    /// leader, both ways, for 1.5 to 3 s, and three of the six clients, as if cut off on its side, send all their
    /// reads to it meanwhile; the other clients write through the other nodes, which elect a new leader (at once:
    /// they lost their connections to the old one) and commit. The old leader learns it is deposed only when
    /// CheckQuorum makes it step down, an election timeout or two later, or when the partition heals.
    static func deposedLeaderOptions(seed: UInt64) -> JepsenOptions {
        var options = JepsenOptions()
        options.seed = seed
        options.seconds = 15
        options.faults = [.partition]
        options.partitions = [.isolated]
        options.alwaysStrikeLeader = true
        options.readersCutOffWithIsolatedNode = 3
        options.readModes = [.leader]
        options.quietSeconds = 0.5...1.0
        options.faultSeconds = 1.5...3.0
        return options
    }

    /// A deliberately broken build — linearizable reads served at the node's own commit index without confirming
    /// that it still leads (`serve --unsafe-reads-without-confirmation`) — must be caught: a deposed leader that
    /// does not know it yet answers the clients cut off with it with values older than writes the new leader
    /// committed before those reads began.
    /// Seed 8; `JEPSEN_DEPOSED_SEEDS=1,2,3` runs these instead (to measure how reliably it is caught).
    static let deposedLeaderSeeds: [UInt64] =
        environment["JEPSEN_DEPOSED_SEEDS"].map { $0.split(separator: ",").compactMap { UInt64($0) } } ?? [8]

    @Test(arguments: deposedLeaderSeeds)
    func theCheckerCatchesReadsServedWithoutConfirmingLeadership(seed: UInt64) async throws {
        var options = Self.deposedLeaderOptions(seed: seed)
        options.serveArguments = ["--unsafe-reads-without-confirmation"]
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.faults["partition", default: 0] >= 2, "the nemesis isolated the leader")
        #expect(report.cutOffReads.ok >= 1, "the isolated leader answered the clients cut off with it")
        #expect(!report.linearizable, "reads without a leadership check went unnoticed")
    }

    /// The same schedule on a correct build: the isolated leader's reads wait for a confirmation that never comes
    /// (the clients cut off with it time out, or see it refuse once it stepped down), and the history is
    /// linearizable — so the broken build above is caught for its read path, not for the schedule.
    @Test func aLeaderIsolatedWithClientsThatReadFromItServesNoStaleRead() async throws {
        let options = Self.deposedLeaderOptions(seed: 8)
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.faults["partition", default: 0] >= 2, "the nemesis isolated the leader")
        #expect(
            report.cutOffReads.ok + report.cutOffReads.failed + report.cutOffReads.unknown >= 1,
            "the clients cut off with the leader read from it")
        #expect(report.linearizable, "seed \(options.seed): not linearizable")
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
    }

    @Test(.enabled(if: environment["JEPSEN_SECONDS"] != nil))
    func jepsenLongRun() async throws {
        var options = JepsenOptions()
        options.seconds = Double(Self.environment["JEPSEN_SECONDS"] ?? "") ?? 600
        options.seed = UInt64(Self.environment["JEPSEN_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64(Int64.max))
        options.nodes = Int(Self.environment["JEPSEN_NODES"] ?? "") ?? 3
        options.spares = Int(Self.environment["JEPSEN_SPARES"] ?? "") ?? 0
        if options.spares > 0 { options.faults = FaultKind.allCases }
        if let modes = Self.environment["JEPSEN_READS"] {
            options.readModes = modes.split(separator: ",").compactMap { ReadMode(rawValue: String($0)) }
            #expect(!options.readModes.isEmpty, "JEPSEN_READS: a comma-separated list of leader, follower, lease")
        }
        options.verbose = Self.environment["JEPSEN_VERBOSE"] == "1"
        options.peerTLS = Self.environment["JEPSEN_PEER_TLS"] == "1"
        options.clientTLS = options.peerTLS
        options.serveArguments = Self.snapshotArguments
        print(
            "jepsen: long run of \(Int(options.seconds)) s on \(options.nodes) nodes, seed \(options.seed) "
                + "(replay: JEPSEN_SEED=\(options.seed) JEPSEN_SECONDS=\(Int(options.seconds)) JEPSEN_NODES=\(options.nodes) "
                + "JEPSEN_SPARES=\(options.spares) JEPSEN_PEER_TLS=\(options.peerTLS ? 1 : 0) JEPSEN_READS=\(options.readModes.map(\.rawValue).joined(separator: ",")) "
                + "swift test -c release --filter jepsenLongRun)")
        let report = try await JepsenRun(options: options).run()
        Self.report(report)
        #expect(report.linearizable)
        #expect(report.finalValues.count == options.keys, "every key was read after the faults stopped")
        #expect(report.finalValueProblems.isEmpty, "no acknowledged write lost")
        #expect(report.crashes.isEmpty, "no node crashed")
        #expect(report.readModeProblems(options.readModes).isEmpty, "\(report.readModeProblems(options.readModes))")
        #expect(report.peerTransportProblem == nil, "\(report.peerTransportProblem ?? "")")
    }
}
