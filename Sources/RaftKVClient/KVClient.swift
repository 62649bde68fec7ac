import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A client of the key-value store's HTTP API. Each call opens a connection to the first endpoint that answers
/// (trying the others in order when one cannot be reached) and closes it afterwards.
public struct KVClient: Sendable {
    public var endpoints: [Endpoint]
    public var timeout: TimeAmount

    public init(endpoints: [Endpoint], timeout: TimeAmount = .seconds(10)) {
        self.endpoints = endpoints
        self.timeout = timeout
    }

    public func put(_ key: String, _ value: [UInt8], prevValue: [UInt8]? = nil) async throws -> HTTPResponse {
        let query = prevValue.map { "?prev_value=" + Self.percentEncode($0) } ?? ""
        return try await request(.PUT, "/v1/kv/" + Self.percentEncode(Array(key.utf8)) + query, body: value)
    }

    public func get(_ key: String, serializable: Bool = false) async throws -> HTTPResponse {
        try await request(.GET, "/v1/kv/" + Self.percentEncode(Array(key.utf8)) + (serializable ? "?consistency=serializable" : ""))
    }

    public func delete(_ key: String) async throws -> HTTPResponse {
        try await request(.DELETE, "/v1/kv/" + Self.percentEncode(Array(key.utf8)))
    }

    /// Sends a request to the first reachable endpoint.
    public func request(_ method: HTTPMethod, _ path: String, body: [UInt8] = []) async throws -> HTTPResponse {
        var failures: [String] = []
        for endpoint in endpoints {
            let connection: HTTPConnection
            do {
                connection = try await HTTPConnection.connect(host: endpoint.host, port: endpoint.port, timeout: .seconds(2)).get()
            } catch {
                failures.append("\(endpoint): \(error)")
                continue
            }
            defer { connection.close() }
            return try await connection.execute(method: method, path: path, body: body, timeout: timeout).get()
        }
        throw HTTPClientError("no endpoint could be reached (" + failures.joined(separator: "; ") + ")")
    }

    /// Sends a request to one endpoint.
    public func request(_ method: HTTPMethod, _ path: String, at endpoint: Endpoint) async throws -> HTTPResponse {
        let connection = try await HTTPConnection.connect(host: endpoint.host, port: endpoint.port, timeout: .seconds(2)).get()
        defer { connection.close() }
        return try await connection.execute(method: method, path: path, timeout: timeout).get()
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
    public var id: String
    public var role: String
    public var term: UInt64
    public var leader: String?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64?

    enum CodingKeys: String, CodingKey {
        case id, role, term, leader
        case commitIndex = "commit_index"
        case appliedIndex = "applied_index"
        case lastIndex = "last_index"
    }

    public static func decode(_ response: HTTPResponse) throws -> NodeStatusReport {
        try JSONDecoder().decode(NodeStatusReport.self, from: Data(response.body))
    }
}
