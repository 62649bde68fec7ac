import Foundation
import NIOCore

/// A client session of the key-value store (Raft thesis §6.3): writes made through it are applied at most once,
/// however often they are retried, so a write whose outcome is unknown can be sent again safely.
///
/// `register(with:)` asks the cluster for a session (`POST /v1/sessions`). Each write then carries the session's
/// client id and the next sequence number (`Raft-Client-Id`, `Raft-Sequence`). A write that ends with an unknown
/// outcome — a 504, a timeout, a lost connection — or with a 503 (no leader at the moment) is sent again with the
/// **same** sequence, to the next endpoint in turn, until it gets a definite answer or `maxAttempts` run out; the
/// cluster applies it once, and a retry after it was applied is answered with the first answer, byte for byte.
///
/// One write at a time: the session's writes are serialised (the thesis' rule; the cluster keeps only the last
/// result of a session). Other answers: 410 `session_expired` (the session was idle longer than the cluster's
/// session timeout, or pushed out by newer ones: register a new one; the write was not applied), 409
/// `sequence_superseded` (cannot happen through one `KVSession`). A write whose attempts all ended unknown returns
/// its last response (504) or throws its last error; the next write moves on to the next sequence.
public actor KVSession {
    public let client: KVClient
    /// The session's id, from the cluster.
    public nonisolated let clientID: UInt64
    /// The sequence of the last write sent (0: none yet).
    public private(set) var sequence: UInt64 = 0
    /// How many times a write may be sent, in all (at least 1).
    public private(set) var maxAttempts: Int
    /// The pause before the first retry; it doubles, up to a second.
    public var retryDelay: Duration
    /// Sends beyond each write's first, so far (for reports).
    public private(set) var retries = 0

    /// Changes `maxAttempts` (at least 1).
    public func setMaxAttempts(_ attempts: Int) { maxAttempts = max(1, attempts) }

    init(client: KVClient, clientID: UInt64, maxAttempts: Int, retryDelay: Duration) {
        self.client = client
        self.clientID = clientID
        self.maxAttempts = max(1, maxAttempts)
        self.retryDelay = retryDelay
    }

    /// Registers a session, retrying as a write is retried (a registration whose answer was lost leaves a session
    /// nobody uses, which expires).
    /// - Throws: `HTTPClientError` when no attempt got an answer, `.unexpectedResponse` for a definite refusal.
    public static func register(
        with client: KVClient, maxAttempts: Int = 10, retryDelay: Duration = .milliseconds(50)
    ) async throws -> KVSession {
        var last: (any Error)?
        var delay = retryDelay
        for attempt in 0..<max(1, maxAttempts) {
            if attempt > 0 {
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
            do {
                let response = try await client.rotated(by: attempt).registerSession()
                if let reply = SessionReply.decode(response) {
                    return KVSession(
                        client: client, clientID: reply.clientID, maxAttempts: maxAttempts, retryDelay: retryDelay)
                }
                if let refused = HTTPClientError.refusedCredentials(response) { throw refused }
                guard Self.mayRetry(response.status) else {
                    throw HTTPClientError(
                        .unexpectedResponse, "registering a session failed: HTTP \(response.status) \(response.text)")
                }
                last = HTTPClientError(.unexpectedResponse, "HTTP \(response.status) \(response.text)")
            } catch let error as HTTPClientError where Self.mayRetry(error) {
                last = error
            }
        }
        throw last ?? HTTPClientError(.unreachable, "no attempt to register a session was made")
    }

    /// Sets `key` to `value` (with `prevValue`: compare-and-set), once.
    public func put(_ key: String, _ value: [UInt8], prevValue: [UInt8]? = nil) async throws -> HTTPResponse {
        try await write { client, headers in
            try await client.put(key, value, prevValue: prevValue, headers: headers)
        }
    }

    /// Deletes `key`, once.
    public func delete(_ key: String) async throws -> HTTPResponse {
        try await write { client, headers in try await client.delete(key, headers: headers) }
    }

    /// Sends the next write of the session, retrying it with the same sequence while its outcome is open.
    private func write(
        _ send: @Sendable (KVClient, [(String, String)]) async throws -> HTTPResponse
    ) async throws -> HTTPResponse {
        sequence += 1
        let headers = KVClient.sessionHeaders(clientID: clientID, sequence: sequence)
        var delay = retryDelay
        var outcome: Result<HTTPResponse, any Error> = .failure(
            HTTPClientError(.unreachable, "no attempt was made"))
        for attempt in 0..<maxAttempts {
            if attempt > 0 {
                retries += 1
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
            do {
                let response = try await send(client.rotated(by: attempt), headers)
                outcome = .success(response)
                if !Self.mayRetry(response.status) { return response }
            } catch let error as HTTPClientError where Self.mayRetry(error) {
                outcome = .failure(error)
            }
        }
        return try outcome.get()
    }

    /// 504 (unknown outcome) and 503 (not applied this time: no leader, stopping) are worth another attempt with
    /// the same sequence; every other status is the answer.
    static func mayRetry(_ status: Int) -> Bool { status == 503 || status == 504 }

    static func mayRetry(_ error: HTTPClientError) -> Bool {
        [.timedOut, .connectionClosed, .connectionFailed, .unreachable].contains(error.code)
    }
}

extension KVClient {
    /// The same client with its endpoints rotated by `k`, so that a retry goes first to another node.
    func rotated(by k: Int) -> KVClient {
        guard !endpoints.isEmpty, k % endpoints.count != 0 else { return self }
        let shift = k % endpoints.count
        var rotated = self
        rotated.endpoints = Array(endpoints[shift...] + endpoints[..<shift])
        return rotated
    }
}

extension HTTPClientError {
    /// An `.unauthorized` error for a 401 or 403 response, saying what the server said; nil for any other.
    public static func refusedCredentials(_ response: HTTPResponse) -> HTTPClientError? {
        guard response.status == 401 || response.status == 403 else { return nil }
        let reason = KVErrorReply.decode(response)?.message ?? response.text
        let what =
            response.status == 401
            ? "unauthorized (HTTP 401): \(reason)"
            : "forbidden (HTTP 403): \(reason)"
        return HTTPClientError(.unauthorized, what)
    }
}
