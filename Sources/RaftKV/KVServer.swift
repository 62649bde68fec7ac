import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RaftTLS
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
/// | `POST /v1/sessions` | 200 `{"client_id":N}`: a client session, registered through the log |
///
/// A PUT or DELETE with the headers `Raft-Client-Id: N` and `Raft-Sequence: S` is a write of that client session:
/// applied once for its sequence, and a retry (the same N and S, to any node) is answered with the first answer,
/// byte for byte; 410 `session_expired` if the session is not known (never registered, or expired), 409
/// `sequence_superseded` if the session applied a later sequence, 400 `bad_session` for malformed headers.
///
/// Every node accepts every request: proposals made on a follower are forwarded to the leader by the node, and
/// membership changes and transfers by this server (over HTTP, to the leader's `http_port`; see
/// `changeMembership`). The membership endpoints' statuses are `MembersAPI`'s and `KVReply.membershipFailure`'s. Every error body is
/// JSON `{"error":..., "message":...}`, and the status says whether the command took effect:
///
/// | status | the command |
/// |---|---|
/// | 200, 404, 412 | was applied (a 412 compare-and-set, or a 404 read, was evaluated and changed nothing) |
/// | 4xx otherwise | was refused before it was proposed, or (409, 410) refused by the session table: not applied |
/// | 503 | was not applied and never will be: no leader within the deadline, the node is stopping or paused, or every copy was proven unable to commit |
/// | 504 | may or may not take effect: it was handed on, and the deadline passed or the node stopped before its outcome was known |
/// | 401 `unauthorized`, 403 `forbidden` | was refused for its credentials before anything else (`Options.tokens`, `KVRouter.authorize`) |
/// | 503 `overloaded` | was not looked at: `Options.maxRequestsInFlight` requests were in flight (with `Retry-After`) |
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
        /// The most client connections open at once from one IP address; more from it are closed as they arrive
        /// (logged at most once a second per address), so that one client cannot take every connection.
        public var maxConnectionsPerAddress = 256
        /// The most requests being answered at once, over all connections (each connection has at most one: a
        /// pipelined request waits, unread, until the one before it is answered). A request beyond it is answered
        /// at once with 503 `overloaded` and `Retry-After`, without being looked at.
        public var maxRequestsInFlight = 1024
        /// The largest request head (request line and headers), in bytes; a larger one is answered 400 and the
        /// connection closed, by the HTTP parser, before the request is seen.
        public var maxHeaderBytes = 16 << 10
        /// A connection with nothing read for this long is closed (a stalled upload must not hold memory forever).
        public var idleTimeout = TimeAmount.seconds(60)
        /// The bearer tokens accepted (`raft-lite serve --tokens-file`); nil: no authentication, every request is
        /// served. With tokens, every request needs `Authorization: Bearer TOKEN` (401 otherwise), and a `read`
        /// token may only GET (403 otherwise), except `GET /metrics` and `GET /v1/status` unless the two flags
        /// below say they too need a token.
        public var tokens: TokenStore? = nil
        /// With `tokens`: `GET /metrics` needs a token too (by default it is open, for scrapers).
        public var authenticateMetrics = false
        /// With `tokens`: `GET /v1/status` needs a token too (by default it is open, for health checks).
        public var authenticateStatus = false
        /// HTTPS (`raft-lite serve --tls-cert/--tls-key`): every connection is TLS, with the context's certificate
        /// and, if it asks for them, clients' certificates verified; reloadable (new connections take the new files).
        /// A plain HTTP request on such a port is answered 400 `tls_required` and closed. nil: plain HTTP.
        public var tls: ReloadableTLSContext? = nil
        /// The client context for forwarding a membership request to the leader's API, which is HTTPS whenever this
        /// node's is (nil: plain HTTP).
        public var forwardTLS: ReloadableTLSContext? = nil
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
    /// `kv_connections_refused_total`: client connections closed at accept, over a connection limit.
    private let refusedCounter: Counter

    final class State {
        var channel: (any Channel)?
        var inFlight = 0
        var connections = 0
        var draining = false
        var drained: [EventLoopPromise<Void>] = []
        /// Open connections by remote IP address.
        var connectionsByAddress: [String: Int] = [:]
        /// Connections closed at accept, over a limit.
        var refusedConnections = 0
        /// When a refused connection from each address was last logged (to log at most once a second).
        var refusalLogged: [String: NIODeadline] = [:]
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
        self.refusedCounter = Counter(label: "kv_connections_refused_total", dimensions: [("node", node.name)])
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
                    guard self.admit(channel) else {
                        // Over a connection limit: answered 503 (plain HTTP) and closed as soon as it is active,
                        // nothing read from it.
                        try channel.pipeline.syncOperations.addHandler(CloseWhenActive(answer: self.options.tls == nil))
                        return
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: self.options.idleTimeout))
                    if let tls = self.options.tls {
                        try channel.pipeline.syncOperations.addHandler(PlainHTTPRefuser())
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    var limits = NIOHTTPDecoderLimitConfiguration()
                    limits.maxHeaderFieldSize = self.options.maxHeaderBytes
                    limits.maxHeaderListSize = self.options.maxHeaderBytes
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withErrorHandling: true, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: limits)
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

    /// The requests being answered now, the connections open, and those refused so far (for tests).
    var counts: (requestsInFlight: Int, connections: Int, refusedConnections: Int) {
        get async {
            (try? await node.eventLoop.submit {
                let s = self.state.value
                return (s.inFlight, s.connections, s.refusedConnections)
            }.get()) ?? (0, 0, 0)
        }
    }

    /// Whether one more request may be taken now (`maxRequestsInFlight`).
    var mayTakeRequest: Bool { state.value.inFlight < options.maxRequestsInFlight }

    /// Counts a new connection, and its end when it closes; false (and logged, at most once a second per address)
    /// if it would exceed the total or the per-address limit.
    func admit(_ channel: any Channel) -> Bool {
        let s = state.value
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        let fromAddress = s.connectionsByAddress[address, default: 0]
        let limit: String?
        if s.connections >= options.maxConnections {
            limit = "the server's \(options.maxConnections) connections (--max-connections)"
        } else if fromAddress >= options.maxConnectionsPerAddress {
            limit = "\(options.maxConnectionsPerAddress) connections from one address (--max-connections-per-address)"
        } else {
            limit = nil
        }
        if let limit {
            s.refusedConnections += 1
            refusedCounter.increment()
            logRefusal(address: address, limit: limit)
            return false
        }
        s.connections += 1
        s.connectionsByAddress[address] = fromAddress + 1
        channel.closeFuture.whenComplete { _ in self.connectionClosed(address: address) }
        return true
    }

    private func connectionClosed(address: String) {
        let s = state.value
        s.connections = max(0, s.connections - 1)
        let left = (s.connectionsByAddress[address] ?? 1) - 1
        s.connectionsByAddress[address] = left > 0 ? left : nil
    }

    /// Logs a refused connection, at most once a second for each address.
    private func logRefusal(address: String, limit: String) {
        let s = state.value
        let now = NIODeadline.now()
        if let last = s.refusalLogged[address], now - last < .seconds(1) { return }
        if s.refusalLogged.count >= 4096 {
            s.refusalLogged = s.refusalLogged.filter { now - $0.value < .seconds(1) }
        }
        s.refusalLogged[address] = now
        logger.warning(
            "refused a client connection: over the limit of \(limit)",
            metadata: ["address": "\(address)", "open_from_address": "\(s.connectionsByAddress[address] ?? 0)"])
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
        let route = router.route(request)
        // Before anything is asked of the node: a refused request changes nothing.
        if let refusal = router.authorize(request, route, tokens: options.tokens?.current) {
            return loop.makeSucceededFuture(refusal)
        }
        switch route {
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
        case .read(let key, let consistency, let atLeast):
            return node.readFuture(consistency, atLeast: atLeast) { $0.value(for: key) }
                .map { KVReply.read($0.value, appliedIndex: $0.appliedIndex) }
                .flatMapErrorThrowing { error in KVReply.readFailure(error) }
        case .registerSession:
            return node.registerSessionFuture().map(KVReply.sessionRegistered)
                .flatMapErrorThrowing { error in KVReply.failure(error) }
        case .proposeInSession(let command, let session):
            return node.proposeFuture(command.encoded(), session: session)
                .map { KVReply.committed(command, index: $0.index, output: $0.output) }
                .flatMapErrorThrowing { error in KVReply.failure(error) }
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
                host: endpoint.host, port: endpoint.port, timeout: .seconds(2), tls: options.forwardTLS?.context
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
            var headers = [(Self.forwardedHeader, node.name), ("Content-Type", "application/json")]
            // The client's credentials go along: the leader checks them against its own tokens file.
            for value in request.headers["Authorization"] { headers.append(("Authorization", value)) }
            let response = try await connection.execute(
                method: request.method, path: request.uri, body: body, headers: headers, timeout: timeout
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

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request that cannot be parsed (over --max-header-bytes, malformed): NIO's error handler has answered
        // 400; nothing more can be read from this connection.
        context.close(promise: nil)
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
        let keepAlive = request.isKeepAlive && !server.isDraining && !forceClose
        let overloaded = !server.mayTakeRequest
        server.requestStarted()
        let answer: EventLoopFuture<KVReply>
        if server.isDraining {
            answer = context.eventLoop.makeSucceededFuture(.shuttingDown)
        } else if overloaded {
            answer = context.eventLoop.makeSucceededFuture(.overloaded(server.options.maxRequestsInFlight))
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

/// Closes a connection refused at accept as soon as it is active, without reading from it.
final class CloseWhenActive: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    /// Answer first, with a plain 503 `too_many_connections` (on a plain HTTP port; an HTTPS one cannot answer
    /// before a handshake, so it only closes).
    let answer: Bool

    init(answer: Bool) { self.answer = answer }

    func channelActive(context: ChannelHandlerContext) {
        guard answer else {
            context.close(promise: nil)
            return
        }
        let body = Array(
            #"{"error":"too_many_connections","message":"this node has as many client connections as it allows (from this address, or in all): try again later"}"#
                .utf8)
        var out = context.channel.allocator.buffer(capacity: 200 + body.count)
        out.writeString(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                + "Connection: close\r\nContent-Length: \(body.count)\r\n\r\n")
        out.writeBytes(body)
        context.writeAndFlush(NIOAny(out)).whenComplete { _ in context.close(promise: nil) }
    }
}

/// In front of the TLS handler on an HTTPS port: a connection whose first bytes are a plain HTTP request (not a TLS
/// handshake record) is answered with a plain 400 saying the port speaks HTTPS, and closed — a clear error rather
/// than a handshake failure the client cannot read. A TLS connection passes through untouched, and this handler
/// leaves the pipeline at its first read.
final class PlainHTTPRefuser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        // A TLS record starts with its content type: 22 for a handshake. An HTTP request starts with its method, in
        // capital letters.
        if let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), (65...90).contains(first) {
            let body = Array(
                #"{"error":"tls_required","message":"this port speaks HTTPS only: use https:// (raft-lite: --cacert)"}"#
                    .utf8)
            var out = context.channel.allocator.buffer(capacity: 160 + body.count)
            out.writeString(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + "Content-Length: \(body.count)\r\n\r\n")
            out.writeBytes(body)
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
