import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RaftCore

/// A closed-loop HTTP load generator for the key-value API: each client is one keep-alive connection with one request
/// in flight; clients are spread round-robin over the endpoints. Latency is measured from just before a request is
/// written until its whole response is read, into HDR histograms.
///
/// With `sessions` (the default), each client registers a client session first and makes its writes in it: a write
/// whose outcome is unknown (a 504, a timeout, a lost connection) is sent again with the same sequence number, up to
/// `maxAttempts` times in all, and the cluster applies it once. Its latency runs from the first send to the
/// definite answer; the report counts the extra sends (`retries`). GETs take no session.
public struct LoadGenerator: Sendable {
    public enum Operation: String, Sendable, CaseIterable, Codable {
        case put, get, mixed
    }

    public struct Options: Sendable {
        public var endpoints: [Endpoint]
        public var clients = 16
        public var seconds = 10.0
        public var warmup = 2.0
        public var valueSize = 128
        public var keySize = 16
        public var keys = 1000
        public var operation = Operation.put
        /// The share of GETs in `mixed`.
        public var readRatio = 0.9
        public var timeout = TimeAmount.seconds(5)
        public var threads = 1
        public var seed: UInt64 = 1
        /// Each client writes in a client session of its own, retrying unknown outcomes with the same sequence.
        public var sessions = true
        /// How many times a write may be sent, in all, within a session.
        public var maxAttempts = 10
        /// The bearer token every request carries (nil: none). A 401 or 403 ends the run: `run` throws
        /// `.unauthorized`.
        public var token: String?
        /// With a context, the clients speak HTTPS (nil: plain HTTP).
        public var tls: NIOSSLContext?
        /// Server processes whose CPU time over the measured seconds the report states (read from `/proc`).
        public var serverPIDs: [Int32] = []

        public init(endpoints: [Endpoint]) { self.endpoints = endpoints }
    }

    /// The outcome of a run.
    public struct Report: Sendable, Codable {
        public var operation: String
        public var clients: Int
        public var seconds: Double
        public var valueSize: Int
        public var ops: Int
        public var opsPerSecond: Double
        public var p50Ms: Double
        public var p90Ms: Double
        public var p99Ms: Double
        public var p999Ms: Double
        public var maxMs: Double
        public var meanMs: Double
        public var errors: Int
        public var errorKinds: [String: Int]
        /// Whether the clients wrote in client sessions.
        public var sessions: Bool
        /// Writes sent again, with the same sequence, after an unknown outcome (measured ones only).
        public var retries: Int
        /// This load generator's CPU over the measured seconds, in percent of one core.
        public var clientCPUPercent: Double?
        /// Each server process's CPU over the measured seconds, in percent of one core, by pid (`serverPIDs`).
        public var serverCPUPercent: [String: Double]?
        /// The servers' CPU together per operation, in microseconds: the figure least moved by what else runs.
        public var serverCPUMicrosPerOp: Double?

        enum CodingKeys: String, CodingKey {
            case operation = "op"
            case clients, seconds
            case valueSize = "value_size"
            case ops
            case opsPerSecond = "ops_per_s"
            case p50Ms = "p50_ms"
            case p90Ms = "p90_ms"
            case p99Ms = "p99_ms"
            case p999Ms = "p999_ms"
            case maxMs = "max_ms"
            case meanMs = "mean_ms"
            case errors
            case errorKinds = "error_kinds"
            case sessions, retries
            case clientCPUPercent = "client_cpu_pct"
            case serverCPUPercent = "server_cpu_pct"
            case serverCPUMicrosPerOp = "server_cpu_us_per_op"
        }
    }

    public let options: Options

    public init(options: Options) { self.options = options }

    /// Runs the load; `progress` is called about once a second with the seconds elapsed, the operations completed in
    /// that second, and the errors so far.
    public func run(progress: @escaping @Sendable (Int, Int, Int) -> Void = { _, _, _ in }) async throws -> Report {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        do {
            let report = try await run(on: group, progress: progress)
            try? await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func run(on group: MultiThreadedEventLoopGroup, progress: @escaping @Sendable (Int, Int, Int) -> Void)
        async throws -> Report
    {
        let keys = (0..<options.keys).map { Self.key($0, size: options.keySize) }
        var random = SplitMix64(seed: options.seed)
        let values = (0..<32).map { _ in
            (0..<options.valueSize).map { _ in Self.alphabet[Int(random.next() % UInt64(Self.alphabet.count))] }
        }
        try await checkCredentials(key: keys[0])
        if options.operation != .put { try await preload(keys: keys, values: values) }

        let counters = NIOLockedValueBox(Counters())
        let start = NIODeadline.now()
        let warmEnd = start + .nanoseconds(Int64(options.warmup * 1e9))
        let end = warmEnd + .nanoseconds(Int64(options.seconds * 1e9))
        let clients = try await (0..<options.clients).asyncMap { k in
            try await Client.start(
                id: k, endpoint: options.endpoints[k % options.endpoints.count], group: group, options: options,
                keys: keys, values: values, warmEnd: warmEnd, end: end, counters: counters)
        }
        // CPU at the start and the end of the measured seconds.
        let pids = options.serverPIDs
        let cpu = Task { () -> (CPUTime.Sample, CPUTime.Sample)? in
            func sleep(until deadline: NIODeadline) async throws {
                let left = (deadline - .now()).nanoseconds
                if left > 0 { try await Task.sleep(nanoseconds: UInt64(left)) }
            }
            do {
                try await sleep(until: warmEnd)
                let first = CPUTime.Sample.now(servers: pids)
                try await sleep(until: end)
                return (first, CPUTime.Sample.now(servers: pids))
            } catch {
                return nil
            }
        }
        defer { cpu.cancel() }
        // Progress, once a second, until every client is done.
        let reporter = Task {
            var second = 0
            var last = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                second += 1
                let (done, errors) = counters.withLockedValue { ($0.completed, $0.errors) }
                progress(second, done - last, errors)
                last = done
            }
        }
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var errorKinds: [String: Int] = [:]
        var retries = 0
        defer { reporter.cancel() }
        for client in clients {
            let result = try await client.finished.futureResult.get()
            histogram.add(result.histogram)
            errorKinds.merge(result.errorKinds, uniquingKeysWith: +)
            retries += result.retries
        }
        reporter.cancel()
        for client in clients { client.connection?.close() }
        if let refused = counters.withLockedValue({ $0.refused }) { throw refused }
        let ops = Int(histogram.totalCount)
        func ms(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        var report = Report(
            operation: options.operation.rawValue, clients: options.clients, seconds: options.seconds,
            valueSize: options.valueSize, ops: ops, opsPerSecond: Double(ops) / options.seconds,
            p50Ms: ms(histogram.valueAtPercentile(50)), p90Ms: ms(histogram.valueAtPercentile(90)),
            p99Ms: ms(histogram.valueAtPercentile(99)), p999Ms: ms(histogram.valueAtPercentile(99.9)),
            maxMs: ms(histogram.max), meanMs: histogram.mean / 1000, errors: errorKinds.values.reduce(0, +),
            errorKinds: errorKinds, sessions: options.sessions && options.operation != .get, retries: retries)
        if let (first, last) = await cpu.value {
            let wall = Double((last.at - first.at).nanoseconds) / 1e9
            if wall > 0 {
                report.clientCPUPercent = ((last.client - first.client) / wall * 1000).rounded() / 10
                var servers: [String: Double] = [:]
                for pid in pids {
                    guard let a = first.servers[pid], let b = last.servers[pid] else { continue }
                    servers[String(pid)] = ((b - a) / wall * 1000).rounded() / 10
                }
                if !pids.isEmpty {
                    report.serverCPUPercent = servers
                    if ops > 0 {
                        let perOp = servers.values.reduce(0, +) / 100 / (Double(ops) / options.seconds) * 1e6
                        report.serverCPUMicrosPerOp = (perOp * 10).rounded() / 10
                    }
                }
            }
        }
        return report
    }

    /// Throws `.unauthorized` if the first endpoint refuses the credentials (or their absence) for a read, before
    /// any client starts; any other answer, or none, is left for the run to meet.
    private func checkCredentials(key: String) async throws {
        let client = KVClient(
            endpoints: options.endpoints, timeout: options.timeout, token: options.token, tls: options.tls)
        guard let response = try? await client.get(key, serializable: true) else { return }
        if let refused = HTTPClientError.refusedCredentials(response) { throw refused }
    }

    /// Writes every key once, so that GETs find values.
    private func preload(keys: [String], values: [[UInt8]]) async throws {
        let client = KVClient(
            endpoints: options.endpoints, timeout: options.timeout, token: options.token, tls: options.tls)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let stride = max(1, keys.count / 8)
            for start in Swift.stride(from: 0, to: keys.count, by: stride) {
                group.addTask {
                    for k in start..<min(keys.count, start + stride) {
                        let response = try await client.put(keys[k], values[k % values.count])
                        if let refused = HTTPClientError.refusedCredentials(response) { throw refused }
                        guard (200..<300).contains(response.status) else {
                            throw HTTPClientError(
                                .unexpectedResponse,
                                "preloading \(keys[k]) failed: HTTP \(response.status) \(response.text)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)

    /// "k" and a zero-padded number: exactly `size` bytes while the number fits (as kvbench.py makes them).
    static func key(_ k: Int, size: Int) -> String {
        let digits = String(k)
        return "k" + String(repeating: "0", count: max(0, size - 1 - digits.count)) + digits
    }
}

struct Counters {
    var completed = 0
    var errors = 0
    /// Set by the first client whose request was refused for its credentials (401, 403): every client stops.
    var refused: HTTPClientError?
}

/// One closed-loop client, driven by callbacks on its connection's event loop.
final class Client: @unchecked Sendable {
    // @unchecked Sendable: the mutable fields are touched only on `loop` (every callback runs there).
    struct Result: Sendable {
        var histogram: Histogram<UInt64>
        var errorKinds: [String: Int]
        var retries: Int
    }

    /// A write being made in the client's session: sent again, the same, while its outcome is unknown.
    struct PendingWrite {
        var path: String
        var body: [UInt8]
        var headers: [(String, String)]
        var started: NIODeadline
        var attempts: Int
    }

    let loop: any EventLoop
    let endpoint: Endpoint
    let group: any EventLoopGroup
    let options: LoadGenerator.Options
    let keys: [String]
    let values: [[UInt8]]
    let warmEnd: NIODeadline
    let end: NIODeadline
    let counters: NIOLockedValueBox<Counters>
    let finished: EventLoopPromise<Result>
    var connection: HTTPConnection?
    var random: SplitMix64
    var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var errorKinds: [String: Int] = [:]
    /// The client's session id, once registered (writes are plain without one).
    var clientID: UInt64?
    /// The sequence of the session's last write.
    var sequence: UInt64 = 0
    var pending: PendingWrite?
    var retries = 0

    private init(
        id: Int, endpoint: Endpoint, group: any EventLoopGroup, options: LoadGenerator.Options, keys: [String],
        values: [[UInt8]], warmEnd: NIODeadline, end: NIODeadline, counters: NIOLockedValueBox<Counters>
    ) {
        self.loop = group.next()
        self.endpoint = endpoint
        self.group = group
        self.options = options
        self.keys = keys
        self.values = values
        self.warmEnd = warmEnd
        self.end = end
        self.counters = counters
        self.finished = loop.makePromise(of: Result.self)
        self.random = SplitMix64(seed: options.seed &+ UInt64(id) &* 7919)
    }

    static func start(
        id: Int, endpoint: Endpoint, group: any EventLoopGroup, options: LoadGenerator.Options, keys: [String],
        values: [[UInt8]], warmEnd: NIODeadline, end: NIODeadline, counters: NIOLockedValueBox<Counters>
    ) async throws -> Client {
        let client = Client(
            id: id, endpoint: endpoint, group: group, options: options, keys: keys, values: values,
            warmEnd: warmEnd, end: end, counters: counters)
        let connection = try await HTTPConnection.connect(
            host: endpoint.host, port: endpoint.port, group: client.loop, tls: options.tls
        ).get()
        client.connection = connection
        if options.sessions && options.operation != .get {
            do {
                client.clientID = try await register(on: connection, options: options)
            } catch {
                // This client never runs: its promise is completed here, and its connection closed.
                client.finished.fail(error)
                connection.close()
                throw error
            }
        }
        client.loop.execute { client.next() }
        return client
    }

    /// Registers a client session on `connection`, retrying a few times (the cluster may be electing a leader).
    static func register(on connection: HTTPConnection, options: LoadGenerator.Options) async throws -> UInt64 {
        var last = ""
        for attempt in 0..<max(1, options.maxAttempts) {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(100)) }
            do {
                let response = try await connection.execute(
                    method: .POST, path: "/v1/sessions", headers: credentials(options), timeout: options.timeout
                ).get()
                if let reply = SessionReply.decode(response) { return reply.clientID }
                if let refused = HTTPClientError.refusedCredentials(response) { throw refused }
                last = "HTTP \(response.status) \(response.text)"
                guard KVSession.mayRetry(response.status) else { break }
            } catch let error as HTTPClientError where error.code == .unauthorized {
                throw error
            } catch {
                last = "\(error)"
                guard connection.channel.isActive else { break }
            }
        }
        throw HTTPClientError(.unexpectedResponse, "a load client could not register its session: \(last)")
    }

    /// The `Authorization` header, if the options have a token.
    static func credentials(_ options: LoadGenerator.Options) -> [(String, String)] {
        options.token.map { [KVClient.authorizationHeader($0)] } ?? []
    }

    private func next() {
        guard NIODeadline.now() < end, counters.withLockedValue({ $0.refused == nil }) else {
            finished.succeed(Result(histogram: histogram, errorKinds: errorKinds, retries: retries))
            return
        }
        guard let connection, connection.channel.isActive else { return reconnect() }
        if let pending {
            // The session's write whose outcome is unknown: the same again.
            return send(
                connection.execute(
                    method: .PUT, path: pending.path, body: pending.body,
                    headers: pending.headers + Self.credentials(options), timeout: options.timeout),
                started: pending.started)
        }
        let key = keys[Int(random.next() % UInt64(keys.count))]
        var operation = options.operation
        if operation == .mixed {
            operation = Double(random.next() % 1_000_000) / 1_000_000 < options.readRatio ? .get : .put
        }
        let path = "/v1/kv/" + KVClient.percentEncode(Array(key.utf8))
        let started = NIODeadline.now()
        guard operation == .put else {
            return send(
                connection.execute(
                    method: .GET, path: path, headers: Self.credentials(options), timeout: options.timeout),
                started: started)
        }
        let body = values[Int(random.next() % UInt64(values.count))]
        var headers: [(String, String)] = []
        if let clientID {
            sequence += 1
            headers = KVClient.sessionHeaders(clientID: clientID, sequence: sequence)
            pending = PendingWrite(path: path, body: body, headers: headers, started: started, attempts: 0)
        }
        send(
            connection.execute(
                method: .PUT, path: path, body: body, headers: headers + Self.credentials(options),
                timeout: options.timeout),
            started: started)
    }

    private func send(_ request: EventLoopFuture<HTTPResponse>, started: NIODeadline) {
        request.whenComplete { result in
            let finishedAt = NIODeadline.now()
            let measured = started >= self.warmEnd && finishedAt <= self.end
            var error: String?
            var unknown = false
            switch result {
            case .success(let response):
                if let refused = HTTPClientError.refusedCredentials(response) {
                    // Credentials refused: every other request would be too. The run ends, and says why.
                    self.counters.withLockedValue { c in c.refused = c.refused ?? refused }
                    self.pending = nil
                    self.next()
                    return
                }
                if !(200..<300).contains(response.status) { error = "http_\(response.status)" }
                unknown = KVSession.mayRetry(response.status)
                if response.status == 410 { self.clientID = nil }  // expired: plain writes from now on
            case .failure(let failure):
                error = (failure as? HTTPClientError)?.code == .timedOut ? "timeout" : "connection"
                unknown = true
            }
            if var pending = self.pending {
                pending.attempts += 1
                if unknown && pending.attempts < self.options.maxAttempts && finishedAt < self.end {
                    // Sent again with the same sequence: applied once whatever happened to this send.
                    self.pending = pending
                    if started >= self.warmEnd { self.retries += 1 }
                    self.next()
                    return
                }
                self.pending = nil
            }
            if measured {
                if let error {
                    self.errorKinds[error, default: 0] += 1
                } else {
                    _ = self.histogram.record(UInt64(max(1, (finishedAt - started).nanoseconds / 1000)))
                }
                self.counters.withLockedValue { c in
                    if error == nil { c.completed += 1 } else { c.errors += 1 }
                }
            }
            self.next()
        }
    }

    private func reconnect() {
        HTTPConnection.connect(host: endpoint.host, port: endpoint.port, group: loop, tls: options.tls).whenComplete {
            result in
            switch result {
            case .success(let connection):
                self.connection = connection
                self.next()
            case .failure:
                if NIODeadline.now() >= self.warmEnd { self.errorKinds["connection", default: 0] += 1 }
                self.loop.scheduleTask(in: .milliseconds(100)) { self.next() }
            }
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
