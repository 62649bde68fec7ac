import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOCore
import Prometheus
import RaftKV
import RaftLite
import ServiceLifecycle

/// One node of the replicated key-value store.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one node of the replicated key-value store, with its HTTP API.",
        discussion: """
            The cluster file is the seed's format with an http_port per node:

              {"node0": {"ip": "127.0.0.1", "port": 9081, "http_port": 8081}, ...}

            The node listens for peers on its port and for clients on its http_port, and reaches every other node \
            at the address this file gives for it.

            SIGTERM or SIGINT stops it gracefully: requests in flight are answered, the log is synced, and the \
            process exits 0.
            """
    )

    @Option(help: "The cluster configuration file (JSON).")
    var config: String

    @Option(help: "This node's name in the configuration.")
    var id: String

    @Option(help: "The node's data directory (created if needed).")
    var dataDir: String

    @Option(help: "Milliseconds per Raft tick: heartbeats every tick, elections after 10 to 20 ticks.")
    var tickMilliseconds = 100

    @Option(help: "How long a request may wait for its answer, in milliseconds.")
    var requestTimeoutMilliseconds = 5000

    @Option(help: "The largest value accepted, in bytes.")
    var maxValueBytes = 1 << 20

    @Option(help: "The longest key accepted, in bytes.")
    var maxKeyBytes = 1024

    @Option(help: "Listen for peers and clients on this address instead of the node's ip (e.g. 0.0.0.0).")
    var listenHost: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Snapshot once this many entries were applied since the last snapshot (0: never for this reason).")
    var snapshotEntries = 100_000

    @Option(help: "Snapshot once this many bytes of entries were applied since the last snapshot (0: never).")
    var snapshotBytes = 64 << 20

    @Option(help: "Entries kept in the log before the latest snapshot, for followers slightly behind.")
    var compactionMargin = 5_000

    @Option(help: "Snapshots go to followers in chunks of this many bytes.")
    var snapshotChunkBytes = 256 << 10

    /// Testing only: reads without a quorum check (deliberately broken; the Jepsen-style suite must catch it).
    @Flag(help: .hidden)
    var unsafeLocalReads = false

    func validate() throws {
        guard (1...10_000).contains(tickMilliseconds) else {
            throw ValidationError("--tick-milliseconds must be 1...10000")
        }
        guard (1...600_000).contains(requestTimeoutMilliseconds) else {
            throw ValidationError("--request-timeout-milliseconds must be 1...600000")
        }
        guard (1...(32 << 20)).contains(maxValueBytes) else {
            throw ValidationError("--max-value-bytes must be 1...33554432")
        }
        guard (1...65535).contains(maxKeyBytes) else { throw ValidationError("--max-key-bytes must be 1...65535") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard snapshotEntries >= 0 else { throw ValidationError("--snapshot-entries must be 0 or more") }
        guard snapshotBytes >= 0 else { throw ValidationError("--snapshot-bytes must be 0 or more") }
        guard compactionMargin >= 0 else { throw ValidationError("--compaction-margin must be 0 or more") }
        guard (64...(16 << 20)).contains(snapshotChunkBytes) else {
            throw ValidationError("--snapshot-chunk-bytes must be 64...16777216")
        }
    }

    func run() async throws {
        let cluster: ClusterConfiguration
        let httpPort: Int
        do {
            cluster = try ClusterConfiguration(contentsOfFile: config)
            guard let me = cluster[id] else {
                throw ValidationError(
                    "node \"\(id)\" is not in \(config) (members: \(cluster.members.map(\.name).joined(separator: ", ")))"
                )
            }
            guard let port = try me.port(field: "http_port") else {
                throw ValidationError("\(id).http_port is missing in \(config): the node needs a port for clients")
            }
            httpPort = port
        } catch let error as ClusterConfigurationError {
            throw ValidationError("\(error)")
        }

        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "raftlite")
        logger[metadataKey: "node"] = "\(id)"

        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)

        var options = RaftNode<KVStore>.Options()
        options.tickInterval = .milliseconds(Int64(tickMilliseconds))
        options.proposalTimeout = .milliseconds(Int64(requestTimeoutMilliseconds))
        options.maxProposalBytes = maxValueBytes + maxKeyBytes + 64
        options.listenHost = listenHost
        options.snapshotEntries = snapshotEntries
        options.snapshotBytes = snapshotBytes
        options.compactionMargin = compactionMargin
        options.snapshotChunkBytes = snapshotChunkBytes
        options.snapshotWindowBytes = max(options.snapshotWindowBytes, 4 * snapshotChunkBytes)
        options.logger = logger
        let node = try RaftNode(
            cluster: cluster, name: id, stateMachine: KVStore(), dataDirectory: dataDir, options: options)

        var serverOptions = KVServer.Options()
        serverOptions.host = listenHost ?? cluster[id]?.host ?? "127.0.0.1"
        serverOptions.port = httpPort
        serverOptions.maxValueBytes = maxValueBytes
        serverOptions.maxKeyBytes = maxKeyBytes
        serverOptions.unsafeLocalReads = unsafeLocalReads
        serverOptions.idleTimeout = .milliseconds(Int64(max(60_000, requestTimeoutMilliseconds + 10_000)))
        if unsafeLocalReads { logger.warning("--unsafe-local-reads: reads are NOT linearizable (testing only)") }
        let server = KVServer(node: node, options: serverOptions, logger: logger) { registry.emitToBuffer() }

        let service = KVService(
            node: node, server: server, logger: logger,
            drainTimeout: .milliseconds(Int64(requestTimeoutMilliseconds) + 1000))
        let group = ServiceGroup(
            configuration: .init(
                services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Runs a node and its HTTP server until a graceful shutdown: then stops taking requests, answers those in
/// flight, and stops the node (which syncs and closes its log).
struct KVService: Service {
    let node: RaftNode<KVStore>
    let server: KVServer
    let logger: Logger
    let drainTimeout: TimeAmount

    func run() async throws {
        try await node.start()
        do {
            try await server.start()
        } catch {
            await node.stop()
            throw error
        }
        logger.info(
            "serving",
            metadata: [
                "http": "\(server.options.host):\(server.options.port)",
                "peers": "\(node.cluster[node.name]?.port ?? 0)",
            ])
        // Run until asked to stop — or until the node stops on its own (its disk failed): then stop serving too,
        // and exit with an error rather than answer 503 forever.
        let failure: RaftNodeError? = await withTaskGroup(of: RaftNodeError?.self) { group in
            group.addTask {
                try? await gracefulShutdown()
                return nil
            }
            group.addTask { await node.waitUntilStopped() }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if let failure {
            logger.critical("the node stopped on its own: \(failure)")
            await server.drain(timeout: .seconds(1))
            throw failure
        }
        logger.info("shutting down: answering requests in flight")
        await server.drain(timeout: drainTimeout)
        await node.stop()
        logger.info("stopped cleanly")
    }
}
