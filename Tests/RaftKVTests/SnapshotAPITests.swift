import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessTesting
import RaftCore
import RaftKVClient
import RaftTesting
import Testing

@testable import RaftKV
@testable import RaftLite

/// `POST /v1/snapshot` and the snapshot fields of `GET /v1/status`, on the router alone: no sockets, no node.
@Suite struct SnapshotRoutingTests {
    static let router = KVRouter(maxKeyBytes: 8, maxValueBytes: 16)

    static func route(_ method: HTTPMethod, _ uri: String, body: [UInt8] = []) -> KVRoute {
        router.route(KVRequest(method: method, uri: uri, body: .bytes(body)))
    }

    @Test func onlyAPostWithoutAQuerySnapshots() throws {
        #expect(Self.route(.POST, "/v1/snapshot") == .snapshot)
        // A body means nothing to it, and is not refused.
        #expect(Self.route(.POST, "/v1/snapshot", body: [1, 2]) == .snapshot)
        for method in [HTTPMethod.GET, .PUT, .DELETE, .HEAD, .PATCH] {
            let route = Self.route(method, "/v1/snapshot")
            guard case .refused(let reply) = route else {
                Issue.record("\(method) /v1/snapshot routed to \(route)")
                continue
            }
            #expect(reply.status == .methodNotAllowed, "\(method)")
            #expect(reply.extraHeaders == [KVReply.Header(name: "Allow", value: "POST")])
            #expect(reply.text == "{\"error\":\"method_not_allowed\",\"message\":\"allowed: POST\"}")
        }
        guard case .refused(let query) = Self.route(.POST, "/v1/snapshot?now=1") else {
            Issue.record("a query was accepted")
            return
        }
        #expect(query.status == .badRequest)
        #expect(
            query.text == "{\"error\":\"bad_query\",\"message\":\"POST /v1/snapshot takes no query parameters\"}")
        for uri in ["/v1/snapshot/", "/v1/snapshots", "/v1/snapshot/x"] {
            guard case .refused(let reply) = Self.route(.POST, uri) else {
                Issue.record("\(uri) was routed")
                continue
            }
            #expect(reply.status == .notFound, "\(uri)")
        }
        // A body over the limit is refused before routing, as for every path.
        let big = Self.router.route(KVRequest(method: .POST, uri: "/v1/snapshot", body: .tooLarge(size: 99)))
        guard case .refused(let tooLarge) = big else {
            Issue.record("an oversized body was routed")
            return
        }
        #expect(tooLarge.status == .payloadTooLarge)
    }

    @Test func aSnapshotTakenIsItsIndexAndTerm() throws {
        let reply = KVReply.snapshotTaken(SnapshotMetadata(index: LogIndex(1234), term: Term(7), voters: []))
        #expect(reply.status == .ok && reply.contentType == "application/json")
        #expect(reply.text == "{\"index\":1234,\"term\":7}")
        // What the client library reads from it.
        let response = HTTPResponse(status: 200, body: reply.body)
        #expect(SnapshotReply.decode(response) == SnapshotReply(index: 1234, term: 7))
        #expect(KVErrorReply.decode(response) == nil)
    }

    @Test func failedSnapshotsSayWhy() throws {
        let cases: [(RaftNodeError, HTTPResponseStatus, String)] = [
            (.snapshotsUnsupported("no data directory"), .serviceUnavailable, "snapshots_unsupported"),
            (.storage("disk full"), .internalServerError, "snapshot_failed"),
            (.stopped, .serviceUnavailable, "unavailable"),
            (.notStarted, .serviceUnavailable, "unavailable"),
        ]
        for (error, status, code) in cases {
            let reply = KVReply.snapshotFailure(error)
            #expect(reply.status == status, "\(error)")
            #expect(reply.text == "{\"error\":\"\(code)\",\"message\":\"\(error)\"}", "\(error): \(reply.text)")
            let response = HTTPResponse(status: Int(reply.status.code), body: reply.body)
            #expect(KVErrorReply.decode(response) == KVErrorReply(error: code, message: "\(error)"))
            #expect(SnapshotReply.decode(response) == nil)
        }
        struct Unexpected: Error {}
        let unknown = KVReply.snapshotFailure(Unexpected())
        #expect(unknown.status == .internalServerError)
        #expect(unknown.text.hasPrefix("{\"error\":\"snapshot_failed\""))
    }

    @Test func theStatusEndsWithTheSnapshotIndexAndTheFirstIndex() throws {
        let status = NodeStatus(
            name: "n1", role: .leader, term: Term(3), leader: "n1", commitIndex: LogIndex(10),
            appliedIndex: LogIndex(9), lastIndex: LogIndex(11), snapshotIndex: LogIndex(8), firstIndex: LogIndex(4),
            paused: false, started: true)
        let reply = KVReply.status(status)
        #expect(
            reply.text
                == "{\"id\":\"n1\",\"role\":\"leader\",\"term\":3,\"leader\":\"n1\",\"commit_index\":10,"
                + "\"applied_index\":9,\"last_index\":11,\"snapshot_index\":8,\"first_index\":4}")
        let report = try NodeStatusReport.decode(HTTPResponse(status: 200, body: reply.body))
        #expect(
            report
                == NodeStatusReport(
                    id: "n1", role: "leader", term: 3, leader: "n1", commitIndex: 10, appliedIndex: 9, lastIndex: 11,
                    snapshotIndex: 8, firstIndex: 4))
        // A server from before snapshots: the fields are absent, not zero.
        let old = try NodeStatusReport.decode(
            HTTPResponse(
                status: 200,
                body: Array(
                    "{\"id\":\"n1\",\"role\":\"follower\",\"term\":1,\"leader\":null,\"commit_index\":2,\"applied_index\":2}"
                        .utf8)))
        #expect(old.snapshotIndex == nil && old.firstIndex == nil && old.lastIndex == nil)
    }
}

/// `POST /v1/snapshot` on a node in this process that has no data directory: it cannot snapshot, and says so.
@Suite(.clusterSlot) struct SnapshotUnsupportedServerTests {
    @Test func aNodeWithoutADataDirectoryAnswers503SnapshotsUnsupported() async throws {
        let cluster = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "solo", host: "127.0.0.1", port: 1000)])
        var options = RaftNode<KVStore>.Options()
        options.tickInterval = .milliseconds(20)
        options.logger.logLevel = .critical
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let node = try RaftNode(
            cluster: cluster, name: "solo", stateMachine: KVStore(), options: options, eventLoop: loop,
            transport: InMemoryTransport(
                id: ClusterConfiguration.nodeID(for: "solo"), network: InMemoryNetwork(), eventLoop: loop))
        try await node.start()
        var serverOptions = KVServer.Options()
        serverOptions.port = 0
        let server = KVServer(node: node, options: serverOptions, logger: Logger(label: "test")) { [] }
        try await server.start()
        let port = try #require(await server.boundPort)
        let endpoint = Endpoint(host: "127.0.0.1", port: port)
        let client = KVClient(endpoints: [endpoint], timeout: .seconds(20))

        let response = try await client.snapshot(at: endpoint)
        #expect(response.status == 503, "\(response.status) \(response.text)")
        let error = try #require(KVErrorReply.decode(response))
        #expect(error.error == "snapshots_unsupported")
        #expect(error.message.contains("data directory"), "\(error.message)")
        // The node is unchanged, and says so in its status.
        let status = try await client.status(at: endpoint)
        #expect(status.snapshotIndex == 0 && status.firstIndex == 1)

        await server.drain(timeout: .seconds(1))
        await node.stop()
    }
}

/// `POST /v1/snapshot`, `raft-lite snapshot` and `raft-lite status` against real `raft-lite serve` processes.
@Suite(.serialized, .clusterSlot) struct SnapshotServerTests {
    /// Runs `raft-lite ARGUMENTS` to the end; its exit status and output (stdout and stderr).
    static func run(_ arguments: [String]) async throws -> (Int32, String) {
        let child = try ChildProcess(raftLiteExecutable(), arguments, label: arguments.first ?? "raft-lite")
        child.closeInput()
        let status = await child.waitForExit(seconds: 60)
        try? await Task.sleep(for: .milliseconds(100))  // the last lines
        return (status ?? -1, child.lines.joined(separator: "\n"))
    }

    static func status(_ client: KVClient, _ endpoint: Endpoint) async -> NodeStatusReport? {
        try? await client.status(at: endpoint)
    }

    @Test func aSnapshotOnDemandShowsInTheStatusCompactsTheLogAndSurvivesARestart() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        // No margin: the log is compacted right up to the snapshot, so the first index says exactly where.
        let cluster = try ServerCluster(extraArguments: ["--compaction-margin", "0"])
        defer { cluster.stopAll() }
        let leader = try #require(await KVServerTests.waitForLeader(cluster))
        let node = try #require(cluster.names.first { $0 != leader })
        let endpoint = Endpoint(host: "127.0.0.1", port: cluster.httpPort(node))
        let client = KVClient(endpoints: [endpoint], timeout: .seconds(20))
        for k in 0..<10 {
            #expect(try await client.put("snap\(k)", Array("value \(k)".utf8)).status == 200)
        }
        let before = try #require(await Self.status(client, endpoint))
        #expect(before.snapshotIndex == 0 && before.firstIndex == 1, "\(before)")

        // Only POST.
        let get = try await client.request(.GET, "/v1/snapshot", at: endpoint)
        #expect(get.status == 405 && get.header("allow") == "POST", "\(get.status) \(get.text)")

        let response = try await client.snapshot(at: endpoint)
        #expect(response.status == 200, "\(response.status) \(response.text)")
        let taken = try #require(SnapshotReply.decode(response), "\(response.text)")
        // A write is answered once applied on the node that took it (this one): the snapshot covers all ten.
        #expect(taken.index >= 10 && taken.term >= 1, "\(taken)")
        let after = try #require(await Self.status(client, endpoint))
        #expect(after.snapshotIndex == taken.index, "\(after)")
        // Compaction follows the snapshot's write on the node's loop: soon, not necessarily before the answer.
        let compacted = await eventually { await Self.status(client, endpoint)?.firstIndex == taken.index + 1 }
        let compactedStatus = await Self.status(client, endpoint)
        #expect(compacted, "\(String(describing: compactedStatus))")

        // `raft-lite status` shows both.
        let (statusExit, table) = try await Self.run(["status", "--endpoints", "127.0.0.1:\(endpoint.port)"])
        #expect(statusExit == 0, "\(table)")
        let lines = table.split(separator: "\n").map(String.init)
        let header = try #require(lines.first { $0.hasPrefix("ENDPOINT") }, "\(table)")
        #expect(header.split(separator: " ").suffix(2) == ["SNAPSHOT", "FIRST"], "\(header)")
        let row = try #require(lines.first { $0.hasPrefix("127.0.0.1:\(endpoint.port)") }, "\(table)")
        #expect(row.split(separator: " ").suffix(2) == ["\(taken.index)", "\(taken.index + 1)"], "\(row)")

        // `raft-lite snapshot` asks again: nothing new on that node since, or a little (a new leader's entry).
        let (snapshotExit, printed) = try await Self.run(["snapshot", "--endpoints", "127.0.0.1:\(endpoint.port)"])
        #expect(snapshotExit == 0, "\(printed)")
        let line = try #require(
            printed.split(separator: "\n").first { $0.hasPrefix("127.0.0.1:\(endpoint.port): snapshot at index ") },
            "\(printed)")
        let again = try #require(
            UInt64(line.dropFirst("127.0.0.1:\(endpoint.port): snapshot at index ".count).prefix { $0.isNumber }))
        #expect(again >= taken.index)

        // Restarted, the node starts from its snapshot and the log after it, with everything.
        cluster.kill(node)
        try cluster.start(node)
        let restarted = await eventually {
            guard let s = await Self.status(client, endpoint) else { return false }
            return s.snapshotIndex.map { $0 >= taken.index } == true && s.appliedIndex >= taken.index
        }
        let restartedStatus = await Self.status(client, endpoint)
        #expect(restarted, "\(String(describing: restartedStatus))")
        let read = await eventually { (try? await client.get("snap9", serializable: true))?.text == "value 9" }
        #expect(read)
    }

    @Test func theSnapshotCommandFailsClearlyWhenNoNodeAnswers() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        let port = try #require(try ServerCluster.freePorts(1).first)
        let (exit, output) = try await Self.run(["snapshot", "--endpoints", "127.0.0.1:\(port)", "--timeout", "5"])
        #expect(exit == 2, "\(output)")
        #expect(output.contains("127.0.0.1:\(port): error:"), "\(output)")
        #expect(!output.contains("snapshot at index"))
    }
}

/// The example state machine of docs/raftnode.md, verbatim, so that the docs' code compiles and does what they say.
struct WordCount: StateMachine {
    private(set) var counts: [String: UInt64] = [:]

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> UInt64 {
        let word = String(decoding: command, as: UTF8.self)
        counts[word, default: 0] += 1
        return counts[word, default: 0]
    }

    struct Snapshot: StateMachineSnapshot {
        let counts: [String: UInt64]

        func write(to writer: inout SnapshotWriter) throws {
            try writer.write(integer: UInt8(1))  // the format's version
            try writer.write(integer: UInt64(counts.count))
            for (word, count) in counts {
                try writer.write(blob: Array(word.utf8))
                try writer.write(integer: count)
            }
        }
    }

    func snapshot() -> Snapshot { Snapshot(counts: counts) }

    mutating func restore(from reader: inout SnapshotReader) throws {
        let version = try reader.read(UInt8.self)
        guard version == 1 else { throw SnapshotFormatError("word counts of version \(version), not 1") }
        let total = try reader.read(UInt64.self)
        var restored: [String: UInt64] = [:]  // no reserveCapacity(total): it is untrusted
        for _ in 0..<total {
            let word = String(decoding: try reader.readBlob(maxLength: 1024), as: UTF8.self)
            guard restored.updateValue(try reader.read(UInt64.self), forKey: word) == nil else {
                throw SnapshotFormatError("the word \"\(word)\" appears twice")
            }
        }
        counts = restored  // only once all of it was read
    }
}

@Suite struct DocsExampleTests {
    @Test func theWordCountExampleSnapshotsRestoresAndRefusesDamage() throws {
        var machine = WordCount()
        for word in ["a", "b", "a", "c", "a"] { _ = machine.apply(Array(word.utf8), at: .zero) }
        let frozen = machine.snapshot()
        // The view is frozen: applying more does not change what it writes.
        #expect(machine.apply(Array("b".utf8), at: .zero) == 2)
        let buffer = SnapshotBuffer()
        var writer = SnapshotWriter(buffer)
        try frozen.write(to: &writer)
        try writer.flush()
        var restored = WordCount()
        var reader = SnapshotReader(SnapshotBuffer(buffer.bytes))
        try restored.restore(from: &reader)
        #expect(try reader.isAtEnd())
        #expect(restored.counts == ["a": 3, "b": 1, "c": 1])
        #expect(WordCount.supportsSnapshots)

        // Another version, a count beyond the bytes: refused, and the state is left as it was.
        let damages: [[UInt8]] = [[2] + buffer.bytes.dropFirst(), [1, 9, 0, 0, 0, 0, 0, 0, 0]]
        for damaged in damages {
            var reader = SnapshotReader(SnapshotBuffer(damaged))
            #expect(throws: (any Error).self) { try restored.restore(from: &reader) }
            #expect(restored.counts == ["a": 3, "b": 1, "c": 1])
        }
    }
}
