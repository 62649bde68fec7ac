import NIOHTTP1
import RaftCore
import RaftLite

/// A whole HTTP request, as the router sees it: already read, detached from its connection.
struct KVRequest: Sendable {
    /// The body, or only its size when it was over the limit and not kept.
    enum Body: Sendable, Hashable {
        case bytes([UInt8])
        case tooLarge(size: Int)
    }

    var method: HTTPMethod
    /// The request target: path and query, still percent-encoded.
    var uri: String
    var headers: HTTPHeaders
    var body: Body

    init(method: HTTPMethod, uri: String, headers: HTTPHeaders = [:], body: Body = .bytes([])) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
    }
}

/// What a request asks of the node.
enum KVRoute: Sendable, Equatable {
    /// `GET /v1/status`.
    case status
    /// `GET /metrics`.
    case metrics
    /// `POST /v1/snapshot`: snapshot the state machine now and compact the log.
    case snapshot
    /// A command to propose through the log: a write.
    case propose(KVCommand)
    /// A write of a client session (the `Raft-Client-Id` and `Raft-Sequence` headers): applied once per sequence.
    case proposeInSession(KVCommand, ClientSession)
    /// `POST /v1/sessions`: register a client session through the log.
    case registerSession
    /// A read of the key with this consistency, once this node has applied at least `atLeast` (`?min_index=N`).
    /// Linearizable reads go through ReadIndex, never through the log; unsafe local reads are `serializable`.
    case read(key: [UInt8], consistency: ReadConsistency, atLeast: LogIndex)
    /// `GET /v1/members`: the membership in this node's view.
    case members
    /// `GET /v1/cluster`: the cluster id and the bootstrap configuration, for a node that joins.
    case cluster
    /// A membership change or a leadership transfer: done by the leader (a follower forwards it).
    case membership(MembershipRequest)
    /// Refused before the node is asked anything: a bad path, method, key, query or body.
    case refused(KVReply)
}

/// The key-value API's routing: from a request to what it asks of the node, and from the node's answer to the reply.
/// It is pure and synchronous — no sockets, no event loop, no node — so every rule of the API can be tested alone;
/// `KVServer` reads requests, calls `route(_:)`, asks the node, and writes the `KVReply` it gets back.
struct KVRouter: Sendable {
    static let keyPrefix = "/v1/kv/"

    /// The longest key, in bytes (after percent-decoding).
    var maxKeyBytes: Int
    /// The largest value, in bytes.
    var maxValueBytes: Int
    /// Serve linearizable reads from the local copy (testing only: see `KVServer.Options.unsafeLocalReads`).
    var unsafeLocalReads: Bool
    /// With tokens: `GET /metrics` needs one too.
    var authenticateMetrics = false
    /// With tokens: `GET /v1/status` needs one too.
    var authenticateStatus = false

    init(
        maxKeyBytes: Int, maxValueBytes: Int, unsafeLocalReads: Bool = false, authenticateMetrics: Bool = false,
        authenticateStatus: Bool = false
    ) {
        self.maxKeyBytes = maxKeyBytes
        self.maxValueBytes = maxValueBytes
        self.unsafeLocalReads = unsafeLocalReads
        self.authenticateMetrics = authenticateMetrics
        self.authenticateStatus = authenticateStatus
    }

    init(options: KVServer.Options) {
        self.init(
            maxKeyBytes: options.maxKeyBytes, maxValueBytes: options.maxValueBytes,
            unsafeLocalReads: options.unsafeLocalReads, authenticateMetrics: options.authenticateMetrics,
            authenticateStatus: options.authenticateStatus)
    }

    /// The size a request's head declares for its body, when that is over the limit: such a request is refused at
    /// once, without reading the body.
    func declaredBodyTooLarge(_ headers: HTTPHeaders) -> Int? {
        guard let length = headers.first(name: "content-length").flatMap(Int.init), length > maxValueBytes else {
            return nil
        }
        return length
    }

    /// What a request asks for, or why it is refused.
    func route(_ request: KVRequest) -> KVRoute {
        let body: [UInt8]
        switch request.body {
        case .tooLarge(let size): return .refused(.tooLarge(size, maxValueBytes))
        case .bytes(let bytes): body = bytes
        }
        let target = RequestTarget(request.uri)
        if target.path == "/v1/status" {
            return request.method == .GET ? .status : .refused(.methodNotAllowed("GET"))
        }
        if target.path == "/metrics" {
            return request.method == .GET ? .metrics : .refused(.methodNotAllowed("GET"))
        }
        if target.path == "/v1/snapshot" {
            guard request.method == .POST else { return .refused(.methodNotAllowed("POST")) }
            guard target.query?.isEmpty == true else {
                return .refused(.error(.badRequest, "bad_query", "POST /v1/snapshot takes no query parameters"))
            }
            return .snapshot
        }
        if target.path == Self.sessionsPath {
            guard request.method == .POST else { return .refused(.methodNotAllowed("POST")) }
            guard target.query?.isEmpty == true else {
                return .refused(.error(.badRequest, "bad_query", "POST /v1/sessions takes no query parameters"))
            }
            return .registerSession
        }
        if let route = routeMembership(request, target, body: body) { return route }
        guard target.path.hasPrefix(Self.keyPrefix) else {
            return .refused(.error(.notFound, "not_found", "no such endpoint: \(target.path)"))
        }
        guard let key = RequestTarget.percentDecode(target.path.dropFirst(Self.keyPrefix.count)) else {
            return .refused(.error(.badRequest, "bad_key", "the key is not valid percent-encoding"))
        }
        guard !key.isEmpty else { return .refused(.error(.badRequest, "bad_key", "the key is empty")) }
        guard key.count <= maxKeyBytes else {
            return .refused(
                .error(
                    .badRequest, "key_too_long", "the key has \(key.count) bytes; the limit is \(maxKeyBytes)"))
        }
        guard let query = target.query else {
            return .refused(.error(.badRequest, "bad_query", "the query string is not valid percent-encoding"))
        }
        switch request.method {
        case .GET:
            if let unknown = query.keys.first(where: { $0 != "consistency" && $0 != "min_index" }) {
                return .refused(.error(.badRequest, "bad_query", "unknown query parameter \"\(unknown)\""))
            }
            var atLeast = LogIndex.zero
            if let text = query["min_index"] {
                guard let n = UInt64(String(decoding: text, as: UTF8.self)) else {
                    return .refused(
                        .error(
                            .badRequest, "bad_query",
                            "min_index must be a log index (a decimal number), not \"\(String(decoding: text, as: UTF8.self))\""
                        ))
                }
                atLeast = LogIndex(n)
            }
            let name = query["consistency"].map { String(decoding: $0, as: UTF8.self) } ?? "linearizable"
            guard var consistency = ReadConsistency(rawValue: name) else {
                return .refused(
                    .error(
                        .badRequest, "bad_query",
                        "consistency must be linearizable, lease or serializable, not \"\(name)\""))
            }
            if unsafeLocalReads { consistency = .serializable }
            return .read(key: key, consistency: consistency, atLeast: atLeast)
        case .PUT:
            if let unknown = query.keys.first(where: { $0 != "prev_value" }) {
                return .refused(.error(.badRequest, "bad_query", "unknown query parameter \"\(unknown)\""))
            }
            guard body.count <= maxValueBytes else { return .refused(.tooLarge(body.count, maxValueBytes)) }
            if let expected = query["prev_value"] {
                return write(.compareAndSet(key: key, expected: expected, value: body), request.headers)
            }
            return write(.put(key: key, value: body), request.headers)
        case .DELETE:
            guard query.isEmpty else {
                return .refused(.error(.badRequest, "bad_query", "DELETE takes no query parameters"))
            }
            return write(.delete(key: key), request.headers)
        default:
            return .refused(.methodNotAllowed("GET, PUT, DELETE"))
        }
    }
}

// MARK: - Authentication

extension KVRouter {
    /// Why a request may not be served, or nil if it may. Without `tokens` every request may. With them:
    ///
    /// - `GET /metrics` and `GET /v1/status` are open unless `authenticateMetrics` / `authenticateStatus`;
    /// - every other request needs `Authorization: Bearer TOKEN` with a listed token: 401 `unauthorized` (and
    ///   `WWW-Authenticate: Bearer`) when it is missing, malformed, given twice or not listed — whatever the request,
    ///   even one that would be refused for another reason, so that nothing about it is answered;
    /// - a `read` token may only GET: any other method is 403 `forbidden`.
    ///
    /// Decided on the request alone, before the node is asked anything, so a refused request changes nothing.
    func authorize(_ request: KVRequest, _ route: KVRoute, tokens: TokenTable?) -> KVReply? {
        guard let tokens else { return nil }
        switch route {
        case .metrics where !authenticateMetrics, .status where !authenticateStatus: return nil
        default: break
        }
        let given = request.headers["Authorization"]
        guard !given.isEmpty else {
            return .unauthorized(
                "this server requires a bearer token: send Authorization: Bearer TOKEN", invalid: false)
        }
        guard given.count == 1, let token = Self.bearerToken(given[0]) else {
            return .unauthorized("the Authorization header must be one \"Bearer TOKEN\"", invalid: true)
        }
        guard let entry = tokens.entry(for: token) else {
            return .unauthorized("the bearer token is not accepted here", invalid: true)
        }
        if entry.role == .read && request.method != .GET {
            let named = entry.name.isEmpty ? "this token" : "the token \"\(entry.name)\""
            return .error(
                .forbidden, "forbidden",
                "\(named) may only read (role read): \(request.method.rawValue) needs a readwrite token")
        }
        return nil
    }

    /// The token of an `Authorization: Bearer TOKEN` header value (the scheme in any case), or nil.
    static func bearerToken(_ value: String) -> Substring.UTF8View? {
        let trimmed = value.drop { $0 == " " }
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        let token = trimmed.dropFirst(7).drop { $0 == " " }
        var end = token.endIndex
        while end > token.startIndex, token[token.index(before: end)] == " " { end = token.index(before: end) }
        let exact = token[..<end]
        guard !exact.isEmpty, !exact.contains(" ") else { return nil }
        return exact.utf8
    }
}

// MARK: - Client sessions

extension KVRouter {
    static let sessionsPath = "/v1/sessions"
    static let clientIDHeader = "Raft-Client-Id"
    static let sequenceHeader = "Raft-Sequence"

    /// A write, in a client session if its headers name one.
    func write(_ command: KVCommand, _ headers: HTTPHeaders) -> KVRoute {
        switch Self.session(headers) {
        case .success(nil): return .propose(command)
        case .success(let session?): return .proposeInSession(command, session)
        case .failure(let reply): return .refused(reply)
        }
    }

    /// The client session a write's headers name: both `Raft-Client-Id` and `Raft-Sequence`, or neither; each once,
    /// a decimal number of at least 1 that fits in 64 bits.
    static func session(_ headers: HTTPHeaders) -> Result<ClientSession?, KVReply> {
        let ids = headers[clientIDHeader]
        let sequences = headers[sequenceHeader]
        if ids.isEmpty && sequences.isEmpty { return .success(nil) }
        func bad(_ message: String) -> Result<ClientSession?, KVReply> {
            .failure(.error(.badRequest, "bad_session", message))
        }
        guard !ids.isEmpty, !sequences.isEmpty else {
            let (given, missing) = ids.isEmpty ? (sequenceHeader, clientIDHeader) : (clientIDHeader, sequenceHeader)
            return bad("\(given) was given without \(missing): a session write needs both headers")
        }
        guard ids.count == 1, sequences.count == 1 else {
            return bad("\(ids.count > 1 ? clientIDHeader : sequenceHeader) was given more than once")
        }
        func number(_ text: String, _ name: String) -> Result<UInt64, KVReply> {
            let digits = text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            guard !text.isEmpty, digits, let value = UInt64(text) else {
                return .failure(
                    .error(
                        .badRequest, "bad_session",
                        "\(name) must be a decimal number that fits in 64 bits, not \"\(text.prefix(64))\""))
            }
            guard value >= 1 else {
                return .failure(.error(.badRequest, "bad_session", "\(name) must be at least 1"))
            }
            return .success(value)
        }
        switch (number(ids[0], clientIDHeader), number(sequences[0], sequenceHeader)) {
        case (.success(let id), .success(let sequence)):
            return .success(ClientSession(clientID: id, sequence: sequence))
        case (.failure(let reply), _), (_, .failure(let reply)):
            return .failure(reply)
        }
    }
}

// MARK: - Membership routes

extension KVRouter {
    static let membersPath = "/v1/members"

    /// The membership endpoints, or nil for a path that is not one of them.
    func routeMembership(_ request: KVRequest, _ target: RequestTarget, body: [UInt8]) -> KVRoute? {
        let path = target.path
        let isMembers = path == Self.membersPath || path.hasPrefix(Self.membersPath + "/")
        guard isMembers || path == "/v1/cluster" || path == "/v1/leader/transfer" else { return nil }
        guard target.query?.isEmpty == true else {
            return .refused(.error(.badRequest, "bad_query", "\(path) takes no query parameters"))
        }
        switch path {
        case "/v1/cluster":
            return request.method == .GET ? .cluster : .refused(.methodNotAllowed("GET"))
        case "/v1/leader/transfer":
            guard request.method == .POST else { return .refused(.methodNotAllowed("POST")) }
            switch TransferBody.parse(body) {
            case .success(let to): return .membership(.transfer(to: to))
            case .failure(let reply): return .refused(reply)
            }
        case Self.membersPath:
            switch request.method {
            case .GET: return .members
            case .POST:
                switch MemberRequest.parse(body) {
                case .success(let r): return .membership(.add(r))
                case .failure(let reply): return .refused(reply)
                }
            default: return .refused(.methodNotAllowed("GET, POST"))
            }
        default:
            // /v1/members/NAME or /v1/members/NAME/promote, NAME percent-encoded.
            let rest = path.dropFirst(Self.membersPath.count + 1)
            let segments = rest.split(separator: "/", omittingEmptySubsequences: false)
            guard let first = segments.first, !first.isEmpty else {
                return .refused(.error(.badRequest, "bad_name", "the member name is empty"))
            }
            guard let bytes = RequestTarget.percentDecode(first), let name = String(validating: bytes, as: UTF8.self),
                !name.isEmpty, name.utf8.count <= 255
            else {
                return .refused(
                    .error(
                        .badRequest, "bad_name",
                        "the member name must be 1 to 255 bytes of percent-encoded UTF-8"))
            }
            switch segments.count {
            case 1:
                return request.method == .DELETE
                    ? .membership(.remove(name)) : .refused(.methodNotAllowed("DELETE"))
            case 2 where segments[1] == "promote":
                return request.method == .POST
                    ? .membership(.promote(name)) : .refused(.methodNotAllowed("POST"))
            default:
                return .refused(.error(.notFound, "not_found", "no such endpoint: \(path)"))
            }
        }
    }
}

// MARK: - Replies

/// An answer to send: status, headers and body.
struct KVReply: Sendable, Equatable {
    struct Header: Sendable, Hashable {
        var name: String
        var value: String
    }

    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]
    /// Headers besides `Content-Type`, `Content-Length` and `Connection`.
    var extraHeaders: [Header] = []

    /// The text of the body (for tests and logs).
    var text: String { String(decoding: body, as: UTF8.self) }

    static func json(_ status: HTTPResponseStatus, _ value: some Encodable) -> KVReply {
        guard let body = try? JSONWriter.encode(value) else {
            // Only the server's own types are encoded here, and they always encode; this is a safety net.
            return KVReply(
                status: .internalServerError, contentType: "application/json",
                body: Array("{\"error\":\"internal\",\"message\":\"the reply could not be encoded\"}".utf8))
        }
        return KVReply(status: status, contentType: "application/json", body: body)
    }

    static func bytes(_ value: [UInt8]) -> KVReply {
        KVReply(status: .ok, contentType: "application/octet-stream", body: value)
    }

    static func error(_ status: HTTPResponseStatus, _ code: String, _ message: String) -> KVReply {
        json(status, ErrorBody(error: code, message: message))
    }

    static func tooLarge(_ size: Int, _ limit: Int) -> KVReply {
        error(.payloadTooLarge, "value_too_large", "the value has \(size) bytes; the limit is \(limit)")
    }

    static func methodNotAllowed(_ allowed: String) -> KVReply {
        var reply = error(.methodNotAllowed, "method_not_allowed", "allowed: \(allowed)")
        reply.extraHeaders = [Header(name: "Allow", value: allowed)]
        return reply
    }

    /// 401: no acceptable bearer token. `invalid`: one was given (RFC 6750's `invalid_token`).
    static func unauthorized(_ message: String, invalid: Bool) -> KVReply {
        var reply = error(.unauthorized, "unauthorized", message)
        reply.extraHeaders = [
            Header(
                name: "WWW-Authenticate",
                value: invalid ? "Bearer realm=\"raft-lite\", error=\"invalid_token\"" : "Bearer realm=\"raft-lite\"")
        ]
        return reply
    }

    /// 503: the server has `limit` requests in flight already; the request was not looked at.
    static func overloaded(_ limit: Int) -> KVReply {
        var reply = error(
            .serviceUnavailable, "overloaded",
            "the server is answering \(limit) requests already (--max-requests-in-flight); retry shortly")
        reply.extraHeaders = [Header(name: "Retry-After", value: "1")]
        return reply
    }

    /// The answer to a request that arrives while the server drains.
    static let shuttingDown = error(.serviceUnavailable, "shutting_down", "the server is shutting down")

    /// The answer when the node could not produce one (it failed to report its status, or to read its state).
    static let noAnswer = error(.internalServerError, "internal", "no answer")

    /// `GET /v1/status`.
    static func status(
        _ status: NodeStatus, membership: ClusterMembership? = nil, health: [MemberHealth] = []
    ) -> KVReply {
        var body = StatusBody(status)
        body.membership = membership.map { MembersBody($0, leader: status.leader) }
        body.peers = health.isEmpty ? nil : health.map(PeerHealthBody.init)
        return json(.ok, body)
    }

    /// `GET /metrics`: Prometheus text.
    static func metrics(_ text: [UInt8]) -> KVReply {
        KVReply(status: .ok, contentType: "text/plain; version=0.0.4", body: text)
    }

    /// `POST /v1/snapshot` done: the snapshot is durable and covers the log up to `index`.
    static func snapshotTaken(_ meta: SnapshotMetadata) -> KVReply {
        json(.ok, SnapshotBody(index: meta.index.rawValue, term: meta.term.rawValue))
    }

    /// `POST /v1/snapshot` failed. Nothing was changed by a failed snapshot, so every answer is definite:
    ///
    /// | error | status | code |
    /// |---|---|---|
    /// | `snapshotsUnsupported` (no data directory, a state machine without snapshots, or nothing applied yet) | 503 | `snapshots_unsupported` |
    /// | `storage` (the snapshot file could not be written) | 500 | `snapshot_failed` |
    /// | `stopped`, `notStarted`, any other node error | 503 | `unavailable` |
    /// | an error of unknown meaning | 500 | `snapshot_failed` |
    static func snapshotFailure(_ error: any Error) -> KVReply {
        guard let error = error as? RaftNodeError else {
            return .error(.internalServerError, "snapshot_failed", "the snapshot failed: \(error)")
        }
        switch error.code {
        case .snapshotsUnsupported:
            return .error(.serviceUnavailable, "snapshots_unsupported", "\(error)")
        case .storage:
            return .error(.internalServerError, "snapshot_failed", "\(error)")
        default:
            return .error(.serviceUnavailable, "unavailable", "\(error)")
        }
    }

    /// The header that tells a reader which state it read: the last entry applied by the node that served it. A
    /// client that must not see older state than it has seen asks for `?min_index=` that index next time.
    static let appliedIndexHeader = "Raft-Applied-Index"

    /// A read served: the value (or its absence) and the index of the state it was read from.
    static func read(_ value: [UInt8]?, appliedIndex: LogIndex) -> KVReply {
        var reply: KVReply = value.map(KVReply.bytes) ?? .error(.notFound, "not_found", "no value for this key")
        reply.extraHeaders.append(Header(name: appliedIndexHeader, value: "\(appliedIndex.rawValue)"))
        return reply
    }

    /// A read that failed: nothing was read and nothing changed, so every failure may be retried.
    static func readFailure(_ error: any Error) -> KVReply {
        guard let error = error as? RaftNodeError else {
            return .error(.serviceUnavailable, "unavailable", "the read failed: \(error)")
        }
        if error.code == .readUnavailable { return .error(.serviceUnavailable, "read_unavailable", "\(error)") }
        return .error(.serviceUnavailable, "unavailable", "\(error)")
    }

    /// The answer to a command that committed at `index` and gave `output` when applied.
    static func committed(_ command: KVCommand, index: LogIndex, output: KVResult) -> KVReply {
        switch output {
        case .done(let existed):
            if case .delete = command { return .json(.ok, WriteBody(index: index.rawValue, deleted: existed)) }
            return .json(.ok, WriteBody(index: index.rawValue))
        case .value(let value):
            return .bytes(value)
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
    }

    /// `POST /v1/sessions` done: the session's client id.
    static func sessionRegistered(_ clientID: UInt64) -> KVReply {
        json(.ok, SessionBody(clientID: clientID))
    }

    /// The answer to a proposal that failed. The status tells the client whether the command may still take effect:
    /// 504 only when it may (it was handed on and may yet commit); 503 and 4xx only when it did not and never will.
    static func failure(_ error: any Error) -> KVReply {
        guard let error = error as? RaftNodeError else {
            return .error(.gatewayTimeout, "unknown_outcome", "the outcome is unknown: \(error)")
        }
        // Handed on, and may still commit: the client must not read this as "not applied". Asked of the error
        // rather than listed by code, so that a code added later cannot be taken for a definite failure by mistake.
        if error.outcomeIsUnknown { return .error(.gatewayTimeout, "unknown_outcome", "\(error)") }
        switch error.code {
        case .tooLarge:
            return .tooLarge(error.size ?? 0, error.limit ?? 0)
        case .invalidProposal:
            return .error(.badRequest, "bad_request", "\(error)")
        case .sessionExpired:
            return .error(.gone, "session_expired", "\(error)")
        case .sequenceSuperseded:
            return .error(.conflict, "sequence_superseded", "\(error)")
        default:
            // notLeader, dropped, paused, stopped, notStarted, storage, alreadyStarted, configuration: definite.
            return .error(.serviceUnavailable, "unavailable", "\(error)")
        }
    }
}

// MARK: - JSON bodies

/// Every error body: `{"error":code,"message":text}`; a malformed membership body adds `"field"`.
struct ErrorBody: Encodable, Hashable {
    var error: String
    var message: String
    /// The field of the request's body at fault, if one is.
    var field: String? = nil
}

/// The answer to a committed write: `{"index":N}`, and for a delete `{"index":N,"deleted":true|false}`.
struct WriteBody: Encodable, Hashable {
    var index: UInt64
    var deleted: Bool?
}

/// The answer to `POST /v1/sessions`: `{"client_id":N}`.
struct SessionBody: Encodable, Hashable {
    var clientID: UInt64

    enum CodingKeys: String, CodingKey {
        case clientID = "client_id"
    }
}

/// The answer to `POST /v1/snapshot`: `{"index":N,"term":T}`, the last entry the snapshot covers and its term.
struct SnapshotBody: Encodable, Hashable {
    var index: UInt64
    var term: UInt64
}

/// `GET /v1/status`. The leader is `null` when there is none (not left out). `snapshot_index`, `first_index` and then
/// `membership` come last (they were added after the others); the server always writes them, and a body built
/// without them (nil) leaves them out.
struct StatusBody: Encodable, Hashable {
    var id: String
    var role: String
    var term: UInt64
    var leader: String?
    var commitIndex: UInt64
    var appliedIndex: UInt64
    var lastIndex: UInt64
    /// The index the latest snapshot ends at (0: none).
    var snapshotIndex: UInt64? = nil
    /// The first entry the log holds (1 until it is compacted).
    var firstIndex: UInt64? = nil
    /// The membership in this node's view (as `GET /v1/members` answers it).
    var membership: MembersBody? = nil
    /// How each other member looks from this node (the failure detector).
    var peers: [PeerHealthBody]? = nil

    enum CodingKeys: String, CodingKey {
        case id, role, term, leader
        case commitIndex = "commit_index"
        case appliedIndex = "applied_index"
        case lastIndex = "last_index"
        case snapshotIndex = "snapshot_index"
        case firstIndex = "first_index"
        case membership, peers
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(role, forKey: .role)
        try c.encode(term, forKey: .term)
        try c.encode(leader, forKey: .leader)
        try c.encode(commitIndex, forKey: .commitIndex)
        try c.encode(appliedIndex, forKey: .appliedIndex)
        try c.encode(lastIndex, forKey: .lastIndex)
        try c.encodeIfPresent(snapshotIndex, forKey: .snapshotIndex)
        try c.encodeIfPresent(firstIndex, forKey: .firstIndex)
        try c.encodeIfPresent(membership, forKey: .membership)
        try c.encodeIfPresent(peers, forKey: .peers)
    }
}

/// One member's health in `GET /v1/status`: when this node last heard from it, the round trip, whether it is
/// reachable, and (leader only) whether it answered in the current CheckQuorum period.
struct PeerHealthBody: Encodable, Hashable {
    var name: String
    var role: String
    var reachable: Bool
    var lastContactMs: Double?
    var roundTripMs: Double?
    var active: Bool?

    init(_ h: MemberHealth) {
        name = h.name
        role = h.role.rawValue
        reachable = h.reachable
        lastContactMs = h.lastContact.map { (Double($0.nanoseconds) / 1e4).rounded() / 100 }
        roundTripMs = h.roundTrip.map { (Double($0.nanoseconds) / 1e4).rounded() / 100 }
        active = h.active
    }

    enum CodingKeys: String, CodingKey {
        case name, role, reachable, active
        case lastContactMs = "last_contact_ms"
        case roundTripMs = "round_trip_ms"
    }
}

extension StatusBody {
    init(_ s: NodeStatus) {
        self.init(
            id: s.name, role: s.role.rawValue, term: s.term.rawValue, leader: s.leader,
            commitIndex: s.commitIndex.rawValue, appliedIndex: s.appliedIndex.rawValue, lastIndex: s.lastIndex.rawValue,
            snapshotIndex: s.snapshotIndex.rawValue, firstIndex: s.firstIndex.rawValue)
    }
}

// MARK: - Request targets

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
            guard let name = Self.percentDecode(pieces[0]),
                let value = Self.percentDecode(pieces.count > 1 ? pieces[1] : "")
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
