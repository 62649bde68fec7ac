import Foundation
import NIOCore
import NIOHTTP1
import ProcessTesting
import RaftKVClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What a set of writers sent and had acknowledged. Writer `w` of `n` owns the keys `k` with `k % n == w` and
/// writes them in turn with its own increasing sequence numbers, so for every key the value the store holds must
/// be the last acknowledged one or a later attempt (whose outcome the writer did not learn) — never older, never
/// another.
struct WriteLedger: Sendable {
    /// key → the sequence number of its last acknowledged PUT.
    var acknowledged: [Int: Int] = [:]
    /// key → the sequence number of its last PUT sent (acknowledged or not).
    var attempted: [Int: Int] = [:]
    var nextSequence = 0
    var acknowledgedCount = 0
    var failures = 0
    var failureKinds: [String: Int] = [:]

    mutating func merge(_ other: WriteLedger) {
        acknowledged.merge(other.acknowledged) { max($0, $1) }
        attempted.merge(other.attempted) { max($0, $1) }
        acknowledgedCount += other.acknowledgedCount
        failures += other.failures
        failureKinds.merge(other.failureKinds, uniquingKeysWith: +)
    }
}

/// Real `raft-lite serve` processes with snapshots: a follower far behind catches up through a snapshot, and
/// SIGKILL lands while a snapshot is written or while one is received; nothing acknowledged is lost.
@Suite(.serialized, .clusterSlot) struct SnapshotProcessTests {
    static let environment = ProcessInfo.processInfo.environment

    static func key(_ k: Int) -> String { "k\(k)" }

    static func value(_ sequence: Int, bytes: Int) -> [UInt8] {
        let head = Array("\(sequence);".utf8)
        return head + [UInt8](repeating: UInt8(ascii: "x"), count: max(0, bytes - head.count))
    }

    static func sequence(of value: [UInt8]) -> Int? {
        guard let end = value.firstIndex(of: UInt8(ascii: ";")) else { return nil }
        return Int(String(decoding: value[..<end], as: UTF8.self))
    }

    // MARK: - Writers

    /// `connections` writers, each on its own keep-alive connection to `port` with one PUT in flight, over `keys`
    /// keys; until `total` writes are acknowledged (nil: until cancelled), at most `deadline`. Continues the
    /// ledgers given (one per writer).
    static func write(
        port: Int, keys: Int, valueBytes: Int, total: Int?, ledgers: [WriteLedger], deadline: Date
    ) async -> [WriteLedger] {
        let writers = ledgers.count
        return await withTaskGroup(of: (Int, WriteLedger).self) { group in
            for w in 0..<writers {
                let owned = (keys - w + writers - 1) / writers
                let quota = total.map { $0 / writers + (w < $0 % writers ? 1 : 0) }
                let initial = ledgers[w]
                group.addTask {
                    var ledger = initial
                    let target = quota.map { ledger.acknowledgedCount + $0 }
                    var connection: HTTPConnection?
                    while !Task.isCancelled && Date() < deadline
                        && target.map({ ledger.acknowledgedCount < $0 }) != false
                    {
                        if connection == nil {
                            connection = try? await HTTPConnection.connect(
                                host: "127.0.0.1", port: port, timeout: .milliseconds(500)
                            ).get()
                            if connection == nil {
                                try? await Task.sleep(for: .milliseconds(20))
                                continue
                            }
                        }
                        guard let open = connection else { continue }
                        let sequence = ledger.nextSequence
                        ledger.nextSequence += 1
                        let k = w + writers * (sequence % owned)
                        ledger.attempted[k] = sequence
                        let response = try? await open.execute(
                            method: .PUT, path: "/v1/kv/" + key(k), body: value(sequence, bytes: valueBytes),
                            timeout: .seconds(10)
                        ).get()
                        if response?.status == 200 {
                            ledger.acknowledged[k] = sequence
                            ledger.acknowledgedCount += 1
                        } else {
                            ledger.failures += 1
                            ledger.failureKinds[response.map { "HTTP \($0.status)" } ?? "no answer", default: 0] += 1
                            open.close()
                            connection = nil
                            try? await Task.sleep(for: .milliseconds(20))
                        }
                    }
                    connection?.close()
                    return (w, ledger)
                }
            }
            var out = ledgers
            for await (w, ledger) in group { out[w] = ledger }
            return out
        }
    }

    static func merged(_ ledgers: [WriteLedger]) -> WriteLedger {
        var all = WriteLedger()
        for ledger in ledgers { all.merge(ledger) }
        return all
    }

    // MARK: - Reads

    /// Every key's value on the node at `port` (nil: not found), read with `connections` concurrent connections.
    static func readAll(port: Int, keys: Int, serializable: Bool, connections: Int = 16) async throws -> [Int: [UInt8]?]
    {
        let suffix = serializable ? "?consistency=serializable" : ""
        return try await withThrowingTaskGroup(of: [Int: [UInt8]?].self) { group in
            for c in 0..<connections {
                group.addTask {
                    var out: [Int: [UInt8]?] = [:]
                    var connection = try await HTTPConnection.connect(host: "127.0.0.1", port: port).get()
                    defer { connection.close() }
                    var k = c
                    var tries = 0
                    while k < keys {
                        let response: HTTPResponse
                        do {
                            response = try await connection.execute(
                                method: .GET, path: "/v1/kv/" + key(k) + suffix, timeout: .seconds(10)
                            ).get()
                        } catch {
                            tries += 1
                            if tries > 5 { throw error }
                            connection = try await HTTPConnection.connect(host: "127.0.0.1", port: port).get()
                            continue
                        }
                        switch response.status {
                        case 200: out[k] = .some(response.body)
                        case 404: out[k] = .some(nil)
                        default:
                            throw HTTPClientError(
                                .unexpectedResponse, "GET \(key(k)): HTTP \(response.status) \(response.text)")
                        }
                        k += connections
                    }
                    return out
                }
            }
            var all: [Int: [UInt8]?] = [:]
            for try await part in group { all.merge(part) { a, _ in a } }
            return all
        }
    }

    /// What is wrong with `values` given what was written: an acknowledged write missing or overwritten by an
    /// older one, a value nobody wrote. Empty when all is well.
    static func problems(_ values: [Int: [UInt8]?], keys: Int, ledger: WriteLedger) -> [String] {
        var problems: [String] = []
        for k in 0..<keys {
            let stored = values[k] ?? nil
            let seen = stored.flatMap(sequence(of:))
            if let acked = ledger.acknowledged[k] {
                guard let seen, let attempted = ledger.attempted[k], seen >= acked, seen <= attempted else {
                    problems.append(
                        "\(key(k)): acknowledged \(acked), last attempted \(ledger.attempted[k] ?? -1), "
                            + "stored \(stored.map { String(decoding: $0.prefix(20), as: UTF8.self) } ?? "nothing")")
                    continue
                }
            } else if let stored {
                if seen == nil || seen.map({ $0 > (ledger.attempted[k] ?? -1) }) == true {
                    problems.append(
                        "\(key(k)): stored \(String(decoding: stored.prefix(20), as: UTF8.self)), never acknowledged")
                }
            }
        }
        return problems
    }

    // MARK: - Nodes

    static func client(_ cluster: ServerCluster, _ name: String, timeout: TimeAmount = .seconds(5)) -> KVClient {
        KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: cluster.httpPort(name))], timeout: timeout)
    }

    /// The value of a sample (counter or gauge) in Prometheus text: the first line of that name, any labels.
    static func metric(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let head = line.prefix { $0 != " " && $0 != "{" }
            guard head == name, let last = line.split(separator: " ").last else { continue }
            return Double(last)
        }
        return nil
    }

    static func metric(_ cluster: ServerCluster, _ node: String, _ name: String) async -> Double? {
        guard let response = try? await client(cluster, node).request(.GET, "/metrics"), response.status == 200 else {
            return nil
        }
        return metric(response.text, name)
    }

    static func status(_ cluster: ServerCluster, _ node: String) async -> NodeStatusReport? {
        try? await client(cluster, node).status(at: Endpoint(host: "127.0.0.1", port: cluster.httpPort(node)))
    }

    static func snapshotFiles(_ cluster: ServerCluster, _ node: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: cluster.scratch.path + "/" + node + "/snapshots")) ?? []
    }

    /// Polls `node`'s snapshots directory until a file matching `isTarget` appears, then SIGKILLs the node at once.
    /// Returns the file names found there after the kill (if one still matches, the kill landed while that file was
    /// being written), or nil if no such file appeared in `seconds`.
    static func killWhenFileAppears(
        _ cluster: ServerCluster, _ node: String, seconds: Double, where isTarget: (String) -> Bool
    ) async -> [String]? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if snapshotFiles(cluster, node).contains(where: isTarget) {
                cluster.kill(node)
                return snapshotFiles(cluster, node)
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return nil
    }

    /// The last lines of a node's output, to print when something went wrong.
    static func tail(_ cluster: ServerCluster, _ node: String, _ count: Int = 40) -> String {
        (cluster.processes[node]?.lines.suffix(count) ?? []).map { "  \(node): " + $0 }.joined(separator: "\n")
    }

    /// Waits until `node` answers its status and has applied at least `index`.
    static func waitUntilApplied(_ cluster: ServerCluster, _ node: String, _ index: UInt64, seconds: Double) async
        -> Bool
    {
        await eventually(seconds) { (await status(cluster, node)?.appliedIndex ?? 0) >= index }
    }

    static func committed(_ cluster: ServerCluster, _ node: String) async -> UInt64 {
        await status(cluster, node)?.commitIndex ?? 0
    }

    // MARK: - Tests

    /// The check the tests below rely on names a lost acknowledged write, a value older than the acknowledged one,
    /// a value from nowhere, and accepts a later attempt whose outcome was unknown.
    @Test func theWriteCheckNamesWhatIsWrong() {
        var ledger = WriteLedger()
        ledger.acknowledged = [0: 4, 1: 5, 2: 6]
        ledger.attempted = [0: 4, 1: 9, 2: 6, 3: 7]
        let good: [Int: [UInt8]?] = [
            0: Self.value(4, bytes: 8), 1: Self.value(9, bytes: 8), 2: Self.value(6, bytes: 8),
        ]
        #expect(Self.problems(good, keys: 5, ledger: ledger).isEmpty)
        #expect(Self.problems(good.merging([3: Self.value(7, bytes: 8)]) { $1 }, keys: 5, ledger: ledger).isEmpty)
        let wrong: [Int: [UInt8]?] = [
            0: nil, 1: Self.value(4, bytes: 8), 2: Self.value(7, bytes: 8), 3: Self.value(8, bytes: 8),
            4: Self.value(1, bytes: 8),
        ]
        let found = Self.problems(wrong, keys: 5, ledger: ledger)
        #expect(found.count == 5, "\(found)")
        #expect(found.first?.hasPrefix("k0: acknowledged 4") == true)
    }

    /// A follower stopped while the leader takes writes (many times its snapshot threshold, so the leader
    /// compacts its log far past the follower) comes back, receives a snapshot and then the entries after it, and
    /// serves exactly the leader's data. `RAFT_SNAPSHOT_CATCHUP_WRITES` sets the number of writes (20,000 by
    /// default; the state is a tenth as many keys).
    @Test func aFollowerFarBehindCatchesUpThroughASnapshot() async throws {
        let writes = Int(Self.environment["RAFT_SNAPSHOT_CATCHUP_WRITES"] ?? "") ?? 20_000
        let keys = max(100, writes / 10)
        let cluster = try ServerCluster(
            extraArguments: [
                "--snapshot-entries", "2000", "--compaction-margin", "500", "--snapshot-state-factor", "0",
            ])
        defer { cluster.stopAll() }
        let leader = try #require(await KVServerTests.waitForLeader(cluster))
        let follower = try #require(cluster.names.first { $0 != leader })

        let stopped = try #require(cluster.processes[follower])
        stopped.signal(SIGTERM)
        #expect(await stopped.waitForExit(seconds: 30) == 0, "SIGTERM stops the follower cleanly")

        let started = Date()
        let ledgers = await Self.write(
            port: cluster.httpPort(leader), keys: keys, valueBytes: 16, total: writes,
            ledgers: Array(repeating: WriteLedger(), count: 32), deadline: Date().addingTimeInterval(1200))
        let ledger = Self.merged(ledgers)
        let writeSeconds = Date().timeIntervalSince(started)
        print(
            "snapshot catch-up: \(ledger.acknowledgedCount) writes acknowledged in "
                + String(format: "%.1f s (%.0f/s)", writeSeconds, Double(ledger.acknowledgedCount) / writeSeconds)
                + ", \(ledger.failures) failed \(ledger.failureKinds)")
        #expect(ledger.acknowledgedCount == writes, "every write was acknowledged in the end")
        let leaderSnapshots = await Self.metric(cluster, leader, "raft_snapshot_started_total") ?? 0
        #expect(leaderSnapshots >= Double(writes / 2000 - 1), "the leader snapshotted as it went")
        let target = await Self.committed(cluster, leader)

        let catchUp = Date()
        try cluster.start(follower)
        let caughtUp = await Self.waitUntilApplied(cluster, follower, target, seconds: 120)
        #expect(caughtUp, "the follower applied up to \(target)\n\(Self.tail(cluster, follower))")
        let catchUpSeconds = Date().timeIntervalSince(catchUp)
        let installed = await Self.metric(cluster, follower, "raft_snapshot_installed_total") ?? 0
        print(
            "snapshot catch-up: the follower applied up to \(target) in " + String(format: "%.1f s", catchUpSeconds)
                + " after its restart, \(Int(installed)) snapshot(s) installed; the leader started "
                + "\(Int(leaderSnapshots)) snapshots")
        #expect(installed >= 1, "the follower caught up through a snapshot\n\(Self.tail(cluster, follower))")
        #expect(
            cluster.processes[follower]?.lines.contains { $0.contains("snapshot installed") } == true,
            "the follower logged the installation")

        let onFollower = try await Self.readAll(port: cluster.httpPort(follower), keys: keys, serializable: true)
        let onLeader = try await Self.readAll(port: cluster.httpPort(leader), keys: keys, serializable: false)
        #expect(onFollower.count == keys && onLeader.count == keys)
        let differing = (0..<keys).filter { (onFollower[$0] ?? nil) != (onLeader[$0] ?? nil) }
        #expect(
            differing.isEmpty, "\(differing.count) keys differ between follower and leader, e.g. \(differing.prefix(5))"
        )
        let wrong = Self.problems(onFollower, keys: keys, ledger: ledger)
        #expect(wrong.isEmpty, "\(wrong.count) keys wrong on the follower: \(wrong.prefix(5))")
        if !differing.isEmpty || !wrong.isEmpty {
            for node in [leader, follower] {
                let lines = cluster.processes[node]?.lines.filter { $0.contains("snapshot") } ?? []
                print(lines.suffix(30).map { "  \(node): " + $0 }.joined(separator: "\n"))
            }
        }
    }

    /// A single node under writes, with big values and a low threshold so that it is writing a snapshot most of
    /// the time, SIGKILLed the moment a snapshot's temporary file appears: it restarts (removing the temporary
    /// file), serves, and every acknowledged write is there. Repeated; at least one kill must land mid-creation.
    @Test func aKillWhileASnapshotIsWrittenLosesNothing() async throws {
        let keys = 2000
        let cluster = try ServerCluster(
            nodes: 1,
            extraArguments: ["--snapshot-entries", "500", "--compaction-margin", "100", "--snapshot-state-factor", "0"])
        defer { cluster.stopAll() }
        let node = cluster.names[0]
        _ = try #require(await KVServerTests.waitForLeader(cluster))
        var ledgers = Array(repeating: WriteLedger(), count: 8)
        var landed = 0
        var rounds = 0
        while landed < 3 && rounds < 8 {
            rounds += 1
            let port = cluster.httpPort(node)
            let current = ledgers
            let writers = Task {
                await Self.write(
                    port: port, keys: keys, valueBytes: 4096, total: nil, ledgers: current,
                    deadline: Date().addingTimeInterval(120))
            }
            // Some writes first, so that the state grows from round to round.
            try? await Task.sleep(for: .seconds(1))
            let after = await Self.killWhenFileAppears(cluster, node, seconds: 60) { $0.hasSuffix(".tmp") }
            writers.cancel()
            ledgers = await writers.value
            let files = try #require(after, "no snapshot was started in 60 s\n\(Self.tail(cluster, node))")
            let leftovers = files.filter { $0.hasSuffix(".tmp") }
            let midCreation = !leftovers.isEmpty
            if midCreation { landed += 1 }
            try cluster.start(node)
            _ = try #require(
                await KVServerTests.waitForLeader(cluster), "the node serves again\n\(Self.tail(cluster, node))")
            // (The restarted node may be writing a snapshot of its own already: only the one killed must be gone.)
            let now = Self.snapshotFiles(cluster, node)
            #expect(
                leftovers.allSatisfy { !now.contains($0) },
                "the temporary file \(leftovers) is gone after the restart: \(now)")
            let ledger = Self.merged(ledgers)
            let values = try await Self.readAll(port: port, keys: keys, serializable: false)
            let wrong = Self.problems(values, keys: keys, ledger: ledger)
            #expect(
                wrong.isEmpty,
                "round \(rounds) (kill \(midCreation ? "during" : "outside") a snapshot's creation): \(wrong.count) keys wrong: \(wrong.prefix(5))\n\(Self.tail(cluster, node))"
            )
            print(
                "snapshot kill: round \(rounds): killed with \(files) in the snapshots directory; "
                    + "\(ledger.acknowledgedCount) writes acknowledged so far, all there")
        }
        #expect(landed >= 1, "at least one of \(rounds) kills landed while a snapshot was being written")
        let snapshots = Self.snapshotFiles(cluster, node).filter { $0.hasSuffix(".snap") }
        #expect(!snapshots.isEmpty, "the node wrote snapshots")
    }

    /// A follower far behind is SIGKILLed while it receives a snapshot (a big state in small chunks): it restarts
    /// (its partial file removed), receives the snapshot again, catches up and serves the leader's data.
    @Test func aKillWhileASnapshotIsReceivedLosesNothing() async throws {
        let keys = 4000
        let cluster = try ServerCluster(
            extraArguments: [
                "--snapshot-entries", "1000", "--compaction-margin", "100", "--snapshot-chunk-bytes", "1024",
                "--snapshot-state-factor", "0",
            ])
        defer { cluster.stopAll() }
        let leader = try #require(await KVServerTests.waitForLeader(cluster))
        let follower = try #require(cluster.names.first { $0 != leader })
        cluster.kill(follower)

        let ledger = Self.merged(
            await Self.write(
                port: cluster.httpPort(leader), keys: keys, valueBytes: 4096, total: 2 * keys,
                ledgers: Array(repeating: WriteLedger(), count: 16), deadline: Date().addingTimeInterval(600)))
        #expect(ledger.acknowledgedCount == 2 * keys)
        let target = await Self.committed(cluster, leader)

        var landed = 0
        var rounds = 0
        while landed < 1 && rounds < 5 {
            rounds += 1
            try cluster.start(follower)
            let after = await Self.killWhenFileAppears(cluster, follower, seconds: 60) {
                $0.hasPrefix("incoming-") && $0.hasSuffix(".part")
            }
            guard let files = after else {
                print("snapshot install kill: round \(rounds): no transfer began in 60 s")
                break
            }
            if files.contains(where: { $0.hasSuffix(".part") }) { landed += 1 }
            print("snapshot install kill: round \(rounds): killed with \(files) in the snapshots directory")
        }
        #expect(landed >= 1, "at least one of \(rounds) kills landed while a snapshot was being received")

        let restarted = Date()
        try cluster.start(follower)
        let caughtUp = await Self.waitUntilApplied(cluster, follower, target, seconds: 120)
        #expect(caughtUp, "the follower applied up to \(target)\n\(Self.tail(cluster, follower))")
        print(
            "snapshot install kill: the follower applied up to \(target) "
                + String(format: "%.1f s", Date().timeIntervalSince(restarted)) + " after its last restart")
        #expect(
            (await Self.metric(cluster, follower, "raft_snapshot_installed_total") ?? 0) >= 1,
            "the follower installed a snapshot after the restart\n\(Self.tail(cluster, follower))")
        #expect(
            !Self.snapshotFiles(cluster, follower).contains { $0.hasSuffix(".part") },
            "no partial file is left: \(Self.snapshotFiles(cluster, follower))")
        let onFollower = try await Self.readAll(port: cluster.httpPort(follower), keys: keys, serializable: true)
        let onLeader = try await Self.readAll(port: cluster.httpPort(leader), keys: keys, serializable: false)
        let differing = (0..<keys).filter { (onFollower[$0] ?? nil) != (onLeader[$0] ?? nil) }
        #expect(
            differing.isEmpty, "\(differing.count) keys differ between follower and leader, e.g. \(differing.prefix(5))"
        )
        let wrong = Self.problems(onFollower, keys: keys, ledger: ledger)
        #expect(wrong.isEmpty, "\(wrong.count) keys wrong on the follower: \(wrong.prefix(5))")
        if !differing.isEmpty || !wrong.isEmpty {
            for node in [leader, follower] {
                let lines = cluster.processes[node]?.lines.filter { $0.contains("snapshot") } ?? []
                print(lines.suffix(30).map { "  \(node): " + $0 }.joined(separator: "\n"))
            }
        }
    }
}
