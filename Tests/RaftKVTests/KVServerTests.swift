import Foundation
import NIOHTTP1
import ProcessTesting
import RaftKV
import RaftKVClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

func eventually(_ seconds: Double = 20, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

/// Three real `raft-lite serve` processes, driven over HTTP.
@Suite(.serialized, .clusterSlot) struct KVServerTests {
    static func client(_ cluster: ServerCluster, node: String? = nil) -> KVClient {
        let endpoints =
            node.map { [Endpoint(host: "127.0.0.1", port: cluster.httpPort($0))] }
            ?? cluster.httpPorts.map { Endpoint(host: "127.0.0.1", port: $0) }
        return KVClient(endpoints: endpoints, timeout: .seconds(10))
    }

    static func statuses(_ cluster: ServerCluster) async -> [NodeStatusReport] {
        var reports: [NodeStatusReport] = []
        for name in cluster.names {
            if let response = try? await client(cluster, node: name).request(.GET, "/v1/status"),
                let report = try? NodeStatusReport.decode(response)
            {
                reports.append(report)
            }
        }
        return reports
    }

    static func waitForLeader(_ cluster: ServerCluster) async -> String? {
        var leader: String?
        // Up to a minute: on a 2-core CI machine the simulator's threads and the other process tests run beside
        // these processes, and one run waited more than 20 s for three nodes to agree.
        _ = await eventually(60) {
            let reports = await statuses(cluster)
            guard reports.count == cluster.names.count, let l = reports.first(where: { $0.role == "leader" }),
                reports.allSatisfy({ $0.leader == l.id && $0.term == l.term })
            else { return false }
            leader = l.id
            return true
        }
        return leader
    }

    @Test func theWholeAPIWorksThroughEveryNode() async throws {
        let cluster = try ServerCluster(extraArguments: ["--max-value-bytes", "4096", "--max-key-bytes", "64"])
        defer { cluster.stopAll() }
        let leader = try #require(await Self.waitForLeader(cluster))

        // Writes through each node, reads through each other node: forwarding and linearizable reads.
        for (k, writer) in cluster.names.enumerated() {
            let put = try await Self.client(cluster, node: writer).put("key\(k)", Array("value \(k)".utf8))
            #expect(put.status == 200, "PUT via \(writer): \(put.text)")
            #expect(put.text.hasPrefix("{\"index\":"))
            for reader in cluster.names {
                let get = try await Self.client(cluster, node: reader).get("key\(k)")
                #expect(get.status == 200 && get.text == "value \(k)", "GET via \(reader) after PUT via \(writer)")
            }
        }
        // Keys and values that need escaping survive the round trip.
        let odd = "a key/with spaces & ?=%"
        #expect(try await Self.client(cluster).put(odd, [0, 1, 2, 255]).status == 200)
        #expect(try await Self.client(cluster, node: "node2").get(odd).body == [0, 1, 2, 255])

        // Compare-and-set.
        let c = Self.client(cluster, node: "node1")
        #expect(try await c.put("cas", Array("one".utf8)).status == 200)
        #expect(try await c.put("cas", Array("two".utf8), prevValue: Array("one".utf8)).status == 200)
        #expect(try await c.get("cas").text == "two")
        let mismatch = try await c.put("cas", Array("three".utf8), prevValue: Array("one".utf8))
        #expect(mismatch.status == 412)
        #expect(mismatch.text.contains("\"error\":\"precondition_failed\""))
        #expect(try await c.get("cas").text == "two")
        #expect(try await c.put("missing", Array("x".utf8), prevValue: Array("y".utf8)).status == 412)

        // Delete; a missing key is 404, as JSON; deleting it again is still a success.
        let delete = try await Self.client(cluster, node: "node2").delete("key0")
        #expect(delete.status == 200 && delete.text.contains("\"deleted\":true"))
        let gone = try await Self.client(cluster, node: "node0").get("key0")
        #expect(gone.status == 404)
        #expect(gone.header("content-type") == "application/json")
        #expect(try await c.delete("key0").text.contains("\"deleted\":false"))

        // A serializable read is served by the node itself.
        _ = await eventually {
            (try? await Self.client(cluster, node: "node2").get("key1", serializable: true).status) == 200
        }
        #expect(try await Self.client(cluster, node: "node2").get("key1", serializable: true).text == "value 1")

        // Status: every field, one leader everyone agrees on.
        let reports = await Self.statuses(cluster)
        #expect(reports.count == 3)
        #expect(reports.filter { $0.role == "leader" }.map(\.id) == [leader])
        for report in reports {
            #expect(report.leader == leader)
            #expect(report.commitIndex >= report.appliedIndex)
            #expect(["leader", "follower"].contains(report.role))
        }
    }

    @Test func badRequestsGetA4xxThatSaysWhy() async throws {
        let cluster = try ServerCluster(extraArguments: ["--max-value-bytes", "4096", "--max-key-bytes", "64"])
        defer { cluster.stopAll() }
        _ = try #require(await Self.waitForLeader(cluster))
        let c = Self.client(cluster, node: "node1")
        let longKey = try await c.put(String(repeating: "k", count: 65), Array("v".utf8))
        #expect(longKey.status == 400)
        #expect(longKey.text.contains("key_too_long"))
        let bigValue = try await c.put("big", [UInt8](repeating: 1, count: 5000))
        #expect(bigValue.status == 413)
        #expect(bigValue.text.contains("value_too_large"))
        let badEscape = try await c.request(.PUT, "/v1/kv/x?prev_value=%zz", body: Array("v".utf8))
        #expect(badEscape.status == 400)
        let unknownParameter = try await c.request(.GET, "/v1/kv/x?colour=blue")
        #expect(unknownParameter.status == 400)
        #expect(unknownParameter.text.contains("colour"))
        let badKey = try await c.request(.GET, "/v1/kv/%4")
        #expect(badKey.status == 400)
        let emptyKey = try await c.request(.GET, "/v1/kv/")
        #expect(emptyKey.status == 400)
        let nowhere = try await c.request(.GET, "/v2/anything")
        #expect(nowhere.status == 404)
        #expect(nowhere.text.hasPrefix("{\"error\":"))
        let wrongMethod = try await c.request(.POST, "/v1/kv/x", body: Array("v".utf8))
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.header("allow") != nil)
        let consistency = try await c.request(.GET, "/v1/kv/x?consistency=eventual")
        #expect(consistency.status == 400)
        // The node is still serving.
        #expect(try await c.put("after", Array("ok".utf8)).status == 200)
    }

    @Test func metricsAreExportedAsPrometheusText() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        let leader = try #require(await Self.waitForLeader(cluster))
        for k in 0..<5 { _ = try await Self.client(cluster, node: leader).put("m\(k)", Array("v".utf8)) }
        let metrics = try await Self.client(cluster, node: leader).request(.GET, "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.header("content-type")?.hasPrefix("text/plain") == true)
        for name in [
            "raft_role", "raft_is_leader", "raft_term", "raft_commit_index", "raft_applied_index",
            "raft_proposals_total",
            "raft_proposal_duration_seconds_bucket", "raft_storage_write_duration_seconds_bucket",
            "raft_messages_sent_total", "raft_messages_received_total", "raft_elections_total", "kv_requests_total",
            "kv_request_duration_seconds_bucket",
        ] {
            #expect(metrics.text.contains(name), "missing \(name)")
        }
        #expect(metrics.text.contains("raft_is_leader{node=\"\(leader)\"} 1"))
        #expect(metrics.text.contains("peer=\""), "messages are counted per peer")
    }

    @Test func withoutAQuorumRequestsFailWith503() async throws {
        let cluster = try ServerCluster(extraArguments: ["--request-timeout-milliseconds", "1500"])
        defer { cluster.stopAll() }
        let leader = try #require(await Self.waitForLeader(cluster))
        let survivor = try #require(cluster.names.first { $0 != leader })
        for name in cluster.names where name != survivor { cluster.kill(name) }
        // Once the survivor knows there is no leader, requests fail at once or at their deadline: 503 either way.
        let leaderless = await eventually {
            (try? await Self.client(cluster, node: survivor).request(.GET, "/v1/status")).flatMap {
                try? NodeStatusReport.decode($0)
            }?.leader == nil
        }
        #expect(leaderless)
        let put = try await Self.client(cluster, node: survivor).put("nobody", Array("hears".utf8))
        #expect(put.status == 503, "\(put.status) \(put.text)")
        #expect(put.text.contains("\"error\":\"unavailable\""))
        // The cluster comes back when the others do.
        for name in cluster.names where name != survivor { try cluster.start(name) }
        let recovered = await eventually {
            (try? await Self.client(cluster, node: survivor).put("back", Array("again".utf8)))?.status == 200
        }
        #expect(recovered)
    }

    @Test func sigtermStopsANodeCleanlyWithExitCodeZero() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        let leader = try #require(await Self.waitForLeader(cluster))
        for k in 0..<20 { _ = try await Self.client(cluster, node: leader).put("s\(k)", Array("v".utf8)) }
        let node = try #require(cluster.processes[leader])
        node.signal(SIGTERM)
        let status = await node.waitForExit(seconds: 15)
        #expect(status == 0)
        #expect(node.lines.contains { $0.contains("stopped cleanly") })
        // Restarted on its data, it still has everything.
        try cluster.start(leader)
        let caughtUp = await eventually {
            (try? await Self.client(cluster, node: leader).get("s19", serializable: true))?.text == "v"
        }
        #expect(caughtUp)
    }
}

@Suite struct KVUnitTests {
    @Test func commandsSurviveARoundTripAndGarbageIsNotACommand() {
        let commands: [KVCommand] = [
            .put(key: Array("k".utf8), value: [1, 2, 3]), .delete(key: [0]),
            .compareAndSet(key: Array("x".utf8), expected: [], value: [9]), .get(key: Array("long".utf8)),
            .put(key: Array(repeating: 7, count: 300), value: Array(repeating: 8, count: 70_000)),
        ]
        for command in commands { #expect(KVCommand(decoding: command.encoded()) == command) }
        for garbage: [UInt8] in [[], [9], [1, 0], [1, 0, 5, 1], [2, 0, 1, 65, 0], [3, 0, 0, 0, 0, 0, 9]] {
            #expect(KVCommand(decoding: garbage) == nil)
        }
    }

    @Test func theStoreAppliesCommandsDeterministically() {
        var store = KVStore()
        let k = Array("k".utf8)
        #expect(store.apply(.get(key: k)) == .notFound)
        #expect(store.apply(.put(key: k, value: [1])) == .done(existed: false))
        #expect(store.apply(.compareAndSet(key: k, expected: [2], value: [3])) == .preconditionFailed)
        #expect(store.apply(.compareAndSet(key: k, expected: [1], value: [3])) == .done(existed: true))
        #expect(store.apply(.get(key: k)) == .value([3]))
        #expect(store.apply(.delete(key: k)) == .done(existed: true))
        #expect(store.apply(.compareAndSet(key: k, expected: [3], value: [4])) == .notFound)
        #expect(store.apply([7, 7, 7], at: .zero) == .invalid)
    }
}
