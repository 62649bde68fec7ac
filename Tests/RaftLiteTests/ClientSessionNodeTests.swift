import Foundation
import NIOPosix
import RaftCore
import RaftLite
import RaftTesting
import Testing
import ProcessTesting

/// A key-value state machine of text commands `key=value` that counts how often each command was applied, and
/// takes client sessions (its output, whether the key had a value, kept as one byte).
struct SessionStore: StateMachine {
    struct Snapshot: StateMachineSnapshot {
        let values: [String: String]
        let applies: [String: Int]

        func write(to writer: inout SnapshotWriter) throws {
            for map in [values, applies.mapValues(String.init)] {
                try writer.write(integer: UInt32(map.count))
                for (key, value) in map.sorted(by: { $0.key < $1.key }) {
                    try writer.write(blob: Array(key.utf8))
                    try writer.write(blob: Array(value.utf8))
                }
            }
        }
    }

    var values: [String: String] = [:]
    /// How many times each command was applied.
    var applies: [String: Int] = [:]

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> Bool {
        let text = String(decoding: command, as: UTF8.self)
        applies[text, default: 0] += 1
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return false }
        return values.updateValue(parts[1], forKey: parts[0]) != nil
    }

    func snapshot() -> Snapshot { Snapshot(values: values, applies: applies) }

    mutating func restore(from reader: inout SnapshotReader) throws {
        var maps: [[String: String]] = []
        for _ in 0..<2 {
            let count = try reader.read(UInt32.self)
            var map: [String: String] = [:]
            for _ in 0..<count {
                let key = String(decoding: try reader.readBlob(maxLength: 1 << 16), as: UTF8.self)
                map[key] = String(decoding: try reader.readBlob(maxLength: 1 << 16), as: UTF8.self)
            }
            maps.append(map)
        }
        values = maps[0]
        applies = maps[1].compactMapValues { Int($0) }
    }

    func encodeSessionOutput(_ output: Bool) -> [UInt8]? { [output ? 1 : 0] }
    func decodeSessionOutput(_ bytes: [UInt8]) -> Bool? { bytes.count == 1 && bytes[0] <= 1 ? bytes[0] == 1 : nil }
    static var supportsClientSessions: Bool { true }
}

/// Three `SessionStore` nodes on an in-memory network.
private struct SessionCluster {
    let network = InMemoryNetwork()
    let names = ["node0", "node1", "node2"]
    let nodes: [RaftNode<SessionStore>]

    init(options: RaftNode<SessionStore>.Options) throws {
        let configuration = try ClusterConfiguration(
            members: names.enumerated().map {
                ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1000 + $0)
            })
        let network = self.network
        nodes = try names.map { name in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            return try RaftNode(
                cluster: configuration, name: name, stateMachine: SessionStore(), options: options, eventLoop: loop,
                transport: InMemoryTransport(
                    id: ClusterConfiguration.nodeID(for: name), network: network, eventLoop: loop))
        }
    }

    func start() async throws { for node in nodes { try await node.start() } }
    func stop() async { for node in nodes { await node.stop() } }

    /// The node every node agrees leads, among `among`.
    func leader(among: [Int]? = nil) async -> Int? {
        let candidates = among ?? Array(nodes.indices)
        var found: Int?
        _ = await eventually {
            var statuses: [NodeStatus] = []
            for k in candidates { statuses.append(await nodes[k].status()) }
            guard let leader = statuses.first(where: { $0.role == .leader }),
                statuses.allSatisfy({ $0.leader == leader.name && $0.term == leader.term })
            else { return false }
            found = names.firstIndex(of: leader.name)
            return true
        }
        return found
    }

    func state(_ k: Int) async -> SessionStore? { (try? await nodes[k].readStateMachine { $0 }.get()) ?? nil }
}

private func sessionOptions() -> RaftNode<SessionStore>.Options {
    var options = RaftNode<SessionStore>.Options()
    options.tickInterval = .milliseconds(20)
    options.proposalTimeout = .seconds(3)
    options.logger.logLevel = .critical
    return options
}

@Suite(.serialized, .clusterSlot) struct ClientSessionNodeTests {
    /// Issue 14: a write retried through a leader change and a timeout is applied exactly once, and the retry gets
    /// the first result. The first answer is lost: the leader replicates the write but hears no acknowledgement, so
    /// its caller gets `timedOut`; the followers elect a new leader, which commits the write; another client writes
    /// the key afterwards; the retry, through the new leader, returns the first result (the key did not exist, the
    /// first index) and the key keeps the other client's value.
    @Test func aWriteRetriedThroughALeaderChangeAndATimeoutIsAppliedOnce() async throws {
        let cluster = try SessionCluster(options: sessionOptions())
        try await cluster.start()
        let old = try #require(await cluster.leader())
        let followers = cluster.nodes.indices.filter { $0 != old }
        let client = try await cluster.nodes[old].registerSession()
        #expect(client > 0)
        // The old leader's appends still reach the followers; nothing they send reaches it.
        for k in followers { cluster.network.block(from: cluster.nodes[k].id, to: cluster.nodes[old].id) }
        let first = ClientSession(clientID: client, sequence: 1)
        let lost = await #expect(throws: RaftNodeError.self) {
            try await cluster.nodes[old].propose(Array("k=first".utf8), session: first)
        }
        #expect(lost == .timedOut)
        #expect(lost?.outcomeIsUnknown == true)
        let new = try #require(await cluster.leader(among: followers))
        #expect(new != old)
        // Another client writes the key after the first write committed.
        let other = try await cluster.nodes[new].registerSession()
        #expect(other != client)
        let otherWrite = try await cluster.nodes[new].propose(
            Array("k=other".utf8), session: ClientSession(clientID: other, sequence: 1))
        #expect(otherWrite.output == true, "the first write was committed before it")
        // The retry, through the new leader.
        let retry = try await cluster.nodes[new].propose(Array("k=first".utf8), session: first)
        #expect(retry.output == false, "the first result: the key had no value when the write was applied")
        #expect(retry.index < otherWrite.index, "the index the write was first applied at")
        let applied = await cluster.nodes[new].status().appliedIndex
        for k in followers {
            #expect(await eventually { await cluster.nodes[k].status().appliedIndex >= applied })
            let state = try #require(await cluster.state(k))
            #expect(state.applies["k=first"] == 1, "applied once on \(cluster.names[k])")
            #expect(state.values["k"] == "other")
        }
        // The old leader, healed, applies the same log: once as well.
        cluster.network.heal()
        #expect(await eventually { await cluster.state(old)?.values["k"] == "other" })
        #expect(await cluster.state(old)?.applies["k=first"] == 1)
        // It answers the retry the same way too.
        let again = try await cluster.nodes[old].propose(Array("k=first".utf8), session: first)
        #expect(again.index == retry.index && again.term == retry.term && again.output == false)
        await cluster.stop()
    }

    @Test func sessionErrorsAreDefinite() async throws {
        let cluster = try SessionCluster(options: sessionOptions())
        try await cluster.start()
        let leader = try #require(await cluster.leader())
        let node = cluster.nodes[(leader + 1) % 3]  // a follower: through forwarding
        let client = try await node.registerSession()
        let one = try await node.propose(Array("a=1".utf8), session: ClientSession(clientID: client, sequence: 1))
        let two = try await node.propose(Array("a=2".utf8), session: ClientSession(clientID: client, sequence: 2))
        #expect(two.index > one.index && two.output == true)
        // A late copy of the first write: the client has moved on.
        let superseded = await #expect(throws: RaftNodeError.self) {
            try await node.propose(Array("a=1".utf8), session: ClientSession(clientID: client, sequence: 1))
        }
        #expect(superseded == .sequenceSuperseded && superseded?.outcomeIsUnknown == false)
        // A client id no register entry made.
        let unknown = await #expect(throws: RaftNodeError.self) {
            try await node.propose(Array("a=3".utf8), session: ClientSession(clientID: client + 1_000, sequence: 1))
        }
        #expect(unknown == .sessionExpired && unknown?.outcomeIsUnknown == false)
        let zero = await #expect(throws: RaftNodeError.self) {
            try await node.propose(Array("a=4".utf8), session: ClientSession(clientID: client, sequence: 0))
        }
        #expect(zero?.code == .invalidProposal)
        #expect(await eventually { await cluster.state(leader)?.values["a"] == "2" })
        for k in 0..<3 {
            #expect(await eventually { await cluster.state(k)?.applies == ["a=1": 1, "a=2": 1] })
        }
        await cluster.stop()
    }

    @Test func aStateMachineWithoutSessionsRefusesThem() async throws {
        let ports = try FreePorts.reserve(1)
        let configuration = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "solo", host: "127.0.0.1", port: ports[0])])
        var options = LocalCluster.options()
        options.proposalTimeout = .seconds(5)
        let node = try RaftNode(cluster: configuration, name: "solo", stateMachine: Recorder(), options: options)
        try await node.start()
        let error = await #expect(throws: RaftNodeError.self) { try await node.registerSession() }
        #expect(error?.code == .invalidProposal)
        let write = await #expect(throws: RaftNodeError.self) {
            try await node.propose([1], session: ClientSession(clientID: 1, sequence: 1))
        }
        #expect(write?.code == .invalidProposal)
        await node.stop()
    }

    /// The session table is part of the snapshot: after a snapshot (and a log compacted behind it) and a restart,
    /// a retry still gets the first result and is not applied again.
    @Test func aRetryAfterASnapshotAndARestartGetsTheFirstResult() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sessions-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ports = try FreePorts.reserve(1)
        let configuration = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "solo", host: "127.0.0.1", port: ports[0])])
        var options = sessionOptions()
        options.snapshotEntries = 0
        options.compactionMargin = 0
        func start() async throws -> RaftNode<SessionStore> {
            let node = try RaftNode(
                cluster: configuration, name: "solo", stateMachine: SessionStore(), dataDirectory: directory,
                options: options)
            try await node.start()
            return node
        }
        var node = try await start()
        let client = try await node.registerSession()
        let session = ClientSession(clientID: client, sequence: 1)
        let first = try await node.propose(Array("k=first".utf8), session: session)
        try await node.propose(Array("k=plain".utf8))
        let meta = try await node.snapshot()
        #expect(meta.index > first.index)
        await node.stop()
        node = try await start()
        let status = await node.status()
        #expect(status.firstIndex > first.index, "the log no longer holds the write: the snapshot's table answers")
        let retry = try await node.propose(Array("k=first".utf8), session: session)
        #expect(retry.index == first.index && retry.term == first.term && retry.output == false)
        let state = try #require(try await node.readStateMachine { $0 }.get())
        #expect(state.applies["k=first"] == 1 && state.values["k"] == "plain")
        // The session goes on.
        let next = try await node.propose(Array("k=next".utf8), session: ClientSession(clientID: client, sequence: 2))
        #expect(next.output == true)
        await node.stop()
    }
}
