import Logging
import NIOCore
import NIOPosix
import RaftCore
import RaftWire

/// Raft over TCP with SwiftNIO.
///
/// - Messages go only to the node they are for, over one persistent connection per peer that this node opens (its
///   peers open their own to it, for their messages).
/// - A connection starts with a `Hello` naming the cluster, the sender and the intended receiver; a connection from
///   a stranger, another cluster, or one that sends anything else first, is closed.
/// - Every message travels in a versioned frame with its length and a CRC-32C; oversized, corrupt or unknown frames
///   close the connection.
/// - Messages to a peer queued between two flushes go out in one write.
/// - Each peer's queue is bounded in bytes: a slow or dead peer costs at most `maxQueuedBytesPerPeer` plus the
///   socket's high watermark, and never blocks the others. A lost connection is retried with capped exponential
///   backoff and jitter; what was queued for it is dropped (Raft resends what matters).
public final class TCPTransport: RaftTransport {
    /// A peer and where to reach it.
    public struct Peer: Sendable, Hashable {
        public var id: NodeID
        public var name: String
        public var host: String
        public var port: Int

        public init(id: NodeID, name: String, host: String, port: Int) {
            self.id = id
            self.name = name
            self.host = host
            self.port = port
        }
    }

    public struct Options: Sendable, Hashable {
        /// The largest frame accepted or sent.
        public var maxFrameSize = 64 << 20
        /// Bytes that may wait for one peer before messages to it are dropped.
        public var maxQueuedBytesPerPeer = 8 << 20
        /// The socket's write-buffer high watermark, per connection.
        public var socketHighWatermark = 4 << 20
        public var connectTimeoutMilliseconds: Int64 = 1000
        /// Reconnect delays double from the first to the cap, each scaled by a random factor in 0.5 ... 1.
        public var reconnectFirstDelayMilliseconds: Int64 = 20
        public var reconnectMaxDelayMilliseconds: Int64 = 2000
        /// How long an incoming connection may take to introduce itself.
        public var helloTimeoutMilliseconds: Int64 = 5000

        public init() {}
    }

    public let eventLoop: any EventLoop
    public let localID: NodeID
    public let localName: String
    public let clusterID: String
    private let listenHost: String
    private let listenPort: Int
    private let peers: [NodeID: Peer]
    private let options: Options
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>

    /// Everything mutable, touched only on `eventLoop`.
    private final class State {
        var links: [NodeID: Link] = [:]
        var server: (any Channel)?
        var inbound: [ObjectIdentifier: any Channel] = [:]
        var stopped = false
        var deliver: (@Sendable (Message) -> Void)?
        var linkReset: (@Sendable (NodeID) -> Void)?
        var boundPort: Int?
        var dirty: [NodeID] = []
        var received: [NodeID: Int] = [:]
    }

    /// The outgoing side of one peer.
    private final class Link {
        let peer: Peer
        var channel: (any Channel)?
        var connecting = false
        var attempts = 0
        var reconnect: Scheduled<Void>?
        var pending: ByteBuffer
        var statistics = PeerStatistics()

        init(peer: Peer, allocator: ByteBufferAllocator) {
            self.peer = peer
            self.pending = allocator.buffer(capacity: 0)
        }
    }

    /// - Parameters:
    ///   - listenHost, listenPort: where to accept peers' connections (port 0: any free port; see `boundPort`).
    ///   - peers: the other members of the cluster.
    public init(
        localID: NodeID, localName: String, clusterID: String, listenHost: String, listenPort: Int,
        peers: [Peer], eventLoop: any EventLoop, options: Options = Options(), logger: Logger
    ) {
        self.localID = localID
        self.localName = localName
        self.clusterID = clusterID
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.peers = Dictionary(peers.filter { $0.id != localID }.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.eventLoop = eventLoop
        self.options = options
        self.logger = logger
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// The port the transport listens on, once started.
    public var boundPort: Int? {
        get async { try? await eventLoop.submit { self.state.value.boundPort }.get() }
    }

    /// Per-peer counters.
    public func statistics() async -> [NodeID: PeerStatistics] {
        (try? await eventLoop.submit {
            let state = self.state.value
            return state.links.mapValues { link in
                var s = link.statistics
                s.queuedBytes = link.pending.readableBytes
                s.messagesReceived = state.received[link.peer.id, default: 0]
                return s
            }
        }.get()) ?? [:]
    }

    public func start(deliver: @escaping @Sendable (Message) -> Void) async throws {
        try await start(deliver: deliver, linkReset: { _ in })
    }

    public func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        let counted: @Sendable (Message) -> Void = { [weak self] message in
            self?.state.value.received[message.from, default: 0] += 1
            deliver(message)
        }
        let context = InboundContext(
            clusterID: clusterID, localID: localID, peers: peers, deliver: counted,
            helloTimeout: .milliseconds(options.helloTimeoutMilliseconds), logger: logger,
            register: { [weak self] channel in self?.register(inbound: channel) },
            unregister: { [weak self] channel in self?.unregister(inbound: channel) })
        let maxFrameSize = options.maxFrameSize
        let server = try await ServerBootstrap(group: eventLoop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrameSize)))
                    try channel.pipeline.syncOperations.addHandler(InboundPeerHandler(context: context))
                }
            }
            .bind(host: listenHost, port: listenPort)
            .get()
        try await eventLoop.submit {
            let state = self.state.value
            // Shut down while binding: do not leave the listener behind.
            guard !state.stopped else {
                server.close(promise: nil)
                throw TransportError.stopped
            }
            state.server = server
            state.boundPort = server.localAddress?.port
            state.deliver = deliver
            state.linkReset = linkReset
            let allocator = server.allocator
            for peer in self.peers.values.sorted(by: { $0.id < $1.id }) {
                let link = Link(peer: peer, allocator: allocator)
                state.links[peer.id] = link
                self.connect(link)
            }
        }.get()
    }

    public func send(_ message: Message) {
        let state = self.state.value
        guard !state.stopped, let link = state.links[message.to] else { return }
        if link.pending.readableBytes >= options.maxQueuedBytesPerPeer {
            link.statistics.messagesDropped += 1
            state.linkReset?(message.to)
            return
        }
        if case .appendEntries = message.kind, MessageCodec.encodedSize(of: message) > options.maxFrameSize {
            // The peer would refuse the frame and close the connection; sending it again would wedge the link.
            link.statistics.messagesDropped += 1
            logger.error("dropping a message larger than the frame limit", metadata: ["peer": "\(link.peer.name)"])
            return
        }
        if link.pending.readableBytes == 0 { state.dirty.append(message.to) }
        Frame.write(message, into: &link.pending)
        link.statistics.messagesSent += 1
    }

    public func flush() {
        let state = self.state.value
        guard !state.dirty.isEmpty else { return }
        for id in state.dirty {
            if let link = state.links[id] { write(link) }
        }
        state.dirty.removeAll(keepingCapacity: true)
    }

    /// Hands a link's pending bytes to its socket, if it is connected and has room.
    private func write(_ link: Link) {
        guard let channel = link.channel, channel.isWritable, link.pending.readableBytes > 0 else { return }
        let bytes = link.pending
        link.pending = channel.allocator.buffer(capacity: 0)
        channel.writeAndFlush(bytes, promise: nil)
    }

    public func shutdown() async {
        let channels: [any Channel] =
            (try? await eventLoop.submit {
                let state = self.state.value
                state.stopped = true
                var all: [any Channel] = []
                for link in state.links.values {
                    link.reconnect?.cancel()
                    if let c = link.channel { all.append(c) }
                    link.channel = nil
                }
                all.append(contentsOf: state.inbound.values)
                if let server = state.server { all.append(server) }
                state.inbound.removeAll()
                state.server = nil
                return all
            }.get()) ?? []
        for channel in channels {
            try? await channel.close()
        }
    }

    // MARK: - Outgoing connections

    private func connect(_ link: Link) {
        let state = self.state.value
        guard !state.stopped, link.channel == nil, !link.connecting else { return }
        link.connecting = true
        let peer = link.peer
        let hello = Hello(clusterID: clusterID, sender: localID, senderName: localName, receiver: peer.id)
        let watermark = ChannelOptions.Types.WriteBufferWaterMark(
            low: options.socketHighWatermark / 2, high: options.socketHighWatermark)
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: watermark)
            .connectTimeout(.milliseconds(options.connectTimeoutMilliseconds))
            .channelInitializer { [weak self] channel in
                let transport = self
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        OutboundLinkHandler(
                            onWritable: { transport?.writableAgain(peer.id) },
                            onClose: { transport?.connectionLost(peer.id) }))
                }
            }
            .connect(host: peer.host, port: peer.port)
            .whenComplete { [weak self] result in
                guard let self, let link = self.state.value.links[peer.id] else { return }
                let state = self.state.value
                link.connecting = false
                switch result {
                case .success(let channel):
                    if state.stopped {
                        channel.close(promise: nil)
                        return
                    }
                    link.channel = channel
                    link.attempts = 0
                    link.statistics.connects += 1
                    var greeting = channel.allocator.buffer(capacity: 64)
                    hello.write(into: &greeting)
                    channel.write(greeting, promise: nil)
                    self.logger.debug("connected", metadata: ["peer": "\(peer.name)"])
                    if link.pending.readableBytes > 0 { self.write(link) } else { channel.flush() }
                case .failure(let error):
                    self.logger.trace("cannot connect", metadata: ["peer": "\(peer.name)", "error": "\(error)"])
                    self.scheduleReconnect(link)
                }
            }
    }

    private func connectionLost(_ id: NodeID) {
        let state = self.state.value
        guard let link = state.links[id], link.channel != nil else { return }
        link.channel = nil
        logger.debug("connection lost", metadata: ["peer": "\(link.peer.name)"])
        scheduleReconnect(link)
    }

    private func writableAgain(_ id: NodeID) {
        if let link = state.value.links[id] { write(link) }
    }

    private func scheduleReconnect(_ link: Link) {
        let state = self.state.value
        // What was queued for a peer we cannot reach is stale by the time we can: drop it. (What the lost
        // connection had taken may be lost too.)
        link.statistics.messagesDropped += link.pending.readableBytes > 0 ? 1 : 0
        link.pending.clear()
        guard !state.stopped else { return }
        state.linkReset?(link.peer.id)
        let exponent = min(link.attempts, 20)
        link.attempts += 1
        let ceiling = min(options.reconnectMaxDelayMilliseconds, options.reconnectFirstDelayMilliseconds << exponent)
        let delay = Int64(Double(ceiling) * Double.random(in: 0.5...1.0))
        let id = link.peer.id
        link.reconnect = eventLoop.scheduleTask(in: .milliseconds(delay)) { [weak self] in
            guard let self, let link = self.state.value.links[id] else { return }
            self.connect(link)
        }
    }

    // MARK: - Incoming connections

    private func register(inbound channel: any Channel) {
        let state = self.state.value
        if state.stopped {
            channel.close(promise: nil)
        } else {
            state.inbound[ObjectIdentifier(channel)] = channel
        }
    }

    private func unregister(inbound channel: any Channel) {
        state.value.inbound[ObjectIdentifier(channel)] = nil
    }
}

/// Why a transport could not do what it was asked.
///
/// A struct with a `code` rather than an enum, so that later versions can add codes (a failed bind, a refused
/// snapshot stream) without breaking anyone's `switch`: match on `error.code` with a `default:`.
public struct TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case stopped
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The transport was shut down while it was starting.
        public static let stopped = Code(.stopped)

        public var description: String { value.rawValue }
    }

    public let code: Code

    private init(code: Code) { self.code = code }

    /// The transport was shut down while it was starting.
    public static let stopped = TransportError(code: .stopped)

    public var description: String {
        switch code {
        case .stopped: return "the transport was shut down while starting"
        default: return "\(code)"
        }
    }
}

/// The error that `TransportError.stopped` replaces.
@available(*, deprecated, renamed: "TransportError", message: "match on TransportError.code == .stopped")
public typealias TransportStopped = TransportError

/// What an incoming connection's handler needs to know.
struct InboundContext: Sendable {
    var clusterID: String
    var localID: NodeID
    var peers: [NodeID: TCPTransport.Peer]
    var deliver: @Sendable (Message) -> Void
    var helloTimeout: TimeAmount
    var logger: Logger
    var register: @Sendable (any Channel) -> Void
    var unregister: @Sendable (any Channel) -> Void
}

/// Checks the hello of an incoming connection, then decodes its frames into messages and delivers them.
final class InboundPeerHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    private let context: InboundContext
    private var sender: NodeID?
    private var helloTimeout: Scheduled<Void>?

    init(context: InboundContext) { self.context = context }

    func channelActive(context ctx: ChannelHandlerContext) {
        let channel = ctx.channel
        context.register(channel)
        helloTimeout = ctx.eventLoop.scheduleTask(in: context.helloTimeout) { [logger = context.logger] in
            logger.warning(
                "closing a connection that did not introduce itself in time",
                metadata: ["remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            channel.close(promise: nil)
        }
        ctx.fireChannelActive()
    }

    func channelInactive(context ctx: ChannelHandlerContext) {
        helloTimeout?.cancel()
        context.unregister(ctx.channel)
        ctx.fireChannelInactive()
    }

    func channelRead(context ctx: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        do throws(WireError) {
            guard let sender else {
                guard frame.type == .hello else { throw .unexpected("expected a hello frame first") }
                let hello = try Hello.decode(&frame.payload)
                guard hello.clusterID == context.clusterID else {
                    throw .unexpected("hello from cluster \"\(hello.clusterID)\", this is \"\(context.clusterID)\"")
                }
                guard hello.receiver == context.localID else { throw .unexpected("hello meant for another node") }
                guard let peer = context.peers[hello.sender], peer.name == hello.senderName else {
                    throw .unexpected("hello from \"\(hello.senderName)\", which is not a member of this cluster")
                }
                self.sender = peer.id
                helloTimeout?.cancel()
                return
            }
            guard frame.type == .message else { throw .unexpected("unexpected frame type \(frame.type)") }
            let message = try MessageCodec.decode(&frame.payload)
            guard message.from == sender, message.to == context.localID else {
                throw .unexpected("message from \(message.from) to \(message.to) on \(sender)'s connection")
            }
            context.deliver(message)
        } catch {
            refuse(ctx, because: "\(error)")
        }
    }

    func errorCaught(context ctx: ChannelHandlerContext, error: any Error) {
        refuse(ctx, because: "\(error)")
    }

    private func refuse(_ ctx: ChannelHandlerContext, because reason: String) {
        context.logger.warning(
            "closing a peer connection",
            metadata: [
                "reason": "\(reason)", "remote": "\(ctx.remoteAddress.map { "\($0)" } ?? "?")",
                "peer": "\(sender.map { "\($0)" } ?? "unknown")",
            ])
        ctx.close(promise: nil)
    }
}

/// The outgoing connection's only job on the way in: notice when it closes or can take more bytes. A peer never
/// sends anything back on it; whatever arrives is discarded.
final class OutboundLinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onWritable: @Sendable () -> Void
    private let onClose: @Sendable () -> Void

    init(onWritable: @escaping @Sendable () -> Void, onClose: @escaping @Sendable () -> Void) {
        self.onWritable = onWritable
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { onWritable() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
