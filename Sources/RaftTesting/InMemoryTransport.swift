import NIOConcurrencyHelpers
import NIOCore
import RaftCore
import RaftTransport

/// A network in one process, for tests: transports registered on it deliver to each other's event loops, and the
/// test can cut links.
public final class InMemoryNetwork: Sendable {
    private struct Endpoint {
        var eventLoop: any EventLoop
        var deliver: @Sendable (Message) -> Void
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

    fileprivate func register(_ id: NodeID, eventLoop: any EventLoop, deliver: @escaping @Sendable (Message) -> Void) {
        state.withLockedValue { $0.endpoints[id] = Endpoint(eventLoop: eventLoop, deliver: deliver) }
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
public final class InMemoryTransport: RaftTransport {
    public let eventLoop: any EventLoop
    private let id: NodeID
    private let network: InMemoryNetwork
    private let outbox: NIOLoopBoundBox<[Message]>

    public init(id: NodeID, network: InMemoryNetwork, eventLoop: any EventLoop) {
        self.id = id
        self.network = network
        self.eventLoop = eventLoop
        self.outbox = NIOLoopBoundBox.makeBoxSendingValue([Message](), eventLoop: eventLoop)
    }

    public func start(deliver: @escaping @Sendable (Message) -> Void) async throws {
        network.register(id, eventLoop: eventLoop, deliver: deliver)
    }

    public func send(_ message: Message) {
        outbox.value.append(message)
    }

    public func flush() {
        guard !outbox.value.isEmpty else { return }
        let messages = outbox.value
        outbox.value.removeAll(keepingCapacity: true)
        network.route(messages)
    }

    public func shutdown() async {
        network.unregister(id)
    }

    public func statistics() async -> [NodeID: PeerStatistics] { [:] }
}
