import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy for one directed link between two nodes (the connections node A opens to send to node B), which the
/// nemesis can cut and heal.
///
/// Cut: connections in progress are closed, and new ones are accepted but go nowhere (bytes are read and dropped,
/// like packets lost by a firewall), so the sender cannot tell a partition from a slow network. Healed: those dead
/// connections are closed, and the sender's reconnection goes through again.
///
/// It forwards bytes as they come, never looking into them, so TLS between the nodes passes through untouched (the
/// certificates name nodes, not addresses). It only notes how each connection began (`connectionsSeen`): with a
/// TLS handshake record or with anything else.
public final class LinkProxy: Sendable {
    public let listenPort: Int
    public let targetPort: Int
    private let group: any EventLoopGroup
    private let state = NIOLockedValueBox(State())

    struct State {
        var server: (any Channel)?
        var blocked = false
        var live: [ObjectIdentifier: any Channel] = [:]
        var dead: [ObjectIdentifier: any Channel] = [:]
        var seen = LinkConnections()
    }

    public init(listenPort: Int, targetPort: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.listenPort = listenPort
        self.targetPort = targetPort
        self.group = group
    }

    public func start() async throws {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { [self] inbound in
                // Not in the initializer itself: the accepted channel is registered only after it, and a `read()`
                // asked of a channel not yet registered is never carried out (with autoRead off, nothing would
                // ever be read from the connection, whose target would hear nothing).
                inbound.eventLoop.makeCompletedFuture {
                    try inbound.pipeline.syncOperations.addHandler(WhenActive { self.accepted(inbound) })
                }
            }
            .bind(host: "127.0.0.1", port: listenPort)
            .get()
        state.withLockedValue { $0.server = server }
    }

    /// Cuts (true) or heals (false) the link.
    public func setBlocked(_ blocked: Bool) {
        let toClose: [any Channel] = state.withLockedValue { s in
            guard s.blocked != blocked else { return [] }
            s.blocked = blocked
            if blocked {
                let live = Array(s.live.values)
                s.live.removeAll()
                return live
            } else {
                let dead = Array(s.dead.values)
                s.dead.removeAll()
                return dead
            }
        }
        for channel in toClose { channel.close(promise: nil) }
    }

    public var isBlocked: Bool { state.withLockedValue { $0.blocked } }

    /// How the connections accepted so far began, those accepted while cut included.
    public var connectionsSeen: LinkConnections { state.withLockedValue { $0.seen } }

    public func stop() async {
        let channels: [any Channel] = state.withLockedValue { s in
            var all = Array(s.live.values) + Array(s.dead.values)
            if let server = s.server { all.append(server) }
            s.live.removeAll()
            s.dead.removeAll()
            s.server = nil
            return all
        }
        for channel in channels { try? await channel.close() }
    }

    private func accepted(_ inbound: any Channel) {
        let id = ObjectIdentifier(inbound)
        let blocked = state.withLockedValue { s in
            if s.blocked { s.dead[id] = inbound } else { s.live[id] = inbound }
            return s.blocked
        }
        inbound.closeFuture.whenComplete { [self] _ in
            state.withLockedValue { s in
                s.live[id] = nil
                s.dead[id] = nil
            }
        }
        _ = try? inbound.pipeline.syncOperations.addHandler(
            FirstBytes { [self] tls in
                state.withLockedValue { tls ? ($0.seen.tls += 1) : ($0.seen.plain += 1) }
            })
        if blocked {
            _ = try? inbound.pipeline.syncOperations.addHandler(Discard())
            inbound.read()
            return
        }
        ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .connect(host: "127.0.0.1", port: targetPort)
            .whenComplete { result in
                switch result {
                case .success(let outbound):
                    let (a, b) = Glue.pair()
                    _ = try? inbound.pipeline.syncOperations.addHandler(a)
                    _ = try? outbound.pipeline.syncOperations.addHandler(b)
                    inbound.closeFuture.whenComplete { _ in outbound.close(promise: nil) }
                    outbound.closeFuture.whenComplete { _ in inbound.close(promise: nil) }
                    inbound.read()
                    outbound.read()
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }
}

/// How the connections through a proxy began (the first bytes the connecting node sent).
public struct LinkConnections: Sendable, Hashable, CustomStringConvertible {
    /// Began with a TLS handshake record (content type 22, then a 3 of the record's protocol version).
    public var tls = 0
    /// Began with anything else, such as a plain RaftLite frame, whose first byte (the top byte of its length) is 0
    /// for any frame under 16 MiB.
    public var plain = 0

    public init(tls: Int = 0, plain: Int = 0) {
        self.tls = tls
        self.plain = plain
    }

    public static func + (a: Self, b: Self) -> Self { Self(tls: a.tls + b.tls, plain: a.plain + b.plain) }

    public var description: String { "\(tls + plain) connections, \(tls) began with a TLS handshake, \(plain) did not" }
}

/// Looks at the first bytes read on a connection, says whether they begin a TLS handshake record, passes them on
/// and leaves the pipeline. A connection closed before sending a byte is not counted.
final class FirstBytes: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let seen: (Bool) -> Void
    private var head: [UInt8] = []

    init(_ seen: @escaping (Bool) -> Void) { self.seen = seen }

    /// Whether `bytes` (at least 2, or 1 that is not 22) begin a TLS record of type handshake.
    static func beginsTLSHandshake(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x16 && bytes[1] == 0x03
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        head += buffer.readableBytesView.prefix(2 - head.count)
        context.fireChannelRead(data)
        // One byte other than 22 decides it; a lone 22 waits for the next.
        if head.count >= 2 || (head.count == 1 && head[0] != 0x16) {
            seen(Self.beginsTLSHandshake(head))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// Runs `body` once the channel is active (registered and connected).
final class WhenActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let body: () -> Void

    init(_ body: @escaping () -> Void) { self.body = body }

    func channelActive(context: ChannelHandlerContext) {
        body()
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Reads everything and drops it.
final class Discard: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func channelReadComplete(context: ChannelHandlerContext) { context.read() }
}

/// Two handlers that forward what one channel reads to the other, reading more only once the other can take it.
final class Glue: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: Glue?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (Glue, Glue) {
        let a = Glue()
        let b = Glue()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) {
        guard let context else { return }
        let channel = context.channel
        let buffer = unwrapOutboundIn(data)
        channel.eventLoop.execute { channel.writeAndFlush(buffer, promise: nil) }
    }

    private var writable: Bool { context?.channel.isWritable ?? false }

    private func partnerWantsRead() {
        guard let context else { return }
        let channel = context.channel
        channel.eventLoop.execute { channel.read() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if partner?.writable ?? false { context.read() } else { pendingRead = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
    }

    private func resumeReading() {
        guard pendingRead else { return }
        pendingRead = false
        partnerWantsRead()
    }

    func read(context: ChannelHandlerContext) { context.read() }
}
