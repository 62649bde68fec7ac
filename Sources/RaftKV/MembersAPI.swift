import NIOHTTP1
import RaftCore
import RaftLite

// The membership endpoints' rules, pure like `KVRouter`: what a body says, what a request asks of the node given the
// membership it has, and how each outcome is answered. `KVServer` asks the node and forwards to the leader.

/// What a membership request asks for (`KVRoute.membership`).
enum MembershipRequest: Sendable, Hashable {
    /// `POST /v1/members`.
    case add(MemberRequest)
    /// `DELETE /v1/members/NAME`.
    case remove(String)
    /// `POST /v1/members/NAME/promote`.
    case promote(String)
    /// `POST /v1/leader/transfer`: to this voter, or (nil) to the most up-to-date one.
    case transfer(to: String?)
}

/// The body of `POST /v1/members`: `{"name":S,"ip":S,"port":N,"http_port":N?,"role":"voter"|"learner"?, ...}`.
struct MemberRequest: Sendable, Hashable {
    enum Role: String, Sendable, Hashable {
        case voter, learner
    }

    /// The member, with every field of the body other than name, ip, port and role in its `fields` (so
    /// `http_port` travels in the membership).
    var member: ClusterConfiguration.Member
    var role: Role

    static let example = "{\"name\":\"node3\",\"ip\":\"127.0.0.1\",\"port\":9084,\"http_port\":8084}"

    /// The request a body holds, or the 400 that names the field at fault.
    static func parse(_ body: [UInt8]) -> Result<MemberRequest, KVReply> {
        guard body.contains(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) else {
            return .failure(.badBody(nil, "the body is empty: expected a JSON object like \(example)"))
        }
        let value: JSONValue
        do {
            value = try JSONReader.parse(body)
        } catch {
            return .failure(.badBody(nil, "the body is not valid JSON: \(error)"))
        }
        guard case .object(var fields) = value else {
            return .failure(.badBody(nil, "the body must be a JSON object like \(example)"))
        }
        let name: String
        switch MembersAPI.memberName(fields["name"]) {
        case .success(let n): name = n
        case .failure(let problem): return .failure(.badBody("name", "name: \(problem)"))
        }
        guard let rawHost = fields["ip"] else { return .failure(.badBody("ip", "ip: is missing")) }
        guard case .string(let host) = rawHost, !host.isEmpty else {
            return .failure(.badBody("ip", "ip: must be a non-empty string, got \(rawHost)"))
        }
        let port: Int
        switch MembersAPI.port(fields["port"]) {
        case .success(let p): port = p
        case .failure(let problem): return .failure(.badBody("port", "port: \(problem)"))
        }
        if let raw = fields["http_port"] {
            switch MembersAPI.port(raw) {
            case .success(let p): fields["http_port"] = .number(Double(p))
            case .failure(let problem): return .failure(.badBody("http_port", "http_port: \(problem)"))
            }
        }
        var role = Role.voter
        if let raw = fields["role"] {
            guard case .string(let text) = raw, let r = Role(rawValue: text) else {
                return .failure(.badBody("role", "role: must be \"voter\" or \"learner\", got \(raw)"))
            }
            role = r
        }
        for key in ["name", "ip", "port", "role"] { fields[key] = nil }
        return .success(
            MemberRequest(
                member: ClusterConfiguration.Member(name: name, host: host, port: port, fields: fields), role: role))
    }
}

/// What the node is asked to do, once the request is checked against the membership.
enum MembershipOperation: Sendable, Hashable {
    /// Add as a learner, catch up, promote (or only catch up and promote a learner).
    case addVoter(ClusterConfiguration.Member)
    /// Add as a learner (or demote a voter).
    case addLearner(ClusterConfiguration.Member)
    case promote(String)
    case remove(String)
    case transfer(to: String?)
}

enum MembersAPI {
    /// A request checked against the membership the leader has: the operation to run, or the answer at once.
    enum Plan: Sendable, Equatable {
        case run(MembershipOperation)
        case answer(KVReply)
    }

    /// Checks `request` against `membership` (the view of this node, the leader, named `selfName`). Refusals that
    /// need only the membership are decided here, with their own statuses (404 not a member, 409 already one, or
    /// not a voter); everything else is left to the core.
    static func plan(_ request: MembershipRequest, in membership: ClusterMembership, selfName: String) -> Plan {
        func find(_ name: String) -> ClusterMembership.Member? { membership.members.first { $0.name == name } }
        switch request {
        case .add(let r):
            let id = ClusterConfiguration.nodeID(for: r.member.name)
            if let other = membership.members.first(where: {
                $0.name != r.member.name && ClusterConfiguration.nodeID(for: $0.name) == id
            }) {
                return .answer(
                    .error(
                        .conflict, "name_conflict",
                        "\(r.member.name) has the same node id as the member \(other.name): choose another name"))
            }
            let existing = find(r.member.name)
            switch (r.role, existing?.role) {
            case (.voter, .voter?):
                return .answer(.error(.conflict, "already_member", "\(r.member.name) is already a voter"))
            case (.learner, .learner?):
                return .answer(.error(.conflict, "already_member", "\(r.member.name) is already a learner"))
            case (.voter, _):
                return .run(.addVoter(r.member))
            case (.learner, _):
                return .run(.addLearner(r.member))
            }
        case .remove(let name):
            guard find(name) != nil else { return .answer(notMember(name)) }
            return .run(.remove(name))
        case .promote(let name):
            guard let m = find(name) else { return .answer(notMember(name)) }
            if m.role == .voter { return .answer(.error(.conflict, "already_member", "\(name) is already a voter")) }
            return .run(.promote(name))
        case .transfer(let to):
            guard let to else { return .run(.transfer(to: nil)) }
            if to == selfName { return .answer(.leader(selfName)) }
            guard let m = find(to) else { return .answer(notMember(to)) }
            guard m.role == .voter else {
                return .answer(
                    .error(
                        .conflict, "not_voter", "\(to) is \(m.role == .learner ? "a learner" : "leaving"), not a voter")
                )
            }
            return .run(.transfer(to: to))
        }
    }

    static func notMember(_ name: String) -> KVReply {
        .error(.notFound, "not_member", "\(name) is not a member")
    }

    /// A member's name, as the cluster file allows it: a string of 1 to 255 bytes.
    static func memberName(_ value: JSONValue?) -> Result<String, Problem> {
        guard let value else { return .failure("is missing") }
        guard case .string(let name) = value else { return .failure("must be a string, got \(value)") }
        guard !name.isEmpty, name.utf8.count <= 255 else { return .failure("must have 1 to 255 bytes") }
        return .success(name)
    }

    /// A port, as the cluster file allows it: a whole number in 1...65535, or a string holding one.
    static func port(_ value: JSONValue?) -> Result<Int, Problem> {
        guard let value else { return .failure("is missing") }
        let port: Int?
        switch value {
        case .number(let n): port = n == n.rounded() && abs(n) < 1e9 ? Int(n) : nil
        case .string(let s): port = Int(s)
        default: port = nil
        }
        guard let port, (1...65535).contains(port) else {
            return .failure("must be a port number in 1...65535, got \(value)")
        }
        return .success(port)
    }

    struct Problem: Error, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        var description: String
        init(stringLiteral value: String) { description = value }
        init(_ text: String) { description = text }
    }
}

extension MembersAPI.Problem: ExpressibleByStringInterpolation {}

// MARK: - Replies

/// A refusal travels as the failure of a `Result` (the body parsers return one).
extension KVReply: Error {}

extension KVReply {
    /// A 400 for a malformed membership body: `{"error":"bad_body","message":...,"field":F}` (`field` is left out
    /// when the whole body is at fault).
    static func badBody(_ field: String?, _ message: String) -> KVReply {
        json(.badRequest, ErrorBody(error: "bad_body", message: message, field: field))
    }

    /// `GET /v1/members`, and the answer to a change once committed.
    static func members(_ membership: ClusterMembership, leader: String?) -> KVReply {
        json(.ok, MembersBody(membership, leader: leader))
    }

    /// `POST /v1/leader/transfer` done: `{"leader":NAME}`.
    static func leader(_ name: String) -> KVReply {
        json(.ok, LeaderBody(leader: name))
    }

    /// `GET /v1/cluster`: `{"cluster_id":S,"bootstrap":{...}}`, the bootstrap exactly as `ClusterConfiguration.json()`
    /// writes it (a node that joins writes it as its cluster file).
    static func cluster(_ configuration: ClusterConfiguration) -> KVReply {
        let text =
            "{\"cluster_id\":" + JSON.string(configuration.clusterID) + ",\"bootstrap\":" + configuration.json() + "}"
        return KVReply(status: .ok, contentType: "application/json", body: Array(text.utf8))
    }

    /// A membership change or transfer that failed.
    ///
    /// | error | status | code |
    /// |---|---|---|
    /// | `timedOut`, `stoppedOutcomeUnknown` (the change may still commit) | 504 | `unknown_outcome` |
    /// | `membership`: the core refused (a change in progress, would lose quorum, not ready, a transfer under way, invalid), or a learner did not catch up, or the transferee did not take over | 503 | `membership_refused` |
    /// | `notLeader` (no leader known, or the leader could not be asked), `dropped`, `stopped`, ... | 503 | `unavailable` |
    /// | an error of unknown meaning | 504 | `unknown_outcome` |
    static func membershipFailure(_ error: any Error) -> KVReply {
        guard let error = error as? RaftNodeError else {
            return .error(.gatewayTimeout, "unknown_outcome", "the outcome is unknown: \(error)")
        }
        if error.outcomeIsUnknown { return .error(.gatewayTimeout, "unknown_outcome", "\(error)") }
        if error.code == .membership { return .error(.serviceUnavailable, "membership_refused", "\(error)") }
        return .error(.serviceUnavailable, "unavailable", "\(error)")
    }
}

/// `GET /v1/members`: `{"members":[...],"joint":B,"index":N,"committed":B,"leader":S|null}`, members by name.
struct MembersBody: Encodable, Hashable {
    struct Member: Encodable, Hashable {
        var name: String
        var ip: String
        var port: Int
        /// Left out when the member has no `http_port` field.
        var httpPort: Int?
        /// `voter`, `outgoing-voter` or `learner`.
        var role: String

        enum CodingKeys: String, CodingKey {
            case name, ip, port
            case httpPort = "http_port"
            case role
        }
    }

    var members: [Member]
    var joint: Bool
    var index: UInt64
    var committed: Bool
    var leader: String?

    enum CodingKeys: String, CodingKey {
        case members, joint, index, committed, leader
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(members, forKey: .members)
        try c.encode(joint, forKey: .joint)
        try c.encode(index, forKey: .index)
        try c.encode(committed, forKey: .committed)
        try c.encode(leader, forKey: .leader)
    }
}

extension MembersBody {
    init(_ m: ClusterMembership, leader: String?) {
        self.init(
            members: m.members.map { member in
                Member(
                    name: member.name, ip: member.host, port: member.port,
                    httpPort: try? MembersAPI.port(member.fields["http_port"]).get(), role: member.role.rawValue)
            }, joint: m.isJoint, index: m.index.rawValue, committed: m.committed, leader: leader)
    }
}

/// `POST /v1/leader/transfer` done.
struct LeaderBody: Encodable, Hashable {
    var leader: String
}

/// `POST /v1/leader/transfer`'s body: empty, `{}`, `{"to":null}` or `{"to":"NAME"}`.
enum TransferBody {
    static func parse(_ body: [UInt8]) -> Result<String?, KVReply> {
        guard body.contains(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) else { return .success(nil) }
        let value: JSONValue
        do {
            value = try JSONReader.parse(body)
        } catch {
            return .failure(.badBody(nil, "the body is not valid JSON: \(error)"))
        }
        guard case .object(let fields) = value else {
            return .failure(.badBody(nil, "the body must be empty or a JSON object like {\"to\":\"node1\"}"))
        }
        if let unknown = fields.keys.sorted().first(where: { $0 != "to" }) {
            return .failure(.badBody(unknown, "\(unknown): unknown field (the body takes only \"to\")"))
        }
        if fields["to"] == nil || fields["to"] == .null { return .success(nil) }
        switch MembersAPI.memberName(fields["to"]) {
        case .success(let name): return .success(name)
        case .failure(let problem): return .failure(.badBody("to", "to: \(problem)"))
        }
    }
}
