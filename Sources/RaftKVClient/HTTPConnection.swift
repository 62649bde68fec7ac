import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// An HTTP response, whole: whatever its status, a response is a value, not an error.
public struct HTTPResponse: Sendable {
    /// The status code, such as 200 or 504.
    public var status: Int
    /// The headers, in the order received.
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The body as UTF-8 text (invalid sequences replaced).
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first header of this name, compared case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// Why a request failed before any response arrived (a response, even a 5xx, is not an error: see `HTTPResponse`).
///
/// `code` is what a program branches on; `details` is for people. Codes are values of an open struct rather than
/// cases of an enum, so that new ones can be added without breaking code that switches over them.
public struct HTTPClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// No connection could be made: the request was never sent, so it did not take effect.
        public static let unreachable = Code(rawValue: "unreachable")
        /// The request was sent and no response came within the timeout (the connection is then closed). The
        /// request may or may not have taken effect.
        public static let timedOut = Code(rawValue: "timed_out")
        /// The server closed the connection before the whole response arrived. The request may or may not have
        /// taken effect.
        public static let connectionClosed = Code(rawValue: "connection_closed")
        /// The connection failed while the request was in flight. The request may or may not have taken effect.
        public static let connectionFailed = Code(rawValue: "connection_failed")
        /// A request was made on a connection that already has one in flight; it was not sent.
        public static let busy = Code(rawValue: "busy")
        /// An endpoint, or a list of them, could not be parsed.
        public static let badEndpoint = Code(rawValue: "bad_endpoint")
        /// The server refused the request's credentials: 401 (no token, or one it does not accept) or 403 (a
        /// read-only token on a write). Definite: nothing was done, and sending it again will not help.
        public static let unauthorized = Code(rawValue: "unauthorized")
        /// A response arrived but was not what the caller needed (for example a failed preload in the load
        /// generator, or a status body that does not decode).
        public static let unexpectedResponse = Code(rawValue: "unexpected_response")
    }

    public var code: Code
    /// A human-readable explanation.
    public var details: String

    public init(_ code: Code, _ details: String) {
        self.code = code
        self.details = details
    }

    /// The details (the code is not repeated: messages read as before codes existed).
    public var description: String { details }
}

/// One keep-alive HTTP/1.1 connection with at most one request in flight (a closed-loop client).
///
/// Requests on one connection must not overlap: `execute` fails with `.busy` while one is in flight.
public final class HTTPConnection: Sendable {
    /// The NIO channel underneath.
    public let channel: any Channel
    private let collector: ResponseCollector
    /// The host and port this connection was made to.
    public let host: String
    public let port: Int

    private init(channel: any Channel, collector: ResponseCollector, host: String, port: Int) {
        self.channel = channel
        self.collector = collector
        self.host = host
        self.port = port
    }

    /// Connects to `host:port`, failing after `timeout` (the error is NIO's own: connection refused, timeout...).
    /// With `tls`, the connection is HTTPS: the server's certificate is checked as the context says (a context
    /// that verifies host names checks `host` — a DNS name, or for an IP address the address connected to — against
    /// the certificate's subject alternative names); a failed handshake fails the first request.
    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: TimeAmount = .seconds(5), tls: NIOSSLContext? = nil
    ) -> EventLoopFuture<HTTPConnection> {
        let loop = group.next()
        let collector = ResponseCollector(eventLoop: loop)
        // SNI and the name checked: a DNS name only (an IP address is checked against the address connected to).
        let serverHostname = host.isIPAddress ? nil : host
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port)
            .map { HTTPConnection(channel: $0, collector: collector, host: host, port: port) }
    }

    /// Sends a request and returns its response. Fails if the connection closes first, or after `timeout`
    /// (which also closes the connection: its state is unknown).
    /// `headers` go with the request besides `Host` and `Content-Length` (a `Content-Type` given there replaces the
    /// default, `application/octet-stream`).
    public func execute(
        method: HTTPMethod, path: String, body: [UInt8] = [], headers extraHeaders: [(String, String)] = [],
        timeout: TimeAmount = .seconds(5)
    ) -> EventLoopFuture<HTTPResponse> {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: HTTPResponse.self)
        let channel = self.channel
        let collector = self.collector
        let host = self.host
        loop.execute {
            guard collector.start(promise) else {
                promise.fail(HTTPClientError(.busy, "a request is already in flight on this connection"))
                return
            }
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: host)
            headers.add(name: "Content-Length", value: String(body.count))
            let typed = extraHeaders.contains { $0.0.lowercased() == "content-type" }
            if !body.isEmpty && !typed { headers.add(name: "Content-Type", value: "application/octet-stream") }
            for (name, value) in extraHeaders { headers.add(name: name, value: value) }
            channel.write(
                HTTPClientRequestPart.head(
                    HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)), promise: nil)
            if !body.isEmpty {
                var buffer = channel.allocator.buffer(capacity: body.count)
                buffer.writeBytes(body)
                channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        let timer = loop.scheduleTask(in: timeout) {
            promise.fail(HTTPClientError(.timedOut, "no response within \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    /// Closes the connection; a request in flight fails with `.connectionClosed`.
    public func close() {
        channel.close(promise: nil)
    }
}

/// Collects the parts of one response and completes the request's promise.
final class ResponseCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private struct State {
        var promise: EventLoopPromise<HTTPResponse>?
        var head: HTTPResponseHead?
        var body: [UInt8] = []
    }

    private let state: NIOLoopBoundBox<State>

    init(eventLoop: any EventLoop) {
        state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// Registers the promise of a new request; false if one is already waiting.
    func start(_ promise: EventLoopPromise<HTTPResponse>) -> Bool {
        guard state.value.promise == nil else { return false }
        state.value.promise = promise
        state.value.head = nil
        state.value.body.removeAll(keepingCapacity: true)
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            state.value.head = head
        case .body(var buffer):
            state.value.body.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
        case .end:
            guard let promise = state.value.promise, let head = state.value.head else { return }
            state.value.promise = nil
            let response = HTTPResponse(
                status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: state.value.body
            )
            promise.succeed(response)
            if !head.isKeepAlive { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let promise = state.value.promise {
            state.value.promise = nil
            promise.fail(HTTPClientError(.connectionClosed, "the server closed the connection"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let promise = state.value.promise {
            state.value.promise = nil
            promise.fail(HTTPClientError(.connectionFailed, "\(error)"))
        }
        context.close(promise: nil)
    }
}

/// Where a node's HTTP API listens: a `host:port` pair, as given on a command line.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `:port` or a bare port; nil if malformed.
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        // A scheme says nothing here: whether a client speaks HTTPS is its TLS setting (`--cacert`).
        let withoutScheme =
            trimmed.hasPrefix("http://")
            ? String(trimmed.dropFirst(7)) : trimmed.hasPrefix("https://") ? String(trimmed.dropFirst(8)) : trimmed
        let parts = withoutScheme.split(separator: ":", omittingEmptySubsequences: false)
        let hostPart: String
        let portPart: Substring
        switch parts.count {
        case 1:
            hostPart = "127.0.0.1"
            portPart = parts[0]
        case 2:
            hostPart = parts[0].isEmpty ? "127.0.0.1" : String(parts[0])
            portPart = parts[1]
        default:
            return nil
        }
        guard let port = Int(portPart.hasSuffix("/") ? portPart.dropLast() : portPart), (1...65535).contains(port)
        else {
            return nil
        }
        self.host = hostPart
        self.port = port
    }

    /// Parses a comma-separated list; throws naming the first malformed one.
    public static func list(_ text: String) throws(HTTPClientError) -> [Endpoint] {
        var out: [Endpoint] = []
        for part in text.split(separator: ",") {
            guard let endpoint = Endpoint(String(part)) else {
                throw HTTPClientError(.badEndpoint, "\"\(part)\" is not an endpoint: expected host:port")
            }
            out.append(endpoint)
        }
        guard !out.isEmpty else { throw HTTPClientError(.badEndpoint, "no endpoints given") }
        return out
    }

    public var description: String { "\(host):\(port)" }
}

extension String {
    /// Whether this is an IPv4 or IPv6 address in text form (not a host name).
    var isIPAddress: Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return withCString { inet_pton(AF_INET, $0, &v4) == 1 || inet_pton(AF_INET6, $0, &v6) == 1 }
    }
}
