import NIOHTTP1
import RaftCore
import RaftLite
import Testing

@testable import RaftKV

/// The client-session parts of the HTTP API, on the router alone: `POST /v1/sessions`, the `Raft-Client-Id` and
/// `Raft-Sequence` headers on writes, and the replies to session errors.
@Suite struct SessionRoutingTests {
    static let router = KVRouter(maxKeyBytes: 8, maxValueBytes: 16)

    static func route(_ method: HTTPMethod, _ uri: String, _ headers: [(String, String)] = [], body: [UInt8] = [])
        -> KVRoute
    {
        router.route(KVRequest(method: method, uri: uri, headers: HTTPHeaders(headers), body: .bytes(body)))
    }

    static func refusal(_ route: KVRoute) -> KVReply? {
        if case .refused(let reply) = route { return reply }
        return nil
    }

    static let key = Array("a".utf8)
    static let value = Array("v".utf8)

    @Test func registeringASession() throws {
        #expect(Self.route(.POST, "/v1/sessions") == .registerSession)
        let get = try #require(Self.refusal(Self.route(.GET, "/v1/sessions")))
        #expect(get.status == .methodNotAllowed && get.extraHeaders.contains { $0.value == "POST" })
        let query = try #require(Self.refusal(Self.route(.POST, "/v1/sessions?x=1")))
        #expect(query.status == .badRequest && query.text.contains("bad_query"))
        #expect(KVReply.sessionRegistered(42).text == #"{"client_id":42}"#)
        #expect(KVReply.sessionRegistered(42).status == .ok)
    }

    @Test func writesWithBothHeadersAreSessionWrites() {
        let headers = [("Raft-Client-Id", "7"), ("Raft-Sequence", "3")]
        let session = ClientSession(clientID: 7, sequence: 3)
        #expect(
            Self.route(.PUT, "/v1/kv/a", headers, body: Self.value)
                == .proposeInSession(.put(key: Self.key, value: Self.value), session))
        #expect(
            Self.route(.PUT, "/v1/kv/a?prev_value=v", headers, body: Self.value)
                == .proposeInSession(.compareAndSet(key: Self.key, expected: Self.value, value: Self.value), session))
        #expect(Self.route(.DELETE, "/v1/kv/a", headers) == .proposeInSession(.delete(key: Self.key), session))
        // Header names are case-insensitive; the largest 64-bit numbers fit.
        #expect(
            Self.route(.DELETE, "/v1/kv/a", [("raft-client-id", "18446744073709551615"), ("RAFT-SEQUENCE", "1")])
                == .proposeInSession(.delete(key: Self.key), ClientSession(clientID: .max, sequence: 1)))
        // Without the headers, a write is what it always was.
        #expect(Self.route(.DELETE, "/v1/kv/a") == .propose(.delete(key: Self.key)))
    }

    @Test func malformedSessionHeadersAreRefusedSayingWhy() throws {
        let cases: [([(String, String)], String)] = [
            ([("Raft-Client-Id", "7")], "without Raft-Sequence"),
            ([("Raft-Sequence", "1")], "without Raft-Client-Id"),
            ([("Raft-Client-Id", "7"), ("Raft-Sequence", "0")], "Raft-Sequence must be at least 1"),
            ([("Raft-Client-Id", "0"), ("Raft-Sequence", "1")], "Raft-Client-Id must be at least 1"),
            ([("Raft-Client-Id", "-7"), ("Raft-Sequence", "1")], "decimal number"),
            ([("Raft-Client-Id", "+7"), ("Raft-Sequence", "1")], "decimal number"),
            ([("Raft-Client-Id", "0x10"), ("Raft-Sequence", "1")], "decimal number"),
            ([("Raft-Client-Id", "7"), ("Raft-Sequence", "")], "decimal number"),
            ([("Raft-Client-Id", "18446744073709551616"), ("Raft-Sequence", "1")], "fits in 64 bits"),
            ([("Raft-Client-Id", "7"), ("Raft-Client-Id", "8"), ("Raft-Sequence", "1")], "more than once"),
        ]
        for (headers, message) in cases {
            for method in [HTTPMethod.PUT, .DELETE] {
                let reply = try #require(Self.refusal(Self.route(method, "/v1/kv/a", headers)), "\(headers)")
                #expect(reply.status == .badRequest, "\(headers)")
                #expect(reply.text.contains(#""error":"bad_session""#), "\(headers): \(reply.text)")
                #expect(reply.text.contains(message), "\(headers): \(reply.text)")
            }
        }
    }

    @Test func sessionErrorsAreDefiniteReplies() {
        let expired = KVReply.failure(RaftNodeError.sessionExpired)
        #expect(expired.status == .gone && expired.text.contains(#""error":"session_expired""#))
        let superseded = KVReply.failure(RaftNodeError.sequenceSuperseded)
        #expect(superseded.status == .conflict && superseded.text.contains(#""error":"sequence_superseded""#))
        // A retry whose first result is not known here stays an unknown outcome.
        #expect(KVReply.failure(RaftNodeError.appliedResultUnknown).status == .gatewayTimeout)
    }

    @Test func theStoreKeepsEveryResultAsBytes() {
        let store = KVStore()
        #expect(KVStore.supportsClientSessions)
        for result in [
            KVResult.done(existed: true), .done(existed: false), .value([1, 2, 3]), .value([]), .notFound,
            .preconditionFailed, .invalid,
        ] {
            let bytes = store.encodeSessionOutput(result)
            #expect(bytes.flatMap(store.decodeSessionOutput) == result)
        }
        for damaged: [UInt8] in [[], [1], [1, 2], [3, 0], [9]] {
            #expect(store.decodeSessionOutput(damaged) == nil, "\(damaged)")
        }
    }
}
