import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessTesting
import RaftCore
import RaftKVClient

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
}

/// How a run goes.
public struct JepsenOptions: Sendable {
    public var nodes = 3
    public var seconds = 30.0
    public var seed: UInt64 = 1
    public var clients = 6
    public var keys = 3
    public var faults: [FaultKind] = FaultKind.allCases
    /// Between two faults, and how long each lasts, in seconds (each drawn uniformly from the range).
    public var quietSeconds = 1.0...3.0
    public var faultSeconds = 1.0...4.0
    /// The client's deadline for one operation; past it the outcome is unknown.
    public var operationTimeout = TimeAmount.milliseconds(1500)
    /// Milliseconds per Raft tick on the nodes, and their request deadline.
    public var tickMilliseconds = 20
    public var requestTimeoutMilliseconds = 1000
    /// Extra `raft-lite serve` arguments (the broken-build test passes `--unsafe-local-reads`).
    public var serveArguments: [String] = []
    /// Where the `raft-lite` binary is.
    public var executable = raftLiteExecutable()
    /// Print faults and progress as they happen.
    public var verbose = false

    public init() {}
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
    public var faultLog: [String]
    public var finalValues: [String: String?]
    public var checkSeconds: Double
    /// Per node, the snapshots its processes started and installed, summed over its restarts (read from each
    /// process's `/metrics` just before it was killed and at the end of the run; nil for a node never read).
    public var snapshots: [String: SnapshotCounts] = [:]
    /// The nodes that had not applied everything committed 30 s after the faults stopped.
    public var lagging: [String] = []

    public var snapshotsStarted: Int { snapshots.values.map(\.started).reduce(0, +) }
    public var snapshotsInstalled: Int { snapshots.values.map(\.installed).reduce(0, +) }

    public var linearizable: Bool { results.allSatisfy(\.linearizable) }
    public var operations: Int { history.count }
    public func count(_ predicate: (HistoryOperation.Outcome) -> Bool) -> Int {
        history.filter { predicate($0.outcome) }.count
    }
    public var unknown: Int { count { $0 == .unknown } }
    public var failed: Int { count { $0 == .failed } }

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
                + "; snapshots: \(snapshotsStarted) started, \(snapshotsInstalled) installed"
                + (snapshots.isEmpty
                    ? ""
                    : " ("
                        + snapshots.sorted { $0.key < $1.key }.map {
                            "\($0.key) \($0.value.started)/\($0.value.installed)"
                        }
                        .joined(separator: ", ") + ")")
        ]
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

    /// The value of the first sample named `name` (with any labels) in Prometheus text.
    public static func sample(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard line.prefix(while: { $0 != " " && $0 != "{" }) == name, let last = line.split(separator: " ").last
            else { continue }
            return Double(last)
        }
        return nil
    }

    static func + (a: Self, b: Self) -> Self {
        Self(started: a.started + b.started, installed: a.installed + b.installed)
    }
}

/// A Jepsen-style test: a cluster of real `raft-lite serve` processes behind TCP proxies, concurrent clients doing
/// reads, writes and compare-and-sets over HTTP, and a nemesis that kills, pauses and partitions nodes; then a
/// linearizability check of everything the clients saw.
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
    private let paused = NIOLockedValueBox<Set<String>>([])
    private let history = NIOLockedValueBox<[HistoryOperation]>([])
    private let faultLog = NIOLockedValueBox<[String]>([])
    private let faultCounts = NIOLockedValueBox<[String: Int]>([:])
    private let reasons = NIOLockedValueBox<[String: Int]>([:])
    /// Snapshot counters of processes that were killed, summed per node.
    private let snapshotTotals = NIOLockedValueBox<[String: SnapshotCounts]>([:])
    private let clock = NIODeadline.now()

    public init(options: JepsenOptions) throws {
        self.options = options
        names = (0..<options.nodes).map { "n\($0)" }
        let ports = try ServerCluster.freePorts(2 * options.nodes + options.nodes * (options.nodes - 1))
        peerPorts = Array(ports[0..<options.nodes])
        httpPorts = Array(ports[options.nodes..<(2 * options.nodes)])
        var proxyPorts = Array(ports[(2 * options.nodes)...])
        proxies = (0..<options.nodes).map { i in
            (0..<options.nodes).map { j in
                i == j ? nil : LinkProxy(listenPort: proxyPorts.removeFirst(), targetPort: peerPorts[j])
            }
        }
        // Each node has a file of its own: itself at its real address, every other node behind the proxy of the link.
        for i in 0..<options.nodes {
            let entries = (0..<options.nodes).map { j in
                let port = i == j ? peerPorts[j] : (proxies[i][j]?.listenPort ?? 0)
                return "\"\(names[j])\": {\"ip\": \"127.0.0.1\", \"port\": \(port), \"http_port\": \(httpPorts[j])}"
            }
            try ("{" + entries.joined(separator: ", ") + "}").write(
                toFile: scratch.path + "/\(names[i]).json", atomically: true, encoding: .utf8)
        }
    }

    private func now() -> Int64 { (NIODeadline.now() - clock).nanoseconds }

    private func log(_ line: String) {
        let stamped = String(format: "%8.3f s  ", Double(now()) / 1e9) + line
        faultLog.withLockedValue { $0.append(stamped) }
        if options.verbose { print("jepsen: " + stamped) }
    }

    // MARK: - Nodes

    private func start(_ k: Int) throws {
        let name = names[k]
        let child = try ChildProcess(
            options.executable,
            [
                "serve", "--config", scratch.path + "/\(name).json", "--id", name, "--data-dir",
                scratch.path + "/" + name,
                "--tick-milliseconds", "\(options.tickMilliseconds)",
                "--request-timeout-milliseconds", "\(options.requestTimeoutMilliseconds)", "--log-level", "warning",
            ]
                + options.serveArguments,
            label: name)
        processes.withLockedValue { $0[name] = child }
    }

    private func endpoint(_ k: Int) -> Endpoint { Endpoint(host: "127.0.0.1", port: httpPorts[k]) }

    private func leader() async -> Int? {
        for k in names.indices {
            let client = KVClient(endpoints: [endpoint(k)], timeout: .milliseconds(300))
            if let response = try? await client.request(.GET, "/v1/status"),
                let status = try? NodeStatusReport.decode(response), status.role == "leader"
            {
                return k
            }
        }
        return nil
    }

    /// The snapshot counters of node `k`'s current process, or nil if it does not answer.
    private func snapshotCounts(_ k: Int) async -> SnapshotCounts? {
        let client = KVClient(endpoints: [endpoint(k)], timeout: .milliseconds(500))
        guard let response = try? await client.request(.GET, "/metrics"), response.status == 200 else { return nil }
        return SnapshotCounts(prometheusText: response.text)
    }

    /// Adds node `k`'s current counters to its total (before its process is killed, and at the end).
    private func collectSnapshotCounts(_ k: Int) async {
        guard let counts = await snapshotCounts(k) else {
            log("\(names[k]): no /metrics answer: its snapshot counters since its last start are not counted")
            return
        }
        snapshotTotals.withLockedValue {
            $0[names[k], default: SnapshotCounts()] = $0[names[k], default: SnapshotCounts()] + counts
        }
    }

    private func status(_ k: Int) async -> NodeStatusReport? {
        let client = KVClient(endpoints: [endpoint(k)], timeout: .milliseconds(500))
        guard let response = try? await client.request(.GET, "/v1/status") else { return nil }
        return try? NodeStatusReport.decode(response)
    }

    /// Waits until every node has applied the highest commit index any node reports now; returns those that have
    /// not within `seconds`.
    private func waitUntilCaughtUp(seconds: Double) async -> [String] {
        var target: UInt64 = 0
        for k in names.indices { target = max(target, await status(k)?.commitIndex ?? 0) }
        let deadline = Date().addingTimeInterval(seconds)
        var lagging = names
        while !lagging.isEmpty {
            var still: [String] = []
            for k in names.indices where lagging.contains(names[k]) {
                if (await status(k)?.appliedIndex ?? 0) < target { still.append(names[k]) }
            }
            lagging = still
            if lagging.isEmpty || Date() >= deadline { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return lagging
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
        log("cluster up: \(names.count) nodes, leader \(await leader().map { names[$0] } ?? "none yet")")

        let end = NIODeadline.now() + .nanoseconds(Int64(options.seconds * 1e9))
        var random = SplitMix64(seed: options.seed)
        let clientSeeds = (0..<options.clients).map { _ in random.next() }
        let nemesisSeed = random.next()
        await withTaskGroup(of: Void.self) { group in
            for c in 0..<options.clients {
                group.addTask { await self.client(c, seed: clientSeeds[c], until: end) }
            }
            group.addTask { await self.nemesis(seed: nemesisSeed, until: end) }
        }
        log("faults stop: healing, resuming, restarting")
        await healAll()
        // Final reads of every key, once a leader is back: the lost-write check.
        var finals: [String: String?] = [:]
        let finalDeadline = Date().addingTimeInterval(30)
        for key in keys {
            while Date() < finalDeadline {
                if let value = await finalRead(key) {
                    finals[key] = value
                    break
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        // Every node must catch up with what the cluster committed (a node that fell behind the leader's log start
        // through a snapshot) before its counters are read.
        let lagging = await waitUntilCaughtUp(seconds: 30)
        if !lagging.isEmpty { log("not caught up after 30 s: \(lagging.joined(separator: ", "))") }
        for k in names.indices { await collectSnapshotCounts(k) }
        await stopProxies()
        let recorded = history.withLockedValue { $0 }
        let started = NIODeadline.now()
        let results = LinearizabilityChecker.check(recorded)
        let checkSeconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        return JepsenReport(
            seed: options.seed, seconds: options.seconds, history: recorded, results: results,
            faults: faultCounts.withLockedValue { $0 }, reasons: reasons.withLockedValue { $0 },
            faultLog: faultLog.withLockedValue { $0 },
            finalValues: finals, checkSeconds: checkSeconds, snapshots: snapshotTotals.withLockedValue { $0 },
            lagging: lagging)
    }

    private var keys: [String] { (0..<options.keys).map { "r\($0)" } }

    private func stopProxies() async {
        for row in proxies { for proxy in row { await proxy?.stop() } }
    }

    // MARK: - Clients

    /// One client: a closed loop of random operations on random keys, each through a random node, every invocation
    /// and outcome recorded.
    private func client(_ id: Int, seed: UInt64, until end: NIODeadline) async {
        var random = SplitMix64(seed: seed)
        var counter = 0
        var lastSeen: [String: String] = [:]
        while NIODeadline.now() < end {
            let key = keys[Int(random.next() % UInt64(keys.count))]
            let node = Int(random.next() % UInt64(names.count))
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
            let invoked = now()
            let outcome = await perform(call, key: key, at: node)
            let completed = now()
            history.withLockedValue {
                $0.append(
                    HistoryOperation(
                        client: id, key: key, call: call, outcome: outcome, invoked: invoked, completed: completed))
            }
            if case .read(let value?) = outcome { lastSeen[key] = value }
            if case .write(let value) = call, outcome == .ok { lastSeen[key] = value }
            if outcome == .failed || outcome == .unknown { try? await Task.sleep(for: .milliseconds(20)) }
        }
    }

    private func perform(_ call: HistoryOperation.Call, key: String, at node: Int) async -> HistoryOperation.Outcome {
        let (outcome, reason) = await attempt(call, key: key, at: node)
        if let reason { reasons.withLockedValue { $0[reason, default: 0] += 1 } }
        return outcome
    }

    /// One operation; the outcome, and for a failed or unknown one what the client saw.
    private func attempt(_ call: HistoryOperation.Call, key: String, at node: Int) async
        -> (HistoryOperation.Outcome, String?)
    {
        let path = "/v1/kv/" + KVClient.percentEncode(Array(key.utf8))
        let connection: HTTPConnection
        do {
            connection = try await HTTPConnection.connect(
                host: "127.0.0.1", port: httpPorts[node], timeout: .milliseconds(300)
            ).get()
        } catch {
            return (.failed, "failed: not connected")  // never sent
        }
        defer { connection.close() }
        let response: HTTPResponse
        do {
            switch call {
            case .read:
                response = try await connection.execute(method: .GET, path: path, timeout: options.operationTimeout)
                    .get()
            case .write(let value):
                response = try await connection.execute(
                    method: .PUT, path: path, body: Array(value.utf8), timeout: options.operationTimeout
                ).get()
            case .compareAndSet(let expected, let new):
                response = try await connection.execute(
                    method: .PUT, path: path + "?prev_value=" + KVClient.percentEncode(Array(expected.utf8)),
                    body: Array(new.utf8), timeout: options.operationTimeout
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

    private func finalRead(_ key: String) async -> String?? {
        for node in names.indices {
            let invoked = now()
            let outcome = await perform(.read, key: key, at: node)
            if case .read(let value) = outcome {
                history.withLockedValue {
                    $0.append(
                        HistoryOperation(
                            client: 1000, key: key, call: .read, outcome: outcome, invoked: invoked, completed: now()))
                }
                return .some(value)
            }
        }
        return nil
    }

    // MARK: - The nemesis

    private func nemesis(seed: UInt64, until end: NIODeadline) async {
        var random = SplitMix64(seed: seed)
        func seconds(_ range: ClosedRange<Double>) -> Duration {
            .milliseconds(
                Int64(
                    (range.lowerBound + Double(random.next() % 1000) / 1000 * (range.upperBound - range.lowerBound))
                        * 1000))
        }
        while NIODeadline.now() < end {
            try? await Task.sleep(for: seconds(options.quietSeconds))
            guard NIODeadline.now() < end, !options.faults.isEmpty else { break }
            let kind = options.faults[Int(random.next() % UInt64(options.faults.count))]
            // Half the time the fault strikes the leader, where it hurts most.
            let leader = await leader()
            let victim = (random.next() % 2 == 0 ? leader : nil) ?? Int(random.next() % UInt64(names.count))
            faultCounts.withLockedValue { $0[kind.rawValue, default: 0] += 1 }
            switch kind {
            case .kill:
                await collectSnapshotCounts(victim)
                log("kill -9 \(names[victim])\(victim == leader ? " (leader)" : "")")
                processes.withLockedValue { $0[names[victim]] }?.kill9()
                try? await Task.sleep(for: seconds(options.faultSeconds))
                log("restart \(names[victim])")
                try? start(victim)
            case .pause:
                log("SIGSTOP \(names[victim])\(victim == leader ? " (leader)" : "")")
                processes.withLockedValue { $0[names[victim]] }?.signal(SIGSTOP)
                paused.withLockedValue { _ = $0.insert(names[victim]) }
                try? await Task.sleep(for: seconds(options.faultSeconds))
                log("SIGCONT \(names[victim])")
                processes.withLockedValue { $0[names[victim]] }?.signal(SIGCONT)
                paused.withLockedValue { _ = $0.remove(names[victim]) }
            case .partition:
                let cut = partition(around: victim, random: &random)
                log("partition: \(cut.description)")
                for (i, j) in cut.links { proxies[i][j]?.setBlocked(true) }
                try? await Task.sleep(for: seconds(options.faultSeconds))
                log("heal")
                for row in proxies { for proxy in row { proxy?.setBlocked(false) } }
            }
        }
    }

    /// A random partition shape involving `node`; returns the directed links to cut.
    private func partition(around node: Int, random: inout SplitMix64) -> (description: String, links: [(Int, Int)]) {
        let n = names.count
        let others = (0..<n).filter { $0 != node }
        switch random.next() % 4 {
        case 0:
            return ("\(names[node]) isolated", others.flatMap { [(node, $0), ($0, node)] })
        case 1:
            var shuffled = Array(0..<n)
            shuffled.shuffle(using: &random)
            let side = Set(shuffled.prefix(n / 2))
            let links = (0..<n).flatMap { a in
                (0..<n).filter { b in side.contains(a) != side.contains(b) }.map { (a, $0) }
            }
            return (
                "halves \(side.sorted().map { names[$0] }) | \((0..<n).filter { !side.contains($0) }.map { names[$0] })",
                links
            )
        case 2:
            if random.next() % 2 == 0 {
                return ("\(names[node]) can send but not receive", others.map { ($0, node) })
            }
            return ("\(names[node]) can receive but not send", others.map { (node, $0) })
        default:
            // A bridge: the others split in two sides that cannot talk; `node` talks to both.
            let left = Set(others.prefix(others.count / 2))
            let right = others.filter { !left.contains($0) }
            let links = left.flatMap { a in right.flatMap { b in [(a, b), (b, a)] } }
            return (
                "bridge \(names[node]) between \(left.sorted().map { names[$0] }) and \(right.map { names[$0] })", links
            )
        }
    }

    private func healAll() async {
        for row in proxies { for proxy in row { proxy?.setBlocked(false) } }
        for name in paused.withLockedValue({ Array($0) }) {
            processes.withLockedValue { $0[name] }?.signal(SIGCONT)
        }
        paused.withLockedValue { $0.removeAll() }
        for (k, name) in names.enumerated() where processes.withLockedValue({ $0[name]?.isRunning }) != true {
            try? start(k)
        }
    }
}
