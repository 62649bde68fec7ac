import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ProcessTesting
import RaftCore
import RaftKVClient
import RaftTLS

#if canImport(Glibc)
    import Glibc
#endif

/// The kinds of fault the nemesis injects.
public enum FaultKind: String, Sendable, CaseIterable, Codable {
    /// SIGKILL a node, restart it on the same data directory a little later.
    case kill
    /// SIGSTOP a node, SIGCONT it a little later.
    case pause
    /// Cut links between nodes through the proxies: one node isolated, the cluster split in halves, a node that can
    /// send but not receive (or the reverse), or a bridge (two sides that only one node joins). Healed a little later.
    case partition
    /// Change the membership through the HTTP API of a node drawn at random: add a node that is not a voter as one,
    /// remove a voter (never below three), replace a voter (add one, then remove another), or hand leadership over
    /// (to a named voter or to any). Half the time under another fault (kill, pause or partition) struck at once.
    case membership

    /// The faults of a cluster whose membership does not change (the default).
    public static let classic: [FaultKind] = [.kill, .pause, .partition]
}

/// Where the clients send their reads, and with which consistency.
public enum ReadMode: String, Sendable, CaseIterable, Codable {
    /// `GET /v1/kv/K` (linearizable: ReadIndex) at the node the harness last saw leading (in the highest term; a
    /// random node while it sees none). The leader confirms it still leads with a heartbeat round.
    case leader
    /// `GET /v1/kv/K` (linearizable) at a random node, followers included: a follower asks the leader for the read
    /// index and serves the read itself once it has applied that far (follower reads).
    case follower
    /// `GET /v1/kv/K?consistency=lease` at the node last seen leading; the servers run with `--lease-reads`, so a
    /// leader whose lease holds serves it with no round trip.
    case lease
}

/// The shapes a partition takes (`JepsenOptions.partitions`).
public enum PartitionShape: String, Sendable, CaseIterable, Codable {
    /// The victim cut off from every other node, both ways.
    case isolated
    /// The cluster split in two halves drawn at random.
    case halves
    /// The victim can send but not receive, or receive but not send.
    case oneWay
    /// The others split in two sides that cannot talk; the victim talks to both.
    case bridge
}

/// A membership change that a run makes on a schedule (`JepsenOptions.membershipPlan`), retried until the
/// membership shows it done.
public enum PlannedChange: Sendable, Hashable, CustomStringConvertible {
    /// Make this node a voter.
    case add(String)
    /// Make this node a non-member.
    case remove(String)

    public var description: String {
        switch self {
        case .add(let name): "add \(name)"
        case .remove(let name): "remove \(name)"
        }
    }
}

/// How a run goes.
public struct JepsenOptions: Sendable {
    /// The voters of the first configuration (n0, n1, ...).
    public var nodes = 3
    /// Nodes that the cluster files list as spares (`"role": "spare"`, after the voters): started with the others,
    /// they wait as non-members until a membership change adds them. Every node's file lists every node, each peer
    /// behind the proxy of its link, so partitions reach added nodes too.
    public var spares = 0
    public var seconds = 30.0
    public var seed: UInt64 = 1
    public var clients = 6
    public var keys = 3
    public var faults: [FaultKind] = FaultKind.classic
    /// The clients' read modes, dealt out in turn (client c reads in `readModes[c % readModes.count]`). With
    /// `.lease` among them every node runs with `--lease-reads`. Writes go to a random node whatever the mode.
    public var readModes: [ReadMode] = [.follower]
    /// The partition shapes the nemesis draws from.
    public var partitions: [PartitionShape] = PartitionShape.allCases
    /// Every fault strikes the leader (if one answers), not only half of them.
    public var alwaysStrikeLeader = false
    /// While the nemesis keeps a node isolated, this many clients (the first ones) send their reads to that node
    /// and to no other, as a client cut off on the same side as the node would (their writes go where they would
    /// have gone). With `alwaysStrikeLeader` and `partitions: [.isolated]`: clients left with a deposed leader.
    public var readersCutOffWithIsolatedNode = 0
    /// Membership changes made in this order while the clients and the nemesis run, each retried until done (at
    /// most `planStepSeconds` each), `planGapSeconds` apart. The clients and the nemesis go on past `seconds` until
    /// the plan is done, by at most `seconds` more.
    public var membershipPlan: [PlannedChange] = []
    public var planGapSeconds = 3.0
    public var planStepSeconds = 45.0
    /// Between two faults, and how long each lasts, in seconds (each drawn uniformly from the range).
    public var quietSeconds = 1.0...3.0
    public var faultSeconds = 1.0...4.0
    /// The client's deadline for one operation; past it the outcome is unknown.
    public var operationTimeout = TimeAmount.milliseconds(1500)
    /// Clients write in client sessions (`POST /v1/sessions`, `Raft-Client-Id`, `Raft-Sequence`) and send a write
    /// whose outcome is unknown again with the same sequence — at another node — up to `sessionAttempts` times in
    /// all: the server applies it once and answers the retry with the first result, so the outcome becomes known.
    public var sessions = true
    public var sessionAttempts = 4
    /// The deadline of one membership request (a voter is caught up as a learner first); past it the outcome is
    /// unknown.
    public var membershipTimeout = TimeAmount.seconds(8)
    /// Milliseconds per Raft tick on the nodes, and their request deadline.
    public var tickMilliseconds = 20
    public var requestTimeoutMilliseconds = 1000
    /// The nodes' `--log-level` (their output lines are kept for the report); `JEPSEN_LOG_LEVEL` in the environment
    /// changes the default.
    public var logLevel = ProcessInfo.processInfo.environment["JEPSEN_LOG_LEVEL"] ?? "warning"
    /// Extra `raft-lite serve` arguments (the broken-build tests pass `--unsafe-local-reads` or
    /// `--unsafe-reads-without-confirmation`).
    public var serveArguments: [String] = []
    /// With `.lease` among `readModes`: the nodes' `--lease-clock-drift-ms` (nil: the default). Every node runs on
    /// this machine's one monotonic clock, and a tick never comes early, so a small allowance is safe here.
    public var leaseClockDriftMilliseconds: Int? = 40
    /// Peers talk mutual TLS: a development CA and a certificate per node (spares included, each its own name) are
    /// made in the run's scratch directory, and every `serve` gets `--peer-cert`, `--peer-key` and `--peer-ca`. The
    /// proxies forward the TLS bytes as they are; the report counts how the connections through them began
    /// (`JepsenReport.peerConnections`).
    public var peerTLS = false
    /// With `peerTLS`: the clients (and the harness's own requests) speak HTTPS too, each node serving its API with
    /// its peer certificate (`--tls-cert`), verified against the run's CA.
    public var clientTLS = false
    /// Where the `raft-lite` binary is.
    public var executable = raftLiteExecutable()
    /// Print faults and progress as they happen.
    public var verbose = false

    public init() {}
}

/// The membership changes a run made, and what the cluster's membership went through.
public struct MembershipChanges: Sendable {
    /// Changes that succeeded (200), by node.
    public var added: [String] = []
    public var removed: [String] = []
    /// Transfers that succeeded, as "from -> to".
    public var transfers: [String] = []
    /// Requests refused (a definite no: 4xx, 503, or not connected), by what was asked and why.
    public var refused: [String: Int] = [:]
    /// Requests whose outcome is unknown (504, or no answer in time), by what was asked and why.
    public var unknown: [String: Int] = [:]
    /// Nodes restarted on a fresh data directory before being added back (a removed node's old data never rejoins).
    public var freshRestarts: [String] = []
    /// The most and fewest voters any leader's `GET /v1/members` showed during the run.
    public var mostVoters = 0
    public var fewestVoters = Int.max
    /// Client operations sent to a node that was not a member at the time (as far as the harness knew), by outcome.
    public var nonMemberOutcomes: [String: Int] = [:]

    public var requests: Int {
        added.count + removed.count + transfers.count + refused.values.reduce(0, +) + unknown.values.reduce(0, +)
    }

    public var summary: String {
        func counts(_ d: [String: Int]) -> String {
            d.isEmpty ? "none" : d.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        }
        return "membership: added [\(added.joined(separator: ", "))], removed [\(removed.joined(separator: ", "))], "
            + "transfers [\(transfers.joined(separator: ", "))], fresh restarts [\(freshRestarts.joined(separator: ", "))]; "
            + "voters between \(fewestVoters == Int.max ? 0 : fewestVoters) and \(mostVoters); refused: \(counts(refused)); "
            + "unknown: \(counts(unknown)); operations at non-members: \(counts(nonMemberOutcomes))"
    }
}

/// The reads of one kind, as the clients saw them.
public struct ReadCounts: Sendable, Hashable, CustomStringConvertible {
    public var ok = 0
    public var failed = 0
    public var unknown = 0
    /// Completed reads served by the node the harness saw leading, when the read was sent and when it was answered.
    public var atLeader = 0
    /// Completed reads served by a node the harness saw as not leading (while another did), both times.
    public var atFollower = 0

    public init() {}

    mutating func count(_ outcome: HistoryOperation.Outcome, atLeader: Bool, atFollower: Bool) {
        switch outcome {
        case .read:
            ok += 1
            if atLeader { self.atLeader += 1 }
            if atFollower { self.atFollower += 1 }
        case .unknown: unknown += 1
        default: failed += 1
        }
    }

    public var description: String {
        "\(ok) ok (\(atLeader) at the leader, \(atFollower) at a follower), \(failed) failed, \(unknown) unknown"
    }
}

/// Reads a node was asked for, by consistency (`raft_reads_total{consistency}` in its `/metrics`), summed over its
/// processes.
public struct ReadsAsked: Sendable, Hashable {
    public var linearizable = 0
    public var lease = 0
    public var serializable = 0
    /// Reads served from the leader's lease, with no round (`raft_reads_served_total{path="lease"}`): a lease read
    /// asked for may have fallen back to ReadIndex (the lease had run out), this counts those that did not.
    public var servedByLease = 0

    public init(linearizable: Int = 0, lease: Int = 0, serializable: Int = 0, servedByLease: Int = 0) {
        self.linearizable = linearizable
        self.lease = lease
        self.serializable = serializable
        self.servedByLease = servedByLease
    }

    /// The counters in a Prometheus text exposition (0 for one that is absent).
    public init(prometheusText text: String) {
        func count(_ consistency: String) -> Int {
            Int(
                SnapshotCounts.sample(text, "raft_reads_total", label: "consistency=\"\(consistency)\"") ?? 0)
        }
        let servedByLease = Int(
            SnapshotCounts.sample(text, "raft_reads_served_total", label: "path=\"lease\"") ?? 0)
        self.init(
            linearizable: count("linearizable"), lease: count("lease"), serializable: count("serializable"),
            servedByLease: servedByLease)
    }

    static func + (a: Self, b: Self) -> Self {
        Self(
            linearizable: a.linearizable + b.linearizable, lease: a.lease + b.lease,
            serializable: a.serializable + b.serializable, servedByLease: a.servedByLease + b.servedByLease)
    }
}

/// What a run did and found.
public struct JepsenReport: Sendable {
    public var seed: UInt64
    public var seconds: Double
    public var history: [HistoryOperation]
    public var results: [LinearizabilityResult]
    public var faults: [String: Int]
    /// Why operations did not complete: for each failed or unknown outcome, what the client saw.
    public var reasons: [String: Int]
    /// Session writes sent again with the same sequence after an unknown outcome, and the operations whose outcome
    /// a retry made known (`JepsenOptions.sessions`).
    public var sessionRetries = 0
    public var settledByRetry = 0
    public var faultLog: [String]
    public var finalValues: [String: String?]
    public var checkSeconds: Double
    /// Per node, the snapshots its processes started and installed, summed over its restarts (read from each
    /// process's `/metrics` just before it was killed and at the end of the run; nil for a node never read).
    public var snapshots: [String: SnapshotCounts] = [:]
    /// The members that had not applied everything committed 30 s after the faults stopped.
    public var lagging: [String] = []
    /// The membership changes made, and the membership's range.
    public var membership = MembershipChanges()
    /// The membership the leader had once the faults stopped and it settled (committed, not joint); nil if none did.
    public var finalMembership: MembershipReport?
    /// Members whose own `GET /v1/members` differed from the leader's at the end.
    public var membershipDisagreements: [String] = []
    /// Processes that exited without the harness killing them: name, status and last output lines.
    public var crashes: [String] = []
    /// Keys whose final value no write could explain: a value nobody wrote, or none although a write completed.
    public var finalValueProblems: [String] = []
    /// The planned membership changes that were made (`JepsenOptions.membershipPlan`), in order.
    public var planDone: [PlannedChange] = []
    /// Each process's last output lines (label "name#generation.start"), for a report on a failed run.
    public var nodeLogs: [String: [String]] = [:]
    /// The clients' reads by mode (the final reads not included).
    public var reads: [ReadMode: ReadCounts] = [:]
    /// The reads of the clients cut off with an isolated node (`JepsenOptions.readersCutOffWithIsolatedNode`) that
    /// they sent to it while it was cut off.
    public var cutOffReads = ReadCounts()
    /// Per node, the reads it was asked for (from `/metrics`, read as the snapshot counters are).
    public var readsAsked: [String: ReadsAsked] = [:]
    public var readsAskedTotal: ReadsAsked { readsAsked.values.reduce(ReadsAsked(), +) }
    /// Whether the nodes were started with peer TLS (`JepsenOptions.peerTLS`).
    public var peerTLS = false
    /// Whether the clients spoke HTTPS to nodes that serve HTTPS only (`JepsenOptions.clientTLS`).
    public var clientTLS = false
    /// How the connections between the nodes (all through the proxies) began: with a TLS handshake or not.
    public var peerConnections = LinkConnections()

    /// Whether the peers' connections were what `peerTLS` says: some were made, and with peer TLS every one began
    /// with a TLS handshake (without it, none did). What is wrong, in words; nil if nothing.
    public var peerTransportProblem: String? {
        if peerConnections.tls + peerConnections.plain == 0 { return "no connection between peers was seen" }
        if peerTLS, peerConnections.plain > 0 {
            return "peer TLS on, yet \(peerConnections.plain) peer connections did not begin with a TLS handshake"
        }
        if !peerTLS, peerConnections.tls > 0 {
            return "peer TLS off, yet \(peerConnections.tls) peer connections began with a TLS handshake"
        }
        return nil
    }

    /// Whether the reads of each of `modes` really happened as that mode says: enough completed; in `.leader` mode
    /// at the node seen leading, in `.follower` mode at followers too, in `.lease` mode asked with
    /// `consistency=lease` (the nodes' `raft_reads_total{consistency="lease"}`). What is missing, in words.
    public func readModeProblems(_ modes: [ReadMode], atLeast minimum: Int = 10) -> [String] {
        var problems: [String] = []
        for mode in Set(modes).sorted(by: { $0.rawValue < $1.rawValue }) {
            let counts = reads[mode] ?? ReadCounts()
            if counts.ok < minimum { problems.append("\(mode) reads: only \(counts.ok) completed") }
            switch mode {
            case .leader:
                if counts.atLeader < minimum {
                    problems.append("leader reads: only \(counts.atLeader) served by the node seen leading")
                }
                if readsAskedTotal.linearizable == 0 {
                    problems.append("leader reads: no node counted a linearizable read")
                }
            case .follower:
                if counts.atFollower < minimum {
                    problems.append("follower reads: only \(counts.atFollower) served by a follower")
                }
                if readsAsked.values.filter({ $0.linearizable > 0 }).count < 2 {
                    problems.append("follower reads: fewer than two nodes counted linearizable reads")
                }
            case .lease:
                if readsAskedTotal.lease == 0 {
                    problems.append("lease reads: no node counted a read with consistency=lease")
                }
                if readsAskedTotal.servedByLease == 0 {
                    problems.append("lease reads: no read was served from a lease (all fell back to ReadIndex)")
                }
                if counts.atLeader < minimum {
                    problems.append("lease reads: only \(counts.atLeader) served by the node seen leading")
                }
            }
        }
        return problems
    }

    public var snapshotsStarted: Int { snapshots.values.map(\.started).reduce(0, +) }
    public var snapshotsInstalled: Int { snapshots.values.map(\.installed).reduce(0, +) }

    public var linearizable: Bool { results.allSatisfy(\.linearizable) }
    public var operations: Int { history.count }
    public func count(_ predicate: (HistoryOperation.Outcome) -> Bool) -> Int {
        history.filter { predicate($0.outcome) }.count
    }
    public var unknown: Int { count { $0 == .unknown } }
    public var failed: Int { count { $0 == .failed } }

    /// The voters and learners of the final membership, by name.
    public var finalVoters: [String] { finalMembership?.members.filter { $0.role != "learner" }.map(\.name) ?? [] }
    public var finalLearners: [String] { finalMembership?.members.filter { $0.role == "learner" }.map(\.name) ?? [] }

    public var summary: String {
        let ok = operations - unknown - failed
        let faultText = faults.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let reasonText = reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        var lines = [
            "jepsen: seed \(seed), \(Int(seconds)) s: \(operations) operations (\(ok) completed, \(unknown) unknown, "
                + "\(failed) failed: \(reasonText.isEmpty ? "none" : reasonText)), faults: \(faultText.isEmpty ? "none" : faultText); "
                + (linearizable ? "linearizable" : "NOT LINEARIZABLE")
                + String(format: " (checked in %.2f s)", checkSeconds)
                + (lagging.isEmpty ? "" : "; NOT CAUGHT UP: \(lagging.joined(separator: ", "))")
                + "; peers: \(peerTLS ? "mutual TLS" : "plain TCP") (\(peerConnections))"
                + "; clients: \(clientTLS ? "HTTPS" : "plain HTTP")"
                + "; snapshots: \(snapshotsStarted) started, \(snapshotsInstalled) installed"
                + (snapshots.isEmpty
                    ? ""
                    : " ("
                        + snapshots.sorted { $0.key < $1.key }.map {
                            "\($0.key) \($0.value.started)/\($0.value.installed)"
                        }
                        .joined(separator: ", ") + ")")
        ]
        if sessionRetries > 0 {
            lines.append(
                "  client sessions: \(sessionRetries) writes sent again with their sequence, \(settledByRetry) "
                    + "unknown outcomes settled by a retry")
        }
        if membership.requests > 0 || !membership.nonMemberOutcomes.isEmpty {
            lines.append("jepsen: " + membership.summary)
            lines.append(
                "jepsen: final membership: "
                    + (finalMembership.map { _ in
                        "voters [\(finalVoters.joined(separator: ", "))], learners [\(finalLearners.joined(separator: ", "))]"
                    } ?? "NONE SETTLED"))
        }
        if !membershipDisagreements.isEmpty {
            lines.append("jepsen: MEMBERSHIP VIEWS DIFFER: " + membershipDisagreements.joined(separator: "; "))
        }
        for crash in crashes { lines.append("jepsen: CRASHED: " + crash) }
        for problem in finalValueProblems { lines.append("jepsen: LOST OR INVENTED VALUE: " + problem) }
        if !reads.isEmpty {
            lines.append(
                "jepsen: reads: "
                    + reads.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key) \($0.value)" }.joined(
                        separator: "; ")
                    + (cutOffReads == ReadCounts()
                        ? "" : "; at an isolated node by clients cut off with it: \(cutOffReads)"))
            let asked = readsAsked.sorted { $0.key < $1.key }.map {
                "\($0.key) \($0.value.linearizable)/\($0.value.lease)/\($0.value.serializable)"
                    + ($0.value.servedByLease > 0 ? " (\($0.value.servedByLease) served by lease)" : "")
            }
            lines.append(
                "jepsen: reads asked of the nodes (linearizable/lease/serializable, raft_reads_total): "
                    + asked.joined(separator: ", "))
        }
        for result in results where !result.linearizable {
            lines.append("key \(result.key): not linearizable (\(result.operations) operations)")
            lines.append(contentsOf: result.explanation.map { "  " + $0 })
        }
        return lines.joined(separator: "\n")
    }
}

/// Snapshot counters of one node, from its `/metrics` (`raft_snapshot_started_total`, `raft_snapshot_installed_total`).
public struct SnapshotCounts: Sendable, Hashable {
    public var started = 0
    public var installed = 0

    public init(started: Int = 0, installed: Int = 0) {
        self.started = started
        self.installed = installed
    }

    /// The counters in a Prometheus text exposition (0 for one that is absent).
    public init(prometheusText text: String) {
        self.init(
            started: Int(Self.sample(text, "raft_snapshot_started_total") ?? 0),
            installed: Int(Self.sample(text, "raft_snapshot_installed_total") ?? 0))
    }

    /// The value of the first sample named `name` (with any labels; with `label`, one whose labels include it, as
    /// `consistency="lease"`) in Prometheus text.
    public static func sample(_ text: String, _ name: String, label: String? = nil) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard line.prefix(while: { $0 != " " && $0 != "{" }) == name, let last = line.split(separator: " ").last
            else { continue }
            if let label {
                let labels = line.drop { $0 != "{" }.prefix { $0 != "}" }
                guard labels.contains(label) else { continue }
            }
            return Double(last)
        }
        return nil
    }

    static func + (a: Self, b: Self) -> Self {
        Self(started: a.started + b.started, installed: a.installed + b.installed)
    }
}

/// A Jepsen-style test: a cluster of real `raft-lite serve` processes behind TCP proxies, concurrent clients doing
/// reads, writes and compare-and-sets over HTTP, and a nemesis that kills, pauses and partitions nodes and changes
/// the membership; then a linearizability check of everything the clients saw.
///
/// Membership (`JepsenOptions.spares`, `FaultKind.membership`, `JepsenOptions.membershipPlan`): a removed node is
/// left running on its data directory (it must not disrupt the cluster; the nemesis may still kill, pause or cut it
/// off, and a kill restarts it on the same directory). It is added back only on a fresh data directory, once its
/// removal is committed: its old process is killed and a new one started on a new directory, its own entry marked
/// `"role": "spare"` in its cluster file, so that it starts as a non-member and never bootstraps the first
/// configuration again. A removed node's old log and votes never rejoin under its id.
public final class JepsenRun: @unchecked Sendable {
    // @unchecked Sendable: mutable state lives in `NIOLockedValueBox`es; the rest is set in `init`.
    public let options: JepsenOptions
    private let scratch = ScratchDirectory("jepsen")
    private let names: [String]
    private let peerPorts: [Int]
    private let httpPorts: [Int]
    /// proxies[i][j]: the link node i uses to send to node j.
    private var proxies: [[LinkProxy?]] = []
    private let processes = NIOLockedValueBox<[String: ChildProcess]>([:])
    /// Held while a node's process is started or killed (the nemesis and the membership plan may both do it).
    private let processLock = NIOLock()
    /// Every process started, and those the harness killed (any other that is gone crashed).
    private let launched = NIOLockedValueBox<[(label: String, child: ChildProcess)]>([])
    private let killed = NIOLockedValueBox<Set<ObjectIdentifier>>([])
    /// Per node, the generation of its data directory (0: the first; a node added back gets a new one).
    private let generations: NIOLockedValueBox<[Int]>
    /// Nodes whose data directory may hold a membership (first voters, and any node an add was sent for): added
    /// back only on a fresh directory once they are not members.
    private let dirty: NIOLockedValueBox<Set<String>>
    /// The members as the harness last saw them (a leader's `GET /v1/members`).
    private let members: NIOLockedValueBox<Set<String>>
    private let changes = NIOLockedValueBox(MembershipChanges())
    private let planPending = NIOLockedValueBox(false)
    private let planDone = NIOLockedValueBox<[PlannedChange]>([])
    private let paused = NIOLockedValueBox<Set<String>>([])
    private let history = NIOLockedValueBox<[HistoryOperation]>([])
    private let faultLog = NIOLockedValueBox<[String]>([])
    private let faultCounts = NIOLockedValueBox<[String: Int]>([:])
    private let reasons = NIOLockedValueBox<[String: Int]>([:])
    private let retryCounts = NIOLockedValueBox<(retries: Int, settled: Int)>((0, 0))
    /// Snapshot counters of processes that were killed, summed per node.
    private let snapshotTotals = NIOLockedValueBox<[String: SnapshotCounts]>([:])
    /// Read counters (`raft_reads_total`) of processes, summed per node, collected with the snapshot counters.
    private let readTotals = NIOLockedValueBox<[String: ReadsAsked]>([:])
    /// The node the harness last saw leading (in the highest term), polled all along the run.
    private let believedLeader = NIOLockedValueBox<Int?>(nil)
    /// The node the nemesis keeps isolated now, if any.
    private let isolatedNode = NIOLockedValueBox<Int?>(nil)
    private let readCounts = NIOLockedValueBox<[ReadMode: ReadCounts]>([:])
    private let cutOffReadCounts = NIOLockedValueBox(ReadCounts())
    private let clock = NIODeadline.now()
    /// The peers' certificates, with `options.peerTLS`.
    private let peerCertificates: PeerCertificates?
    /// What clients verify the nodes' HTTPS with, with `options.clientTLS` (nil: plain HTTP).
    private let clientTLSContext: NIOSSLContext?

    public init(options: JepsenOptions) throws {
        self.options = options
        let total = options.nodes + options.spares
        let names = (0..<total).map { "n\($0)" }
        self.names = names
        peerCertificates =
            options.peerTLS ? try PeerCertificates(directory: scratch.path + "/certs", nodes: names) : nil
        clientTLSContext = try peerCertificates.flatMap { certificates in
            options.clientTLS
                ? try TLSFiles(certificateChain: nil, privateKey: nil, trustRoots: certificates.caFile).load()
                    .makeClientContext(verifyHostname: true) : nil
        }
        let ports = try ServerCluster.freePorts(2 * total + total * (total - 1))
        let peerPorts = Array(ports[0..<total])
        self.peerPorts = peerPorts
        httpPorts = Array(ports[total..<(2 * total)])
        var proxyPorts = Array(ports[(2 * total)...])
        let proxies = (0..<total).map { i in
            (0..<total).map { j in
                i == j ? nil : LinkProxy(listenPort: proxyPorts.removeFirst(), targetPort: peerPorts[j])
            }
        }
        self.proxies = proxies
        generations = NIOLockedValueBox(Array(repeating: 0, count: total))
        dirty = NIOLockedValueBox(Set(names.prefix(options.nodes)))
        members = NIOLockedValueBox(Set(names.prefix(options.nodes)))
        for i in 0..<total { try writeClusterFile(i, ownRoleSpare: false) }
    }

    /// Node `i`'s cluster file: itself at its real address, every other node behind the proxy of the link; the
    /// nodes after the first `nodes` as spares, and node `i` itself too when `ownRoleSpare` (a node added back on
    /// a fresh directory must not bootstrap the first configuration).
    private func writeClusterFile(_ i: Int, ownRoleSpare: Bool) throws {
        let entries = names.indices.map { j in
            let port = i == j ? peerPorts[j] : (proxies[i][j]?.listenPort ?? 0)
            let spare = j >= options.nodes || (i == j && ownRoleSpare)
            return "\"\(names[j])\": {\"ip\": \"127.0.0.1\", \"port\": \(port), \"http_port\": \(httpPorts[j])"
                + (spare ? ", \"role\": \"spare\"}" : "}")
        }
        try ("{" + entries.joined(separator: ", ") + "}").write(
            toFile: scratch.path + "/\(names[i]).json", atomically: true, encoding: .utf8)
    }

    private func now() -> Int64 { (NIODeadline.now() - clock).nanoseconds }

    private func log(_ line: String) {
        let stamped = String(format: "%8.3f s  ", Double(now()) / 1e9) + line
        faultLog.withLockedValue { $0.append(stamped) }
        if options.verbose { print("jepsen: " + stamped) }
    }

    // MARK: - Nodes

    private func dataDirectory(_ k: Int) -> String {
        let generation = generations.withLockedValue { $0[k] }
        return scratch.path + "/" + names[k] + (generation == 0 ? "" : ".\(generation)")
    }

    private func isRunning(_ k: Int) -> Bool {
        processes.withLockedValue { $0[names[k]]?.isRunning } == true
    }

    /// Starts node `k` on its current data directory, unless it is running.
    private func start(_ k: Int) throws {
        try processLock.withLock {
            guard !isRunning(k) else { return }
            try launch(k)
        }
    }

    /// Starts node `k` (the caller holds `processLock`).
    private func launch(_ k: Int) throws {
        let name = names[k]
        let generation = generations.withLockedValue { $0[k] }
        let label = "\(name)#\(generation).\(launched.withLockedValue { $0.count })"
        let child = try ChildProcess(
            options.executable,
            [
                "serve", "--config", scratch.path + "/\(name).json", "--id", name, "--data-dir", dataDirectory(k),
                "--tick-milliseconds", "\(options.tickMilliseconds)",
                "--request-timeout-milliseconds", "\(options.requestTimeoutMilliseconds)", "--log-level",
                options.logLevel,
            ]
                + leaseArguments + (peerCertificates?.serveArguments(for: name) ?? [])
                + (options.clientTLS ? (try peerCertificates?.httpsArguments(for: name) ?? []) : [])
                + options.serveArguments,
            label: label)
        processes.withLockedValue { $0[name] = child }
        launched.withLockedValue { $0.append((label, child)) }
    }

    /// `--lease-reads` (and the drift allowance) if any client reads with `consistency=lease`.
    private var leaseArguments: [String] {
        guard options.readModes.contains(.lease) else { return [] }
        return ["--lease-reads"]
            + (options.leaseClockDriftMilliseconds.map { ["--lease-clock-drift-ms", "\($0)"] } ?? [])
    }

    /// SIGKILL node `k`'s process (the caller holds `processLock`).
    private func killLocked(_ k: Int) {
        guard let child = processes.withLockedValue({ $0[names[k]] }) else { return }
        killed.withLockedValue { _ = $0.insert(ObjectIdentifier(child)) }
        child.kill9()
    }

    private func kill(_ k: Int) {
        processLock.withLock { killLocked(k) }
    }

    /// Kills node `k` and starts it again on a new, empty data directory, as a spare in its own cluster file.
    private func freshRestart(_ k: Int) throws {
        try processLock.withLock {
            killLocked(k)
            generations.withLockedValue { $0[k] += 1 }
            try writeClusterFile(k, ownRoleSpare: true)
            try launch(k)
        }
        paused.withLockedValue { _ = $0.remove(names[k]) }
        dirty.withLockedValue { _ = $0.remove(names[k]) }
        changes.withLockedValue { $0.freshRestarts.append(names[k]) }
        log("\(names[k]): restarted on a fresh data directory (\(dataDirectory(k)))")
    }

    private func endpoint(_ k: Int) -> Endpoint { Endpoint(host: "127.0.0.1", port: httpPorts[k]) }

    // Every HTTP connection the harness makes goes through these two: plain HTTP today. HTTPS for clients (a TLS
    // context, the CA to trust) is to be added here and nowhere else.

    /// A client of node `k` alone.
    private func kvClient(_ k: Int, timeout: TimeAmount) -> KVClient {
        KVClient(endpoints: [endpoint(k)], timeout: timeout, tls: clientTLSContext)
    }

    /// A connection to node `k`'s HTTP port.
    private func connectHTTP(_ k: Int, timeout: TimeAmount = .milliseconds(300)) async throws -> HTTPConnection {
        let endpoint = endpoint(k)
        return try await HTTPConnection.connect(
            host: endpoint.host, port: endpoint.port, timeout: timeout, tls: clientTLSContext
        ).get()
    }

    /// The node that says it leads, in the highest term if several do (a node cut off or removed may not know yet
    /// that another leads).
    private func leader() async -> Int? {
        var best: (k: Int, term: UInt64)?
        for k in names.indices {
            if let status = await status(k, timeout: .milliseconds(300)), status.role == "leader",
                status.term > best?.term ?? 0
            {
                best = (k, status.term)
            }
        }
        return best?.k
    }

    /// The snapshot and read counters of node `k`'s current process, or nil if it does not answer.
    private func counters(_ k: Int) async -> (SnapshotCounts, ReadsAsked)? {
        let client = kvClient(k, timeout: .milliseconds(500))
        guard let response = try? await client.request(.GET, "/metrics"), response.status == 200 else { return nil }
        return (SnapshotCounts(prometheusText: response.text), ReadsAsked(prometheusText: response.text))
    }

    /// Adds node `k`'s current counters to its total (before its process is killed, and at the end).
    private func collectSnapshotCounts(_ k: Int) async {
        guard let (counts, reads) = await counters(k) else {
            log("\(names[k]): no /metrics answer: its snapshot and read counters since its last start are not counted")
            return
        }
        snapshotTotals.withLockedValue {
            $0[names[k], default: SnapshotCounts()] = $0[names[k], default: SnapshotCounts()] + counts
        }
        readTotals.withLockedValue { $0[names[k], default: ReadsAsked()] = $0[names[k], default: ReadsAsked()] + reads }
    }

    /// Polls every node's role while the run goes on: the node that leads in the highest term is where `.leader`
    /// and `.lease` reads go, and the fault log records every change of who says it leads (two at once: a deposed
    /// leader that does not know yet).
    private func watchLeader(while going: @Sendable () -> Bool) async {
        var last = ""
        while going() {
            let claims = await withTaskGroup(of: (Int, UInt64)?.self) { group in
                for k in names.indices {
                    group.addTask {
                        guard let status = await self.status(k, timeout: .milliseconds(200)), status.role == "leader"
                        else { return nil }
                        return (k, status.term)
                    }
                }
                var claims: [(k: Int, term: UInt64)] = []
                for await claim in group { if let claim { claims.append((claim.0, claim.1)) } }
                return claims.sorted { $0.k < $1.k }
            }
            let best = claims.max { $0.term < $1.term }
            believedLeader.withLockedValue { $0 = best?.k }
            let text = claims.map { "\(names[$0.k]) (term \($0.term))" }.joined(separator: ", ")
            if text != last {
                log("leading: \(text.isEmpty ? "none seen" : text)")
                last = text
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func status(_ k: Int, timeout: TimeAmount = .milliseconds(500)) async -> NodeStatusReport? {
        let client = kvClient(k, timeout: timeout)
        guard let response = try? await client.request(.GET, "/v1/status") else { return nil }
        return try? NodeStatusReport.decode(response)
    }

    /// Node `k`'s own view of the membership (`GET /v1/members`).
    private func membership(at k: Int) async -> MembershipReport? {
        let client = kvClient(k, timeout: .milliseconds(1000))
        guard let response = try? await client.request(.GET, "/v1/members") else { return nil }
        return MembershipReport.decode(response)
    }

    /// The leader and its view of the membership, which the harness takes as the membership from now on.
    private func leaderView() async -> (leader: Int, view: MembershipReport)? {
        guard let k = await leader(), let view = await membership(at: k) else { return nil }
        observe(view)
        return (k, view)
    }

    private func observe(_ view: MembershipReport) {
        let voters = view.members.filter { $0.role != "learner" }.count
        changes.withLockedValue {
            $0.mostVoters = max($0.mostVoters, voters)
            $0.fewestVoters = min($0.fewestVoters, voters)
        }
        members.withLockedValue { $0 = Set(view.members.map(\.name)) }
        dirty.withLockedValue { $0.formUnion(view.members.map(\.name)) }
    }

    /// Waits until each of `nodes` has applied the highest commit index any node reports now; returns those that
    /// have not within `seconds`.
    private func waitUntilCaughtUp(_ nodes: [Int], seconds: Double) async -> [String] {
        var target: UInt64 = 0
        for k in nodes { target = max(target, await status(k)?.commitIndex ?? 0) }
        let deadline = Date().addingTimeInterval(seconds)
        var lagging = nodes
        while !lagging.isEmpty {
            var still: [Int] = []
            for k in lagging where (await status(k)?.appliedIndex ?? 0) < target { still.append(k) }
            lagging = still
            if lagging.isEmpty || Date() >= deadline { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return lagging.map { names[$0] }
    }

    /// Waits until a leader's membership is committed and not joint; nil if none is within `seconds`.
    private func settleMembership(seconds: Double) async -> (leader: Int, view: MembershipReport)? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let found = await leaderView(), found.view.committed, !found.view.joint { return found }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    /// The leader's membership, and the members whose own view differs from it (each with both views), asked
    /// again for a few seconds while any differs.
    private func membershipDisagreements() async -> (MembershipReport?, [String]) {
        func describe(_ v: MembershipReport) -> String {
            "index \(v.index)\(v.joint ? " joint" : "") ["
                + v.members.map { "\($0.name):\($0.role)" }.joined(separator: " ")
                + "]"
        }
        var differing: [String] = []
        var latest: MembershipReport?
        for _ in 0..<20 {
            differing = []
            guard let view = await leaderView()?.view else {
                differing = ["no leader answers"]
                try? await Task.sleep(for: .milliseconds(250))
                continue
            }
            latest = view
            for k in names.indices where view.members.contains(where: { $0.name == names[k] }) {
                guard let mine = await membership(at: k) else {
                    differing.append("\(names[k]) does not answer")
                    continue
                }
                // Not the index: a node restored from a snapshot reports the snapshot's index as that of the
                // configuration in effect.
                if mine.joint != view.joint || mine.members.map(\.name) != view.members.map(\.name)
                    || mine.members.map(\.role) != view.members.map(\.role)
                {
                    differing.append("\(names[k]) has \(describe(mine)), the leader \(describe(view))")
                }
            }
            if differing.isEmpty { break }
            try? await Task.sleep(for: .milliseconds(250))
        }
        return (latest, differing)
    }

    // MARK: - The run

    public func run() async throws -> JepsenReport {
        for row in proxies { for proxy in row { try await proxy?.start() } }
        for k in names.indices { try start(k) }
        defer {
            for child in processes.withLockedValue({ Array($0.values) }) { child.kill9() }
        }
        // Wait for the first leader (bounded).
        let deadline = Date().addingTimeInterval(30)
        while await leader() == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        log(
            "cluster up: \(options.nodes) voters\(options.spares > 0 ? " and \(options.spares) spares" : ""), "
                + "leader \(await leader().map { names[$0] } ?? "none yet")")
        if options.spares > 0, let view = await leaderView()?.view {
            log("membership: " + view.members.map { "\($0.name):\($0.role)" }.joined(separator: " "))
        }

        let end = NIODeadline.now() + .nanoseconds(Int64(options.seconds * 1e9))
        let hardEnd = end + .nanoseconds(Int64(options.seconds * 1e9))
        planPending.withLockedValue { $0 = !options.membershipPlan.isEmpty }
        let going: @Sendable () -> Bool = { [self] in
            let now = NIODeadline.now()
            return now < end || (planPending.withLockedValue { $0 } && now < hardEnd)
        }
        var random = SplitMix64(seed: options.seed)
        let clientSeeds = (0..<options.clients).map { _ in random.next() }
        let nemesisSeed = random.next()
        let planSeed = random.next()
        let firstLeader = await leader()
        believedLeader.withLockedValue { $0 = firstLeader }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchLeader(while: going) }
            for c in 0..<options.clients {
                group.addTask { await self.client(c, seed: clientSeeds[c], while: going) }
            }
            group.addTask { await self.nemesis(seed: nemesisSeed, while: going) }
            if !options.membershipPlan.isEmpty {
                group.addTask { await self.runPlan(seed: planSeed, until: hardEnd) }
            }
        }
        log("faults stop: healing, resuming, restarting")
        await healAll()
        // The membership settles (a change under way commits or is replaced), then the lost-write check: final
        // reads of every key, through the leader first.
        let settled = await settleMembership(seconds: 30)
        if let settled {
            log(
                "membership settled: leader \(names[settled.leader]), "
                    + settled.view.members.map { "\($0.name):\($0.role)" }.joined(separator: " "))
        } else {
            log("the membership did not settle within 30 s")
        }
        let readOrder =
            settled.map { s in [s.leader] + names.indices.filter { $0 != s.leader } } ?? Array(names.indices)
        var finals: [String: String?] = [:]
        let finalDeadline = Date().addingTimeInterval(30)
        for key in keys {
            while Date() < finalDeadline {
                if let value = await finalRead(key, order: readOrder) {
                    finals[key] = value
                    break
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        // Every member must catch up with what the cluster committed (a node that fell behind the leader's log start
        // through a snapshot) before its counters are read; a removed node is no longer sent anything.
        let memberNodes =
            settled.map { s in names.indices.filter { k in s.view.members.contains { $0.name == names[k] } } }
            ?? Array(names.indices)
        let lagging = await waitUntilCaughtUp(memberNodes, seconds: 30)
        if !lagging.isEmpty { log("not caught up after 30 s: \(lagging.joined(separator: ", "))") }
        // The membership now (a change accepted before the faults stopped may have been completed since: a learner
        // promoted once it caught up), and whether every member has it.
        var finalView = settled?.view
        var disagreements: [String] = []
        if settled != nil, options.spares > 0 || changes.withLockedValue({ $0.requests > 0 }) {
            (finalView, disagreements) = await membershipDisagreements()
        }
        for k in names.indices { await collectSnapshotCounts(k) }
        // A process that is gone although the harness never killed it crashed.
        let processList = launched.withLockedValue { $0 }
        let killedSet = killed.withLockedValue { $0 }
        var crashes: [String] = []
        var nodeLogs: [String: [String]] = [:]
        let logDirectory = ProcessInfo.processInfo.environment["JEPSEN_NODE_LOGS"]
        for (label, child) in processList {
            nodeLogs[label] = Array(child.lines.suffix(40))
            if let logDirectory {
                // Every line of every process, for a run to study (`JEPSEN_NODE_LOGS=DIR`).
                try? child.lines.joined(separator: "\n").write(
                    toFile: logDirectory + "/\(label).log", atomically: true, encoding: .utf8)
            }
            if !child.isRunning && !killedSet.contains(ObjectIdentifier(child)) {
                crashes.append(
                    "\(label) exited with status \(child.process.terminationStatus): "
                        + child.lines.suffix(5).joined(separator: " | "))
            }
        }
        await stopProxies()
        let recorded = history.withLockedValue { $0 }
        let started = NIODeadline.now()
        let results = LinearizabilityChecker.check(recorded)
        let checkSeconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var report = JepsenReport(
            seed: options.seed, seconds: options.seconds, history: recorded, results: results,
            faults: faultCounts.withLockedValue { $0 }, reasons: reasons.withLockedValue { $0 },
            sessionRetries: retryCounts.withLockedValue { $0.retries },
            settledByRetry: retryCounts.withLockedValue { $0.settled },
            faultLog: faultLog.withLockedValue { $0 },
            finalValues: finals, checkSeconds: checkSeconds, snapshots: snapshotTotals.withLockedValue { $0 },
            lagging: lagging)
        report.membership = changes.withLockedValue { $0 }
        report.finalMembership = finalView
        report.membershipDisagreements = disagreements
        report.crashes = crashes
        report.nodeLogs = nodeLogs
        report.planDone = planDone.withLockedValue { $0 }
        report.finalValueProblems = Self.finalValueProblems(recorded, finals)
        report.reads = readCounts.withLockedValue { $0 }
        report.cutOffReads = cutOffReadCounts.withLockedValue { $0 }
        report.readsAsked = readTotals.withLockedValue { $0 }
        report.peerTLS = options.peerTLS
        report.clientTLS = options.clientTLS && clientTLSContext != nil
        report.peerConnections = proxies.joined().compactMap { $0?.connectionsSeen }.reduce(LinkConnections(), +)
        return report
    }

    /// Keys whose final value no write explains: one that nobody wrote (or that only failed writes wrote), or no
    /// value although a write of the key completed. (The linearizability check, which sees the final reads, is the
    /// precise one; this says it in plain words.)
    static func finalValueProblems(_ history: [HistoryOperation], _ finals: [String: String?]) -> [String] {
        var problems: [String] = []
        for (key, final) in finals.sorted(by: { $0.key < $1.key }) {
            var written: Set<String> = []
            var acknowledged = 0
            for op in history where op.key == key && (op.outcome == .ok || op.outcome == .unknown) {
                switch op.call {
                case .write(let v), .compareAndSet(_, let v):
                    written.insert(v)
                    if op.outcome == .ok { acknowledged += 1 }
                case .read: break
                }
            }
            switch final {
            case .none where acknowledged > 0:
                problems.append("\(key): no value at the end, after \(acknowledged) acknowledged writes")
            case .some(let value) where !written.contains(value):
                problems.append("\(key): \(value) at the end, which no write that may have taken effect wrote")
            default: break
            }
        }
        return problems
    }

    private var keys: [String] { (0..<options.keys).map { "r\($0)" } }

    private func stopProxies() async {
        for row in proxies { for proxy in row { await proxy?.stop() } }
    }

    // MARK: - Clients

    /// One client: a closed loop of random operations on random keys, writes each through a random node (member or
    /// not), reads where its read mode says, every invocation and outcome recorded.
    private func client(_ id: Int, seed: UInt64, while going: @Sendable () -> Bool) async {
        var random = SplitMix64(seed: seed)
        var counter = 0
        var lastSeen: [String: String] = [:]
        let mode: ReadMode = options.readModes.isEmpty ? .follower : options.readModes[id % options.readModes.count]
        var session: (id: UInt64, sequence: UInt64)?
        while going() {
            let key = keys[Int(random.next() % UInt64(keys.count))]
            var node = pickNode(&random)
            let roll = random.next() % 10
            counter += 1
            let call: HistoryOperation.Call
            if roll < 5 {
                call = .read
            } else if roll < 8 || lastSeen[key] == nil {
                call = .write("c\(id)-\(counter)")
            } else {
                call = .compareAndSet(expected: lastSeen[key] ?? "", new: "c\(id)-\(counter)")
            }
            var cutOff = false
            let leaderBefore = believedLeader.withLockedValue { $0 }
            if case .read = call {
                if id < options.readersCutOffWithIsolatedNode, let isolated = isolatedNode.withLockedValue({ $0 }) {
                    node = isolated
                    cutOff = true
                } else if mode != .follower, let leaderBefore {
                    node = leaderBefore
                }
            }
            let invoked = now()
            var outcome: HistoryOperation.Outcome
            if case .read = call {
                outcome = await perform(call, key: key, at: node, consistency: mode == .lease ? "lease" : nil)
            } else {
                if options.sessions && session == nil { session = await registerSession(&random) }
                if session != nil { session?.sequence += 1 }
                outcome = await write(call, key: key, at: node, session: session, &random)
            }
            let completed = now()
            history.withLockedValue {
                $0.append(
                    HistoryOperation(
                        client: id, key: key, call: call, outcome: outcome, invoked: invoked, completed: completed,
                        node: names[node]))
            }
            if case .read = call {
                let leaderAfter = believedLeader.withLockedValue { $0 }
                let atLeader = leaderBefore == node && leaderAfter == node
                let atFollower =
                    leaderBefore != nil && leaderAfter != nil && leaderBefore != node && leaderAfter != node
                if cutOff {
                    cutOffReadCounts.withLockedValue { $0.count(outcome, atLeader: atLeader, atFollower: atFollower) }
                } else {
                    readCounts.withLockedValue {
                        $0[mode, default: ReadCounts()].count(outcome, atLeader: atLeader, atFollower: atFollower)
                    }
                }
            }
            if case .read(let value?) = outcome { lastSeen[key] = value }
            if case .write(let value) = call, outcome == .ok { lastSeen[key] = value }
            if outcome == .failed || outcome == .unknown { try? await Task.sleep(for: .milliseconds(20)) }
        }
    }

    /// A node for the next operation: any node, or with spares, nine times in ten a member (as last seen) and
    /// else any node: a non-member that knows no leader holds an operation until the request deadline, then
    /// refuses it, and clients sending there all the time would do little else.
    private func pickNode(_ random: inout SplitMix64) -> Int {
        guard options.spares > 0, random.next() % 10 != 0 else { return Int(random.next() % UInt64(names.count)) }
        let current = members.withLockedValue { m in names.indices.filter { m.contains(names[$0]) } }
        guard !current.isEmpty else { return Int(random.next() % UInt64(names.count)) }
        return current[Int(random.next() % UInt64(current.count))]
    }

    /// A write, in the client's session if it has one: an attempt whose outcome is unknown is sent again, with the
    /// same sequence, at another node, until one answers with the result (the server applies the write once and
    /// answers every copy with the first result) or `sessionAttempts` are spent. After an unknown attempt, a refusal
    /// of a later one settles nothing (the first copy may still commit): the outcome stays unknown.
    private func write(
        _ call: HistoryOperation.Call, key: String, at node: Int, session: (id: UInt64, sequence: UInt64)?,
        _ random: inout SplitMix64
    ) async -> HistoryOperation.Outcome {
        guard let session else { return await perform(call, key: key, at: node) }
        let headers = KVClient.sessionHeaders(clientID: session.id, sequence: session.sequence)
        var outcome = await perform(call, key: key, at: node, headers: headers)
        guard outcome == .unknown else { return outcome }
        var attempts = 1
        while attempts < options.sessionAttempts {
            attempts += 1
            retryCounts.withLockedValue { $0.retries += 1 }
            try? await Task.sleep(for: .milliseconds(20))
            outcome = await perform(call, key: key, at: pickNode(&random), headers: headers)
            if outcome == .ok || outcome == .casFailed {
                retryCounts.withLockedValue { $0.settled += 1 }
                return outcome
            }
        }
        return .unknown
    }

    /// Registers a client session at any node (a few tries); nil if none answered (the client writes without one
    /// until the next write tries again).
    private func registerSession(_ random: inout SplitMix64) async -> (id: UInt64, sequence: UInt64)? {
        for _ in 0..<3 {
            let node = pickNode(&random)
            if let connection = try? await connectHTTP(node) {
                let response = try? await connection.execute(
                    method: .POST, path: "/v1/sessions", timeout: options.operationTimeout
                ).get()
                connection.close()
                if let reply = response.flatMap(SessionReply.decode) { return (reply.clientID, 0) }
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// One operation at `node` (a read with `?consistency=` if given, a write with `headers`), its reason counted.
    private func perform(
        _ call: HistoryOperation.Call, key: String, at node: Int, consistency: String? = nil,
        headers: [(String, String)] = []
    ) async -> HistoryOperation.Outcome {
        let member = members.withLockedValue { $0.contains(names[node]) }
        let (outcome, reason) = await attempt(
            call, key: key, at: node, consistency: consistency, headers: headers)
        if let reason { reasons.withLockedValue { $0[reason, default: 0] += 1 } }
        if !member {
            let what: String
            switch call {
            case .read: what = "read"
            case .write: what = "write"
            case .compareAndSet: what = "cas"
            }
            changes.withLockedValue { $0.nonMemberOutcomes["\(what) " + (reason ?? "completed"), default: 0] += 1 }
        }
        return outcome
    }

    /// One operation; the outcome, and for a failed or unknown one what the client saw.
    private func attempt(
        _ call: HistoryOperation.Call, key: String, at node: Int, consistency: String?,
        headers: [(String, String)] = []
    ) async -> (HistoryOperation.Outcome, String?) {
        let path = "/v1/kv/" + KVClient.percentEncode(Array(key.utf8))
        let connection: HTTPConnection
        do {
            connection = try await connectHTTP(node)
        } catch {
            return (.failed, "failed: not connected")  // never sent
        }
        defer { connection.close() }
        let response: HTTPResponse
        do {
            switch call {
            case .read:
                response = try await connection.execute(
                    method: .GET, path: path + (consistency.map { "?consistency=" + $0 } ?? ""),
                    timeout: options.operationTimeout
                ).get()
            case .write(let value):
                response = try await connection.execute(
                    method: .PUT, path: path, body: Array(value.utf8), headers: headers,
                    timeout: options.operationTimeout
                ).get()
            case .compareAndSet(let expected, let new):
                response = try await connection.execute(
                    method: .PUT, path: path + "?prev_value=" + KVClient.percentEncode(Array(expected.utf8)),
                    body: Array(new.utf8), headers: headers, timeout: options.operationTimeout
                ).get()
            }
        } catch {
            return (.unknown, "unknown: no answer in time")  // sent, and no answer: it may or may not have taken effect
        }
        switch (call, response.status) {
        case (.read, 200): return (.read(response.text), nil)
        case (.read, 404): return (.read(nil), nil)
        case (.write, 200), (.compareAndSet, 200): return (.ok, nil)
        case (.compareAndSet, 412): return (.casFailed, nil)
        // The server's contract: 4xx and 503 mean the command did not take effect and never will.
        case (_, 400..<500), (_, 503): return (.failed, "failed: HTTP \(response.status)")
        default: return (.unknown, "unknown: HTTP \(response.status)")  // 504 or another 5xx: not known
        }
    }

    private func finalRead(_ key: String, order: [Int]) async -> String?? {
        for node in order {
            let invoked = now()
            let outcome = await perform(.read, key: key, at: node)
            if case .read(let value) = outcome {
                history.withLockedValue {
                    $0.append(
                        HistoryOperation(
                            client: 1000, key: key, call: .read, outcome: outcome, invoked: invoked, completed: now(),
                            node: names[node]))
                }
                return .some(value)
            }
        }
        return nil
    }

    // MARK: - The nemesis

    private func nemesis(seed: UInt64, while going: @Sendable () -> Bool) async {
        var random = SplitMix64(seed: seed)
        func seconds(_ range: ClosedRange<Double>) -> Duration {
            .milliseconds(
                Int64(
                    (range.lowerBound + Double(random.next() % 1000) / 1000 * (range.upperBound - range.lowerBound))
                        * 1000))
        }
        while going() {
            try? await Task.sleep(for: seconds(options.quietSeconds))
            guard going(), !options.faults.isEmpty else { break }
            let kind = options.faults[Int(random.next() % UInt64(options.faults.count))]
            // Half the time the fault strikes the leader, where it hurts most.
            let leader = await leader()
            let strikeLeader = random.next() % 2 == 0 || options.alwaysStrikeLeader
            let victim = (strikeLeader ? leader : nil) ?? Int(random.next() % UInt64(names.count))
            faultCounts.withLockedValue { $0[kind.rawValue, default: 0] += 1 }
            if kind == .membership {
                // Half the time the change is made under another fault, struck first and healed after.
                let others = options.faults.filter { $0 != .membership }
                var heal: (@Sendable () async -> Void)?
                if !others.isEmpty && random.next() % 2 == 0 {
                    let other = others[Int(random.next() % UInt64(others.count))]
                    faultCounts.withLockedValue { $0[other.rawValue, default: 0] += 1 }
                    heal = await inject(other, victim: victim, leader: leader, random: &random)
                }
                await membershipFault(random: &random)
                if let heal {
                    try? await Task.sleep(for: seconds(options.faultSeconds))
                    await heal()
                }
            } else {
                let heal = await inject(kind, victim: victim, leader: leader, random: &random)
                try? await Task.sleep(for: seconds(options.faultSeconds))
                await heal()
            }
        }
    }

    /// Strikes a fault of `kind` (not `membership`) at `victim`; returns what heals it.
    private func inject(_ kind: FaultKind, victim: Int, leader: Int?, random: inout SplitMix64) async
        -> @Sendable () async -> Void
    {
        let name = names[victim]
        let role = victim == leader ? " (leader)" : ""
        switch kind {
        case .kill:
            await collectSnapshotCounts(victim)
            log("kill -9 \(name)\(role)")
            kill(victim)
            return { [self] in
                log("restart \(name)")
                do {
                    try start(victim)
                } catch {
                    log("\(name): cannot restart: \(error)")
                }
            }
        case .pause:
            log("SIGSTOP \(name)\(role)")
            processes.withLockedValue { $0[name] }?.signal(SIGSTOP)
            paused.withLockedValue { _ = $0.insert(name) }
            return { [self] in
                log("SIGCONT \(name)")
                processes.withLockedValue { $0[name] }?.signal(SIGCONT)
                paused.withLockedValue { _ = $0.remove(name) }
            }
        case .partition:
            let cut = partition(around: victim, random: &random)
            log("partition: \(cut.description)\(cut.shape == .isolated ? role : "")")
            for (i, j) in cut.links { proxies[i][j]?.setBlocked(true) }
            if cut.shape == .isolated { isolatedNode.withLockedValue { $0 = victim } }
            return { [self] in
                log("heal")
                isolatedNode.withLockedValue { $0 = nil }
                for row in proxies { for proxy in row { proxy?.setBlocked(false) } }
            }
        case .membership:
            return {}
        }
    }

    /// A random partition shape (of `options.partitions`) involving `node`; returns the directed links to cut.
    private func partition(around node: Int, random: inout SplitMix64) -> (
        shape: PartitionShape, description: String, links: [(Int, Int)]
    ) {
        let n = names.count
        let others = (0..<n).filter { $0 != node }
        let shapes = options.partitions.isEmpty ? PartitionShape.allCases : options.partitions
        let shape = shapes[Int(random.next() % UInt64(shapes.count))]
        switch shape {
        case .isolated:
            return (shape, "\(names[node]) isolated", others.flatMap { [(node, $0), ($0, node)] })
        case .halves:
            var shuffled = Array(0..<n)
            shuffled.shuffle(using: &random)
            let side = Set(shuffled.prefix(n / 2))
            let links = (0..<n).flatMap { a in
                (0..<n).filter { b in side.contains(a) != side.contains(b) }.map { (a, $0) }
            }
            return (
                shape,
                "halves \(side.sorted().map { names[$0] }) | \((0..<n).filter { !side.contains($0) }.map { names[$0] })",
                links
            )
        case .oneWay:
            if random.next() % 2 == 0 {
                return (shape, "\(names[node]) can send but not receive", others.map { ($0, node) })
            }
            return (shape, "\(names[node]) can receive but not send", others.map { (node, $0) })
        case .bridge:
            // A bridge: the others split in two sides that cannot talk; `node` talks to both.
            let left = Set(others.prefix(others.count / 2))
            let right = others.filter { !left.contains($0) }
            let links = left.flatMap { a in right.flatMap { b in [(a, b), (b, a)] } }
            return (
                shape,
                "bridge \(names[node]) between \(left.sorted().map { names[$0] }) and \(right.map { names[$0] })", links
            )
        }
    }

    private func healAll() async {
        isolatedNode.withLockedValue { $0 = nil }
        for row in proxies { for proxy in row { proxy?.setBlocked(false) } }
        for name in paused.withLockedValue({ Array($0) }) {
            processes.withLockedValue { $0[name] }?.signal(SIGCONT)
        }
        paused.withLockedValue { $0.removeAll() }
        for k in names.indices where !isRunning(k) {
            do {
                try start(k)
            } catch {
                log("\(names[k]): cannot restart: \(error)")
            }
        }
    }

    // MARK: - Membership changes

    /// What a membership request came to.
    private enum ChangeResult {
        case done(HTTPResponse)
        /// A definite no (4xx, 503, or not connected).
        case refused(String)
        /// 504, another 5xx, or no answer in time: the change may still happen.
        case unknown(String)
    }

    /// A random running node, to send a request through (a member or not: a follower forwards it to the leader,
    /// a node that knows no leader refuses it).
    private func anyRunningNode(_ random: inout SplitMix64) -> Int {
        let up = names.indices.filter { isRunning($0) }
        guard !up.isEmpty else { return Int(random.next() % UInt64(names.count)) }
        return up[Int(random.next() % UInt64(up.count))]
    }

    /// Sends one membership request through node `k`, logs and counts what came of it.
    private func changeRequest(
        _ what: String, _ method: HTTPMethod, _ path: String, body: [UInt8] = [], through k: Int
    ) async -> ChangeResult {
        let result: ChangeResult
        var message = ""
        do {
            let connection = try await connectHTTP(k)
            defer { connection.close() }
            do {
                let response = try await connection.execute(
                    method: method, path: path, body: body, headers: [("Content-Type", "application/json")],
                    timeout: options.membershipTimeout
                ).get()
                let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
                let code = object?["error"] as? String ?? "?"
                message = (object?["message"] as? String).map { ": " + String($0.prefix(200)) } ?? ""
                if response.status == 200 {
                    result = .done(response)
                } else if (400..<500).contains(response.status) || response.status == 503 {
                    result = .refused("HTTP \(response.status) \(code)")
                } else {
                    result = .unknown("HTTP \(response.status) \(code)")
                }
            } catch {
                result = .unknown("no answer in time")
            }
        } catch {
            result = .refused("not connected")
        }
        let op = what.split(separator: " ").first.map(String.init) ?? what
        switch result {
        case .done(let response):
            log("membership: \(what) through \(names[k]): done \(String(response.text.prefix(300)))")
        case .refused(let reason):
            changes.withLockedValue { $0.refused["\(op): \(reason)", default: 0] += 1 }
            log("membership: \(what) through \(names[k]): refused, \(reason)\(message)")
        case .unknown(let reason):
            changes.withLockedValue { $0.unknown["\(op): \(reason)", default: 0] += 1 }
            log("membership: \(what) through \(names[k]): outcome unknown, \(reason)\(message)")
        }
        return result
    }

    /// A random change of the membership, as the leader sees it now.
    private func membershipFault(random: inout SplitMix64) async {
        // One to three changes in a row, each chosen from the membership a leader has then.
        let count = 1 + Int(random.next() % 3)
        for _ in 0..<count { await membershipChange(random: &random) }
    }

    private func membershipChange(random: inout SplitMix64) async {
        guard let found = await leaderView() else {
            log("membership: no leader answers: no change")
            changes.withLockedValue { $0.refused["change: no leader to read the membership from", default: 0] += 1 }
            return
        }
        let (leader, view) = found
        let voters = view.members.filter { $0.role != "learner" }.map(\.name)
        let others = names.filter { !voters.contains($0) }
        func pick(_ list: [String]) -> String { list[Int(random.next() % UInt64(list.count))] }
        // A third of the time the voter to remove is the leader (it hands over once its removal commits).
        func pickVoter() -> String {
            random.next() % 3 == 0 && voters.contains(names[leader]) ? names[leader] : pick(voters)
        }
        var actions = ["transfer"]
        if !others.isEmpty { actions += ["add", "replace"] }
        if voters.count > 3 { actions.append("remove") }
        switch pick(actions) {
        case "add":
            _ = await add(pick(others), view: view, random: &random)
        case "remove":
            await remove(pickVoter(), random: &random)
        case "replace":
            let new = pick(others)
            let old = pickVoter()
            log("membership: replace \(old) with \(new)")
            if await add(new, view: view, random: &random) { await remove(old, random: &random) }
        default:
            let candidates = voters.filter { $0 != names[leader] }
            let target = random.next() % 2 == 0 && !candidates.isEmpty ? pick(candidates) : nil
            let body = target.map { Array("{\"to\":\"\($0)\"}".utf8) } ?? []
            let through = anyRunningNode(&random)
            let result = await changeRequest(
                "transfer from \(names[leader]) to \(target ?? "any")", .POST, "/v1/leader/transfer", body: body,
                through: through)
            if case .done(let response) = result {
                let to = LeaderTransferReply.decode(response)?.leader ?? "?"
                changes.withLockedValue { $0.transfers.append("\(names[leader]) -> \(to)") }
            }
        }
        _ = await leaderView()
    }

    /// Adds node `name` as a voter: first brings it up (on a fresh data directory if it may hold an old
    /// membership and is not a member: only once its removal is committed). Returns whether the change was done.
    private func add(_ name: String, view: MembershipReport, random: inout SplitMix64) async -> Bool {
        guard let k = names.firstIndex(of: name) else { return false }
        let isMember = view.members.contains { $0.name == name }
        if !isMember && dirty.withLockedValue({ $0.contains(name) }) {
            guard view.committed && !view.joint else {
                log("membership: add \(name): not while the membership is changing (its removal may not be final)")
                changes.withLockedValue {
                    $0.refused["add: the harness waits for the membership to settle", default: 0] += 1
                }
                return false
            }
            if isRunning(k) { await collectSnapshotCounts(k) }
            do {
                try freshRestart(k)
            } catch {
                log("\(name): cannot restart on a fresh data directory: \(error)")
                return false
            }
        } else if !isRunning(k) {
            do {
                try start(k)
            } catch {
                log("\(name): cannot start: \(error)")
            }
        }
        let body =
            "{\"name\":\"\(name)\",\"ip\":\"127.0.0.1\",\"port\":\(peerPorts[k]),\"http_port\":\(httpPorts[k]),"
            + "\"role\":\"voter\"}"
        let result = await changeRequest(
            "add \(name) as a voter", .POST, "/v1/members", body: Array(body.utf8), through: anyRunningNode(&random))
        if case .refused = result { return false }
        // Done, or perhaps done: from now on its data directory may hold a membership.
        dirty.withLockedValue { _ = $0.insert(name) }
        guard case .done(let response) = result else { return false }
        changes.withLockedValue { $0.added.append(name) }
        if let after = MembershipReport.decode(response) { observe(after) }
        return true
    }

    /// Removes member `name` (its process keeps running).
    private func remove(_ name: String, random: inout SplitMix64) async {
        let result = await changeRequest(
            "remove \(name)", .DELETE, "/v1/members/" + KVClient.percentEncode(Array(name.utf8)),
            through: anyRunningNode(&random))
        guard case .done(let response) = result else { return }
        changes.withLockedValue { $0.removed.append(name) }
        if let after = MembershipReport.decode(response) { observe(after) }
    }

    /// Makes `options.membershipPlan`'s changes in order, each retried until a leader's membership shows it done.
    private func runPlan(seed: UInt64, until hardEnd: NIODeadline) async {
        var random = SplitMix64(seed: seed)
        defer { planPending.withLockedValue { $0 = false } }
        for step in options.membershipPlan {
            try? await Task.sleep(for: .milliseconds(Int64(options.planGapSeconds * 1000)))
            let deadline = min(hardEnd, NIODeadline.now() + .nanoseconds(Int64(options.planStepSeconds * 1e9)))
            var done = false
            while !done && NIODeadline.now() < deadline {
                if let view = await leaderView()?.view {
                    switch step {
                    case .add(let name):
                        if view.members.contains(where: { $0.name == name && $0.role == "voter" }) && view.committed {
                            done = true
                        } else {
                            _ = await add(name, view: view, random: &random)
                        }
                    case .remove(let name):
                        if !view.members.contains(where: { $0.name == name }) && view.committed {
                            done = true
                        } else {
                            await remove(name, random: &random)
                        }
                    }
                }
                if !done { try? await Task.sleep(for: .milliseconds(300)) }
            }
            log("plan: \(step): \(done ? "done" : "NOT DONE in time")")
            guard done else { return }
            planDone.withLockedValue { $0.append(step) }
        }
    }
}
