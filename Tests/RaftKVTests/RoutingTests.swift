import NIOHTTP1
import RaftCore
import RaftKVClient
import RaftLite
import Testing

@testable import RaftKV

/// The key-value API's rules, checked on the router alone: no sockets, no node, no event loop.
@Suite struct RoutingTests {
    static let router = KVRouter(maxKeyBytes: 8, maxValueBytes: 16)

    static func route(
        _ method: HTTPMethod, _ uri: String, body: [UInt8] = [], router: KVRouter = Self.router
    ) -> KVRoute {
        router.route(KVRequest(method: method, uri: uri, body: .bytes(body)))
    }

    /// The refusal a route is, or nil if it is not one.
    static func refusal(_ route: KVRoute) -> KVReply? {
        if case .refused(let reply) = route { return reply }
        return nil
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    // MARK: Every route

    @Test func statusAndMetrics() {
        #expect(Self.route(.GET, "/v1/status") == .status)
        #expect(Self.route(.GET, "/metrics") == .metrics)
        // A query on these is ignored, as it always was.
        #expect(Self.route(.GET, "/v1/status?x=1") == .status)
    }

    @Test func writes() {
        #expect(
            Self.route(.PUT, "/v1/kv/a", body: Self.bytes("v"))
                == .propose(.put(key: Self.bytes("a"), value: Self.bytes("v"))))
        #expect(Self.route(.PUT, "/v1/kv/a") == .propose(.put(key: Self.bytes("a"), value: [])))
        #expect(
            Self.route(.PUT, "/v1/kv/a?prev_value=old", body: Self.bytes("new"))
                == .propose(.compareAndSet(key: Self.bytes("a"), expected: Self.bytes("old"), value: Self.bytes("new")))
        )
        // An empty prev_value is a compare-and-set against the empty value, not a plain put.
        #expect(
            Self.route(.PUT, "/v1/kv/a?prev_value=", body: Self.bytes("x"))
                == .propose(.compareAndSet(key: Self.bytes("a"), expected: [], value: Self.bytes("x"))))
        #expect(Self.route(.DELETE, "/v1/kv/a") == .propose(.delete(key: Self.bytes("a"))))
    }

    @Test func reads() {
        let a = Self.bytes("a")
        // Linearizable reads go through ReadIndex, not the log; `lease` and `serializable` are asked for by name.
        #expect(Self.route(.GET, "/v1/kv/a") == .read(key: a, consistency: .linearizable, atLeast: .zero))
        #expect(
            Self.route(.GET, "/v1/kv/a?consistency=linearizable")
                == .read(key: a, consistency: .linearizable, atLeast: .zero))
        #expect(Self.route(.GET, "/v1/kv/a?consistency=lease") == .read(key: a, consistency: .lease, atLeast: .zero))
        #expect(
            Self.route(.GET, "/v1/kv/a?consistency=serializable")
                == .read(key: a, consistency: .serializable, atLeast: .zero))
        // "At least index N": any consistency.
        #expect(
            Self.route(.GET, "/v1/kv/a?consistency=serializable&min_index=42")
                == .read(key: a, consistency: .serializable, atLeast: LogIndex(42)))
        #expect(
            Self.route(.GET, "/v1/kv/a?min_index=7") == .read(key: a, consistency: .linearizable, atLeast: LogIndex(7)))
        // Unsafe local reads (testing only) serve even linearizable reads from the local copy.
        let unsafe = KVRouter(maxKeyBytes: 8, maxValueBytes: 16, unsafeLocalReads: true)
        for uri in ["/v1/kv/a", "/v1/kv/a?consistency=linearizable", "/v1/kv/a?consistency=serializable"] {
            #expect(
                Self.route(.GET, uri, router: unsafe) == .read(key: a, consistency: .serializable, atLeast: .zero))
        }
    }

    @Test func keysArePercentDecodedBytes() {
        #expect(Self.route(.DELETE, "/v1/kv/a%2Fb%20c") == .propose(.delete(key: Self.bytes("a/b c"))))
        #expect(Self.route(.DELETE, "/v1/kv/%ff%00") == .propose(.delete(key: [0xFF, 0x00])))
        // A slash in the path is part of the key; a plus stays a plus.
        #expect(Self.route(.DELETE, "/v1/kv/a/b+c") == .propose(.delete(key: Self.bytes("a/b+c"))))
        #expect(
            Self.route(.PUT, "/v1/kv/k?prev_value=%41%2b", body: [1])
                == .propose(.compareAndSet(key: Self.bytes("k"), expected: Self.bytes("A+"), value: [1])))
    }

    // MARK: Bad methods

    @Test func methodsNotAllowed() throws {
        for (method, uri, allowed) in [
            (HTTPMethod.POST, "/v1/kv/a", "GET, PUT, DELETE"), (.PATCH, "/v1/kv/a", "GET, PUT, DELETE"),
            (.HEAD, "/v1/kv/a", "GET, PUT, DELETE"), (.PUT, "/v1/status", "GET"), (.DELETE, "/v1/status", "GET"),
            (.POST, "/metrics", "GET"),
        ] {
            let reply = try #require(Self.refusal(Self.route(method, uri)), "\(method) \(uri)")
            #expect(reply.status == .methodNotAllowed, "\(method) \(uri)")
            #expect(reply.extraHeaders == [KVReply.Header(name: "Allow", value: allowed)])
            #expect(reply.text == "{\"error\":\"method_not_allowed\",\"message\":\"allowed: \(allowed)\"}")
        }
    }

    // MARK: Bad paths and keys

    @Test func unknownPaths() throws {
        for uri in ["/", "/v1", "/v1/kv", "/v2/kv/a", "/v1/status/", "/metrics/x", "/V1/KV/a"] {
            let reply = try #require(Self.refusal(Self.route(.GET, uri)), "\(uri)")
            #expect(reply.status == .notFound, "\(uri)")
            #expect(reply.text.hasPrefix("{\"error\":\"not_found\""))
        }
        let reply = try #require(Self.refusal(Self.route(.GET, "/nowhere?x=1")))
        #expect(reply.text == "{\"error\":\"not_found\",\"message\":\"no such endpoint: /nowhere\"}")
    }

    @Test func badKeys() throws {
        let empty = try #require(Self.refusal(Self.route(.PUT, "/v1/kv/")))
        #expect(empty.status == .badRequest)
        #expect(empty.text == "{\"error\":\"bad_key\",\"message\":\"the key is empty\"}")
        for uri in ["/v1/kv/%", "/v1/kv/%4", "/v1/kv/%zz", "/v1/kv/a%g0"] {
            let reply = try #require(Self.refusal(Self.route(.GET, uri)), "\(uri)")
            #expect(reply.status == .badRequest, "\(uri)")
            #expect(reply.text.contains("\"error\":\"bad_key\""), "\(uri)")
        }
        // The limit counts decoded bytes: %41 is one byte.
        #expect(Self.route(.DELETE, "/v1/kv/%411234567") == .propose(.delete(key: Self.bytes("A1234567"))))
        let long = try #require(Self.refusal(Self.route(.DELETE, "/v1/kv/123456789")))
        #expect(long.status == .badRequest)
        #expect(long.text == "{\"error\":\"key_too_long\",\"message\":\"the key has 9 bytes; the limit is 8\"}")
    }

    // MARK: Bad query values

    @Test func badQueries() throws {
        let cases: [(HTTPMethod, String, String)] = [
            (.GET, "/v1/kv/a?colour=red", "unknown query parameter \\\"colour\\\""),
            (.GET, "/v1/kv/a?prev_value=x", "unknown query parameter \\\"prev_value\\\""),
            (
                .GET, "/v1/kv/a?consistency=eventual",
                "consistency must be linearizable, lease or serializable, not \\\"eventual\\\""
            ),
            (.GET, "/v1/kv/a?consistency=", "consistency must be linearizable, lease or serializable, not \\\"\\\""),
            (.GET, "/v1/kv/a?min_index=x", "min_index must be a log index (a decimal number), not \\\"x\\\""),
            (.GET, "/v1/kv/a?min_index=-1", "min_index must be a log index (a decimal number), not \\\"-1\\\""),
            (.PUT, "/v1/kv/a?consistency=serializable", "unknown query parameter \\\"consistency\\\""),
            (.DELETE, "/v1/kv/a?prev_value=x", "DELETE takes no query parameters"),
            (.DELETE, "/v1/kv/a?x", "DELETE takes no query parameters"),
            (.GET, "/v1/kv/a?consistency=%zz", "the query string is not valid percent-encoding"),
            (.PUT, "/v1/kv/a?prev_value=%", "the query string is not valid percent-encoding"),
        ]
        for (method, uri, message) in cases {
            let reply = try #require(Self.refusal(Self.route(method, uri)), "\(method) \(uri)")
            #expect(reply.status == .badRequest, "\(method) \(uri)")
            #expect(reply.text == "{\"error\":\"bad_query\",\"message\":\"\(message)\"}", "\(method) \(uri)")
        }
        // Empty parts of a query string are skipped.
        #expect(Self.route(.DELETE, "/v1/kv/a?&&") == .propose(.delete(key: Self.bytes("a"))))
    }

    // MARK: Bodies

    @Test func oversizedBodies() throws {
        // A value at the limit is fine; one byte more is refused.
        #expect(
            Self.route(.PUT, "/v1/kv/a", body: Array(repeating: 7, count: 16))
                == .propose(.put(key: Self.bytes("a"), value: Array(repeating: 7, count: 16))))
        let big = try #require(Self.refusal(Self.route(.PUT, "/v1/kv/a", body: Array(repeating: 7, count: 17))))
        #expect(big.status == .payloadTooLarge)
        #expect(big.text == "{\"error\":\"value_too_large\",\"message\":\"the value has 17 bytes; the limit is 16\"}")
        // A body the connection stopped keeping is refused whatever the request, before routing.
        for (method, uri) in [(HTTPMethod.PUT, "/v1/kv/a"), (.GET, "/v1/status"), (.POST, "/nowhere")] {
            let route = Self.router.route(KVRequest(method: method, uri: uri, body: .tooLarge(size: 100)))
            let reply = try #require(Self.refusal(route))
            #expect(reply.status == .payloadTooLarge, "\(method) \(uri)")
            #expect(reply.text.contains("the value has 100 bytes; the limit is 16"))
        }
    }

    @Test func declaredBodySizes() {
        func declared(_ value: String?) -> Int? {
            var headers = HTTPHeaders()
            if let value { headers.add(name: "Content-Length", value: value) }
            return Self.router.declaredBodyTooLarge(headers)
        }
        #expect(declared(nil) == nil)
        #expect(declared("16") == nil)
        #expect(declared("17") == 17)
        // A malformed length is left to the HTTP parser, as before.
        #expect(declared("lots") == nil)
        #expect(declared("-5") == nil)
    }

    @Test func bodiesOfBytesThatAreNotTextAreValues() {
        let value: [UInt8] = [0, 0xFF, 0x7B, 0x22]
        #expect(Self.route(.PUT, "/v1/kv/a", body: value) == .propose(.put(key: Self.bytes("a"), value: value)))
    }

    // MARK: Replies to outcomes

    @Test func repliesToCommittedCommands() {
        let key = Self.bytes("k")
        let put = KVReply.committed(.put(key: key, value: [1]), index: LogIndex(42), output: .done(existed: false))
        #expect(put.status == .ok && put.contentType == "application/json" && put.text == "{\"index\":42}")
        let cas = KVReply.committed(
            .compareAndSet(key: key, expected: [1], value: [2]), index: LogIndex(43), output: .done(existed: true))
        #expect(cas.text == "{\"index\":43}")
        let deleted = KVReply.committed(.delete(key: key), index: LogIndex(44), output: .done(existed: true))
        #expect(deleted.text == "{\"index\":44,\"deleted\":true}")
        let notDeleted = KVReply.committed(.delete(key: key), index: LogIndex(45), output: .done(existed: false))
        #expect(notDeleted.text == "{\"index\":45,\"deleted\":false}")

        let value = KVReply.committed(.get(key: key), index: LogIndex(46), output: .value([0, 1, 2]))
        #expect(value.status == .ok && value.contentType == "application/octet-stream" && value.body == [0, 1, 2])
        let missing = KVReply.committed(.get(key: key), index: LogIndex(47), output: .notFound)
        #expect(missing.status == .notFound)
        #expect(missing.text == "{\"error\":\"not_found\",\"message\":\"no value for this key\"}")

        let casMissing = KVReply.committed(
            .compareAndSet(key: key, expected: [1], value: [2]), index: LogIndex(48), output: .notFound)
        #expect(casMissing.status == .preconditionFailed)
        #expect(casMissing.text == "{\"error\":\"precondition_failed\",\"message\":\"the key has no value\"}")
        let casDiffers = KVReply.committed(
            .compareAndSet(key: key, expected: [1], value: [2]), index: LogIndex(49), output: .preconditionFailed)
        #expect(casDiffers.status == .preconditionFailed)
        #expect(
            casDiffers.text
                == "{\"error\":\"precondition_failed\",\"message\":\"the current value differs from prev_value\"}")
        let invalid = KVReply.committed(.put(key: key, value: []), index: LogIndex(50), output: .invalid)
        #expect(invalid.status == .internalServerError)
        #expect(invalid.text.hasPrefix("{\"error\":\"internal\""))
    }

    @Test func repliesToReads() {
        let found = KVReply.read([9, 8], appliedIndex: LogIndex(17))
        #expect(found.status == .ok && found.contentType == "application/octet-stream" && found.body == [9, 8])
        #expect(found.extraHeaders == [KVReply.Header(name: "Raft-Applied-Index", value: "17")])
        let missing = KVReply.read(nil, appliedIndex: LogIndex(3))
        #expect(missing.status == .notFound && missing.text.contains("\"error\":\"not_found\""))
        #expect(missing.extraHeaders == [KVReply.Header(name: "Raft-Applied-Index", value: "3")])
        let unavailable = KVReply.readFailure(RaftNodeError.readUnavailable("no leader"))
        #expect(
            unavailable.status == .serviceUnavailable && unavailable.text.contains("\"error\":\"read_unavailable\""))
        #expect(KVReply.readFailure(RaftNodeError.stopped).status == .serviceUnavailable)
    }

    @Test func errorMapping() {
        let cases: [(RaftNodeError, HTTPResponseStatus, String)] = [
            (.timedOut, .gatewayTimeout, "unknown_outcome"),
            (.stoppedOutcomeUnknown, .gatewayTimeout, "unknown_outcome"),
            (.tooLarge(size: 10, limit: 5), .payloadTooLarge, "value_too_large"),
            (.invalidProposal("bad"), .badRequest, "bad_request"),
            (.notLeader(leaderHint: "n1"), .serviceUnavailable, "unavailable"),
            (.notLeader(leaderHint: nil), .serviceUnavailable, "unavailable"),
            (.dropped("lost"), .serviceUnavailable, "unavailable"),
            (.paused, .serviceUnavailable, "unavailable"),
            (.stopped, .serviceUnavailable, "unavailable"),
            (.notStarted, .serviceUnavailable, "unavailable"),
            (.alreadyStarted, .serviceUnavailable, "unavailable"),
            (.storage("disk"), .serviceUnavailable, "unavailable"),
            (.configuration("config"), .serviceUnavailable, "unavailable"),
        ]
        for (error, status, code) in cases {
            let reply = KVReply.failure(error)
            #expect(reply.status == status, "\(error)")
            #expect(reply.text.hasPrefix("{\"error\":\"\(code)\",\"message\":"), "\(error): \(reply.text)")
            // The server's static entry point gives the same answer.
            #expect(KVServer.reply(for: error) == reply)
        }
        #expect(
            KVReply.failure(RaftNodeError.tooLarge(size: 10, limit: 5)).text
                == "{\"error\":\"value_too_large\",\"message\":\"the value has 10 bytes; the limit is 5\"}")
        struct Unexpected: Error {}
        #expect(KVReply.failure(Unexpected()).status == .gatewayTimeout)
    }

    @Test func fixedReplies() {
        #expect(KVReply.shuttingDown.status == .serviceUnavailable)
        #expect(
            KVReply.shuttingDown.text == "{\"error\":\"shutting_down\",\"message\":\"the server is shutting down\"}")
        #expect(KVReply.noAnswer.status == .internalServerError)
        #expect(KVReply.noAnswer.text == "{\"error\":\"internal\",\"message\":\"no answer\"}")
        let metrics = KVReply.metrics(Self.bytes("up 1\n"))
        #expect(metrics.contentType == "text/plain; version=0.0.4" && metrics.text == "up 1\n")
    }

    // MARK: JSON

    @Test func statusBodyKeepsItsKeyOrderAndANullLeader() throws {
        let withLeader = StatusBody(
            id: "n1", role: "leader", term: 3, leader: "n1", commitIndex: 10, appliedIndex: 9, lastIndex: 11)
        #expect(
            String(decoding: try JSONWriter.encode(withLeader), as: UTF8.self)
                == "{\"id\":\"n1\",\"role\":\"leader\",\"term\":3,\"leader\":\"n1\",\"commit_index\":10,"
                + "\"applied_index\":9,\"last_index\":11}")
        let noLeader = StatusBody(
            id: "n2", role: "pre-candidate", term: 0, leader: nil, commitIndex: 0, appliedIndex: 0, lastIndex: 0)
        #expect(
            String(decoding: try JSONWriter.encode(noLeader), as: UTF8.self)
                == "{\"id\":\"n2\",\"role\":\"pre-candidate\",\"term\":0,\"leader\":null,\"commit_index\":0,"
                + "\"applied_index\":0,\"last_index\":0}")
    }

    @Test func stringsAreEscapedAsBefore() throws {
        let reply = KVReply.error(.badRequest, "x", "quote \" backslash \\ slash / tab \t newline \n bell \u{7} é")
        #expect(
            reply.text
                == "{\"error\":\"x\",\"message\":\"quote \\\" backslash \\\\ slash / tab \\t newline \\n bell \\u0007 é\"}"
        )
    }

    @Test func theWriterHandlesNestingArraysAndNumbers() throws {
        struct Inner: Encodable {
            var a: [Int]
            var b: Double
            var c: Int?
        }
        struct Outer: Encodable {
            var inner: Inner
            var list: [String?]
            var flag: Bool
        }
        let text = String(
            decoding: try JSONWriter.encode(
                Outer(inner: Inner(a: [1, -2], b: 2.5, c: nil), list: ["x", nil], flag: false)),
            as: UTF8.self)
        #expect(text == "{\"inner\":{\"a\":[1,-2],\"b\":2.5},\"list\":[\"x\",null],\"flag\":false}")
        #expect(throws: EncodingError.self) { try JSONWriter.encode(Double.nan) }
        struct Nothing: Encodable { func encode(to encoder: any Encoder) throws {} }
        #expect(throws: EncodingError.self) { try JSONWriter.encode(Nothing()) }
    }

    // MARK: What the client library reads

    @Test func theClientDecodesTheBodiesTheRouterWrites() throws {
        func response(_ reply: KVReply) -> HTTPResponse {
            HTTPResponse(status: Int(reply.status.code), headers: [], body: reply.body)
        }
        let deleted = response(.committed(.delete(key: [1]), index: LogIndex(7), output: .done(existed: true)))
        #expect(KVWriteReply.decode(deleted) == KVWriteReply(index: 7, deleted: true))
        let put = response(.committed(.put(key: [1], value: []), index: LogIndex(8), output: .done(existed: false)))
        #expect(KVWriteReply.decode(put) == KVWriteReply(index: 8, deleted: nil))
        let refused = response(.failure(RaftNodeError.stopped))
        #expect(KVErrorReply.decode(refused)?.error == "unavailable")
        #expect(KVWriteReply.decode(refused) == nil)
        #expect(KVErrorReply.decode(put) == nil)
        let status = StatusBody(
            id: "n1", role: "follower", term: 2, leader: nil, commitIndex: 5, appliedIndex: 4, lastIndex: 6)
        let report = try NodeStatusReport.decode(HTTPResponse(status: 200, body: try JSONWriter.encode(status)))
        #expect(
            report
                == NodeStatusReport(
                    id: "n1", role: "follower", term: 2, leader: nil, commitIndex: 5, appliedIndex: 4, lastIndex: 6))
    }
}
