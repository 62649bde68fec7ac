import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOSSL
import RaftKV
import RaftKVClient
import RaftLite

// Joining a running cluster (`raft-lite serve --join`): the cluster's bootstrap configuration as a data directory
// keeps it (`DIR/cluster.json`), the HTTP calls that fetch it and ask for membership, and the loop that retries them.

/// What a node's data directory records about its cluster, in `DIR/cluster.json`: the cluster's id, its bootstrap
/// configuration (the cluster file it was first started with, or the one the cluster it joined reported), and, for
/// a node that joined, its own entry (it is not in the bootstrap configuration).
///
/// ```json
/// {"format": 1, "cluster_id": "raftlite:node0,node1,node2",
///  "bootstrap": {"node0": {"ip": "127.0.0.1", "port": 9081, "http_port": 8081}, ...},
///  "self": {"name": "node3", "ip": "127.0.0.1", "port": 9084, "http_port": 8084}}
/// ```
///
/// The membership in effect is not here: it lives in the log and the snapshots, and wins over this file.
struct StoredCluster: Hashable {
    static let fileName = "cluster.json"

    var bootstrap: ClusterConfiguration
    /// This node's own entry, when it is not a bootstrap member.
    var selfEntry: ClusterConfiguration.Member?

    var clusterID: String { bootstrap.clusterID }

    /// The record in `directory`, or nil if it has none.
    static func read(dataDirectory directory: String) throws -> StoredCluster? {
        let path = directory + "/" + fileName
        let bytes: [UInt8]
        do {
            guard let read = try DataDirectoryFile.read(fileName, in: directory) else { return nil }
            bytes = read
        } catch {
            throw ValidationError("cannot read \(path): \(error)")
        }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)), case .object(let top) = value,
            case .string(let clusterID)? = top["cluster_id"], let bootstrapValue = top["bootstrap"]
        else {
            throw ValidationError(
                "\(path) is not a stored cluster configuration (expected {\"cluster_id\": ..., \"bootstrap\": ...}); "
                    + "it is written by raft-lite serve: move it away only if this directory was never used by a node")
        }
        var bootstrap: ClusterConfiguration
        do {
            bootstrap = try ClusterConfiguration(json: try JSONEncoder().encode(bootstrapValue))
        } catch {
            throw ValidationError("\(path): the bootstrap configuration cannot be used: \(error)")
        }
        guard !clusterID.isEmpty, clusterID.utf8.count <= 1024 else {
            throw ValidationError("\(path): cluster_id must have 1 to 1024 bytes")
        }
        bootstrap.clusterID = clusterID
        var selfEntry: ClusterConfiguration.Member?
        if let entry = top["self"] {
            guard let data = try? JSONEncoder().encode(entry),
                let member = ClusterConfiguration.Member(context: Array(data))
            else {
                throw ValidationError("\(path): \"self\" is not a member entry with name, ip and port")
            }
            selfEntry = member
        }
        return StoredCluster(bootstrap: bootstrap, selfEntry: selfEntry)
    }

    /// Writes the record into `directory`, atomically and durably. Call with the directory open (the node created).
    func write(dataDirectory directory: String) throws {
        var top: [String: JSONValue] = [
            "format": .number(1), "cluster_id": .string(clusterID), "bootstrap": Self.json(of: bootstrap),
        ]
        if let selfEntry {
            top["self"] = (try? JSONDecoder().decode(JSONValue.self, from: Data(selfEntry.context))) ?? .null
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(JSONValue.object(top))) + [10]
        do {
            try DataDirectoryFile.write(bytes, to: Self.fileName, in: directory)
        } catch {
            throw ValidationError("cannot write \(directory)/\(Self.fileName): \(error)")
        }
    }

    static func json(of configuration: ClusterConfiguration) -> JSONValue {
        (try? JSONDecoder().decode(JSONValue.self, from: Data(configuration.json().utf8))) ?? .object([:])
    }
}

extension ClusterConfiguration {
    /// The same members with the addresses (and extra fields) `file` gives for them; members `file` lacks keep theirs.
    /// The names and the cluster id stay: only addresses may change under existing data.
    func withAddresses(from file: ClusterConfiguration) -> ClusterConfiguration {
        let moved = members.map { member in file[member.name] ?? member }
        guard var result = try? ClusterConfiguration(members: moved, clusterID: clusterID) else { return self }
        result.clusterID = clusterID
        return result
    }

    /// The same cluster, restricted to these names (nil if one of them is missing), with this id.
    func restricted(to names: [String], clusterID: String) -> ClusterConfiguration? {
        let kept = names.compactMap { self[$0] }
        guard kept.count == names.count else { return nil }
        return try? ClusterConfiguration(members: kept, clusterID: clusterID)
    }

    /// The HTTP endpoints (`ip` and `http_port`) of the members that have one.
    var httpEndpoints: [String: Endpoint] {
        var out: [String: Endpoint] = [:]
        for member in members {
            if let port = try? member.port(field: "http_port") {
                out[member.name] = Endpoint(host: member.host, port: port)
            }
        }
        return out
    }
}

// MARK: - HTTP

/// One HTTP request on a connection of its own (closed when done, or when the calling task is cancelled).
/// `token`: the bearer token to send (`serve --join-token-file`), for a cluster that requires one.
/// `tls`: HTTPS, for a cluster whose API is HTTPS (`serve --tls-cert`).
func httpCall(
    _ method: HTTPCallMethod, _ endpoint: Endpoint, _ path: String, body: [UInt8] = [], timeout: TimeAmount,
    token: String? = nil, tls: NIOSSLContext? = nil
) async throws -> HTTPResponse {
    let headers = token.map { [KVClient.authorizationHeader($0)] } ?? []
    let connection: HTTPConnection
    do {
        connection = try await HTTPConnection.connect(
            host: endpoint.host, port: endpoint.port, timeout: .seconds(3), tls: tls
        ).get()
    } catch {
        throw HTTPClientError(.unreachable, "cannot connect to \(endpoint): \(error)")
    }
    defer { connection.close() }
    return try await withTaskCancellationHandler {
        switch method {
        case .get: try await connection.execute(method: .GET, path: path, headers: headers, timeout: timeout).get()
        case .post:
            try await connection.execute(method: .POST, path: path, body: body, headers: headers, timeout: timeout)
                .get()
        }
    } onCancel: {
        connection.close()
    }
}

enum HTTPCallMethod { case get, post }

/// What `GET /v1/cluster` answers: `{"cluster_id": S, "bootstrap": <the cluster file>}`.
struct ClusterInfo {
    var bootstrap: ClusterConfiguration

    var clusterID: String { bootstrap.clusterID }

    init(_ response: HTTPResponse, from endpoint: Endpoint) throws {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body)),
            case .object(let top) = value, case .string(let clusterID)? = top["cluster_id"], !clusterID.isEmpty,
            clusterID.utf8.count <= 1024, let raw = top["bootstrap"]
        else {
            throw ValidationError(
                "\(endpoint) answered GET /v1/cluster with something else than {\"cluster_id\": ..., \"bootstrap\": ...}: "
                    + String(response.text.prefix(300)))
        }
        // The bootstrap configuration as a JSON object, or as a string that holds one.
        let json: Data
        if case .string(let text) = raw {
            json = Data(text.utf8)
        } else {
            json = (try? JSONEncoder().encode(raw)) ?? Data()
        }
        do {
            bootstrap = try ClusterConfiguration(json: json)
        } catch {
            throw ValidationError(
                "\(endpoint) answered GET /v1/cluster with a bootstrap configuration that cannot be used: \(error)")
        }
        bootstrap.clusterID = clusterID
    }

    /// Asks `endpoint`, retrying connection failures and 5xx answers until `patience` runs out.
    static func fetch(
        from endpoint: Endpoint, patience: Duration, logger: Logger, token: String? = nil, tls: NIOSSLContext? = nil
    ) async throws -> ClusterInfo {
        let deadline = ContinuousClock.now + patience
        var delay = Duration.milliseconds(200)
        while true {
            let failure: String
            do {
                let response = try await httpCall(
                    .get, endpoint, "/v1/cluster", timeout: .seconds(5), token: token, tls: tls)
                switch response.status {
                case 200:
                    return try ClusterInfo(response, from: endpoint)
                case 404, 405:
                    throw ValidationError(
                        "\(endpoint) does not offer GET /v1/cluster (HTTP \(response.status)): it runs a raft-lite "
                            + "without membership changes, or is not a raft-lite node")
                case 500...599:
                    failure = "HTTP \(response.status): \(response.text.prefix(200))"
                default:
                    throw ValidationError(
                        "\(endpoint) answered GET /v1/cluster with HTTP \(response.status): \(response.text.prefix(300))"
                    )
                }
            } catch let error as HTTPClientError {
                failure = "\(error)"
            }
            guard ContinuousClock.now + delay < deadline else {
                throw ValidationError("cannot ask \(endpoint) for the cluster's configuration: \(failure)")
            }
            logger.info(
                "asking for the cluster's configuration failed; retrying",
                metadata: [
                    "endpoint": "\(endpoint)", "error": "\(failure)",
                ])
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }
}

// MARK: - Asking for membership

/// Asks the cluster to add this node (`POST /v1/members`) until it is a member, a definite refusal, or `patience`
/// runs out: 503 (no leader, a change in progress) and unreachable nodes are retried, a leader hint is followed, and
/// a 504 (outcome unknown) is checked against the membership this node sees before asking again.
struct Joiner: Sendable {
    let node: RaftNode<KVStore>
    /// Where to ask first (the `--join` endpoint), then the others known.
    let endpoint: Endpoint
    /// Every node's HTTP endpoint known from the bootstrap configuration, by name.
    let known: [String: Endpoint]
    let member: ClusterConfiguration.Member
    let learner: Bool
    let patience: Duration
    let logger: Logger
    /// The bearer token for the cluster's API, if it requires one (`serve --join-token-file`).
    var token: String? = nil
    /// HTTPS, for a cluster whose API is HTTPS.
    var tls: NIOSSLContext? = nil

    enum Outcome: Equatable {
        case joined, alreadyMember, refused, gaveUp, cancelled
    }

    var role: String { learner ? "learner" : "voter" }

    /// The request body: `{"name":S,"ip":S,"port":N,"http_port":N,"role":"voter"|"learner"}`.
    var body: [UInt8] {
        var entry: [String: JSONValue] = [
            "name": .string(member.name), "ip": .string(member.host), "port": .number(Double(member.port)),
            "role": .string(role),
        ]
        if let http = try? member.port(field: "http_port") { entry["http_port"] = .number(Double(http)) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(JSONValue.object(entry))) ?? Data())
    }

    /// Whether the membership this node has in effect already holds it in the role asked for (a voter also
    /// satisfies a request to be a learner: a join never demotes).
    func isMember() async -> ClusterMembership.Role? {
        guard let membership = await node.membership(),
            let mine = membership.members.first(where: { $0.name == member.name }), membership.committed
        else { return nil }
        if mine.role == .voter || (learner && mine.role == .learner) { return mine.role }
        return nil
    }

    func run() async -> Outcome {
        if let role = await isMember() {
            logger.notice("already a member of the cluster: nothing to join", metadata: ["role": "\(role.rawValue)"])
            return .alreadyMember
        }
        logger.notice(
            "joining the cluster", metadata: ["endpoint": "\(endpoint)", "role": "\(role)", "name": "\(member.name)"])
        let deadline = ContinuousClock.now + patience
        var target = endpoint
        // The endpoints to fall back on when the current one cannot be reached: the --join one, then the others.
        let fallbacks = [endpoint] + known.sorted { $0.key < $1.key }.map(\.value).filter { $0 != endpoint }
        var nextFallback = 1
        var delay = Duration.milliseconds(200)
        var attempt = 0
        while ContinuousClock.now < deadline {
            if Task.isCancelled { return .cancelled }
            attempt += 1
            let remaining = deadline - ContinuousClock.now
            let wait = TimeAmount.milliseconds(max(1000, remaining.components.seconds * 1000))
            do {
                let response = try await httpCall(
                    .post, target, "/v1/members", body: body, timeout: wait, token: token, tls: tls)
                let reply = Reply(response)
                switch response.status {
                case 200:
                    logger.notice(
                        "joined the cluster",
                        metadata: [
                            "role": "\(role)", "via": "\(target)", "index": "\(reply.index.map(String.init) ?? "?")",
                            "members": "\(reply.members)",
                        ])
                    return .joined
                case 301, 302, 303, 307, 308:
                    if let next = response.header("location").flatMap(Self.endpoint(in:)) {
                        logger.info("redirected to another node", metadata: ["to": "\(next)"])
                        target = next
                        continue
                    }
                    logger.warning("a redirect without a usable Location; retrying", metadata: ["from": "\(target)"])
                case 404, 405:
                    logger.error(
                        "cannot join: the cluster does not offer POST /v1/members (it runs a raft-lite without membership changes). This node keeps running but is not a member",
                        metadata: ["endpoint": "\(target)", "status": "\(response.status)"])
                    return .refused
                case 409:
                    if await isMember() != nil { return .alreadyMember }
                    logger.error(
                        "cannot join: the cluster refused the change (conflict). This node keeps running but is not a member",
                        metadata: ["endpoint": "\(target)", "error": "\(reply.message)"])
                    return .refused
                case 400...499:
                    logger.error(
                        "cannot join: the cluster refused the request. This node keeps running but is not a member",
                        metadata: [
                            "endpoint": "\(target)", "status": "\(response.status)", "error": "\(reply.message)",
                        ])
                    return .refused
                case 504:
                    // The change may still commit: look before asking again.
                    logger.warning(
                        "the join's outcome is unknown (the change may still commit); checking, then asking again",
                        metadata: ["endpoint": "\(target)", "error": "\(reply.message)"])
                default:
                    if let leader = reply.leaderEndpoint(known: known), leader != target {
                        logger.info("following the leader hint", metadata: ["from": "\(target)", "to": "\(leader)"])
                        target = leader
                    } else {
                        logger.info(
                            "the cluster cannot take the change now; retrying",
                            metadata: [
                                "endpoint": "\(target)", "status": "\(response.status)", "error": "\(reply.message)",
                                "attempt": "\(attempt)",
                            ])
                    }
                }
            } catch is CancellationError {
                return .cancelled
            } catch {
                if Task.isCancelled { return .cancelled }
                let next = fallbacks[nextFallback % fallbacks.count]
                nextFallback += 1
                logger.warning(
                    "cannot reach a node to ask for membership; trying another",
                    metadata: ["endpoint": "\(target)", "error": "\(error)", "next": "\(next)"])
                target = next
            }
            if let role = await isMember() {
                logger.notice("joined the cluster", metadata: ["role": "\(role.rawValue)", "seen": "locally"])
                return .joined
            }
            do {
                try await Task.sleep(for: delay)
            } catch {
                return .cancelled
            }
            delay = min(delay * 2, .seconds(3))
        }
        logger.error(
            "gave up joining the cluster: this node keeps running but is not a member; ask again with POST /v1/members, or restart it with --join",
            metadata: ["after": "\(patience)"])
        return .gaveUp
    }

    /// `host:port` out of a URL or endpoint text (`http://h:p/path`, `h:p`).
    static func endpoint(in text: String) -> Endpoint? {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        return Endpoint(String(rest))
    }

    /// The parts of a JSON answer the loop reads.
    struct Reply {
        var object: [String: JSONValue] = [:]

        init(_ response: HTTPResponse) {
            if case .object(let o)? = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body)) {
                object = o
            } else if !response.body.isEmpty {
                object["message"] = .string(String(response.text.prefix(300)))
            }
        }

        var index: Int? {
            if case .number(let n)? = object["index"] { return Int(n) }
            return nil
        }

        var members: String {
            guard case .array(let list)? = object["members"] else { return "?" }
            return list.map { item -> String in
                if case .object(let m) = item, case .string(let name)? = m["name"] {
                    if case .string(let role)? = m["role"] { return "\(name):\(role)" }
                    return name
                }
                return "\(item)"
            }.joined(separator: ",")
        }

        var message: String {
            let parts = ["error", "message"].compactMap { key -> String? in
                if case .string(let s)? = object[key] { return s }
                return nil
            }
            return parts.isEmpty ? "" : parts.joined(separator: ": ")
        }

        /// Where the leader's HTTP API is, if the answer says: an endpoint field, or the leader's name when its
        /// endpoint is known.
        func leaderEndpoint(known: [String: Endpoint]) -> Endpoint? {
            for key in ["leader_endpoint", "leader_url", "leader_http", "location"] {
                if case .string(let text)? = object[key], let endpoint = Joiner.endpoint(in: text) { return endpoint }
            }
            for key in ["leader", "leader_hint"] {
                if case .string(let name)? = object[key], let endpoint = known[name] { return endpoint }
            }
            // The node's own error text: "this node is not the leader; the leader is NAME".
            if let range = message.range(of: "the leader is ") {
                let name = message[range.upperBound...].prefix { !$0.isWhitespace && $0 != "," && $0 != ";" }
                if let endpoint = known[String(name)] { return endpoint }
            }
            return nil
        }
    }
}
