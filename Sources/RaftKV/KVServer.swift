import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
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
/// | `GET /v1/status` | this node's role, term, leader, indexes |
/// | `GET /metrics` | Prometheus text |
///
/// Every node accepts every request: proposals made on a follower are forwarded to the leader. Every error body is
/// JSON `{"error":..., "message":...}`, and the status says whether the command took effect:
///
/// | status | the command |
/// |---|---|
/// | 200, 404, 412 | was applied (a 412 compare-and-set, or a 404 read, was evaluated and changed nothing) |
/// | 4xx otherwise | was refused before it was proposed: not applied |
/// | 503 | was not applied and never will be: no leader within the deadline, the node is stopping or paused, or every copy was proven unable to commit |
/// | 504 | may or may not take effect: it was handed on, and the deadline passed or the node stopped before its outcome was known |
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
    public init(node: RaftNode<KVStore>, options: Options, logger: Logger, metricsText: @escaping @Sendable () -> [UInt8]) {
        self.node = node
        self.options = options
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
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: self.options.idleTimeout))
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
        let counter = s.requestCounters[key] ?? {
            let c = Counter(label: "kv_requests_total", dimensions: [("node", node.name), ("method", method), ("code", "\(status.code)")])
            s.requestCounters[key] = c
            return c
        }()
        counter.increment()
        let timer = s.durations[method] ?? {
            let t = Timer(label: "kv_request_duration_seconds", dimensions: [("node", node.name), ("method", method)])
            s.durations[method] = t
            return t
        }()
        timer.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
        if s.draining && s.inFlight == 0 {
            for promise in s.drained { promise.succeed() }
            s.drained.removeAll()
        }
    }

    /// Answers one complete request.
    func handle(_ request: HTTPRequestHead, body: [UInt8]) -> EventLoopFuture<Reply> {
        let loop = node.eventLoop
        let target = RequestTarget(request.uri)
        if target.path == "/v1/status" {
            guard request.method == .GET else { return loop.makeSucceededFuture(.methodNotAllowed("GET")) }
            return node.statusFuture().map { Reply.json(.ok, Self.statusJSON($0)) }
        }
        if target.path == "/metrics" {
            guard request.method == .GET else { return loop.makeSucceededFuture(.methodNotAllowed("GET")) }
            return loop.makeSucceededFuture(Reply(status: .ok, contentType: "text/plain; version=0.0.4", body: metricsText()))
        }
        guard target.path.hasPrefix("/v1/kv/") else {
            return loop.makeSucceededFuture(.error(.notFound, "not_found", "no such endpoint: \(target.path)"))
        }
        let rawKey = target.path.dropFirst("/v1/kv/".count)
        guard let key = RequestTarget.percentDecode(rawKey) else {
            return loop.makeSucceededFuture(.error(.badRequest, "bad_key", "the key is not valid percent-encoding"))
        }
        guard !key.isEmpty else { return loop.makeSucceededFuture(.error(.badRequest, "bad_key", "the key is empty")) }
        guard key.count <= options.maxKeyBytes else {
            return loop.makeSucceededFuture(.error(
                .badRequest, "key_too_long", "the key has \(key.count) bytes; the limit is \(options.maxKeyBytes)"))
        }
        guard let query = target.query else {
            return loop.makeSucceededFuture(.error(.badRequest, "bad_query", "the query string is not valid percent-encoding"))
        }
        switch request.method {
        case .GET:
            if let unknown = query.keys.first(where: { $0 != "consistency" }) {
                return loop.makeSucceededFuture(.error(.badRequest, "bad_query", "unknown query parameter \"\(unknown)\""))
            }
            switch query["consistency"].map({ String(decoding: $0, as: UTF8.self) }) {
            case nil where !options.unsafeLocalReads, "linearizable" where !options.unsafeLocalReads:
                return propose(.get(key: key))
            case nil, "linearizable", "serializable":
                return node.readStateMachine { $0.value(for: key) }.map { (read: [UInt8]??) -> Reply in
                    guard case .some(.some(let value)) = read else {
                        return .error(.notFound, "not_found", "no value for this key")
                    }
                    return Reply(status: .ok, contentType: "application/octet-stream", body: value)
                }
            case let other?:
                return loop.makeSucceededFuture(.error(
                    .badRequest, "bad_query", "consistency must be linearizable or serializable, not \"\(other)\""))
            }
        case .PUT:
            if let unknown = query.keys.first(where: { $0 != "prev_value" }) {
                return loop.makeSucceededFuture(.error(.badRequest, "bad_query", "unknown query parameter \"\(unknown)\""))
            }
            guard body.count <= options.maxValueBytes else {
                return loop.makeSucceededFuture(.tooLarge(body.count, options.maxValueBytes))
            }
            if let expected = query["prev_value"] {
                return propose(.compareAndSet(key: key, expected: expected, value: body))
            }
            return propose(.put(key: key, value: body))
        case .DELETE:
            guard query.isEmpty else {
                return loop.makeSucceededFuture(.error(.badRequest, "bad_query", "DELETE takes no query parameters"))
            }
            return propose(.delete(key: key))
        default:
            return loop.makeSucceededFuture(.methodNotAllowed("GET, PUT, DELETE"))
        }
    }

    private func propose(_ command: KVCommand) -> EventLoopFuture<Reply> {
        node.proposeFuture(command.encoded()).map { committed in
            switch committed.output {
            case .done(let existed):
                if case .delete = command {
                    return .json(.ok, "{\"index\":\(committed.index.rawValue),\"deleted\":\(existed)}")
                }
                return .json(.ok, "{\"index\":\(committed.index.rawValue)}")
            case .value(let value):
                return Reply(status: .ok, contentType: "application/octet-stream", body: value)
            case .notFound:
                if case .compareAndSet = command {
                    return .error(.preconditionFailed, "precondition_failed", "the key has no value")
                }
                return .error(.notFound, "not_found", "no value for this key")
            case .preconditionFailed:
                return .error(.preconditionFailed, "precondition_failed", "the current value differs from prev_value")
            case .invalid:
                return .error(.internalServerError, "internal", "the command could not be decoded")
            }
        }.flatMapErrorThrowing { error in Self.reply(for: error) }
    }

    /// The answer to a proposal that failed. The status tells the client whether the command may still take effect:
    /// 504 only when it may (it was handed on and may yet commit); 503 and 4xx only when it did not and never will.
    static func reply(for error: any Error) -> Reply {
        guard let error = error as? RaftNodeError else {
            return .error(.gatewayTimeout, "unknown_outcome", "the outcome is unknown: \(error)")
        }
        switch error {
        case .timedOut, .stoppedOutcomeUnknown:
            // Handed on, and may still commit: the client must not read this as "not applied".
            return .error(.gatewayTimeout, "unknown_outcome", "\(error)")
        case .tooLarge(let size, let limit):
            return .tooLarge(size, limit)
        case .invalidProposal:
            return .error(.badRequest, "bad_request", "\(error)")
        case .notLeader, .dropped, .paused, .stopped, .notStarted, .storage, .alreadyStarted, .configuration:
            return .error(.serviceUnavailable, "unavailable", "\(error)")
        }
    }

    static func statusJSON(_ s: NodeStatus) -> String {
        "{\"id\":\(JSON.string(s.name)),\"role\":\(JSON.string(s.role.rawValue)),\"term\":\(s.term.rawValue),"
            + "\"leader\":\(s.leader.map(JSON.string) ?? "null"),\"commit_index\":\(s.commitIndex.rawValue),"
            + "\"applied_index\":\(s.appliedIndex.rawValue),\"last_index\":\(s.lastIndex.rawValue)}"
    }
}

/// An answer to send.
struct Reply: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]
    var extraHeaders: [(String, String)] = []

    static func json(_ status: HTTPResponseStatus, _ text: String) -> Reply {
        Reply(status: status, contentType: "application/json", body: Array(text.utf8))
    }

    static func error(_ status: HTTPResponseStatus, _ code: String, _ message: String) -> Reply {
        json(status, "{\"error\":\(JSON.string(code)),\"message\":\(JSON.string(message))}")
    }

    static func tooLarge(_ size: Int, _ limit: Int) -> Reply {
        error(.payloadTooLarge, "value_too_large", "the value has \(size) bytes; the limit is \(limit)")
    }

    static func methodNotAllowed(_ allowed: String) -> Reply {
        var reply = error(.methodNotAllowed, "method_not_allowed", "allowed: \(allowed)")
        reply.extraHeaders = [("Allow", allowed)]
        return reply
    }
}

/// A request's path and query, split and decoded.
struct RequestTarget {
    var path: String
    /// Nil when the query string is not valid percent-encoding.
    var query: [String: [UInt8]]?

    init(_ uri: String) {
        guard let mark = uri.firstIndex(of: "?") else {
            path = uri
            query = [:]
            return
        }
        path = String(uri[..<mark])
        var fields: [String: [UInt8]] = [:]
        for part in uri[uri.index(after: mark)...].split(separator: "&", omittingEmptySubsequences: true) {
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.percentDecode(pieces[0]), let value = Self.percentDecode(pieces.count > 1 ? pieces[1] : "")
            else {
                query = nil
                return
            }
            fields[String(decoding: name, as: UTF8.self)] = value
        }
        query = fields
    }

    /// Decodes `%XX` escapes (a `+` stays a `+`); nil for a malformed escape.
    static func percentDecode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hex), let low = iterator.next().flatMap(hex) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

enum JSON {
    /// A JSON string literal.
    static func string(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// One client connection: collects a request, has the server answer it, writes the answer.
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
            if let length = request.headers.first(name: "content-length").flatMap(Int.init),
                length > server.options.maxValueBytes
            {
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
        let answer: EventLoopFuture<Reply>
        if server.isDraining {
            answer = context.eventLoop.makeSucceededFuture(.error(.serviceUnavailable, "shutting_down", "the server is shutting down"))
        } else if let size = oversized {
            answer = context.eventLoop.makeSucceededFuture(.tooLarge(size, server.options.maxValueBytes))
        } else {
            answer = server.handle(request, body: body)
        }
        body = []
        let server = self.server
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        answer.whenComplete { result in
            let reply = (try? result.get()) ?? .error(.internalServerError, "internal", "no answer")
            handler.value.write(reply, keepAlive: keepAlive && !server.isDraining, version: request.version,
                                context: loopBoundContext.value)
            server.requestFinished(method: method, status: reply.status, started: started)
        }
    }

    private func write(_ reply: Reply, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        for (name, value) in reply.extraHeaders { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: reply.status, headers: headers))), promise: nil)
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
