import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftKVClient
import RaftLite

/// The HTTP face of one node of the key-value store.
///
/// It listens on the node's own event loop, so a request is parsed, proposed, committed, applied and answered
/// without leaving that thread. The API:
///
/// | request | answer |
/// |---|---|
/// | `PUT /v1/kv/{key}` (body: the value) | 200 `{"index":N}` once committed and applied |
/// | `PUT /v1/kv/{key}?prev_value=V` | 200 if the value was V and is replaced; 412 if it differs or the key is missing |
/// | `GET /v1/kv/{key}` | 200 with the value, 404 if missing; linearizable (`?consistency=serializable`: this node's copy) |
/// | `DELETE /v1/kv/{key}` | 200 `{"index":N,"deleted":true|false}` |
/// | `GET /v1/status` | this node's role, term, leader, indexes (the latest snapshot's, the log's first) |
/// | `POST /v1/snapshot` | 200 `{"index":N,"term":T}` once this node's snapshot is durable (see `KVReply.snapshotFailure`) |
/// | `GET /metrics` | Prometheus text |
/// | `GET /v1/members` | this node's view of the membership: members with roles, joint, index, committed, leader |
/// | `POST /v1/members` (body `{"name","ip","port","http_port"?,"role"?}`) | 200 with the membership once committed |
/// | `DELETE /v1/members/{name}`, `POST /v1/members/{name}/promote` | 200 with the membership once committed |
/// | `POST /v1/leader/transfer` (body empty or `{"to":NAME}`) | 200 `{"leader":NAME}` once another node leads |
/// | `GET /v1/cluster` | `{"cluster_id":S,"bootstrap":{...}}`, for a node that joins |
///
/// Every node accepts every request: proposals made on a follower are forwarded to the leader by the node, and
/// membership changes and transfers by this server (over HTTP, to the leader's `http_port`; see
/// `changeMembership`). The membership endpoints' statuses are `MembersAPI`'s and `KVReply.membershipFailure`'s. Every error body is
/// JSON `{"error":..., "message":...}`, and the status says whether the command took effect:
///
/// | status | the command |
/// |---|---|
/// | 200, 404, 412 | was applied (a 412 compare-and-set, or a 404 read, was evaluated and changed nothing) |
/// | 4xx otherwise | was refused before it was proposed: not applied |
/// | 503 | was not applied and never will be: no leader within the deadline, the node is stopping or paused, or every copy was proven unable to commit |
/// | 504 | may or may not take effect: it was handed on, and the deadline passed or the node stopped before its outcome was known |
///
/// The rules above live in `KVRouter` and `KVReply`, which are pure; this class and its channel handler only read
/// requests, ask the node what the router says, and write the replies.
public final class KVServer: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 8081
        /// The longest key, in bytes (after percent-decoding).
        public var maxKeyBytes = 1024
        /// The largest value, in bytes.
        public var maxValueBytes = 1 << 20
        /// The most client connections open at once; more are closed as they arrive.
        public var maxConnections = 4096
        /// A connection with nothing read for this long is closed (a stalled upload must not hold memory forever).
        public var idleTimeout = TimeAmount.seconds(60)
        /// TESTING ONLY — breaks linearizability: serve "linearizable" reads from this node's own state machine, with
        /// no quorum check. The Jepsen-style suite uses it to prove that its checker catches stale reads.
        public var unsafeLocalReads = false

        public init() {}
    }

    public let node: RaftNode<KVStore>
    public let options: Options
    let router: KVRouter
    private let metricsText: @Sendable () -> [UInt8]
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>

    final class State {
        var channel: (any Channel)?
        var inFlight = 0
        var connections = 0
        var draining = false
        var drained: [EventLoopPromise<Void>] = []
        var requestCounters: [String: Counter] = [:]
        var durations: [String: Timer] = [:]
    }

    /// - Parameter metricsText: renders the process's metrics in Prometheus text format for `GET /metrics`.
    public init(
        node: RaftNode<KVStore>, options: Options, logger: Logger, metricsText: @escaping @Sendable () -> [UInt8]
    ) {
        self.node = node
        self.options = options
        self.router = KVRouter(options: options)
        self.logger = logger
        self.metricsText = metricsText
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: node.eventLoop)
    }

    /// The port the server listens on, once started.
    public var boundPort: Int? {
        get async { try? await node.eventLoop.submit { self.state.value.channel?.localAddress?.port }.get() }
    }

    /// Starts listening for clients.
    public func start() async throws {
        let channel = try await ServerBootstrap(group: node.eventLoop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: self.options.idleTimeout))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(KVHTTPHandler(server: self))
                }
            }
            .bind(host: options.host, port: options.port)
            .get()
        try await node.eventLoop.submit { self.state.value.channel = channel }.get()
    }

    /// Stops taking requests: the listener closes, requests already received are answered (new ones on open
    /// connections get 503 and the connection closes), and it returns once none is in flight, or after `timeout`.
    public func drain(timeout: TimeAmount) async {
        let loop = node.eventLoop
        let drained: EventLoopFuture<Void>? = try? await loop.submit { () -> EventLoopFuture<Void> in
            let s = self.state.value
            s.draining = true
            s.channel?.close(promise: nil)
            s.channel = nil
            if s.inFlight == 0 { return loop.makeSucceededVoidFuture() }
            let promise = loop.makePromise(of: Void.self)
            s.drained.append(promise)
            return promise.futureResult
        }.get()
        guard let drained else { return }
        // Whichever comes first: the last answer, or the deadline.
        let done = loop.makePromise(of: Void.self)
        drained.cascade(to: done)
        let timer = loop.scheduleTask(in: timeout) { done.succeed() }
        _ = try? await done.futureResult.get()
        timer.cancel()
    }

    // MARK: - Serving (all on the node's loop)

    var isDraining: Bool { state.value.draining }

    func requestStarted() {
        state.value.inFlight += 1
    }

    /// Counts a new connection; false if it would exceed the limit.
    func connectionOpened() -> Bool {
        guard state.value.connections < options.maxConnections else { return false }
        state.value.connections += 1
        return true
    }

    func connectionClosed() {
        state.value.connections = max(0, state.value.connections - 1)
    }

    func requestFinished(method: String, status: HTTPResponseStatus, started: NIODeadline) {
        let s = state.value
        s.inFlight -= 1
        let key = "\(method) \(status.code)"
        let counter =
            s.requestCounters[key]
            ?? {
                let c = Counter(
                    label: "kv_requests_total",
                    dimensions: [("node", node.name), ("method", method), ("code", "\(status.code)")])
                s.requestCounters[key] = c
                return c
            }()
        counter.increment()
        let timer =
            s.durations[method]
            ?? {
                let t = Timer(
                    label: "kv_request_duration_seconds", dimensions: [("node", node.name), ("method", method)])
                s.durations[method] = t
                return t
            }()
        timer.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
        if s.draining && s.inFlight == 0 {
            for promise in s.drained { promise.succeed() }
            s.drained.removeAll()
        }
    }

    /// Answers one complete request: the router says what it asks for, the node does it, the router says how to
    /// answer.
    func handle(_ request: KVRequest) -> EventLoopFuture<KVReply> {
        let loop = node.eventLoop
        switch router.route(request) {
        case .refused(let reply):
            return loop.makeSucceededFuture(reply)
        case .status:
            return loop.makeFutureWithTask {
                let status = await self.node.status()
                return .status(
                    status, membership: await self.node.membership(), health: await self.node.memberHealth())
            }
        case .members:
            return loop.makeFutureWithTask { await self.membersReply() }
        case .cluster:
            return loop.makeSucceededFuture(.cluster(node.cluster))
        case .membership(let change):
            return loop.makeFutureWithTask { await self.changeMembership(change, request) }
        case .metrics:
            return loop.makeSucceededFuture(.metrics(metricsText()))
        case .snapshot:
            return node.snapshotFuture().map(KVReply.snapshotTaken)
                .flatMapErrorThrowing { error in KVReply.snapshotFailure(error) }
        case .localRead(let key):
            return node.readStateMachine { $0.value(for: key) }.map { KVReply.localRead($0 ?? nil) }
        case .propose(let command):
            return node.proposeFuture(command.encoded())
                .map { KVReply.committed(command, index: $0.index, output: $0.output) }
                .flatMapErrorThrowing { error in KVReply.failure(error) }
        }
    }

    // MARK: - Membership

    /// The header a follower adds when it forwards a membership request to the leader (its own name): a request
    /// that carries it is never forwarded again, so two nodes that each think the other leads cannot bounce it.
    public static let forwardedHeader = "X-Raft-Forwarded-By"

    /// `GET /v1/members`: this node's view.
    func membersReply() async -> KVReply {
        let status = await node.status()
        guard let membership = await node.membership() else { return .membershipFailure(RaftNodeError.stopped) }
        return .members(membership, leader: status.leader)
    }

    /// A change of membership, or a leadership transfer: on the leader, checked (`MembersAPI.plan`) and done; on a
    /// follower, forwarded to the leader, as writes are.
    func changeMembership(_ change: MembershipRequest, _ request: KVRequest) async -> KVReply {
        let forwarded = request.headers.first(name: Self.forwardedHeader) != nil
        let status = await node.status()
        guard status.started else { return .membershipFailure(RaftNodeError.stopped) }
        if status.role != .leader {
            return await forwardOrRefuse(request, leader: status.leader, forwarded: forwarded)
        }
        guard let membership = await node.membership() else { return .membershipFailure(RaftNodeError.stopped) }
        let operation: MembershipOperation
        switch MembersAPI.plan(change, in: membership, selfName: node.name) {
        case .answer(let reply): return reply
        case .run(let op): operation = op
        }
        logger.notice("membership request", metadata: ["operation": "\(operation)"])
        do {
            switch operation {
            case .addVoter(let member): try await node.addVoter(member)
            case .addLearner(let member): try await node.addLearner(member)
            case .promote(let name): try await node.promote(name)
            case .remove(let name): try await node.removeMember(name)
            case .transfer(let to): return .leader(try await node.transferLeadership(to: to))
            }
        } catch {
            // Leadership moved before the change was proposed: nothing was done here, so the new leader is asked.
            if error.code == .notLeader {
                return await forwardOrRefuse(request, leader: error.leaderHint, forwarded: forwarded)
            }
            return .membershipFailure(error)
        }
        return await membersReply()
    }

    /// Forwards a membership request to the leader's HTTP API, and answers with what it answered; or refuses it
    /// (503, definite) when no leader is known, the request was forwarded already, or the leader's HTTP address is
    /// not known or does not accept a connection.
    func forwardOrRefuse(_ request: KVRequest, leader: String?, forwarded: Bool) async -> KVReply {
        guard let leader, leader != node.name, !forwarded else {
            return .membershipFailure(RaftNodeError.notLeader(leaderHint: leader))
        }
        guard let endpoint = await httpEndpoint(of: leader) else {
            return .error(
                .serviceUnavailable, "unavailable",
                "this node is not the leader; the leader is \(leader), whose HTTP port is not known here (no http_port)"
            )
        }
        let connection: HTTPConnection
        do {
            connection = try await HTTPConnection.connect(
                host: endpoint.host, port: endpoint.port, timeout: .seconds(2)
            )
            .get()
        } catch {
            return .error(
                .serviceUnavailable, "unavailable",
                "this node is not the leader, and the leader \(leader) at \(endpoint) could not be reached: \(error)")
        }
        defer { connection.close() }
        var body: [UInt8] = []
        if case .bytes(let bytes) = request.body { body = bytes }
        // As long as the leader may take: a voter is caught up as a learner first.
        let timeout = node.options.learnerCatchUpTimeout + node.options.proposalTimeout * 3
        do {
            let response = try await connection.execute(
                method: request.method, path: request.uri, body: body,
                headers: [(Self.forwardedHeader, node.name), ("Content-Type", "application/json")], timeout: timeout
            ).get()
            return KVReply(
                status: HTTPResponseStatus(statusCode: response.status),
                contentType: response.header("content-type") ?? "application/json", body: response.body)
        } catch {
            return .error(
                .gatewayTimeout, "unknown_outcome",
                "forwarded to the leader \(leader) at \(endpoint), which did not answer (\(error)); the change may "
                    + "still take effect")
        }
    }

    /// Where `name`'s HTTP API listens: its address and `http_port`, from the membership or the cluster file.
    func httpEndpoint(of name: String) async -> Endpoint? {
        let member = await node.membership()?.members.first { $0.name == name }
        let host = member?.host ?? node.cluster[name]?.host
        let field = member?.fields["http_port"] ?? node.cluster[name]?.fields["http_port"]
        guard let host, !host.isEmpty, let port = try? MembersAPI.port(field).get() else { return nil }
        return Endpoint(host: host, port: port)
    }

    /// The answer to a proposal that failed: see `KVReply.failure(_:)`.
    static func reply(for error: any Error) -> KVReply {
        KVReply.failure(error)
    }
}

/// One client connection: collects a request, has the server answer it, writes the answer. It knows nothing of
/// the API: `KVRouter` does.
final class KVHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: KVServer
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// The size of a body over the limit (which is not kept), or nil.
    private var oversized: Int?

    init(server: KVServer) { self.server = server }

    func channelActive(context: ChannelHandlerContext) {
        if !server.connectionOpened() {
            // Over the connection limit: refuse rather than let memory grow.
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.connectionClosed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Idle for too long (a stalled upload, or a client that went away): close.
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
            body = []
            oversized = nil
            if let length = server.router.declaredBodyTooLarge(request.headers) {
                // Refuse at once, without reading the body, and close the connection afterwards.
                oversized = length
                head = nil
                respond(to: request, context: context, forceClose: true)
            }
        case .body(var chunk):
            if let size = oversized {
                oversized = size + chunk.readableBytes
                return
            }
            if body.count + chunk.readableBytes > server.options.maxValueBytes {
                oversized = body.count + chunk.readableBytes
                body = []
                return
            }
            body.append(contentsOf: chunk.readBytes(length: chunk.readableBytes) ?? [])
        case .end:
            guard let request = head else { return }
            head = nil
            respond(to: request, context: context)
        }
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext, forceClose: Bool = false) {
        let started = NIODeadline.now()
        let method = request.method.rawValue
        server.requestStarted()
        let keepAlive = request.isKeepAlive && !server.isDraining && !forceClose
        let answer: EventLoopFuture<KVReply>
        if server.isDraining {
            answer = context.eventLoop.makeSucceededFuture(.shuttingDown)
        } else {
            answer = server.handle(
                KVRequest(
                    method: request.method, uri: request.uri, headers: request.headers,
                    body: oversized.map { .tooLarge(size: $0) } ?? .bytes(body)))
        }
        body = []
        let server = self.server
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        answer.whenComplete { result in
            let reply = (try? result.get()) ?? .noAnswer
            handler.value.write(
                reply, keepAlive: keepAlive && !server.isDraining, version: request.version,
                context: loopBoundContext.value)
            server.requestFinished(method: method, status: reply.status, started: started)
        }
    }

    private func write(_ reply: KVReply, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        for header in reply.extraHeaders { headers.add(name: header.name, value: header.value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: version, status: reply.status, headers: headers))),
            promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: reply.body.count)
        buffer.writeBytes(reply.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
