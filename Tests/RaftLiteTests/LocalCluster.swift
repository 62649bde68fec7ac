import Logging
import NIOConcurrencyHelpers
import NIOCore
import RaftCore
import RaftLite
import Testing

/// A state machine that records what it applies, readable from the test.
final class Recorder: StateMachine, Sendable {
    private let log = NIOLockedValueBox<[(LogIndex, [UInt8])]>([])

    func apply(_ command: [UInt8], at index: LogIndex) -> LogIndex {
        log.withLockedValue { $0.append((index, command)) }
        return index
    }

    var commands: [[UInt8]] { log.withLockedValue { $0.map(\.1) } }
    var indexes: [LogIndex] { log.withLockedValue { $0.map(\.0) } }
}

/// Polls until `condition` holds or the time is up.
func eventually(_ limit: Duration = .seconds(20), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return await condition()
}

/// A cluster of real nodes in this process, on loopback TCP.
final class LocalCluster: Sendable {
    let configuration: ClusterConfiguration
    let names: [String]
    let storages: NIOLockedValueBox<[String: InMemoryNodeStorage]>
    let recorders: NIOLockedValueBox<[String: Recorder]>
    let running: NIOLockedValueBox<[String: RaftNode<Recorder>]>
    let options: RaftNode<Recorder>.Options

    static func options(tickMilliseconds: Int64 = 20) -> RaftNode<Recorder>.Options {
        var options = RaftNode<Recorder>.Options()
        options.tickInterval = .milliseconds(tickMilliseconds)
        options.proposalTimeout = .seconds(10)
        options.logger.logLevel = .critical
        return options
    }

    /// Starts `count` nodes named node0, node1, ... (retrying with new ports if one was taken meanwhile).
    static func start(_ count: Int, options: RaftNode<Recorder>.Options = LocalCluster.options()) async throws
        -> LocalCluster
    {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let names = (0..<count).map { "node\($0)" }
            let ports = try FreePorts.reserve(count)
            let configuration = try ClusterConfiguration(
                members: zip(names, ports).map { ClusterConfiguration.Member(name: $0, host: "127.0.0.1", port: $1) })
            let cluster = LocalCluster(configuration: configuration, names: names, options: options)
            do {
                for name in names { try await cluster.startNode(name) }
                return cluster
            } catch {
                lastError = error
                await cluster.stopAll()
            }
        }
        throw lastError ?? RaftNodeError.configuration("cannot start a local cluster")
    }

    private init(configuration: ClusterConfiguration, names: [String], options: RaftNode<Recorder>.Options) {
        self.configuration = configuration
        self.names = names
        self.storages = NIOLockedValueBox(Dictionary(uniqueKeysWithValues: names.map { ($0, InMemoryNodeStorage()) }))
        self.recorders = NIOLockedValueBox([:])
        self.running = NIOLockedValueBox([:])
        self.options = options
    }

    /// Starts (or restarts, on the same storage, with a fresh state machine) the named node; `wiped` gives it empty
    /// storage instead, as if its disk had been replaced.
    func startNode(_ name: String, wiped: Bool = false) async throws {
        let recorder = Recorder()
        let storage = storages.withLockedValue { s in
            if wiped || s[name] == nil { s[name] = InMemoryNodeStorage() }
            return s[name] ?? InMemoryNodeStorage()
        }
        let node = try RaftNode(
            cluster: configuration, name: name, stateMachine: recorder,
            storage: storage, options: options)
        try await node.start()
        recorders.withLockedValue { $0[name] = recorder }
        running.withLockedValue { $0[name] = node }
    }

    func stopNode(_ name: String) async {
        let node = running.withLockedValue { $0.removeValue(forKey: name) }
        await node?.stop()
    }

    func stopAll() async {
        for name in names { await stopNode(name) }
    }

    subscript(name: String) -> RaftNode<Recorder>? { running.withLockedValue { $0[name] } }
    var nodes: [RaftNode<Recorder>] { running.withLockedValue { Array($0.values) }.sorted { $0.name < $1.name } }
    func recorder(_ name: String) -> Recorder? { recorders.withLockedValue { $0[name] } }

    /// The leader every running node agrees on, once there is one.
    func waitForLeader(within limit: Duration = .seconds(20)) async -> RaftNode<Recorder>? {
        var found: RaftNode<Recorder>?
        _ = await eventually(limit) {
            let statuses = await withTaskGroup(of: NodeStatus.self) { group in
                for node in nodes { group.addTask { await node.status() } }
                var all: [NodeStatus] = []
                for await s in group { all.append(s) }
                return all
            }
            guard let leader = statuses.first(where: { $0.role == .leader }),
                statuses.allSatisfy({ $0.leader == leader.name && $0.term == leader.term })
            else { return false }
            found = self[leader.name]
            return true
        }
        return found
    }
}
