import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import RaftCore
import RaftTLS
import RaftWire

/// Raft over TCP with SwiftNIO.
///
/// - Messages go only to the node they are for, over one persistent connection per peer that this node opens (its
///   peers open their own to it, for their messages).
/// - A connection starts with a `Hello` naming the cluster, the sender and the intended receiver; a connection from
///   another cluster, one meant for another node, one under a known peer's id with another name, or one that sends
///   anything else first, is closed. A node of the same cluster that is not (yet) a peer is heard: a node just added
///   to the cluster may connect before this one learns of it.
/// - Every message travels in a versioned frame with its length and a CRC-32C; oversized, corrupt or unknown frames
///   close the connection.
/// - Messages to a peer queued between two flushes go out in one write.
/// - Each peer's queue is bounded in bytes: a slow or dead peer costs at most `maxQueuedBytesPerPeer` plus the
///   socket's high watermark, and never blocks the others. A lost connection is retried with capped exponential
///   backoff and jitter; what was queued for it is dropped (Raft resends what matters).
/// - The peers can change while running (`setPeers`), an established connection that drops is reported at once
///   (`connectionLost`), and every connection this node opens carries a ping now and then, answered by a pong on the
///   same connection: `statistics()` gives each peer's last contact and round trip.
/// - With `tls`, every connection both ways is mutual TLS: each end presents its certificate and verifies the
///   other's against the CA. A connection this node opens is used only once the server it reached has shown the
///   certificate of the node it was meant for (a DNS subject alternative name equal to the peer's name); an
///   incoming connection's hello must name a node whose name is in the certificate the connection presented. A
///   connection that fails either check, or the handshake (a certificate from another CA, expired, none), is
///   closed and logged as a warning, and nothing it carried reaches the node; the other connections go on.
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
        /// How often each connection this node opens carries a ping (and one right after its hello); 0: never.
        public var pingIntervalMilliseconds: Int64 = 500
        /// The most connections to the peer port open at once; more are closed as they arrive (before their TLS
        /// handshake goes any further, or their hello is read), logged at most once a second. Each peer needs one.
        public var maxInboundConnections = 1024
        /// The most connections to the peer port open at once from one IP address (nodes sharing a host share it),
        /// so that one address cannot take them all.
        public var maxInboundConnectionsPerAddress = 64

        public init() {}
    }

    public let eventLoop: any EventLoop
    public let localID: NodeID
    public let localName: String
    public let clusterID: String
    private let listenHost: String
    private let listenPort: Int
    private let options: Options
    private let logger: Logger
    private let tls: PeerTLS?
    private let allocator = ByteBufferAllocator()
    private let state: NIOLoopBoundBox<State>

    /// Everything mutable, touched only on `eventLoop`.
    private final class State {
        /// The peers as last set (by `init` or `setPeers`); once started, `links` has one link for each.
        var peers: [NodeID: Peer]
        var links: [NodeID: Link] = [:]
        var server: (any Channel)?
        var inbound: [ObjectIdentifier: any Channel] = [:]
        /// The remote IP address of each inbound connection, and how many are open from each.
        var inboundAddress: [ObjectIdentifier: String] = [:]
        var inboundByAddress: [String: Int] = [:]
        /// Inbound connections refused over a limit; when a refusal from each address was last logged.
        var inboundRefused = 0
        var refusalLogged: [String: NIODeadline] = [:]
        var started = false
        var stopped = false
        var deliver: (@Sendable (Message) -> Void)?
        var linkReset: (@Sendable (NodeID) -> Void)?
        var connectionLost: (@Sendable (NodeID) -> Void)?
        var boundPort: Int?
        var dirty: [NodeID] = []
        var pinger: RepeatedTask?
        /// Numbers connection attempts, so that the outcome of one that was overtaken (its peer removed or moved)
        /// is recognised and discarded.
        var nextAttempt: UInt64 = 0

        init(peers: [NodeID: Peer]) { self.peers = peers }
    }

    /// The outgoing side of one peer.
    private final class Link {
        var peer: Peer
        var channel: (any Channel)?
        var connecting = false
        /// The connection attempt in progress or that made `channel`.
        var attempt: UInt64 = 0
        var attempts = 0
        var reconnect: Scheduled<Void>?
        var pending: ByteBuffer
        var statistics = PeerStatistics()
        /// Messages are being dropped because the queue is full (logged once per such run, when it starts).
        var overflowing = false

        init(peer: Peer, allocator: ByteBufferAllocator) {
            self.peer = peer
            self.pending = allocator.buffer(capacity: 0)
        }
    }

    /// - Parameters:
    ///   - listenHost, listenPort: where to accept peers' connections (port 0: any free port; see `boundPort`).
    ///   - peers: the other members of the cluster (see `setPeers` to change them later).
    ///   - tls: mutual TLS for every connection (nil: plain TCP). Each new connection takes the contexts `tls` holds
    ///     at that moment, so a `reload()` applies to the connections made after it.
    public init(
        localID: NodeID, localName: String, clusterID: String, listenHost: String, listenPort: Int,
        peers: [Peer], eventLoop: any EventLoop, options: Options = Options(), tls: PeerTLS? = nil, logger: Logger
    ) {
        self.tls = tls
        self.localID = localID
        self.localName = localName
        self.clusterID = clusterID
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.eventLoop = eventLoop
        self.options = options
        self.logger = logger
        self.state = NIOLoopBoundBox.makeBoxSendingValue(
            State(peers: Self.byID(peers, excluding: localID)), eventLoop: eventLoop)
    }

    private static func byID(_ peers: [Peer], excluding localID: NodeID) -> [NodeID: Peer] {
        Dictionary(peers.filter { $0.id != localID }.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The port the transport listens on, once started.
    public var boundPort: Int? {
        get async { try? await eventLoop.submit { self.state.value.boundPort }.get() }
    }

    /// Per-peer counters, for the current peers.
    public func statistics() async -> [NodeID: PeerStatistics] {
        (try? await eventLoop.submit {
            self.state.value.links.mapValues { link in
                var s = link.statistics
                s.queuedBytes = link.pending.readableBytes
                return s
            }
        }.get()) ?? [:]
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
        let counted: @Sendable (Message) -> Void = { [weak self] message in
            if let link = self?.state.value.links[message.from] { link.statistics.messagesReceived += 1 }
            deliver(message)
        }
        let context = InboundContext(
            clusterID: clusterID, localID: localID,
            peerName: { [weak self] id in self?.state.value.peers[id]?.name },
            deliver: counted,
            contact: { [weak self] id in self?.state.value.links[id]?.statistics.lastContact = .now() },
            closed: { [weak self] id in self?.inboundClosed(id) },
            helloTimeout: .milliseconds(options.helloTimeoutMilliseconds), logger: logger,
            checksCertificates: tls != nil,
            register: { [weak self] channel in self?.register(inbound: channel) },
            unregister: { [weak self] channel in self?.unregister(inbound: channel) })
        let maxFrameSize = options.maxFrameSize
        let tls = self.tls
        let server = try await ServerBootstrap(group: eventLoop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLServerHandler(context: tls.contexts.server))
                    }
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
            state.connectionLost = connectionLost
            state.started = true
            for peer in state.peers.values.sorted(by: { $0.id < $1.id }) {
                self.addLink(peer)
            }
            if self.options.pingIntervalMilliseconds > 0 {
                let interval = TimeAmount.milliseconds(self.options.pingIntervalMilliseconds)
                state.pinger = self.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) {
                    [weak self] _ in self?.pingAll()
                }
            }
        }.get()
    }

    public func setPeers(_ peers: [Peer]) {
        let state = self.state.value
        let wanted = Self.byID(peers, excluding: localID)
        state.peers = wanted
        // Before start the links are made from `peers`; after shutdown there are none to make.
        guard state.started, !state.stopped else { return }
        for (id, link) in state.links where wanted[id] == nil {
            state.links[id] = nil
            logger.debug("peer removed", metadata: ["peer": "\(link.peer.name)"])
            let hadConnection = link.channel != nil
            let hadPending = link.pending.readableBytes > 0
            disconnect(link)
            if hadConnection || hadPending { state.linkReset?(id) }
        }
        for peer in wanted.values.sorted(by: { $0.id < $1.id }) {
            guard let link = state.links[peer.id] else {
                logger.debug("peer added", metadata: ["peer": "\(peer.name)"])
                addLink(peer)
                continue
            }
            let moved = link.peer.host != peer.host || link.peer.port != peer.port
            link.peer = peer
            guard moved else { continue }
            logger.debug("peer moved", metadata: ["peer": "\(peer.name)", "to": "\(peer.host):\(peer.port)"])
            // What is queued is for the same node: it stays, and goes to the new address once connected.
            let hadConnection = link.channel != nil
            disconnect(link, keepingPending: true)
            if hadConnection { state.linkReset?(peer.id) }
            connect(link)
        }
    }

    public func send(_ message: Message) {
        let state = self.state.value
        guard !state.stopped, let link = state.links[message.to] else { return }
        if link.pending.readableBytes >= options.maxQueuedBytesPerPeer {
            link.statistics.messagesDropped += 1
            if !link.overflowing {
                link.overflowing = true
                logger.warning(
                    "peer queue full: dropping messages until it drains",
                    metadata: [
                        "peer": "\(link.peer.name)", "queued_bytes": "\(link.pending.readableBytes)",
                        "connected": "\(link.channel != nil)",
                    ])
            }
            state.linkReset?(message.to)
            return
        }
        link.overflowing = false
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
                state.pinger?.cancel()
                state.pinger = nil
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

    private func addLink(_ peer: Peer) {
        let link = Link(peer: peer, allocator: allocator)
        state.value.links[peer.id] = link
        connect(link)
    }

    /// Ends a link's connection or connection attempt without reporting it lost (it was wanted), and drops what
    /// was queued for it unless told otherwise.
    private func disconnect(_ link: Link, keepingPending: Bool = false) {
        let state = self.state.value
        link.reconnect?.cancel()
        link.reconnect = nil
        link.connecting = false
        link.attempts = 0
        // A connection attempt still under way now belongs to nobody: its outcome will be discarded.
        state.nextAttempt += 1
        link.attempt = state.nextAttempt
        if !keepingPending { link.pending.clear() }
        if let channel = link.channel {
            link.channel = nil
            channel.close(promise: nil)
        }
    }

    private func connect(_ link: Link) {
        let state = self.state.value
        guard !state.stopped, link.channel == nil, !link.connecting else { return }
        link.connecting = true
        state.nextAttempt += 1
        let attempt = state.nextAttempt
        link.attempt = attempt
        let peer = link.peer
        let hello = Hello(clusterID: clusterID, sender: localID, senderName: localName, receiver: peer.id)
        let pings = options.pingIntervalMilliseconds > 0
        let watermark = ChannelOptions.Types.WriteBufferWaterMark(
            low: options.socketHighWatermark / 2, high: options.socketHighWatermark)
        let logger = self.logger
        let tls = self.tls
        // With TLS, the connection is ready once the server has shown the certificate of the node we meant.
        let verified: EventLoopPromise<Void>? = tls.map { _ in eventLoop.makePromise() }
        let handshakeTimeout = TimeAmount.milliseconds(options.helloTimeoutMilliseconds)
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: watermark)
            .connectTimeout(.milliseconds(options.connectTimeoutMilliseconds))
            .channelInitializer { [weak self] channel in
                let transport = self
                return channel.eventLoop.makeCompletedFuture {
                    if let tls, let verified {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.contexts.client, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(
                            ServerIdentityHandler(
                                expectedName: peer.name, verified: verified, timeout: handshakeTimeout, logger: logger))
                    }
                    // Only pongs come back on this connection: tiny frames.
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(
                            FrameDecoder(
                                maxFrameSize: OutboundLinkHandler.maxFrameSize,
                                maxFirstFrameSize: OutboundLinkHandler.maxFrameSize)))
                    try channel.pipeline.syncOperations.addHandler(
                        OutboundLinkHandler(
                            peerName: peer.name, logger: logger,
                            onWritable: { transport?.writableAgain(peer.id) },
                            onPong: { channel, sent in transport?.pong(from: peer.id, on: channel, sent: sent) },
                            onClose: { channel in transport?.linkClosed(peer.id, channel) }))
                }
            }
            .connect(host: peer.host, port: peer.port)
            .flatMap { channel in
                guard let verified else { return channel.eventLoop.makeSucceededFuture(channel) }
                return verified.futureResult.map { channel }
                    .flatMapErrorThrowing { error in
                        channel.close(promise: nil)
                        throw error
                    }
            }
            .whenComplete { [weak self] result in
                // A connection that failed before its handshake leaves the promise to this.
                if case .failure(let error) = result { verified?.fail(error) }
                guard let self, !self.state.value.stopped, let link = self.state.value.links[peer.id],
                    link.attempt == attempt
                else {
                    // Shut down, or the peer was removed or moved while connecting.
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                link.connecting = false
                switch result {
                case .success(let channel) where channel.isActive:
                    link.channel = channel
                    link.attempts = 0
                    link.statistics.connects += 1
                    var greeting = channel.allocator.buffer(capacity: 64)
                    hello.write(into: &greeting)
                    if pings { Self.writePing(into: &greeting) }
                    channel.write(greeting, promise: nil)
                    self.logger.debug("connected", metadata: ["peer": "\(peer.name)"])
                    if link.pending.readableBytes > 0 { self.write(link) } else { channel.flush() }
                case .success(let channel):
                    // Closed before it could be used: as if the attempt had failed.
                    channel.close(promise: nil)
                    self.scheduleReconnect(link)
                case .failure(let error):
                    self.logger.trace("cannot connect", metadata: ["peer": "\(peer.name)", "error": "\(error)"])
                    self.scheduleReconnect(link)
                }
            }
    }

    /// An outgoing connection closed. Only the link's current connection counts: one that `setPeers` closed
    /// (the peer removed or moved) is no loss.
    private func linkClosed(_ id: NodeID, _ channel: any Channel) {
        let state = self.state.value
        guard let link = state.links[id], let current = link.channel, current === channel else { return }
        link.channel = nil
        logger.debug("connection lost", metadata: ["peer": "\(link.peer.name)"])
        scheduleReconnect(link)
        if !state.stopped { state.connectionLost?(id) }
    }

    /// A peer's connection to this node closed after its hello.
    private func inboundClosed(_ id: NodeID) {
        let state = self.state.value
        guard !state.stopped, let peer = state.peers[id] else { return }
        logger.debug("peer's connection closed", metadata: ["peer": "\(peer.name)"])
        state.connectionLost?(id)
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

    // MARK: - Liveness

    /// A ping carries the sender's clock reading, so its pong alone gives the round trip.
    private static func writePing(into buffer: inout ByteBuffer) {
        Frame.writeProbe(.ping, NIODeadline.now().uptimeNanoseconds, into: &buffer)
    }

    private func pingAll() {
        let state = self.state.value
        guard !state.stopped else { return }
        for link in state.links.values {
            guard let channel = link.channel else { continue }
            var buffer = channel.allocator.buffer(capacity: Frame.headerSize + Frame.probeSize)
            Self.writePing(into: &buffer)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    private func pong(from id: NodeID, on channel: any Channel, sent: UInt64) {
        guard let link = state.value.links[id], let current = link.channel, current === channel else { return }
        let now = NIODeadline.now()
        link.statistics.lastContact = now
        // The value is this node's own clock reading, echoed; one from the future is not a measurement.
        if sent <= now.uptimeNanoseconds {
            link.statistics.roundTrip = .nanoseconds(Int64(clamping: now.uptimeNanoseconds - sent))
        }
    }

    // MARK: - Incoming connections

    private func register(inbound channel: any Channel) {
        let state = self.state.value
        if state.stopped {
            channel.close(promise: nil)
            return
        }
        let address = channel.remoteAddress?.ipAddress ?? "?"
        let fromAddress = state.inboundByAddress[address, default: 0]
        guard state.inbound.count < options.maxInboundConnections,
            fromAddress < options.maxInboundConnectionsPerAddress
        else {
            state.inboundRefused += 1
            let now = NIODeadline.now()
            if now - (state.refusalLogged[address] ?? .distantPast) >= .seconds(1) {
                state.refusalLogged[address] = now
                logger.warning(
                    "refusing a peer connection: too many open",
                    metadata: [
                        "remote": "\(address)", "from_address": "\(fromAddress)", "open": "\(state.inbound.count)",
                    ])
            }
            channel.close(promise: nil)
            return
        }
        state.inbound[ObjectIdentifier(channel)] = channel
        state.inboundByAddress[address] = fromAddress + 1
        state.inboundAddress[ObjectIdentifier(channel)] = address
    }

    private func unregister(inbound channel: any Channel) {
        let state = self.state.value
        guard state.inbound.removeValue(forKey: ObjectIdentifier(channel)) != nil,
            let address = state.inboundAddress.removeValue(forKey: ObjectIdentifier(channel))
        else { return }
        let left = (state.inboundByAddress[address] ?? 1) - 1
        state.inboundByAddress[address] = left > 0 ? left : nil
    }

    /// Connections to the peer port refused over a limit, and those open (for tests and status).
    public func inboundConnectionCounts() async -> (open: Int, refused: Int) {
        (try? await eventLoop.submit { (self.state.value.inbound.count, self.state.value.inboundRefused) }.get())
            ?? (0, 0)
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

/// What an incoming connection's handler needs to know. Its closures are called on the transport's loop.
struct InboundContext: Sendable {
    var clusterID: String
    var localID: NodeID
    /// The name of a current peer, nil for a node that is not one.
    var peerName: @Sendable (NodeID) -> String?
    var deliver: @Sendable (Message) -> Void
    /// Frames came in from this sender.
    var contact: @Sendable (NodeID) -> Void
    /// The sender's connection, after its hello, closed.
    var closed: @Sendable (NodeID) -> Void
    var helloTimeout: TimeAmount
    var logger: Logger
    /// The connection is TLS: a hello must name a node whose name is in the certificate the connection presented.
    var checksCertificates: Bool
    var register: @Sendable (any Channel) -> Void
    var unregister: @Sendable (any Channel) -> Void
}

/// Checks the hello of an incoming connection, then decodes its frames into messages and delivers them, and
/// answers its pings.
final class InboundPeerHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer

    private let context: InboundContext
    private var sender: NodeID?
    private var helloTimeout: Scheduled<Void>?
    /// Frames were read since the last read completed.
    private var heard = false

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
        if let sender { context.closed(sender) }
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
                guard hello.sender != context.localID else { throw .unexpected("hello from this node's own id") }
                if context.checksCertificates {
                    let certificate = try? ctx.pipeline.syncOperations.nioSSL_peerCertificate()
                    if let mismatch = PeerIdentity.mismatch(certificate, expectedName: hello.senderName) {
                        throw .unexpected("hello from \"\(hello.senderName)\", but \(mismatch)")
                    }
                }
                // A node that is not a peer (yet) is heard; one under a peer's id must also bear its name.
                if let name = context.peerName(hello.sender), name != hello.senderName {
                    throw .unexpected("hello from \"\(hello.senderName)\" under the id of peer \"\(name)\"")
                }
                self.sender = hello.sender
                helloTimeout?.cancel()
                heard = true
                return
            }
            heard = true
            switch frame.type {
            case .message:
                let message = try MessageCodec.decode(&frame.payload)
                guard message.from == sender, message.to == context.localID else {
                    throw .unexpected("message from \(message.from) to \(message.to) on \(sender)'s connection")
                }
                context.deliver(message)
            case .ping:
                let value = try frame.probeValue()
                // A peer that does not read its pongs gets no more than the socket holds.
                guard ctx.channel.isWritable else { return }
                var pong = ctx.channel.allocator.buffer(capacity: Frame.headerSize + Frame.probeSize)
                Frame.writeProbe(.pong, value, into: &pong)
                ctx.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            case .hello, .pong:
                throw .unexpected("unexpected \(frame.type) frame")
            }
        } catch {
            refuse(ctx, because: "\(error)")
        }
    }

    func channelReadComplete(context ctx: ChannelHandlerContext) {
        if heard, let sender {
            heard = false
            context.contact(sender)
        }
        ctx.fireChannelReadComplete()
    }

    func errorCaught(context ctx: ChannelHandlerContext, error: any Error) {
        refuse(ctx, because: describe(error))
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

/// The outgoing connection on the way in: notice when it closes or can take more bytes, and take the pongs that
/// answer its pings. A peer sends nothing else back on it: any other frame closes it.
final class OutboundLinkHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    /// The largest frame accepted on an outgoing connection (a pong is 8 bytes).
    static let maxFrameSize = 64

    private let peerName: String
    private let logger: Logger
    private let onWritable: @Sendable () -> Void
    private let onPong: @Sendable (any Channel, UInt64) -> Void
    private let onClose: @Sendable (any Channel) -> Void

    init(
        peerName: String, logger: Logger, onWritable: @escaping @Sendable () -> Void,
        onPong: @escaping @Sendable (any Channel, UInt64) -> Void,
        onClose: @escaping @Sendable (any Channel) -> Void
    ) {
        self.peerName = peerName
        self.logger = logger
        self.onWritable = onWritable
        self.onPong = onPong
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do throws(WireError) {
            guard frame.type == .pong else { throw .unexpected("unexpected \(frame.type) frame from the receiver") }
            onPong(context.channel, try frame.probeValue())
        } catch {
            refuse(context, because: "\(error)")
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { onWritable() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        refuse(context, because: describe(error))
    }

    private func refuse(_ context: ChannelHandlerContext, because reason: String) {
        logger.warning(
            "closing a connection to a peer", metadata: ["reason": "\(reason)", "peer": "\(peerName)"])
        context.close(promise: nil)
    }
}

/// An error on a peer connection, for the log: a failed TLS handshake says so (its cause: a certificate from
/// another CA or expired, none at all, or the other end refusing ours).
func describe(_ error: any Error) -> String {
    if let error = error as? NIOSSLError, case .handshakeFailed = error {
        return "TLS handshake failed (the certificate was refused by one end): \(error)"
    }
    return "\(error)"
}

/// On a connection this node opens with TLS: once the handshake is done, checks that the server we reached showed
/// the certificate of the node we meant to reach, then completes `verified`; else closes the connection (logged),
/// and fails `verified`. Nothing is sent before: the hello waits for `verified`. A handshake that takes longer
/// than `timeout` fails too.
final class ServerIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let expectedName: String
    private let verified: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private let logger: Logger
    private var timer: Scheduled<Void>?
    private var done = false
    /// The server showed the expected certificate.
    private var trusted = false

    init(expectedName: String, verified: EventLoopPromise<Void>, timeout: TimeAmount, logger: Logger) {
        self.expectedName = expectedName
        self.verified = verified
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let verified = self.verified
        let expectedName = self.expectedName
        let logger = self.logger
        timer = context.eventLoop.scheduleTask(in: timeout) {
            logger.warning(
                "closing a connection to a peer",
                metadata: ["reason": "TLS handshake timed out", "peer": "\(expectedName)"])
            verified.fail(ChannelError.connectTimeout(.zero))
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        finish(.failure(ChannelError.ioOnClosedChannel))
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ChannelError.ioOnClosedChannel))
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            timer?.cancel()
            let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate()
            if let mismatch = PeerIdentity.mismatch(certificate, expectedName: expectedName) {
                logger.warning(
                    "closing a connection to a peer",
                    metadata: [
                        "reason": "the server is not the node we meant: \(mismatch)", "peer": "\(expectedName)",
                        "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")",
                    ])
                finish(.failure(ChannelError.ioOnClosedChannel))
                context.close(promise: nil)
                return
            }
            trusted = true
            finish(.success(()))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Nothing may come through before the server's identity is checked.
        guard trusted else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    private func finish(_ result: Result<Void, any Error>) {
        guard !done else { return }
        done = true
        verified.completeWith(result)
    }
}
