import Foundation
import RaftCore

/// The members of a cluster and where to reach them, in the seed's format:
///
/// ```json
/// {"node0": {"ip": "127.0.0.1", "port": "5567"},
///  "node1": {"ip": "127.0.0.1", "port": 5566, "http_port": 8566}}
/// ```
///
/// A port may be a number or a string holding one. Fields other than `ip` and `port` are kept in `Member.fields`
/// for the layers above (the key-value server reads `http_port`). Each node's id is derived from its name, so every
/// node computes the same ids from its own copy of the file, even if the addresses in the copies differ.
public struct ClusterConfiguration: Sendable, Hashable {
    public struct Member: Sendable, Hashable {
        public var name: String
        public var id: NodeID
        public var host: String
        public var port: Int
        /// Every field of the member's entry other than `ip` and `port`.
        public var fields: [String: JSONValue]

        public init(name: String, host: String, port: Int, fields: [String: JSONValue] = [:]) {
            self.name = name
            self.id = ClusterConfiguration.nodeID(for: name)
            self.host = host
            self.port = port
            self.fields = fields
        }

        /// An extra field that holds a port (a number, or a string of one, in 1...65535), such as `http_port`.
        public func port(field: String) throws(ClusterConfigurationError) -> Int? {
            guard let value = fields[field] else { return nil }
            return try ClusterConfiguration.port(value, at: "\(name).\(field)")
        }
    }

    /// The members, ordered by name.
    public private(set) var members: [Member]
    /// Names the cluster in every connection's handshake, so that nodes of two clusters never talk. By default it is
    /// derived from the members' names.
    public var clusterID: String

    /// A configuration of these members.
    /// - Throws: `ClusterConfigurationError` for no members, a duplicate name, or an invalid port.
    public init(members: [Member], clusterID: String? = nil) throws(ClusterConfigurationError) {
        guard !members.isEmpty else { throw ClusterConfigurationError(nil, "the cluster has no members") }
        var seen: [NodeID: String] = [:]
        for member in members {
            guard !member.name.isEmpty, member.name.utf8.count <= 255 else {
                throw ClusterConfigurationError(member.name, "a node name must have 1 to 255 bytes")
            }
            guard (1...65535).contains(member.port) else {
                throw ClusterConfigurationError("\(member.name).port", "must be in 1...65535, got \(member.port)")
            }
            guard !member.host.isEmpty else {
                throw ClusterConfigurationError("\(member.name).ip", "must not be empty")
            }
            if let other = seen[member.id] {
                throw ClusterConfigurationError(
                    member.name, other == member.name ? "appears twice" : "has the same id as \(other); rename one")
            }
            seen[member.id] = member.name
        }
        self.members = members.sorted { $0.name < $1.name }
        if let clusterID, clusterID.isEmpty || clusterID.utf8.count > 1024 {
            throw ClusterConfigurationError(nil, "a cluster id must have 1 to 1024 bytes")
        }
        let names = self.members.map(\.name).joined(separator: ",")
        // The id travels in every handshake, which must stay small: long lists of names are hashed.
        let derived =
            names.utf8.count <= 512
            ? "raftlite:" + names
            : "raftlite:" + String(ClusterConfiguration.nodeID(for: names).rawValue, radix: 16)
        self.clusterID = clusterID ?? derived
    }

    /// Parses the seed's JSON format.
    /// - Throws: `ClusterConfigurationError` naming the field and the problem.
    public init(json: some Collection<UInt8>) throws(ClusterConfigurationError) {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(json))
        } catch {
            throw ClusterConfigurationError(nil, "not valid JSON (\(JSONValue.describe(error)))")
        }
        guard case .object(let nodes) = value else {
            throw ClusterConfigurationError(
                nil, "expected a JSON object of nodes, like {\"node0\": {\"ip\": \"127.0.0.1\", \"port\": 5567}}")
        }
        try self.init(nodes: nodes)
    }

    /// Reads and parses a JSON file in the seed's format.
    public init(contentsOfFile path: String) throws(ClusterConfigurationError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ClusterConfigurationError(
                nil, "cannot read \(path): \(error.localizedDescription)", code: .unreadable)
        }
        do {
            try self.init(json: data)
        } catch {
            throw ClusterConfigurationError(error.path, "\(error.problem) (in \(path))", code: error.code)
        }
    }

    /// Builds a configuration from a dictionary in the seed's format, as Swift literals:
    /// `["node0": ["ip": "127.0.0.1", "port": "5567"], ...]`.
    public init(_ dictionary: [String: Any]) throws(ClusterConfigurationError) {
        try self.init(nodes: dictionary.mapValues(JSONValue.init(any:)))
    }

    private init(nodes: [String: JSONValue]) throws(ClusterConfigurationError) {
        var members: [Member] = []
        for (name, value) in nodes {
            guard case .object(let entry) = value else {
                throw ClusterConfigurationError(name, "expected an object with \"ip\" and \"port\", got \(value)")
            }
            guard let ip = entry["ip"] else { throw ClusterConfigurationError("\(name).ip", "is missing") }
            guard case .string(let host) = ip else {
                throw ClusterConfigurationError("\(name).ip", "must be a string, got \(ip)")
            }
            guard let rawPort = entry["port"] else { throw ClusterConfigurationError("\(name).port", "is missing") }
            let port = try Self.port(rawPort, at: "\(name).port")
            let fields = entry.filter { $0.key != "ip" && $0.key != "port" }
            members.append(Member(name: name, host: host, port: port, fields: fields))
        }
        try self.init(members: members)
    }

    /// The member with this name.
    public subscript(name: String) -> Member? { members.first { $0.name == name } }

    /// The member with this id.
    public func member(id: NodeID) -> Member? { members.first { $0.id == id } }

    /// The id of the node with this name: a 64-bit FNV-1a hash of the name (never zero).
    public static func nodeID(for name: String) -> NodeID {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return NodeID(hash == 0 ? 1 : hash)
    }

    /// The configuration as the seed's JSON (ports as numbers), with each member's extra fields.
    public func json() -> String {
        var nodes: [String: JSONValue] = [:]
        for member in members {
            var entry = member.fields
            entry["ip"] = .string(member.host)
            entry["port"] = .number(Double(member.port))
            nodes[member.name] = .object(entry)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = (try? encoder.encode(JSONValue.object(nodes))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func port(_ value: JSONValue, at path: String) throws(ClusterConfigurationError) -> Int {
        let port: Int?
        switch value {
        case .number(let n): port = n == n.rounded() && abs(n) < 1e9 ? Int(n) : nil
        case .string(let s): port = Int(s.trimmingCharacters(in: .whitespaces))
        default: port = nil
        }
        guard let port, (1...65535).contains(port) else {
            throw ClusterConfigurationError(
                path, "must be a port number in 1...65535 (a number or a string), got \(value)")
        }
        return port
    }
}

/// A cluster configuration that cannot be used, with the field at fault.
///
/// It has a `code` so that later versions can tell more kinds of problem apart without breaking anyone: match on
/// `error.code` with a `default:`. Two errors are equal when their codes, paths and problems are.
public struct ClusterConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case invalid, unreadable
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The configuration says something RaftLite cannot use: not JSON, a missing or mistyped field, a port out
        /// of range, a duplicate name.
        public static let invalid = Code(.invalid)
        /// The configuration file cannot be read.
        public static let unreadable = Code(.unreadable)

        public var description: String { value.rawValue }
    }

    public var code: Code
    /// The field, as `node.field` (nil for a problem with the whole file).
    public var path: String?
    public var problem: String

    public init(_ path: String?, _ problem: String, code: Code = .invalid) {
        self.code = code
        self.path = path
        self.problem = problem
    }

    public var description: String {
        "cluster configuration: " + (path.map { "\($0): " } ?? "") + problem
    }
}

/// A JSON value, for the fields of a cluster configuration that RaftLite itself does not read.
public enum JSONValue: Sendable, Hashable, Codable, CustomStringConvertible {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? container.decode(Double.self) {
            self = .number(n)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let s): try container.encode(s)
        case .number(let n):
            if n == n.rounded() && abs(n) < 1e15 { try container.encode(Int(n)) } else { try container.encode(n) }
        case .bool(let b): try container.encode(b)
        case .null: try container.encodeNil()
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }

    /// A value from a Swift dictionary literal in the seed's style.
    init(any value: Any) {
        switch value {
        case let s as String: self = .string(s)
        case let b as Bool: self = .bool(b)
        case let i as Int: self = .number(Double(i))
        case let d as Double: self = .number(d)
        case let a as [Any]: self = .array(a.map(JSONValue.init(any:)))
        case let o as [String: Any]: self = .object(o.mapValues(JSONValue.init(any:)))
        default: self = .null
        }
    }

    public var description: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? "\(Int(n))" : "\(n)"
        case .bool(let b): "\(b)"
        case .null: "null"
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o):
            "{" + o.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        }
    }

    /// A short reason for a decoding error, without Swift's type names.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        switch error {
        case .dataCorrupted(let c), .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c):
            let underlying = (c.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? c.debugDescription
        @unknown default:
            return "\(error)"
        }
    }
}
