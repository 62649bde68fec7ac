import NIOConcurrencyHelpers
import NIOCore
import RaftCore
import RaftTransport

/// A network in one process, for tests: transports registered on it deliver to each other's event loops, and the
/// test can cut links and simulate a node's crash as the others' transports see it.
public final class InMemoryNetwork: Sendable {
    private struct Endpoint {
        var eventLoop: any EventLoop
        var deliver: @Sendable (Message) -> Void
        /// Reports, on `eventLoop`, that the connection with a node was lost (if that node is a peer).
        var connectionLost: @Sendable (NodeID) -> Void
    }

    private struct State {
        var endpoints: [NodeID: Endpoint] = [:]
        var blocked: Set<[UInt64]> = []
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Messages from `from` to `to` are dropped until `heal`.
    public func block(from: NodeID, to: NodeID) {
        state.withLockedValue { _ = $0.blocked.insert([from.rawValue, to.rawValue]) }
    }

    /// Cuts `node` off from everyone, both ways.
    public func isolate(_ node: NodeID) {
        state.withLockedValue { s in
            for other in s.endpoints.keys where other != node {
                s.blocked.insert([node.rawValue, other.rawValue])
                s.blocked.insert([other.rawValue, node.rawValue])
            }
        }
    }

    public func heal() {
        state.withLockedValue { $0.blocked.removeAll() }
    }

    /// Reports to every other transport on the network that has `node` as a peer that its connection with `node`
    /// was lost (`RaftTransport.start(deliver:linkReset:connectionLost:)`), as a TCP transport reports a peer whose
    /// process died. Nothing is blocked: see `crash`.
    public func reportConnectionLost(_ node: NodeID) {
        let others = state.withLockedValue { s in s.endpoints.filter { $0.key != node }.map(\.value) }
        for endpoint in others {
            endpoint.eventLoop.execute { endpoint.connectionLost(node) }
        }
    }

    /// Simulates `node`'s process dying, as the rest of the network sees it: cuts it off both ways (`isolate`) and
    /// reports the lost connection to every transport that has it as a peer (`reportConnectionLost`). `heal` links
    /// it again; stopping the node itself, if the test wants it stopped, is up to the test.
    public func crash(_ node: NodeID) {
        isolate(node)
        reportConnectionLost(node)
    }

    fileprivate func register(
        _ id: NodeID, eventLoop: any EventLoop, deliver: @escaping @Sendable (Message) -> Void,
        connectionLost: @escaping @Sendable (NodeID) -> Void
    ) {
        state.withLockedValue {
            $0.endpoints[id] = Endpoint(eventLoop: eventLoop, deliver: deliver, connectionLost: connectionLost)
        }
    }

    fileprivate func unregister(_ id: NodeID) {
        state.withLockedValue { _ = $0.endpoints.removeValue(forKey: id) }
    }

    fileprivate func route(_ messages: [Message]) {
        let targets = state.withLockedValue { s in
            messages.map { m in
                s.blocked.contains([m.from.rawValue, m.to.rawValue]) ? nil : s.endpoints[m.to]
            }
        }
        for (message, target) in zip(messages, targets) {
            guard let target else { continue }
            target.eventLoop.execute { target.deliver(message) }
        }
    }
}

/// A `RaftTransport` on an `InMemoryNetwork`.
///
/// The network routes by node id, so a transport reaches every node on it until `setPeers` is first called; from
/// then on it sends only to the peers last set (the addresses are ignored), so that a peer removed from the cluster
/// gets nothing more from it until it is added back.
public final class InMemoryTransport: RaftTransport {
    public let eventLoop: any EventLoop
    private let id: NodeID
    private let network: InMemoryNetwork
    private let outbox: NIOLoopBoundBox<[Message]>
    /// The peers as last set; nil until `setPeers` is called: everyone.
    private let peers: NIOLoopBoundBox<Set<NodeID>?>

    public init(id: NodeID, network: InMemoryNetwork, eventLoop: any EventLoop) {
        self.id = id
        self.network = network
        self.eventLoop = eventLoop
        self.outbox = NIOLoopBoundBox.makeBoxSendingValue([Message](), eventLoop: eventLoop)
        self.peers = NIOLoopBoundBox.makeBoxSendingValue(nil, eventLoop: eventLoop)
    }

    public func start(deliver: @escaping @Sendable (Message) -> Void) async throws {
        try await start(deliver: deliver, linkReset: { _ in }, connectionLost: { _ in })
    }

    public func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        try await start(deliver: deliver, linkReset: linkReset, connectionLost: { _ in })
    }

    public func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void,
        connectionLost: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        let peers = self.peers
        network.register(
            id, eventLoop: eventLoop, deliver: deliver,
            connectionLost: { node in
                if peers.value?.contains(node) ?? true { connectionLost(node) }
            })
    }

    public func setPeers(_ peers: [TCPTransport.Peer]) {
        self.peers.value = Set(peers.lazy.map(\.id).filter { $0 != self.id })
    }

    public func send(_ message: Message) {
        if let peers = peers.value, !peers.contains(message.to) { return }
        outbox.value.append(message)
    }

    public func flush() {
        guard !outbox.value.isEmpty else { return }
        var messages = outbox.value
        outbox.value.removeAll(keepingCapacity: true)
        // A peer removed between the send and the flush gets nothing either.
        if let peers = peers.value { messages.removeAll { !peers.contains($0.to) } }
        network.route(messages)
    }

    public func shutdown() async {
        network.unregister(id)
    }

    public func statistics() async -> [NodeID: PeerStatistics] { [:] }
}
