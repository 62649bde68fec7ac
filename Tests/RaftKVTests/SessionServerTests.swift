import Foundation
import ProcessTesting
import RaftKVClient
import Testing

/// Client sessions over HTTP, against real `raft-lite serve` processes.
@Suite(.serialized, .clusterSlot) struct SessionServerTests {
    static func client(_ cluster: ServerCluster, _ name: String) -> KVClient {
        KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: cluster.httpPort(name))], timeout: .seconds(10))
    }

    @Test func aRetriedSessionWriteGetsTheFirstAnswerByteForByteFromAnyNode() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        #expect(await KVServerTests.waitForLeader(cluster) != nil)
        let all = KVClient(
            endpoints: cluster.httpPorts.map { Endpoint(host: "127.0.0.1", port: $0) }, timeout: .seconds(10))
        let session = try await KVSession.register(with: all)
        #expect(session.clientID > 0)
        let first = try await session.put("k", Array("first".utf8))
        #expect(first.status == 200, "\(first.text)")
        let headers = KVClient.sessionHeaders(clientID: session.clientID, sequence: 1)
        // Another client writes the key; then the first write is retried through every node.
        #expect(try await all.put("k", Array("other".utf8)).status == 200)
        for name in cluster.names {
            let retry = try await Self.client(cluster, name).put("k", Array("first".utf8), headers: headers)
            #expect(retry.status == first.status && retry.body == first.body, "via \(name): \(retry.text)")
        }
        #expect(try await all.get("k").text == "other", "the retries were not applied")
        // The session moves on; an old sequence is then refused, definitely.
        let delete = try await session.delete("k")
        #expect(delete.status == 200 && delete.text.contains(#""deleted":true"#))
        let old = try await all.put("k", Array("first".utf8), headers: headers)
        #expect(old.status == 409 && KVErrorReply.decode(old)?.error == "sequence_superseded")
        // A session nobody registered.
        let unknown = try await all.put(
            "k", [1], headers: KVClient.sessionHeaders(clientID: session.clientID + 1_000_000, sequence: 1))
        #expect(unknown.status == 410 && KVErrorReply.decode(unknown)?.error == "session_expired")
        #expect(try await all.get("k").status == 404)
        // Malformed headers.
        let bad = try await all.put("k", [1], headers: [("Raft-Client-Id", "1")])
        #expect(bad.status == 400 && KVErrorReply.decode(bad)?.error == "bad_session")
        #expect(await session.retries == 0)
    }

    @Test func theLoadGeneratorWritesInASessionPerClient() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        #expect(await KVServerTests.waitForLeader(cluster) != nil)
        var options = LoadGenerator.Options(endpoints: cluster.httpPorts.map { Endpoint(host: "127.0.0.1", port: $0) })
        options.clients = 4
        options.seconds = 1
        options.warmup = 0.2
        options.keys = 10
        let report = try await LoadGenerator(options: options).run()
        // Each client registered a session before its first write (a failed registration fails the run).
        #expect(report.sessions)
        #expect(report.ops > 0 && report.errors == 0, "\(report.errorKinds)")
    }

    /// `raft-lite kv put|cas|delete` write in a session of their own, and keep their output and exit codes.
    @Test func theCommandLineWritesInASession() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        #expect(await KVServerTests.waitForLeader(cluster) != nil)
        let endpoints = cluster.httpPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        func run(_ arguments: [String]) async throws -> (Int32?, [String]) {
            let child = try ChildProcess(
                raftLiteExecutable(), ["kv"] + arguments + ["--endpoints", endpoints], label: "kv")
            let code = await child.waitForExit(seconds: 30)
            _ = await eventually(2) {
                child.lines.contains { $0.hasPrefix("OK") || $0.contains("error") || $0.contains("failed") }
            }
            return (code, child.lines)
        }
        let put = try await run(["put", "k", "one"])
        #expect(put.0 == 0 && put.1.contains { $0.hasPrefix("OK {\"index\":") }, "\(put.1)")
        let cas = try await run(["cas", "k", "one", "two"])
        #expect(cas.0 == 0, "\(cas.1)")
        let failed = try await run(["cas", "k", "one", "three"])
        #expect(failed.0 == 1, "\(failed.1)")
        let plain = try await run(["put", "k", "four", "--no-session"])
        #expect(plain.0 == 0, "\(plain.1)")
        let delete = try await run(["delete", "k"])
        #expect(delete.0 == 0 && delete.1.contains { $0.contains("\"deleted\":true") }, "\(delete.1)")
        #expect(
            try await KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: cluster.httpPorts[0])]).get("k").status
                == 404)
    }
}
