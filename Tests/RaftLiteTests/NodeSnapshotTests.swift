import Foundation
import Logging
import NIOPosix
import RaftCore
import RaftLite
import RaftStorage
import RaftTesting
import Testing
import ProcessTesting

/// A state machine small enough to copy: how often each first byte was applied, and how many commands in all.
struct Tally: StateMachine {
    struct Snapshot: StateMachineSnapshot {
        let counts: [UInt8: UInt64]
        let total: UInt64

        func write(to writer: inout SnapshotWriter) throws {
            try writer.write(integer: total)
            try writer.write(integer: UInt32(counts.count))
            for (key, count) in counts.sorted(by: { $0.key < $1.key }) {
                try writer.write(integer: key)
                try writer.write(integer: count)
            }
        }
    }

    var counts: [UInt8: UInt64] = [:]
    var total: UInt64 = 0

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> UInt64 {
        counts[command.first ?? 0, default: 0] += 1
        total += 1
        return total
    }

    func snapshot() -> Snapshot { Snapshot(counts: counts, total: total) }

    mutating func restore(from reader: inout SnapshotReader) throws {
        let total = try reader.read(UInt64.self)
        let n = try reader.read(UInt32.self)
        guard n <= 256 else { throw SnapshotFormatError("\(n) counts") }
        var counts: [UInt8: UInt64] = [:]
        for _ in 0..<n { counts[try reader.read(UInt8.self)] = try reader.read(UInt64.self) }
        self.counts = counts
        self.total = total
    }
}

/// Three nodes with data directories, in this process.
private final class DiskCluster: Sendable {
    let configuration: ClusterConfiguration
    let directory: String
    let options: RaftNode<Tally>.Options
    private let nodes = LockedNodes()

    init(_ count: Int, options: RaftNode<Tally>.Options) throws {
        let ports = try FreePorts.reserve(count)
        configuration = try ClusterConfiguration(
            members: (0..<count).map {
                ClusterConfiguration.Member(name: "node\($0)", host: "127.0.0.1", port: ports[$0])
            })
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("snap-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.options = options
    }

    func dataDirectory(_ name: String) -> String { directory + "/" + name }

    func start(_ name: String) async throws {
        let node = try RaftNode(
            cluster: configuration, name: name, stateMachine: Tally(), dataDirectory: dataDirectory(name),
            options: options)
        try await node.start()
        nodes.set(name, node)
    }

    func stop(_ name: String) async { await nodes.remove(name)?.stop() }

    subscript(name: String) -> RaftNode<Tally>? { nodes.get(name) }

    func leader() async -> RaftNode<Tally>? {
        var found: RaftNode<Tally>?
        _ = await eventually {
            for node in nodes.all where await node.role == .leader {
                found = node
                return true
            }
            return false
        }
        return found
    }

    func tally(_ name: String) async -> Tally? {
        guard let node = self[name] else { return nil }
        return try? await node.readStateMachine { $0 }.get()
    }

    func tearDown() async {
        for node in nodes.all { await node.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a cluster, and stops it and removes its directory whatever happens.
private func withDiskCluster(
    _ count: Int, options: RaftNode<Tally>.Options, _ body: (DiskCluster) async throws -> Void
) async throws {
    let cluster = try DiskCluster(count, options: options)
    do {
        try await body(cluster)
    } catch {
        await cluster.tearDown()
        throw error
    }
    await cluster.tearDown()
}

private final class LockedNodes: @unchecked Sendable {
    private let lock = NSLock()
    private var nodes: [String: RaftNode<Tally>] = [:]
    func set(_ name: String, _ node: RaftNode<Tally>) { lock.withLock { nodes[name] = node } }
    func get(_ name: String) -> RaftNode<Tally>? { lock.withLock { nodes[name] } }
    func remove(_ name: String) -> RaftNode<Tally>? { lock.withLock { nodes.removeValue(forKey: name) } }
    var all: [RaftNode<Tally>] { lock.withLock { nodes.values.sorted { $0.name < $1.name } } }
}

private func options(snapshotEntries: Int = 40, margin: Int = 5) -> RaftNode<Tally>.Options {
    var options = RaftNode<Tally>.Options()
    options.tickInterval = .milliseconds(20)
    options.proposalTimeout = .seconds(10)
    options.snapshotEntries = snapshotEntries
    options.compactionMargin = margin
    options.snapshotChunkBytes = 64
    options.snapshotWindowBytes = 256
    options.logger.logLevel = .critical
    return options
}

@Suite(.serialized, .clusterSlot) struct NodeSnapshotTests {
    @Test func aFollowerStoppedWhileTheLogMovesOnCatchesUpThroughASnapshot() async throws {
        try await withDiskCluster(3, options: options()) { cluster in
            for name in ["node0", "node1", "node2"] { try await cluster.start(name) }
            let first = try #require(await cluster.leader())
            for k in 0..<10 { try await first.propose([UInt8(k)]) }
            // Stop a follower; the others go on far past the point the leader's log still holds.
            let follower = try #require(["node0", "node1", "node2"].first { $0 != first.name })
            let behind = try #require(await cluster[follower]?.status().appliedIndex)
            await cluster.stop(follower)
            let leader = try #require(await cluster.leader())
            for k in 0..<300 { try await leader.propose([UInt8(k % 7)]) }
            let leaderStatus = await leader.status()
            #expect(leaderStatus.snapshotIndex > LogIndex(200))
            #expect(leaderStatus.firstIndex > behind.next)
            // Back: the entries it needs are gone from the leader's log, so it must get a snapshot.
            try await cluster.start(follower)
            let caughtUp = await eventually {
                guard await cluster.tally(follower)?.total == 310, let node = cluster[follower] else { return false }
                return await node.status().appliedIndex >= leaderStatus.appliedIndex
            }
            #expect(caughtUp)
            let status = try #require(await cluster[follower]?.status())
            #expect(status.snapshotIndex > behind)
            #expect(status.firstIndex > behind.next)
            let mine = await cluster.tally(follower)
            let theirs = await cluster.tally(leader.name)
            #expect(mine?.counts == theirs?.counts)
            // And it keeps up by entries afterwards.
            try await leader.propose([42])
            #expect(await eventually { await cluster.tally(follower)?.total == 311 })
        }
    }

    @Test func aRestartedNodeStartsFromItsSnapshotAndTheLogAfterIt() async throws {
        try await withDiskCluster(1, options: options(snapshotEntries: 50, margin: 10)) { cluster in
            try await cluster.start("node0")
            let node = try #require(await cluster.leader())
            for k in 0..<175 { try await node.propose([UInt8(k % 3)]) }
            let before = await node.status()
            let tally = await cluster.tally("node0")
            #expect(before.snapshotIndex >= LogIndex(150))
            await cluster.stop("node0")
            let snapshots = try #require(try SnapshotStore(directory: cluster.dataDirectory("node0")).latest())
            #expect(snapshots.metadata.index == before.snapshotIndex)
            try await cluster.start("node0")
            let after = try #require(await cluster["node0"]?.status())
            #expect(after.snapshotIndex == before.snapshotIndex)
            // The log kept the margin before the snapshot, and nothing earlier.
            #expect(after.firstIndex > LogIndex(1))
            #expect(after.firstIndex <= LogIndex(before.snapshotIndex.rawValue - 10 + 1))
            #expect(await eventually { await cluster.tally("node0")?.counts == tally?.counts })
            #expect(await cluster.tally("node0")?.total == 175)
        }
    }

    /// The margin kept before a snapshot is bounded in bytes as well as in entries: with a bound of one byte, no
    /// entry fits and the log starts right after the snapshot; with none, the 1,000-entry margin keeps everything.
    @Test(arguments: [1, 0])
    func theCompactionMarginIsBoundedInBytesToo(marginBytes: Int) async throws {
        var options = options(snapshotEntries: 50, margin: 1_000)
        options.compactionMarginBytes = marginBytes
        try await withDiskCluster(1, options: options) { cluster in
            try await cluster.start("node0")
            let node = try #require(await cluster.leader())
            for k in 0..<120 { try await node.propose([UInt8(k % 3)]) }
            let done = await eventually { await node.status().snapshotIndex >= LogIndex(50) }
            #expect(done)
            let status = await node.status()
            if marginBytes == 0 {
                #expect(status.firstIndex == LogIndex(1), "all \(status.snapshotIndex) entries fit the margin")
            } else {
                #expect(status.firstIndex == status.snapshotIndex.next, "first \(status.firstIndex)")
            }
        }
    }

    /// After the first snapshot, the next waits until the bytes applied since reach `snapshotStateFactor` times
    /// its size, whatever `snapshotEntries` says; with the factor 0 only `snapshotEntries` counts.
    @Test(arguments: [0.0, 1000.0])
    func snapshotsWaitForWritesProportionalToTheLastOne(factor: Double) async throws {
        var options = options(snapshotEntries: 10, margin: 2)
        options.snapshotStateFactor = factor
        try await withDiskCluster(1, options: options) { cluster in
            try await cluster.start("node0")
            let node = try #require(await cluster.leader())
            for k in 0..<100 { try await node.propose([UInt8(k % 7)]) }
            let status = await node.status()
            #expect(status.snapshotIndex >= LogIndex(10), "the first snapshot does not wait")
            if factor == 0 {
                #expect(status.snapshotIndex >= LogIndex(90), "a snapshot every 10 entries")
            } else {
                // A snapshot of a few hundred bytes: the next one needs hundreds of kilobytes applied.
                #expect(status.snapshotIndex < LogIndex(30), "no snapshot after the first: \(status.snapshotIndex)")
            }
        }
    }

    @Test func aSnapshotCanBeAskedFor() async throws {
        try await withDiskCluster(1, options: options(snapshotEntries: 0)) { cluster in
            try await cluster.start("node0")
            let node = try #require(await cluster.leader())
            for k in 0..<12 { try await node.propose([UInt8(k)]) }
            #expect(await node.status().snapshotIndex == .zero)
            let meta = try await node.snapshot()
            let status = await node.status()
            #expect(meta.index == status.appliedIndex)
            #expect(status.snapshotIndex == meta.index)
            #expect(meta.voters == [node.id])
            // Nothing applied since: the same snapshot again.
            let again = try await node.snapshot()
            #expect(again == meta)
        }
    }

    @Test func aStateMachineThatKeepsTheDefaultsCannotSnapshot() {
        #expect(Tally.supportsSnapshots)
        #expect(!Recorder.supportsSnapshots)
        #expect(NoStateMachine.supportsSnapshots)
        var recorder = Recorder()
        let sink = SnapshotBuffer()
        var writer = SnapshotWriter(sink)
        #expect(throws: SnapshotFormatError.self) { try recorder.snapshot().write(to: &writer) }
        var reader = SnapshotReader(SnapshotBuffer([1, 2, 3]))
        #expect(throws: SnapshotFormatError.self) { try recorder.restore(from: &reader) }
    }

    @Test func aNodeWithoutASnapshotStoreSaysSo() async throws {
        let ports = try FreePorts.reserve(1)
        let configuration = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "solo", host: "127.0.0.1", port: ports[0])])
        let node = try RaftNode(cluster: configuration, name: "solo", stateMachine: Tally(), options: options())
        try await node.start()
        defer { Task { await node.stop() } }
        await #expect(throws: RaftNodeError.self) { try await node.snapshot() }
    }
}

@Suite struct ForgedSnapshotTests {
    /// An `installSnapshot` names bytes the receiver must already hold: one that arrives from the network (a buggy or
    /// hostile peer) is dropped, and the node goes on.
    @Test func anInstallSnapshotFromTheNetworkIsDroppedAndTheNodeGoesOn() async throws {
        let ports = try FreePorts.reserve(3)
        let configuration = try ClusterConfiguration(
            members: (0..<3).map { ClusterConfiguration.Member(name: "node\($0)", host: "127.0.0.1", port: ports[$0]) })
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("forged-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let network = InMemoryNetwork()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var nodes: [RaftNode<Tally>] = []
        for name in ["node0", "node1"] {
            let id = try #require(configuration[name]?.id)
            let node = try RaftNode(
                cluster: configuration, name: name, stateMachine: Tally(),
                storage: InMemoryNodeStorage(), snapshotStore: SnapshotStore(directory: directory.path + "/" + name),
                options: options(), eventLoop: loop,
                transport: InMemoryTransport(id: id, network: network, eventLoop: loop))
            try await node.start()
            nodes.append(node)
        }
        let started = nodes
        defer { Task { for node in started { await node.stop() } } }
        let forger = try #require(configuration["node2"]?.id)
        let fake = InMemoryTransport(id: forger, network: network, eventLoop: loop)
        try await fake.start(deliver: { _ in })
        _ = try await nodes[0].propose([1])
        let before = await nodes[0].status()
        let meta = SnapshotMetadata(index: LogIndex(1_000), term: before.term, voters: nodes.map(\.id) + [forger])
        let targets = nodes.map(\.id)
        // The transport is used on its loop only, here and at its shutdown below.
        nonisolated(unsafe) let forged = fake
        try await loop.submit {
            for target in targets {
                forged.send(Message(from: forger, to: target, term: before.term, kind: .installSnapshot(meta)))
            }
            forged.flush()
        }.get()
        // Both nodes still commit, with nothing installed and their logs intact.
        _ = try await nodes[1].propose([2])
        for node in nodes {
            let status = await node.status()
            #expect(status.started)
            #expect(status.snapshotIndex == .zero)
            #expect(status.firstIndex == LogIndex(1))
        }
        #expect(await eventually { (try? await nodes[0].readStateMachine { $0.total }.get()) == 2 })
        await fake.shutdown()
    }
}
