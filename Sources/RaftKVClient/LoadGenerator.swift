import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftCore

/// A closed-loop HTTP load generator for the key-value API: each client is one keep-alive connection with one request
/// in flight; clients are spread round-robin over the endpoints. Latency is measured from just before a request is
/// written until its whole response is read, into HDR histograms.
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
        for client in clients {
            let result = try await client.finished.futureResult.get()
            histogram.add(result.histogram)
            errorKinds.merge(result.errorKinds, uniquingKeysWith: +)
        }
        reporter.cancel()
        for client in clients { client.connection?.close() }
        let ops = Int(histogram.totalCount)
        func ms(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        return Report(
            operation: options.operation.rawValue, clients: options.clients, seconds: options.seconds,
            valueSize: options.valueSize, ops: ops, opsPerSecond: Double(ops) / options.seconds,
            p50Ms: ms(histogram.valueAtPercentile(50)), p90Ms: ms(histogram.valueAtPercentile(90)),
            p99Ms: ms(histogram.valueAtPercentile(99)), p999Ms: ms(histogram.valueAtPercentile(99.9)),
            maxMs: ms(histogram.max), meanMs: histogram.mean / 1000, errors: errorKinds.values.reduce(0, +),
            errorKinds: errorKinds)
    }

    /// Writes every key once, so that GETs find values.
    private func preload(keys: [String], values: [[UInt8]]) async throws {
        let client = KVClient(endpoints: options.endpoints, timeout: options.timeout)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let stride = max(1, keys.count / 8)
            for start in Swift.stride(from: 0, to: keys.count, by: stride) {
                group.addTask {
                    for k in start..<min(keys.count, start + stride) {
                        let response = try await client.put(keys[k], values[k % values.count])
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
}

/// One closed-loop client, driven by callbacks on its connection's event loop.
final class Client: @unchecked Sendable {
    // @unchecked Sendable: the mutable fields are touched only on `loop` (every callback runs there).
    struct Result: Sendable {
        var histogram: Histogram<UInt64>
        var errorKinds: [String: Int]
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
        client.connection = try await HTTPConnection.connect(
            host: endpoint.host, port: endpoint.port, group: client.loop
        ).get()
        client.loop.execute { client.next() }
        return client
    }

    private func next() {
        guard NIODeadline.now() < end else {
            finished.succeed(Result(histogram: histogram, errorKinds: errorKinds))
            return
        }
        guard let connection, connection.channel.isActive else { return reconnect() }
        let key = keys[Int(random.next() % UInt64(keys.count))]
        var operation = options.operation
        if operation == .mixed {
            operation = Double(random.next() % 1_000_000) / 1_000_000 < options.readRatio ? .get : .put
        }
        let path = "/v1/kv/" + KVClient.percentEncode(Array(key.utf8))
        let started = NIODeadline.now()
        let request =
            operation == .put
            ? connection.execute(
                method: .PUT, path: path, body: values[Int(random.next() % UInt64(values.count))],
                timeout: options.timeout)
            : connection.execute(method: .GET, path: path, timeout: options.timeout)
        request.whenComplete { result in
            let finishedAt = NIODeadline.now()
            let measured = started >= self.warmEnd && finishedAt <= self.end
            var error: String?
            switch result {
            case .success(let response):
                if !(200..<300).contains(response.status) { error = "http_\(response.status)" }
            case .failure(let failure):
                error = (failure as? HTTPClientError)?.code == .timedOut ? "timeout" : "connection"
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
        HTTPConnection.connect(host: endpoint.host, port: endpoint.port, group: loop).whenComplete { result in
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
