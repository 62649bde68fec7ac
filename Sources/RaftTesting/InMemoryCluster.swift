import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftStorage

/// Several `RaftNode`s in one process, talking over an `InMemoryNetwork` and keeping their logs in memory: for
/// testing your own `StateMachine` — proposals, leader changes, partitions, restarts — without sockets or files.
///
/// ```swift
/// let cluster = try InMemoryCluster(size: 3) { _ in Counter() }
/// try await cluster.startAll()
/// let leader = try #require(await cluster.leader())
/// _ = try await leader.propose(Array("add 5".utf8))
/// cluster.isolate(leader.name)            // the others elect a new leader
/// await cluster.stopAll()
/// ```
///
/// A node stopped with `stop(_:)` keeps its storage: `start(_:)` brings it back with its term, vote and log, and a
/// fresh state machine that the log is replayed into, as a restarted process would.
public final class InMemoryCluster<Machine: StateMachine>: Sendable {
    public let configuration: ClusterConfiguration
    /// The nodes' names, in order: node0, node1, ...
    public let names: [String]
    /// The network between the nodes: cut and heal links on it (or use `isolate(_:)` and `heal()`).
    public let network = InMemoryNetwork()
    private let storages: [String: InMemoryNodeStorage]
    private let options: RaftNode<Machine>.Options
    private let makeMachine: @Sendable (String) -> sending Machine
    private let running = NIOLockedValueBox<[String: RaftNode<Machine>]>([:])

    /// A cluster of `size` nodes named node0, node1, ...; `makeMachine` makes each node's state machine (called
    /// again at each restart).
    public init(
        size: Int = 3, options: RaftNode<Machine>.Options = RaftNode<Machine>.Options(),
        makeMachine: @escaping @Sendable (String) -> sending Machine
    ) throws(ClusterConfigurationError) {
        let names = (0..<max(size, 0)).map { "node\($0)" }
        // The addresses are never used: nothing listens or connects.
        self.configuration = try ClusterConfiguration(
            members: names.enumerated().map { ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1 + $0) })
        self.names = names
        self.storages = Dictionary(uniqueKeysWithValues: names.map { ($0, InMemoryNodeStorage()) })
        self.options = options
        self.makeMachine = makeMachine
    }

    /// The running node called `name`, if it is running.
    public func node(_ name: String) -> RaftNode<Machine>? {
        running.withLockedValue { $0[name] }
    }

    /// Every running node, in name order.
    public var nodes: [RaftNode<Machine>] {
        running.withLockedValue { nodes in names.compactMap { nodes[$0] } }
    }

    /// Starts (or restarts, from its storage) the node called `name`.
    public func start(_ name: String) async throws(RaftNodeError) {
        guard let storage = storages[name] else {
            throw .configuration(
                "no node called \(name) in this cluster (its nodes are \(names.joined(separator: ", ")))")
        }
        guard node(name) == nil else { throw .alreadyStarted }
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let transport = InMemoryTransport(
            id: ClusterConfiguration.nodeID(for: name), network: network, eventLoop: eventLoop)
        let node = try RaftNode(
            cluster: configuration, name: name, stateMachine: makeMachine(name), storage: storage, options: options,
            eventLoop: eventLoop, transport: transport)
        try await node.start()
        running.withLockedValue { $0[name] = node }
    }

    /// Starts every node that is not running.
    public func startAll() async throws(RaftNodeError) {
        for name in names where node(name) == nil { try await start(name) }
    }

    /// Stops the node called `name`; its storage stays, for `start(_:)`.
    public func stop(_ name: String) async {
        guard let node = running.withLockedValue({ $0.removeValue(forKey: name) }) else { return }
        await node.stop()
    }

    /// Stops every running node.
    public func stopAll() async {
        for name in names { await stop(name) }
    }

    /// Cuts the node called `name` off from every other node, both ways.
    public func isolate(_ name: String) {
        network.isolate(ClusterConfiguration.nodeID(for: name))
    }

    /// Restores every link.
    public func heal() {
        network.heal()
    }

    /// The leader that every running node not cut off agrees on, waiting for one up to `timeout`; nil if there is
    /// none by then. Nodes isolated with `isolate(_:)` are not asked.
    public func leader(
        excluding isolated: Set<String> = [], timeout: Duration = .seconds(20)
    ) async -> RaftNode<Machine>? {
        let deadline = ContinuousClock.now + timeout
        repeat {
            let asked = nodes.filter { !isolated.contains($0.name) }
            var statuses: [NodeStatus] = []
            for node in asked { statuses.append(await node.status()) }
            if let name = statuses.first?.leader, statuses.allSatisfy({ $0.leader == name }),
                let leader = asked.first(where: { $0.name == name }),
                statuses.contains(where: { $0.name == name && $0.role == .leader })
            {
                return leader
            }
            try? await Task.sleep(for: .milliseconds(10))
        } while ContinuousClock.now < deadline
        return nil
    }
}
