import Foundation
import NIOCore
import NIOSSL
import NIOHTTP1
import NIOPosix

/// A client of the key-value store's HTTP API, as `raft-lite serve` and `raft-lite cluster` offer it.
///
/// Each call opens a connection to the first endpoint that answers (trying the others in order when one cannot be
/// reached) and closes it afterwards; any node will do, since followers forward writes to the leader. A call
/// returns the server's response whatever its status, and throws `HTTPClientError` only when no response arrived.
/// What a status means (see `KVServer` for the whole API):
///
/// - 200: done. A write's body is `{"index":N}` (a delete adds `"deleted":true|false`): see `KVWriteReply`. A read's
///   body is the value, as bytes.
/// - 404: a read found no value. 412: a compare-and-set found another value, or none.
/// - Other 4xx, and 503: refused; the command did not take effect and never will. The body is `{"error":...,
///   "message":...}`: see `KVErrorReply`.
/// - 504, and a thrown `.timedOut`, `.connectionClosed` or `.connectionFailed`: the outcome is unknown; the command
///   may yet take effect.
///
/// ```swift
/// let client = KVClient(endpoints: try Endpoint.list("127.0.0.1:8081,127.0.0.1:8082"))
/// let put = try await client.put("greeting", Array("hello".utf8))
/// let get = try await client.get("greeting")   // get.status == 200, get.text == "hello"
/// ```
public struct KVClient: Sendable {
    /// The nodes to try, in order.
    public var endpoints: [Endpoint]
    /// How long to wait for a response once a request is sent.
    public var timeout: TimeAmount
    /// The bearer token sent with every request (`Authorization: Bearer TOKEN`), for a server started with
    /// `--tokens-file`; nil: none. A server that refuses it answers 401 (`unauthorized`), or 403 (`forbidden`) for a
    /// read-only token on a write: definite answers, never worth a retry.
    public var token: String?
    /// With a context, every connection is HTTPS, the servers' certificates checked as it says (nil: plain HTTP).
    public var tls: NIOSSLContext?

    public init(
        endpoints: [Endpoint], timeout: TimeAmount = .seconds(10), token: String? = nil, tls: NIOSSLContext? = nil
    ) {
        self.endpoints = endpoints
        self.timeout = timeout
        self.token = token
        self.tls = tls
    }

    /// `headers` and, if there is a token, its `Authorization` header.
    func withCredentials(_ headers: [(String, String)]) -> [(String, String)] {
        guard let token else { return headers }
        return headers + [Self.authorizationHeader(token)]
    }

    /// The header that carries a bearer token.
    public static func authorizationHeader(_ token: String) -> (String, String) {
        ("Authorization", "Bearer " + token)
    }

    /// Sets `key` to `value`; with `prevValue`, only if the current value is exactly that (compare-and-set: 412
    /// otherwise, and also when the key has no value).
    /// - Parameter headers: more request headers (`sessionHeaders` makes a write one of a client session).
    public func put(
        _ key: String, _ value: [UInt8], prevValue: [UInt8]? = nil, headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        let query = prevValue.map { "?prev_value=" + Self.percentEncode($0) } ?? ""
        return try await request(
            .PUT, "/v1/kv/" + Self.percentEncode(Array(key.utf8)) + query, body: value, headers: headers)
    }

    /// Reads `key`: linearizable by default (ReadIndex: the leader confirms it leads, no log entry); `serializable`
    /// reads the answering node's own copy, which is faster and may be stale.
    public func get(_ key: String, serializable: Bool = false) async throws -> HTTPResponse {
        try await get(key, consistency: serializable ? "serializable" : nil)
    }

    /// Reads `key` with `consistency` (`linearizable`, `lease` or `serializable`; nil: the server's default,
    /// linearizable), once the answering node has applied at least `minIndex`. The answer's `Raft-Applied-Index`
    /// header says which state was read.
    public func get(_ key: String, consistency: String?, minIndex: UInt64? = nil) async throws -> HTTPResponse {
        var query: [String] = []
        if let consistency { query.append("consistency=" + Self.percentEncode(Array(consistency.utf8))) }
        if let minIndex { query.append("min_index=\(minIndex)") }
        let target = "/v1/kv/" + Self.percentEncode(Array(key.utf8)) + (query.isEmpty ? "" : "?")
        return try await request(.GET, target + query.joined(separator: "&"))
    }

    /// Deletes `key` (200 whether or not it had a value: see `KVWriteReply.deleted`).
    public func delete(_ key: String, headers: [(String, String)] = []) async throws -> HTTPResponse {
        try await request(.DELETE, "/v1/kv/" + Self.percentEncode(Array(key.utf8)), headers: headers)
    }

    /// Registers a client session (`POST /v1/sessions`): 200 `{"client_id":N}` (`SessionReply.decode`), or an
    /// error as for a write (504: it may still be registered; a session never used just expires). See `KVSession`.
    public func registerSession() async throws -> HTTPResponse {
        try await request(.POST, "/v1/sessions")
    }

    /// The headers that make a write one of client session `clientID`, numbered `sequence`.
    public static func sessionHeaders(clientID: UInt64, sequence: UInt64) -> [(String, String)] {
        [("Raft-Client-Id", String(clientID)), ("Raft-Sequence", String(sequence))]
    }

    /// Sends a request to the first reachable endpoint. `path` is the request target, already percent-encoded.
    /// Throws `.unreachable` when no endpoint accepts a connection.
    public func request(
        _ method: HTTPMethod, _ path: String, body: [UInt8] = [], headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        var failures: [String] = []
        for endpoint in endpoints {
            let connection: HTTPConnection
            do {
                connection = try await connect(to: endpoint)
            } catch {
                failures.append("\(endpoint): \(error)")
                continue
            }
            defer { connection.close() }
            return try await connection.execute(
                method: method, path: path, body: body, headers: withCredentials(headers), timeout: timeout
            ).get()
        }
        throw HTTPClientError(.unreachable, "no endpoint could be reached (" + failures.joined(separator: "; ") + ")")
    }

    /// Sends a request to one endpoint (for per-node requests such as `GET /v1/status`). Throws `.unreachable`
    /// when it does not accept a connection.
    public func request(
        _ method: HTTPMethod, _ path: String, at endpoint: Endpoint, body: [UInt8] = [],
        headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        let connection: HTTPConnection
        do {
            connection = try await connect(to: endpoint)
        } catch {
            throw HTTPClientError(.unreachable, "\(error)")
        }
        defer { connection.close() }
        return try await connection.execute(
            method: method, path: path, body: body, headers: withCredentials(headers), timeout: timeout
        ).get()
    }

    private func connect(to endpoint: Endpoint) async throws -> HTTPConnection {
        try await HTTPConnection.connect(host: endpoint.host, port: endpoint.port, timeout: .seconds(2), tls: tls).get()
    }

    /// `GET /v1/status` of one node, decoded.
    public func status(at endpoint: Endpoint) async throws -> NodeStatusReport {
        try NodeStatusReport.decode(try await request(.GET, "/v1/status", at: endpoint))
    }

    /// Asks one node to snapshot its state now and compact its log (`POST /v1/snapshot`), and returns the response:
    /// 200 with `{"index":N,"term":T}` once the snapshot is durable (see `SnapshotReply`), or an error body
    /// (`KVErrorReply`): 503 `snapshots_unsupported` when the node cannot snapshot (no data directory, or nothing
    /// applied yet), 500 `snapshot_failed` when the snapshot could not be written, 503 `unavailable` when the node is
    /// stopping. A snapshot is of one node's state, so it goes to `endpoint` only, never to another node.
    /// Throws `.unreachable` when the endpoint does not accept a connection.
    public func snapshot(at endpoint: Endpoint) async throws -> HTTPResponse {
        try await request(.POST, "/v1/snapshot", at: endpoint)
    }

    // MARK: - Membership

    /// The membership as the first reachable endpoint sees it (`GET /v1/members`): 200 with a body that
    /// `MembershipReport.decode` reads.
    public func members() async throws -> HTTPResponse {
        try await request(.GET, "/v1/members")
    }

    /// Adds a member (`POST /v1/members`): a voter by default (added as a learner, caught up, then promoted), or a
    /// learner that stays one. Any node will do: a follower forwards the request to the leader. 200 with the
    /// membership once the change is committed (`MembershipReport.decode`); 400 `bad_body` (the `field` named), 409
    /// `already_member` or `name_conflict`, 503 `membership_refused` (a change in progress, it would lose quorum, the
    /// learner did not catch up) or `unavailable`, 504 `unknown_outcome`.
    /// - Parameter fields: more fields for the member's entry (they travel in the membership, as `http_port` does).
    public func addMember(
        name: String, ip: String, port: Int, httpPort: Int? = nil, learner: Bool = false,
        fields: [String: String] = [:]
    ) async throws -> HTTPResponse {
        var body: [String: Any] = fields
        body["name"] = name
        body["ip"] = ip
        body["port"] = port
        if let httpPort { body["http_port"] = httpPort }
        body["role"] = learner ? "learner" : "voter"
        let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        return try await request(
            .POST, "/v1/members", body: Array(data), headers: [("Content-Type", "application/json")])
    }

    /// Removes a member (`DELETE /v1/members/NAME`): 200 with the membership once committed, 404 `not_member`, 503,
    /// 504 as for `addMember`.
    public func removeMember(_ name: String) async throws -> HTTPResponse {
        try await request(.DELETE, "/v1/members/" + Self.percentEncode(Array(name.utf8)))
    }

    /// Promotes a learner to a voter once it has caught up (`POST /v1/members/NAME/promote`): 200 with the
    /// membership, 404 `not_member`, 409 `already_member` (already a voter), 503, 504 as for `addMember`.
    public func promoteMember(_ name: String) async throws -> HTTPResponse {
        try await request(.POST, "/v1/members/" + Self.percentEncode(Array(name.utf8)) + "/promote")
    }

    /// The cluster's id and bootstrap configuration (`GET /v1/cluster`), for a node that joins: see
    /// `ClusterReport.decode`.
    public func cluster() async throws -> HTTPResponse {
        try await request(.GET, "/v1/cluster")
    }

    /// Hands leadership to `node`, or (nil) to the most up-to-date voter (`POST /v1/leader/transfer`): 200
    /// `{"leader":NAME}` once another node leads (`LeaderTransferReply.decode`); 404 `not_member`, 409
    /// `not_voter`, 503 `membership_refused` (no other voter, a transfer under way, the target did not take over in
    /// time) or `unavailable`, 504 `unknown_outcome`.
    public func transferLeadership(to node: String? = nil) async throws -> HTTPResponse {
        let body = node.map { Array("{\"to\":".utf8) + Self.jsonString($0) + Array("}".utf8) } ?? []
        return try await request(
            .POST, "/v1/leader/transfer", body: body, headers: [("Content-Type", "application/json")])
    }

    static func jsonString(_ text: String) -> [UInt8] {
        (try? JSONSerialization.data(withJSONObject: [text], options: [])).map { Array($0.dropFirst().dropLast()) }
            ?? Array("\"\"".utf8)
    }

    /// Percent-encodes every byte outside the unreserved set of RFC 3986.
    public static func percentEncode(_ bytes: [UInt8]) -> String {
        var out = ""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

/// A node's `/v1/status`, decoded.
public struct NodeStatusReport: Sendable, Decodable, Hashable {
    /// The node's name.
    public var id: String
    /// `follower`, `pre-candidate`, `candidate` or `leader`.
    public var role: String
    public var term: UInt64
    /// The leader this node knows of, if any.
    public var leader: String?
    /// The highest log index known committed.
    public var commitIndex: UInt64
    /// The highest log index applied to this node's copy.
    public var appliedIndex: UInt64
    /// The last index in this node's log (absent from servers older than this field).
    public var lastIndex: UInt64?
    /// The index this node's latest snapshot ends at, 0 if it has none (absent from servers older than snapshots).
    public var snapshotIndex: UInt64?
    /// The first entry this node's log holds: 1 until the log is compacted, then the entry after the compaction
    /// point (absent from servers older than snapshots).
    public var firstIndex: UInt64?
    /// The membership in this node's view (absent from servers older than membership changes).
    public var membership: MembershipReport?
    /// How each other member looks from this node: the failure detector's view (absent from older servers).
    public var peers: [PeerHealth]?

    /// One member as the reporting node sees it.
    public struct PeerHealth: Sendable, Decodable, Hashable {
        public var name: String
        public var role: String
        /// Heard from within an election timeout.
        public var reachable: Bool
        /// How long ago the reporting node last heard from it, and the latest round trip, in milliseconds.
        public var lastContactMs: Double?
        public var roundTripMs: Double?
        /// Leader only: it answered in the current CheckQuorum period.
        public var active: Bool?

        enum CodingKeys: String, CodingKey {
            case name, role, reachable, active
            case lastContactMs = "last_contact_ms"
            case roundTripMs = "round_trip_ms"
        }
    }

    public init(
        id: String, role: String, term: UInt64, leader: String?, commitIndex: UInt64, appliedIndex: UInt64,
        lastIndex: UInt64?, snapshotIndex: UInt64? = nil, firstIndex: UInt64? = nil,
        membership: MembershipReport? = nil
    ) {
        self.id = id
        self.role = role
        self.term = term
        self.leader = leader
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.lastIndex = lastIndex
        self.snapshotIndex = snapshotIndex
        self.firstIndex = firstIndex
        self.membership = membership
    }

    enum CodingKeys: String, CodingKey {
        case id, role, term, leader
        case commitIndex = "commit_index"
        case appliedIndex = "applied_index"
        case lastIndex = "last_index"
        case snapshotIndex = "snapshot_index"
        case firstIndex = "first_index"
        case membership, peers
    }

    /// Decodes a status response's body; throws a `DecodingError` if it is not one.
    public static func decode(_ response: HTTPResponse) throws -> NodeStatusReport {
        try JSONDecoder().decode(NodeStatusReport.self, from: Data(response.body))
    }
}

/// The membership as one node sees it: the body of `GET /v1/members` (and of a membership change done), and
/// `membership` in `GET /v1/status`.
public struct MembershipReport: Sendable, Decodable, Hashable {
    public struct Member: Sendable, Decodable, Hashable {
        public var name: String
        /// The member's Raft address.
        public var ip: String
        public var port: Int
        /// Its HTTP API's port, when its entry has one.
        public var httpPort: Int?
        /// `voter`, `outgoing-voter` (votes until the joint configuration is left) or `learner`.
        public var role: String

        public init(name: String, ip: String, port: Int, httpPort: Int? = nil, role: String) {
            self.name = name
            self.ip = ip
            self.port = port
            self.httpPort = httpPort
            self.role = role
        }

        enum CodingKeys: String, CodingKey {
            case name, ip, port
            case httpPort = "http_port"
            case role
        }
    }

    /// Every member, by name.
    public var members: [Member]
    /// A joint configuration is in effect (a change is under way).
    public var joint: Bool
    /// The log index of the configuration entry in effect (0: the bootstrap configuration).
    public var index: UInt64
    /// Whether that entry is committed.
    public var committed: Bool
    /// The leader the node knows of, if any.
    public var leader: String?

    public init(members: [Member], joint: Bool, index: UInt64, committed: Bool, leader: String?) {
        self.members = members
        self.joint = joint
        self.index = index
        self.committed = committed
        self.leader = leader
    }

    /// Decodes a successful response's body; nil if it is not one.
    public static func decode(_ response: HTTPResponse) -> MembershipReport? {
        guard response.status == 200 else { return nil }
        return try? JSONDecoder().decode(MembershipReport.self, from: Data(response.body))
    }
}

/// The body of `GET /v1/cluster`: the cluster's id and its bootstrap configuration, as a cluster file's JSON (parse
/// it with `ClusterConfiguration(json:)`).
public struct ClusterReport: Sendable, Hashable {
    public var clusterID: String
    /// The bootstrap configuration: a JSON object of members, in the cluster file's format.
    public var bootstrap: [UInt8]

    public init(clusterID: String, bootstrap: [UInt8]) {
        self.clusterID = clusterID
        self.bootstrap = bootstrap
    }

    /// Decodes a successful response's body; nil if it is not one.
    public static func decode(_ response: HTTPResponse) -> ClusterReport? {
        guard response.status == 200,
            let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
            let id = object["cluster_id"] as? String, let bootstrap = object["bootstrap"] as? [String: Any],
            let data = try? JSONSerialization.data(withJSONObject: bootstrap, options: [.sortedKeys])
        else { return nil }
        return ClusterReport(clusterID: id, bootstrap: Array(data))
    }
}

/// The body of a successful `POST /v1/leader/transfer`: the node that leads now.
public struct LeaderTransferReply: Sendable, Decodable, Hashable {
    public var leader: String

    public init(leader: String) { self.leader = leader }

    /// Decodes a successful response's body; nil if it is not one.
    public static func decode(_ response: HTTPResponse) -> LeaderTransferReply? {
        guard response.status == 200 else { return nil }
        return try? JSONDecoder().decode(LeaderTransferReply.self, from: Data(response.body))
    }
}

/// The body of a successful `POST /v1/snapshot`: the last log entry the snapshot covers, and its term.
public struct SnapshotReply: Sendable, Decodable, Hashable {
    public var index: UInt64
    public var term: UInt64

    public init(index: UInt64, term: UInt64) {
        self.index = index
        self.term = term
    }

    /// Decodes a snapshot's response; nil if it is not a successful snapshot's.
    public static func decode(_ response: HTTPResponse) -> SnapshotReply? {
        guard response.status == 200 else { return nil }
        return try? JSONDecoder().decode(SnapshotReply.self, from: Data(response.body))
    }
}

/// The body of a successful `POST /v1/sessions`: the new session's client id.
public struct SessionReply: Sendable, Decodable, Hashable {
    public var clientID: UInt64

    public init(clientID: UInt64) { self.clientID = clientID }

    enum CodingKeys: String, CodingKey {
        case clientID = "client_id"
    }

    /// Decodes a registration's response; nil if it is not a successful one.
    public static func decode(_ response: HTTPResponse) -> SessionReply? {
        guard response.status == 200 else { return nil }
        return try? JSONDecoder().decode(SessionReply.self, from: Data(response.body))
    }
}

/// The body of a successful write: `{"index":N}`, with `"deleted"` for a delete.
public struct KVWriteReply: Sendable, Decodable, Hashable {
    /// The log index the command committed at.
    public var index: UInt64
    /// For a delete: whether the key had a value. Nil for a put or compare-and-set.
    public var deleted: Bool?

    public init(index: UInt64, deleted: Bool? = nil) {
        self.index = index
        self.deleted = deleted
    }

    /// Decodes a write's response; nil if it is not a successful write's.
    public static func decode(_ response: HTTPResponse) -> KVWriteReply? {
        guard response.status == 200 else { return nil }
        return try? JSONDecoder().decode(KVWriteReply.self, from: Data(response.body))
    }
}

/// The body of every error the server answers: `{"error":code,"message":text}`. Codes include `not_found`,
/// `precondition_failed`, `bad_key`, `key_too_long`, `bad_query`, `value_too_large`, `method_not_allowed`,
/// `unavailable`, `shutting_down`, `overloaded` (503, with `Retry-After`), `unauthorized` (401), `forbidden` (403),
/// `bad_session`, `session_expired` (410), `sequence_superseded` (409) (the command
/// did not take effect) and `unknown_outcome` (with 504: it may have);
/// for `POST /v1/snapshot`, also `snapshots_unsupported` and `snapshot_failed`; for the membership endpoints, also
/// `bad_body` (with `field`), `bad_name`, `not_member`, `already_member`, `name_conflict`, `not_voter` and
/// `membership_refused`.
public struct KVErrorReply: Sendable, Decodable, Hashable {
    /// A stable, machine-readable code.
    public var error: String
    /// A human-readable explanation.
    public var message: String
    /// For `bad_body`: the field of the request's body at fault (nil when the whole body is).
    public var field: String?

    public init(error: String, message: String, field: String? = nil) {
        self.error = error
        self.message = message
        self.field = field
    }

    /// Decodes an error response's body; nil if it has none (or the response is not an error).
    public static func decode(_ response: HTTPResponse) -> KVErrorReply? {
        guard response.status >= 400 else { return nil }
        return try? JSONDecoder().decode(KVErrorReply.self, from: Data(response.body))
    }
}
