import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessTesting
import RaftKVClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A scripted stand-in for a node's membership API on loopback: answers `GET /v1/cluster` with a given cluster, and
/// each `POST /v1/members` with the next scripted reply (the last one repeats), recording every request.
final class FakeMembershipAPI: @unchecked Sendable {
    // @unchecked Sendable: `state` is guarded by its lock; the rest is set once in init.
    struct Reply: Sendable {
        var status: HTTPResponseStatus
        var body: String
    }

    private let state: NIOLockedValueBox<(requests: [(String, String)], replies: [Reply])>
    private let clusterID: String
    private let bootstrap: String
    private var channel: (any Channel)?
    let port: Int

    init(clusterID: String, bootstrap: String, replies: [Reply], port: Int) throws {
        self.clusterID = clusterID
        self.bootstrap = bootstrap
        self.port = port
        self.state = NIOLockedValueBox(([], replies))
        let handler = { @Sendable [state, clusterID, bootstrap] (head: HTTPRequestHead, body: String) -> Reply in
            state.withLockedValue { s in
                s.requests.append(("\(head.method) \(head.uri)", body))
                if head.method == .GET && head.uri == "/v1/cluster" {
                    return Reply(status: .ok, body: "{\"cluster_id\":\"\(clusterID)\",\"bootstrap\":\(bootstrap)}")
                }
                guard head.method == .POST && head.uri == "/v1/members", let next = s.replies.first else {
                    return Reply(status: .notFound, body: "{\"error\":\"not_found\",\"message\":\"no such endpoint\"}")
                }
                if s.replies.count > 1 { s.replies.removeFirst() }
                return next
            }
        }
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeHandler(answer: handler))
                }
            }
            .bind(host: "127.0.0.1", port: port).wait()
    }

    /// Every request so far: "METHOD URI" and its body.
    var requests: [(String, String)] { state.withLockedValue { $0.requests } }

    func close() { try? channel?.close().wait() }

    deinit { close() }

    final class FakeHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let answer: @Sendable (HTTPRequestHead, String) -> Reply
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(answer: @escaping @Sendable (HTTPRequestHead, String) -> Reply) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                guard let head else { return }
                let reply = answer(head, String(decoding: body, as: UTF8.self))
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: "\(reply.body.utf8.count)")
                headers.add(name: "Connection", value: "close")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: reply.status, headers: headers))),
                    promise: nil)
                var buffer = context.channel.allocator.buffer(capacity: reply.body.utf8.count)
                buffer.writeString(reply.body)
                context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}

/// Real `raft-lite serve` processes joining a cluster (`serve --join`), restarting from their data directory, and
/// replacing a dead member.
///
/// The end-to-end tests need the membership HTTP API (`GET /v1/cluster`, `POST`/`DELETE /v1/members`) and a
/// transport that reaches new members. Where the servers do not offer the API yet, they check what can be checked —
/// the joining node fails clearly — and say so; `RAFTLITE_REQUIRE_MEMBERSHIP_API=1` makes a missing API a failure.
@Suite(.serialized, .clusterSlot) struct MembershipProcessTests {
    static let requireAPI = ProcessInfo.processInfo.environment["RAFTLITE_REQUIRE_MEMBERSHIP_API"] == "1"

    static func serve(_ arguments: [String], label: String) throws -> ChildProcess {
        try ChildProcess(
            raftLiteExecutable(), ["serve", "--tick-milliseconds", "20", "--log-level", "info"] + arguments,
            label: label)
    }

    static func tail(_ child: ChildProcess?, _ count: Int = 30) -> String {
        (child?.lines.suffix(count) ?? []).map { "  \(child?.label ?? "?"): " + $0 }.joined(separator: "\n")
    }

    static func bootstrapJSON(names: [String], peerPorts: [Int], httpPorts: [Int]) -> String {
        "{"
            + names.indices.map {
                "\"\(names[$0])\": {\"ip\": \"127.0.0.1\", \"port\": \(peerPorts[$0]), \"http_port\": \(httpPorts[$0])}"
            }.joined(separator: ", ") + "}"
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    static func file(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    // MARK: - The join protocol, against a scripted endpoint

    /// A node joining through a node that is not the leader: it takes the cluster's id and bootstrap configuration
    /// from GET /v1/cluster (not its own view of them), stores them, follows the leader hint of a 503, retries a busy
    /// 503 and stops asking at the 200. Restarted without --join it starts from the stored configuration and asks no
    /// one; restarted with --join to a node of another cluster it is refused.
    @Test func aJoiningNodeTakesTheClustersIdentityFollowsTheLeaderAndRestartsWithoutAskingAnyone() async throws {
        let scratch = ScratchDirectory("join")
        let ports = try ServerCluster.freePorts(10)
        let peerPorts = Array(ports[0..<3])
        let httpPorts = Array(ports[3..<6])  // node1's http port is the "leader" fake's
        let (newPeer, newHTTP, otherPort) = (ports[6], ports[7], ports[8])
        let bootstrap = Self.bootstrapJSON(
            names: ["node0", "node1", "node2"], peerPorts: peerPorts, httpPorts: httpPorts)
        let clusterID = "cluster-from-the-api"
        let follower = try FakeMembershipAPI(
            clusterID: clusterID, bootstrap: bootstrap,
            replies: [
                .init(
                    status: .serviceUnavailable,
                    body: "{\"error\":\"not_leader\",\"message\":\"this node is not the leader\",\"leader\":\"node1\"}")
            ], port: httpPorts[0])
        let leader = try FakeMembershipAPI(
            clusterID: clusterID, bootstrap: bootstrap,
            replies: [
                .init(
                    status: .serviceUnavailable, body: "{\"error\":\"busy\",\"message\":\"a change is in progress\"}"),
                .init(
                    status: .ok,
                    body: "{\"members\":[{\"name\":\"node3\",\"role\":\"voter\"}],\"joint\":false,\"index\":9,"
                        + "\"committed\":true,\"leader\":\"node1\"}"),
            ], port: httpPorts[1])
        let data = scratch.path + "/node3"
        let joinArguments = [
            "--join", "http://127.0.0.1:\(httpPorts[0])", "--name", "node3", "--ip", "127.0.0.1", "--port",
            "\(newPeer)",
            "--http-port", "\(newHTTP)", "--data-dir", data,
        ]
        var node: ChildProcess? = try Self.serve(joinArguments, label: "node3")
        let joined = await node?.waitForLine(seconds: 60) { $0.contains("joined the cluster") }
        #expect(joined != nil, "the node reports that it joined\n\(Self.tail(node))")
        #expect(follower.requests.map(\.0) == ["GET /v1/cluster", "POST /v1/members"], "\(follower.requests)")
        #expect(leader.requests.map(\.0) == ["POST /v1/members", "POST /v1/members"], "\(leader.requests)")
        let body = Self.json(leader.requests.first?.1 ?? "")
        #expect(body["name"] as? String == "node3" && body["ip"] as? String == "127.0.0.1", "\(body)")
        #expect(body["port"] as? Int == newPeer && body["http_port"] as? Int == newHTTP, "\(body)")
        #expect(body["role"] as? String == "voter", "\(body)")
        // The data directory is bound to the cluster it joined: the id the API gave, not one derived from names.
        let stored = Self.json(Self.file(data + "/cluster.json"))
        #expect(stored["cluster_id"] as? String == clusterID, "\(stored)")
        #expect(((stored["bootstrap"] as? [String: Any])?.keys.sorted()) == ["node0", "node1", "node2"], "\(stored)")
        #expect((stored["self"] as? [String: Any])?["port"] as? Int == newPeer, "\(stored)")
        let identity = Self.json(Self.file(data + "/IDENTITY"))
        #expect(identity["cluster"] as? String == clusterID && identity["node"] as? String == "node3", "\(identity)")
        // It serves clients meanwhile (it is not a member of anything real: its own status answers).
        let status = try await KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: newHTTP)])
            .request(.GET, "/v1/status")
        #expect(status.status == 200, "\(status.text)")

        node?.signal(SIGTERM)
        #expect(await node?.waitForExit(seconds: 30) == 0, "SIGTERM stops it cleanly\n\(Self.tail(node))")

        // Restart without --join, without a cluster file, without its address: all from the data directory.
        let asked = follower.requests.count + leader.requests.count
        node = try Self.serve(["--id", "node3", "--data-dir", data], label: "node3")
        let serving = await node?.waitForLine(seconds: 60) { $0.contains("serving") }
        #expect(serving?.contains("\(newHTTP)") == true, "it serves on its stored address\n\(Self.tail(node))")
        #expect(node?.lines.contains { $0.contains("joining") } == false, "\(Self.tail(node))")
        #expect(follower.requests.count + leader.requests.count == asked, "a restart asks no one")
        node?.signal(SIGTERM)
        #expect(await node?.waitForExit(seconds: 30) == 0, "\(Self.tail(node))")

        // --join to a node of another cluster: refused, naming both clusters.
        let other = try FakeMembershipAPI(
            clusterID: "another-cluster", bootstrap: bootstrap, replies: [.init(status: .ok, body: "{}")],
            port: otherPort)
        node = try Self.serve(
            ["--join", "http://127.0.0.1:\(otherPort)", "--id", "node3", "--data-dir", data], label: "node3")
        #expect(await node?.waitForExit(seconds: 60).map { $0 != 0 } == true, "refused\n\(Self.tail(node))")
        // (The output pipe may still hold the last lines when the exit is seen.)
        let refusal = await node?.waitForLine(seconds: 10) { $0.contains("never moves to another cluster") }
        #expect(
            refusal?.contains(clusterID) == true && refusal?.contains("another-cluster") == true,
            "the refusal names both clusters\n\(Self.tail(node))")
        #expect(!other.requests.contains { $0.0.hasPrefix("POST") }, "it never asks the other cluster to add it")
        #expect(Self.file(data + "/cluster.json").contains(clusterID), "the directory still belongs to its cluster")
    }

    /// A definite refusal (an API without membership changes: 404) ends the asking at once, with a clear error,
    /// and the node keeps serving.
    @Test func aRefusedJoinIsLoggedClearlyAndTheNodeKeepsServing() async throws {
        let scratch = ScratchDirectory("join")
        let ports = try ServerCluster.freePorts(8)
        let bootstrap = Self.bootstrapJSON(
            names: ["node0", "node1", "node2"], peerPorts: Array(ports[0..<3]), httpPorts: Array(ports[3..<6]))
        let api = try FakeMembershipAPI(
            clusterID: "c", bootstrap: bootstrap,
            replies: [.init(status: .notFound, body: "{\"error\":\"not_found\",\"message\":\"no such endpoint\"}")],
            port: ports[3])
        let node = try Self.serve(
            [
                "--join", "127.0.0.1:\(ports[3])", "--name", "node3", "--port", "\(ports[6])", "--http-port",
                "\(ports[7])", "--data-dir", scratch.path + "/node3", "--learner",
            ], label: "node3")
        let refused = await node.waitForLine(seconds: 60) { $0.contains("cannot join") }
        #expect(refused?.contains("does not offer POST /v1/members") == true, "\(Self.tail(node))")
        #expect(api.requests.filter { $0.0 == "POST /v1/members" }.count == 1, "a 404 is not retried")
        #expect(Self.json(api.requests.last?.1 ?? "")["role"] as? String == "learner")
        #expect(node.isRunning, "\(Self.tail(node))")
        node.signal(SIGTERM)
        #expect(await node.waitForExit(seconds: 30) == 0, "\(Self.tail(node))")
    }

    /// Without --join, a name missing from the cluster file is refused with the way to add a node.
    @Test func aNodeNotInTheClusterFileIsToldToJoin() async throws {
        let scratch = ScratchDirectory("join")
        let ports = try ServerCluster.freePorts(6)
        let config = scratch.path + "/cluster.json"
        try Self.bootstrapJSON(
            names: ["node0", "node1", "node2"], peerPorts: Array(ports[0..<3]), httpPorts: Array(ports[3..<6])
        ).write(toFile: config, atomically: true, encoding: .utf8)
        let node = try Self.serve(
            ["--config", config, "--id", "node3", "--data-dir", scratch.path + "/node3"], label: "node3")
        #expect(await node.waitForExit(seconds: 60).map { $0 != 0 } == true)
        let refusal = await node.waitForLine(seconds: 10) { $0.contains("not in the cluster configuration") }
        #expect(refusal?.contains("--join") == true, "\(Self.tail(node))")
    }

    // MARK: - The cluster file only bootstraps

    static func leader(of cluster: ServerCluster, among names: [String]) async -> String? {
        for name in names {
            let endpoint = Endpoint(host: "127.0.0.1", port: cluster.httpPort(name))
            if let status = try? await KVClient(endpoints: [endpoint]).status(at: endpoint), status.role == "leader" {
                return name
            }
        }
        return nil
    }

    /// A bootstrap node restarted with a cluster file whose member list was edited (a member added, as an operator
    /// would after a join) is not refused: the file only bootstraps, and the directory keeps its bootstrap members.
    @Test func aNodeRestartedWithAnEditedMemberListStartsAndTheFileOnlyBootstraps() async throws {
        let cluster = try ServerCluster(nodes: 3)
        defer { cluster.stopAll() }
        #expect(await eventually(60) { await Self.put(cluster.httpPort("node0"), "before", "1") })
        let stored = Self.json(Self.file(cluster.scratch.path + "/node0/cluster.json"))
        #expect(stored["cluster_id"] as? String == "raftlite:node0,node1,node2", "\(stored)")
        cluster.processes["node0"]?.signal(SIGTERM)
        #expect(await cluster.processes["node0"]?.waitForExit(seconds: 30) == 0)
        let ports = try ServerCluster.freePorts(2)
        let edited =
            "{"
            + cluster.names.indices.map {
                "\"node\($0)\": {\"ip\": \"127.0.0.1\", \"port\": \(cluster.peerPorts[$0]), \"http_port\": \(cluster.httpPorts[$0])}"
            }.joined(separator: ", ")
            + ", \"node3\": {\"ip\": \"127.0.0.1\", \"port\": \(ports[0]), \"http_port\": \(ports[1])}}"
        try edited.write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
        try cluster.start("node0")
        let node0 = cluster.processes["node0"]
        #expect(
            await node0?.waitForLine(seconds: 60) { $0.contains("serving") } != nil, "not refused\n\(Self.tail(node0))")
        #expect(node0?.lines.contains { $0.contains("member list is ignored") } == true, "\(Self.tail(node0))")
        // It is still a node of the same cluster (same id in the handshakes): it catches up and commits with it.
        #expect(await Self.put(cluster.httpPort("node1"), "after", "2"))
        #expect(await eventually(60) { await Self.localValue(cluster.httpPort("node0"), "after") == "2" })
    }

    /// SIGTERM to the leader: it hands leadership to another voter first (and says so), then exits 0.
    @Test func aLeaderStoppedWithSigtermHandsLeadershipOverFirst() async throws {
        let cluster = try ServerCluster(nodes: 3)
        defer { cluster.stopAll() }
        #expect(await eventually(60) { await Self.put(cluster.httpPort("node0"), "before", "1") })
        var leader: String?
        #expect(
            await eventually(60) {
                leader = await Self.leader(of: cluster, among: cluster.names)
                return leader != nil
            })
        guard let leader, let process = cluster.processes[leader] else { return }
        process.signal(SIGTERM)
        #expect(await process.waitForExit(seconds: 60) == 0, "\(Self.tail(process))")
        #expect(
            await process.waitForLine(seconds: 10) { $0.contains("handed leadership over before stopping") } != nil,
            "the leader logs the handover\n\(Self.tail(process))")
        let others = cluster.names.filter { $0 != leader }
        #expect(await eventually(60) { await Self.put(cluster.httpPort(others[0]), "after", "2") })
    }

    // MARK: - Against real nodes

    /// Whether the cluster's nodes offer the membership API; when they do not, checks that a joining node fails
    /// clearly (and records that the end-to-end part did not run).
    static func offersMembershipAPI(_ cluster: ServerCluster, joiner data: String) async throws -> Bool {
        let client = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: cluster.httpPort("node0"))])
        var probe: HTTPResponse?
        _ = await eventually(30) {
            probe = try? await client.request(.GET, "/v1/cluster")
            return probe != nil
        }
        if probe?.status == 200 { return true }
        #expect(!requireAPI, "RAFTLITE_REQUIRE_MEMBERSHIP_API=1, but GET /v1/cluster answers \(probe?.status ?? 0)")
        // The API is not there: a joining node must say so and stop, touching nothing.
        let ports = try ServerCluster.freePorts(2)
        let node = try serve(
            [
                "--join", "http://127.0.0.1:\(cluster.httpPort("node0"))", "--name", "node3", "--port", "\(ports[0])",
                "--http-port", "\(ports[1])", "--data-dir", data,
            ], label: "node3")
        #expect(await node.waitForExit(seconds: 60).map { $0 != 0 } == true, "\(tail(node))")
        #expect(
            await node.waitForLine(seconds: 10) { $0.contains("does not offer GET /v1/cluster") } != nil,
            "a clear failure\n\(tail(node))")
        #expect(!FileManager.default.fileExists(atPath: data + "/cluster.json"))
        print("MembershipProcessTests: the servers do not offer GET /v1/cluster yet; the end-to-end join did not run")
        return false
    }

    static func put(_ port: Int, _ key: String, _ value: String) async -> Bool {
        let client = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)], timeout: .seconds(5))
        return (try? await client.put(key, Array(value.utf8)))?.status == 200
    }

    static func localValue(_ port: Int, _ key: String) async -> String? {
        let client = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)], timeout: .seconds(5))
        guard let response = try? await client.get(key, serializable: true), response.status == 200 else { return nil }
        return response.text
    }

    /// (a) A node joins a running 3-node cluster from an empty data directory and receives the data; (c) restarted
    /// from its data directory without --join, it catches up on what was written while it was down.
    @Test func aNodeJoinsARunningClusterAndRestartsFromItsDataDirectory() async throws {
        let cluster = try ServerCluster(nodes: 3)
        defer { cluster.stopAll() }
        let data = cluster.scratch.path + "/node3"
        guard try await Self.offersMembershipAPI(cluster, joiner: data) else { return }
        #expect(await eventually(60) { await Self.put(cluster.httpPort("node0"), "before", "1") })
        let ports = try ServerCluster.freePorts(2)
        var node: ChildProcess? = try Self.serve(
            [
                "--join", "http://127.0.0.1:\(cluster.httpPort("node1"))", "--name", "node3", "--port", "\(ports[0])",
                "--http-port", "\(ports[1])", "--data-dir", data,
            ], label: "node3")
        defer { node?.kill9() }
        #expect(
            await node?.waitForLine(seconds: 120) { $0.contains("joined the cluster") } != nil, "\(Self.tail(node))")
        #expect(await eventually(60) { await Self.localValue(ports[1], "before") == "1" }, "\(Self.tail(node))")
        // The cluster commits with it, and a write made through it is seen everywhere.
        #expect(await Self.put(ports[1], "through-node3", "2"))
        #expect(await eventually(30) { await Self.localValue(cluster.httpPort("node2"), "through-node3") == "2" })

        node?.signal(SIGTERM)
        #expect(await node?.waitForExit(seconds: 30) == 0, "\(Self.tail(node))")
        #expect(await Self.put(cluster.httpPort("node0"), "while-down", "3"))
        node = try Self.serve(["--id", "node3", "--data-dir", data], label: "node3")
        #expect(await eventually(60) { await Self.localValue(ports[1], "while-down") == "3" }, "\(Self.tail(node))")
        #expect(node?.lines.contains { $0.contains("joining the cluster") } == false, "a restart does not join again")
    }

    /// (b) A dead node replaced by a new one on a new port: kill -9 one of three, join a new node (new name, new
    /// port), remove the dead one; the cluster keeps committing and the new node serves the data.
    @Test func aDeadNodeIsReplacedByANewOneOnANewPort() async throws {
        let cluster = try ServerCluster(nodes: 3)
        defer { cluster.stopAll() }
        let data = cluster.scratch.path + "/node3"
        guard try await Self.offersMembershipAPI(cluster, joiner: data) else { return }
        #expect(await eventually(60) { await Self.put(cluster.httpPort("node0"), "before", "1") })
        cluster.kill("node2")
        let ports = try ServerCluster.freePorts(2)
        let node = try Self.serve(
            [
                "--join", "http://127.0.0.1:\(cluster.httpPort("node0"))", "--name", "node3", "--port", "\(ports[0])",
                "--http-port", "\(ports[1])", "--data-dir", data,
            ], label: "node3")
        defer { node.kill9() }
        #expect(await node.waitForLine(seconds: 120) { $0.contains("joined the cluster") } != nil, "\(Self.tail(node))")
        let client = KVClient(
            endpoints: [
                Endpoint(host: "127.0.0.1", port: cluster.httpPort("node0")),
                Endpoint(host: "127.0.0.1", port: cluster.httpPort("node1")),
            ], timeout: .seconds(30))
        var removed: HTTPResponse?
        #expect(
            await eventually(60) {
                removed = try? await client.request(.DELETE, "/v1/members/node2")
                return removed?.status == 200
            }, "DELETE /v1/members/node2: \(removed?.status ?? 0) \(removed?.text ?? "")")
        // Three voters again (node0, node1, node3): the cluster commits, and the new node has everything.
        #expect(await Self.put(cluster.httpPort("node1"), "after", "2"))
        #expect(await eventually(60) { await Self.localValue(ports[1], "before") == "1" })
        #expect(await eventually(60) { await Self.localValue(ports[1], "after") == "2" })
        // With one of the remaining old members gone too, node0 and node3 are a majority of three.
        cluster.kill("node1")
        #expect(await eventually(60) { await Self.put(ports[1], "two-of-three", "3") }, "\(Self.tail(node))")
    }
}
