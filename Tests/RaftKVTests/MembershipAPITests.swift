import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessTesting
import RaftCore
import RaftKVClient
@testable import RaftLite
import Testing

@testable import RaftKV

/// Three KV nodes in this process on loopback TCP, each with its HTTP server on the `http_port` of its cluster entry.
final class ServedCluster: Sendable {
    let configuration: ClusterConfiguration
    let nodes: [RaftNode<KVStore>]
    let servers: [KVServer]

    static func options() -> RaftNode<KVStore>.Options {
        var options = RaftNode<KVStore>.Options()
        options.tickInterval = .milliseconds(20)
        options.proposalTimeout = .seconds(10)
        options.logger.logLevel = .critical
        return options
    }

    /// Starts node0...node2 (retrying with new ports if one was taken meanwhile).
    static func start() async throws -> ServedCluster {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let ports = try FreePorts.reserve(6)
            let configuration = try ClusterConfiguration(
                members: (0..<3).map {
                    ClusterConfiguration.Member(
                        name: "node\($0)", host: "127.0.0.1", port: ports[$0],
                        fields: ["http_port": .number(Double(ports[3 + $0]))])
                })
            var nodes: [RaftNode<KVStore>] = []
            var servers: [KVServer] = []
            do {
                for member in configuration.members {
                    let node = try RaftNode(
                        cluster: configuration, name: member.name, stateMachine: KVStore(), options: options())
                    nodes.append(node)
                    try await node.start()
                    var serverOptions = KVServer.Options()
                    serverOptions.port = try #require(try member.port(field: "http_port"))
                    let server = KVServer(node: node, options: serverOptions, logger: Logger(label: "test")) { [] }
                    try await server.start()
                    servers.append(server)
                }
                return ServedCluster(configuration: configuration, nodes: nodes, servers: servers)
            } catch {
                lastError = error
                for server in servers { await server.drain(timeout: .seconds(1)) }
                for node in nodes { await node.stop() }
            }
        }
        throw lastError ?? RaftNodeError.configuration("cannot start the cluster")
    }

    private init(configuration: ClusterConfiguration, nodes: [RaftNode<KVStore>], servers: [KVServer]) {
        self.configuration = configuration
        self.nodes = nodes
        self.servers = servers
    }

    func endpoint(_ name: String) -> Endpoint {
        let port = (try? configuration[name]?.port(field: "http_port")) ?? nil
        return Endpoint(host: "127.0.0.1", port: port ?? 1)
    }

    func client(_ name: String) -> KVClient {
        KVClient(endpoints: [endpoint(name)], timeout: .seconds(30))
    }

    subscript(name: String) -> RaftNode<KVStore>? { nodes.first { $0.name == name } }

    /// The leader every node agrees on.
    func waitForLeader() async -> String? {
        var leader: String?
        _ = await eventually {
            var statuses: [NodeStatus] = []
            for node in nodes { statuses.append(await node.status()) }
            guard let l = statuses.first(where: { $0.role == .leader }),
                statuses.allSatisfy({ $0.leader == l.name && $0.term == l.term })
            else { return false }
            leader = l.name
            return true
        }
        return leader
    }

    func stop() async {
        for server in servers { await server.drain(timeout: .seconds(1)) }
        for node in nodes { await node.stop() }
    }
}

/// The membership endpoints over real HTTP on loopback, against nodes in this process.
@Suite(.serialized, .clusterSlot) struct MembershipAPITests {
    static func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func everyNodeListsTheThreeVotersAndTheLeaderAndSaysSoInItsStatus() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        for node in cluster.nodes {
            let response = try await cluster.client(node.name).members()
            #expect(response.status == 200, "\(response.text)")
            #expect(response.header("content-type") == "application/json")
            let report = try #require(MembershipReport.decode(response))
            #expect(report.members.map(\.name) == ["node0", "node1", "node2"])
            #expect(report.members.allSatisfy { $0.role == "voter" && $0.ip == "127.0.0.1" })
            for member in report.members {
                #expect(member.port == cluster.configuration[member.name]?.port)
                #expect(member.httpPort == cluster.endpoint(member.name).port)
            }
            #expect(!report.joint && report.committed && report.index == 0)
            // The leader it names is the one elected (on a loaded machine an election may be under way for a moment:
            // then it names none, and is asked again).
            var named = report.leader
            _ = await eventually(30) {
                named = MembershipReport.decode((try? await cluster.client(node.name).members()) ?? response)?.leader
                return named != nil
            }
            let current = await cluster.waitForLeader()
            #expect(named == current && current != nil, "\(node.name) names \(named ?? "none"), first \(leader)")
            let status = try await cluster.client(node.name).status(at: cluster.endpoint(node.name))
            var fresh = report
            fresh.leader = status.membership?.leader
            #expect(status.membership == fresh, "the status carries the same membership as GET /v1/members")
        }
        // The failure detector's view is in every status: each node sees the two others, reachable, with a round
        // trip; the leader also says they answered lately.
        for node in cluster.nodes {
            let seen = await eventually(20) {
                guard let status = try? await cluster.client(node.name).status(at: cluster.endpoint(node.name)),
                    let peers = status.peers
                else { return false }
                return peers.map(\.name).sorted() == cluster.nodes.map(\.name).filter { $0 != node.name }.sorted()
                    && peers.allSatisfy { $0.reachable && $0.roundTripMs != nil && $0.lastContactMs != nil }
                    && (status.role != "leader" || peers.allSatisfy { $0.active == true })
            }
            #expect(seen, "\(node.name) reports its peers' health")
        }
        await cluster.stop()
    }

    @Test func aLearnerIsAddedThroughAFollowerThenRemoved() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader }).name
        #expect(try await cluster.client(leader).put("before", Self.json("x")).status == 200)

        // The newcomer: not in the cluster file; it has the bootstrap configuration and its own address.
        let ports = try FreePorts.reserve(2)
        let address = ClusterConfiguration.Member(
            name: "node3", host: "127.0.0.1", port: ports[0], fields: ["http_port": .number(Double(ports[1]))])
        let newcomer = try RaftNode(
            cluster: cluster.configuration, name: "node3", stateMachine: KVStore(), options: ServedCluster.options(),
            address: address)
        try await newcomer.start()

        // Asked of a follower, as a write would be: it is done by the leader, and the answer is the leader's.
        let added = try await cluster.client(follower).addMember(
            name: "node3", ip: "127.0.0.1", port: ports[0], httpPort: ports[1], learner: true,
            fields: ["zone": "b"])
        #expect(added.status == 200, "\(added.text)")
        let report = try #require(MembershipReport.decode(added))
        #expect(report.members.map(\.name) == ["node0", "node1", "node2", "node3"])
        let learner = try #require(report.members.first { $0.name == "node3" })
        #expect(learner.role == "learner" && learner.port == ports[0] && learner.httpPort == ports[1])
        #expect(report.committed && !report.joint && report.index > 0)
        #expect(report.leader == leader)
        // The extra field travels in the membership.
        let seen = try #require(await cluster[leader]?.membership())
        #expect(seen.members.first { $0.name == "node3" }?.fields["zone"] == .string("b"))
        #expect(seen.learners.map(\.name) == ["node3"])
        // Every node's status shows the learner once it has the entry.
        for node in cluster.nodes {
            #expect(
                await eventually {
                    let status = try? await cluster.client(node.name).status(at: cluster.endpoint(node.name))
                    return status?.membership?.members.first { $0.name == "node3" }?.role == "learner"
                }, "\(node.name) shows node3 as a learner")
        }

        // The same again: 409, from either node.
        for name in [leader, follower] {
            let again = try await cluster.client(name).addMember(
                name: "node3", ip: "127.0.0.1", port: ports[0], learner: true)
            #expect(again.status == 409, "\(again.text)")
            #expect(KVErrorReply.decode(again)?.error == "already_member")
        }
        // Promoting a voter, or anything of someone who is not a member.
        let promoteVoter = try await cluster.client(leader).promoteMember(follower)
        #expect(promoteVoter.status == 409 && KVErrorReply.decode(promoteVoter)?.error == "already_member")
        let promoteStranger = try await cluster.client(follower).promoteMember("nobody")
        #expect(promoteStranger.status == 404 && KVErrorReply.decode(promoteStranger)?.error == "not_member")

        // Removed through the follower again.
        let removed = try await cluster.client(follower).removeMember("node3")
        #expect(removed.status == 200, "\(removed.text)")
        let after = try #require(MembershipReport.decode(removed))
        #expect(after.members.map(\.name) == ["node0", "node1", "node2"] && after.committed)
        let removedAgain = try await cluster.client(leader).removeMember("node3")
        #expect(removedAgain.status == 404 && KVErrorReply.decode(removedAgain)?.error == "not_member")
        // Writes still commit.
        #expect(try await cluster.client(follower).put("after", Self.json("y")).status == 200)
        await newcomer.stop()
        await cluster.stop()
    }

    @Test func aForwardedRequestIsNotForwardedAgain() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        let follower = try #require(cluster.nodes.first { $0.name != leader }).name
        let response = try await cluster.client(follower).request(
            .DELETE, "/v1/members/\(leader)", headers: [(KVServer.forwardedHeader, "elsewhere")])
        #expect(response.status == 503, "\(response.text)")
        let error = try #require(KVErrorReply.decode(response))
        #expect(error.error == "unavailable" && error.message.contains(leader), "\(error.message)")
        // Nothing was removed.
        let report = try #require(MembershipReport.decode(try await cluster.client(leader).members()))
        #expect(report.members.count == 3)
        await cluster.stop()
    }

    @Test func malformedBodiesAre400sThatNameTheField() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        let client = cluster.client(leader)
        let cases: [(String, String?)] = [
            ("", nil), ("not json", nil), ("[1]", nil),
            ("{\"ip\":\"127.0.0.1\",\"port\":1}", "name"),
            ("{\"name\":7,\"ip\":\"127.0.0.1\",\"port\":1}", "name"),
            ("{\"name\":\"n\",\"port\":1}", "ip"),
            ("{\"name\":\"n\",\"ip\":\"127.0.0.1\"}", "port"),
            ("{\"name\":\"n\",\"ip\":\"127.0.0.1\",\"port\":70000}", "port"),
            ("{\"name\":\"n\",\"ip\":\"127.0.0.1\",\"port\":1,\"http_port\":\"x\"}", "http_port"),
            ("{\"name\":\"n\",\"ip\":\"127.0.0.1\",\"port\":1,\"role\":\"boss\"}", "role"),
        ]
        for (body, field) in cases {
            let response = try await client.request(.POST, "/v1/members", body: Self.json(body))
            #expect(response.status == 400, "\(body): \(response.text)")
            let error = try #require(KVErrorReply.decode(response))
            #expect(error.error == "bad_body" && error.field == field, "\(body): \(response.text)")
            if let field { #expect(error.message.hasPrefix(field + ":"), "\(error.message)") }
        }
        let badTransfer = try await client.request(.POST, "/v1/leader/transfer", body: Self.json("{\"to\":3}"))
        #expect(badTransfer.status == 400 && KVErrorReply.decode(badTransfer)?.field == "to")
        // Nothing changed.
        let report = try #require(MembershipReport.decode(try await client.members()))
        #expect(report.members.count == 3 && report.index == 0)
        await cluster.stop()
    }

    @Test func leadershipMovesToTheVoterAsked() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        let target = try #require(cluster.nodes.first { $0.name != leader }).name
        // Asked of the target itself, a follower: forwarded to the leader.
        let response = try await cluster.client(target).transferLeadership(to: target)
        #expect(response.status == 200, "\(response.text)")
        #expect(LeaderTransferReply.decode(response) == LeaderTransferReply(leader: target))
        let status = try await cluster.client(target).status(at: cluster.endpoint(target))
        #expect(status.role == "leader" && status.id == target)
        #expect(try await cluster.client(leader).put("after", Self.json("z")).status == 200)
        // Refusals: to a stranger, and to the leader itself (already done).
        let stranger = try await cluster.client(target).transferLeadership(to: "nobody")
        #expect(stranger.status == 404 && KVErrorReply.decode(stranger)?.error == "not_member")
        let itself = try await cluster.client(target).transferLeadership(to: target)
        #expect(LeaderTransferReply.decode(itself) == LeaderTransferReply(leader: target))
        // With no target: some other voter leads afterwards.
        let any = try await cluster.client(leader).transferLeadership()
        let next = try #require(LeaderTransferReply.decode(any), "\(any.text)")
        #expect(next.leader != target)
        await cluster.stop()
    }

    @Test func theClusterEndpointGivesTheIDAndABootstrapThatParsesBack() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        for node in cluster.nodes {
            let response = try await cluster.client(node.name).cluster()
            #expect(response.status == 200)
            let report = try #require(ClusterReport.decode(response), "\(response.text)")
            #expect(report.clusterID == cluster.configuration.clusterID)
            let parsed = try ClusterConfiguration(json: report.bootstrap)
            #expect(parsed.members == cluster.configuration.members)
            #expect(parsed.clusterID == cluster.configuration.clusterID)
        }
        await cluster.stop()
    }

    /// `raft-lite members` and `raft-lite leader transfer` against the servers.
    @Test func theCommandLineListsAddsAndTransfers() async throws {
        let cluster = try await ServedCluster.start()
        defer { Task { await cluster.stop() } }
        let leader = try #require(await cluster.waitForLeader())
        let endpoints = cluster.nodes.map { cluster.endpoint($0.name).description }.joined(separator: ",")
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        func run(_ arguments: [String]) async throws -> (Int32, String) { try await SnapshotServerTests.run(arguments) }
        let (listed, listing) = try await run(["members", "list", "--endpoints", endpoints])
        #expect(listed == 0, "\(listing)")
        #expect(listing.contains("NAME") && listing.contains("\(leader) *") && listing.contains("joint: no"))
        let port = try FreePorts.reserve(1)[0]
        let (added, addOutput) = try await run([
            "members", "add", "node9", "--ip", "127.0.0.1", "--port", "\(port)", "--learner", "--endpoints", endpoints,
        ])
        #expect(added == 0, "\(addOutput)")
        #expect(addOutput.contains("node9") && addOutput.contains("learner"), "\(addOutput)")
        let (again, againOutput) = try await run([
            "members", "add", "node9", "--ip", "127.0.0.1", "--port", "\(port)", "--learner", "--endpoints", endpoints,
        ])
        #expect(again == 2 && againOutput.contains("already_member"), "\(againOutput)")
        let (status, statusOutput) = try await run(["status", "--endpoints", endpoints])
        #expect(status == 0, "\(statusOutput)")
        #expect(
            statusOutput.contains("node9") && statusOutput.contains("learner") && statusOutput.contains("joint: no"))
        let (removed, removeOutput) = try await run(["members", "remove", "node9", "--endpoints", endpoints])
        #expect(removed == 0 && !removeOutput.contains("node9"), "\(removeOutput)")
        let target = try #require(cluster.nodes.first { $0.name != leader }).name
        let (moved, moveOutput) = try await run(["leader", "transfer", "--to", target, "--endpoints", endpoints])
        #expect(moved == 0 && moveOutput.contains("leader: \(target)"), "\(moveOutput)")
        await cluster.stop()
    }
}

/// The membership metrics of real `raft-lite serve` processes.
@Suite(.serialized, .clusterSlot) struct MembershipMetricsTests {
    /// The value of the sample of `name` whose labels include every one of `labels` (`key="value"`).
    static func sample(_ text: String, _ name: String, _ labels: [String]) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
            guard labels.allSatisfy({ line.contains($0) }), let value = line.split(separator: " ").last else {
                continue
            }
            return Double(value)
        }
        return nil
    }

    @Test func membersJointChangesAndTransfersAreExported() async throws {
        let cluster = try ServerCluster()
        defer { cluster.stopAll() }
        let leader = try #require(await KVServerTests.waitForLeader(cluster))
        let client = KVServerTests.client(cluster, node: leader)
        func metrics() async throws -> String { try await client.request(.GET, "/metrics").text }
        let node = "node=\"\(leader)\""
        var text = try await metrics()
        #expect(Self.sample(text, "raft_members", [node, "role=\"voter\""]) == 3, "\(text)")
        #expect(Self.sample(text, "raft_members", [node, "role=\"learner\""]) == 0)
        #expect(Self.sample(text, "raft_membership_joint", [node]) == 0)

        let port = try FreePorts.reserve(1)[0]
        let added = try await client.addMember(name: "node9", ip: "127.0.0.1", port: port, learner: true)
        #expect(added.status == 200, "\(added.text)")
        text = try await metrics()
        #expect(Self.sample(text, "raft_members", [node, "role=\"learner\""]) == 1, "\(text)")
        #expect(Self.sample(text, "raft_members", [node, "role=\"voter\""]) == 3)
        #expect(Self.sample(text, "raft_membership_changes_total", [node]) == 1)
        #expect(try await client.removeMember("node9").status == 200)
        text = try await metrics()
        #expect(Self.sample(text, "raft_members", [node, "role=\"learner\""]) == 0)
        #expect(Self.sample(text, "raft_membership_changes_total", [node]) == 2)

        let moved = try await client.transferLeadership()
        #expect(moved.status == 200, "\(moved.text)")
        text = try await metrics()
        #expect(Self.sample(text, "raft_leadership_transfers_total", [node]) == 1, "\(text)")
    }
}

/// The membership endpoints' rules alone: routing, bodies, checks against the membership, replies.
@Suite struct MembershipRoutingTests {
    static let router = KVRouter(maxKeyBytes: 8, maxValueBytes: 1024)

    static func route(_ method: HTTPMethod, _ uri: String, body: String = "") -> KVRoute {
        router.route(KVRequest(method: method, uri: uri, body: .bytes(Array(body.utf8))))
    }

    static func refusal(_ route: KVRoute) -> KVReply? {
        if case .refused(let reply) = route { return reply }
        return nil
    }

    @Test func theEndpointsAndTheirMethods() throws {
        #expect(Self.route(.GET, "/v1/members") == .members)
        #expect(Self.route(.GET, "/v1/cluster") == .cluster)
        #expect(Self.route(.DELETE, "/v1/members/node%201") == .membership(.remove("node 1")))
        #expect(Self.route(.POST, "/v1/members/n1/promote") == .membership(.promote("n1")))
        #expect(Self.route(.POST, "/v1/leader/transfer") == .membership(.transfer(to: nil)))
        #expect(Self.route(.POST, "/v1/leader/transfer", body: "{}") == .membership(.transfer(to: nil)))
        #expect(Self.route(.POST, "/v1/leader/transfer", body: "{\"to\":null}") == .membership(.transfer(to: nil)))
        #expect(Self.route(.POST, "/v1/leader/transfer", body: " {\"to\":\"n2\"} ") == .membership(.transfer(to: "n2")))
        let member = ClusterConfiguration.Member(
            name: "n3", host: "10.0.0.3", port: 9000, fields: ["http_port": .number(8000), "zone": .string("a")])
        #expect(
            Self.route(
                .POST, "/v1/members",
                body: "{\"name\":\"n3\",\"ip\":\"10.0.0.3\",\"port\":\"9000\",\"http_port\":8000,\"zone\":\"a\"}")
                == .membership(.add(MemberRequest(member: member, role: .voter))))
        #expect(
            Self.route(
                .POST, "/v1/members", body: "{\"name\":\"n3\",\"ip\":\"10.0.0.3\",\"port\":9000,\"role\":\"learner\"}")
                == .membership(
                    .add(
                        MemberRequest(
                            member: ClusterConfiguration.Member(name: "n3", host: "10.0.0.3", port: 9000),
                            role: .learner))))
        for (method, uri, allowed) in [
            (HTTPMethod.PUT, "/v1/members", "GET, POST"), (.GET, "/v1/members/n1", "DELETE"),
            (.GET, "/v1/members/n1/promote", "POST"), (.POST, "/v1/cluster", "GET"),
            (.GET, "/v1/leader/transfer", "POST"),
        ] {
            let reply = try #require(Self.refusal(Self.route(method, uri)), "\(method) \(uri)")
            #expect(reply.status == .methodNotAllowed && reply.extraHeaders.first?.value == allowed)
        }
        #expect(Self.refusal(Self.route(.GET, "/v1/members?x=1"))?.text.contains("bad_query") == true)
        #expect(Self.refusal(Self.route(.DELETE, "/v1/members/"))?.text.contains("bad_name") == true)
        #expect(Self.refusal(Self.route(.DELETE, "/v1/members/%zz"))?.text.contains("bad_name") == true)
        #expect(Self.refusal(Self.route(.POST, "/v1/members/n1/demote"))?.status == .notFound)
        let unknown = try #require(Self.refusal(Self.route(.POST, "/v1/leader/transfer", body: "{\"too\":\"n\"}")))
        #expect(unknown.status == .badRequest && unknown.text.contains("\"field\":\"too\""))
    }

    static func membership(_ roles: [(String, ClusterMembership.Role)]) -> ClusterMembership {
        ClusterMembership(
            members: roles.map { .init(name: $0.0, host: "h", port: 1, role: $0.1, fields: [:]) }, isJoint: false,
            index: LogIndex(5), committed: true)
    }

    @Test func checksAgainstTheMembershipDecideTheConflicts() {
        let m = Self.membership([("a", .voter), ("b", .voter), ("c", .learner), ("d", .outgoingVoter)])
        func add(_ name: String, _ role: MemberRequest.Role) -> MembershipRequest {
            .add(MemberRequest(member: .init(name: name, host: "h", port: 2), role: role))
        }
        func status(_ plan: MembersAPI.Plan) -> (UInt, String)? {
            guard case .answer(let reply) = plan else { return nil }
            return (reply.status.code, reply.text)
        }
        #expect(status(MembersAPI.plan(add("b", .voter), in: m, selfName: "a"))?.0 == 409)
        #expect(status(MembersAPI.plan(add("c", .learner), in: m, selfName: "a"))?.0 == 409)
        #expect(
            MembersAPI.plan(add("c", .voter), in: m, selfName: "a")
                == .run(.addVoter(.init(name: "c", host: "h", port: 2))), "a learner asked to be a voter is promoted")
        #expect(
            MembersAPI.plan(add("b", .learner), in: m, selfName: "a")
                == .run(.addLearner(.init(name: "b", host: "h", port: 2))), "a voter asked to be a learner is demoted")
        #expect(
            MembersAPI.plan(add("e", .voter), in: m, selfName: "a")
                == .run(.addVoter(.init(name: "e", host: "h", port: 2))))
        #expect(status(MembersAPI.plan(.remove("z"), in: m, selfName: "a"))?.0 == 404)
        #expect(MembersAPI.plan(.remove("c"), in: m, selfName: "a") == .run(.remove("c")))
        #expect(status(MembersAPI.plan(.promote("a"), in: m, selfName: "a"))?.0 == 409)
        #expect(status(MembersAPI.plan(.promote("z"), in: m, selfName: "a"))?.0 == 404)
        #expect(MembersAPI.plan(.promote("c"), in: m, selfName: "a") == .run(.promote("c")))
        #expect(MembersAPI.plan(.transfer(to: nil), in: m, selfName: "a") == .run(.transfer(to: nil)))
        #expect(MembersAPI.plan(.transfer(to: "b"), in: m, selfName: "a") == .run(.transfer(to: "b")))
        #expect(status(MembersAPI.plan(.transfer(to: "a"), in: m, selfName: "a"))?.1 == "{\"leader\":\"a\"}")
        #expect(status(MembersAPI.plan(.transfer(to: "c"), in: m, selfName: "a"))?.0 == 409)
        #expect(status(MembersAPI.plan(.transfer(to: "d"), in: m, selfName: "a"))?.0 == 409)
        #expect(status(MembersAPI.plan(.transfer(to: "z"), in: m, selfName: "a"))?.0 == 404)
    }

    @Test func repliesAndTheirJSON() throws {
        let m = ClusterMembership(
            members: [
                .init(name: "a", host: "h", port: 1, role: .voter, fields: ["http_port": .string("81")]),
                .init(name: "b", host: "h", port: 2, role: .learner, fields: [:]),
            ], isJoint: true, index: LogIndex(7), committed: false)
        #expect(
            KVReply.members(m, leader: nil).text
                == "{\"members\":[{\"name\":\"a\",\"ip\":\"h\",\"port\":1,\"http_port\":81,\"role\":\"voter\"},"
                + "{\"name\":\"b\",\"ip\":\"h\",\"port\":2,\"role\":\"learner\"}],\"joint\":true,\"index\":7,"
                + "\"committed\":false,\"leader\":null}")
        let decoded = try #require(
            MembershipReport.decode(HTTPResponse(status: 200, body: KVReply.members(m, leader: "a").body)))
        #expect(decoded.members[0] == MembershipReport.Member(name: "a", ip: "h", port: 1, httpPort: 81, role: "voter"))
        #expect(decoded.joint && decoded.index == 7 && !decoded.committed && decoded.leader == "a")

        let configuration = try ClusterConfiguration(
            members: [.init(name: "a", host: "h", port: 1, fields: ["http_port": .number(81)])], clusterID: "c\"1")
        let cluster = KVReply.cluster(configuration)
        #expect(cluster.text == "{\"cluster_id\":\"c\\\"1\",\"bootstrap\":" + configuration.json() + "}")

        #expect(KVReply.membershipFailure(RaftNodeError.timedOut).status == .gatewayTimeout)
        let refused = KVReply.membershipFailure(RaftNodeError.membership(.inProgress, leaderHint: nil))
        #expect(refused.status == .serviceUnavailable && refused.text.contains("membership_refused"))
        let notLeader = KVReply.membershipFailure(RaftNodeError.notLeader(leaderHint: "b"))
        #expect(notLeader.status == .serviceUnavailable && notLeader.text.contains("\"unavailable\""))
        struct Unexpected: Error {}
        #expect(KVReply.membershipFailure(Unexpected()).status == .gatewayTimeout)
        // A status without a membership is written as before; with one, it comes last.
        let status = StatusBody(
            id: "n1", role: "leader", term: 3, leader: "n1", commitIndex: 10, appliedIndex: 9, lastIndex: 11)
        #expect(!String(decoding: try JSONWriter.encode(status), as: UTF8.self).contains("membership"))
        var withMembers = status
        withMembers.membership = MembersBody(m, leader: "n1")
        #expect(String(decoding: try JSONWriter.encode(withMembers), as: UTF8.self).hasSuffix(",\"leader\":\"n1\"}}"))
    }

    @Test func theReaderParsesJSONAndRefusesWhatIsNot() throws {
        #expect(
            try JSONReader.parse(Array("{\"a\":[1,-2.5e1,true,false,null],\"b\":\"\\u00e9\\ud83d\\ude00\\n\"}".utf8))
                == .object([
                    "a": .array([.number(1), .number(-25), .bool(true), .bool(false), .null]), "b": .string("é😀\n"),
                ]))
        for bad in [
            "", "{", "{\"a\":1,}", "[1 2]", "01", "1.", "-", "\"\\x\"", "\"\\ud800\"", "{\"a\":1,\"a\":2}", "1 2",
            "\"\u{01}\"",
            String(repeating: "[", count: 40) + String(repeating: "]", count: 40), "tru", "nul",
        ] {
            #expect(throws: JSONReader.Failure.self, "\(bad)") { try JSONReader.parse(Array(bad.utf8)) }
        }
        #expect(throws: JSONReader.Failure.self) { try JSONReader.parse([0x22, 0xFF, 0x22]) }
    }
}
