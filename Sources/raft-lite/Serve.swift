import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOCore
import NIOSSL
import Prometheus
import RaftKV
import RaftKVClient
import RaftLite
import RaftTLS
import RaftTransport
import ServiceLifecycle
import UnixSignals

/// One node of the replicated key-value store.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one node of the replicated key-value store, with its HTTP API.",
        discussion: """
            The cluster file is the seed's format with an http_port per node:

              {"node0": {"ip": "127.0.0.1", "port": 9081, "http_port": 8081}, ...}

            The node listens for peers on its port and for clients on its http_port, and reaches every other node \
            at the address this file gives for it.

            The cluster file only bootstraps the cluster: its members are the first configuration. Once members \
            are added or removed (POST/DELETE /v1/members), the membership in effect is the one in the log and \
            snapshots, whatever the file says; a node is never refused because the file's member list differs from \
            the current membership. The data directory keeps the bootstrap configuration and the cluster id \
            (DIR/cluster.json): from then on the file's member list is ignored, and only its addresses are used.

            To add a node to a running cluster, start it with --join and no cluster file:

              raft-lite serve --join http://127.0.0.1:8081 --name node3 \\
                --ip 127.0.0.1 --port 9084 --http-port 8084 \\
                --data-dir /var/lib/raft/node3 [--learner]

            On an empty data directory it asks the endpoint for the cluster's configuration (GET /v1/cluster), \
            stores it in the data directory, starts, and asks to be added (POST /v1/members) as a voter (caught up \
            as a learner first) or, with --learner, as a learner; it retries while the cluster is busy and follows \
            the leader. Restarted, it starts from its data directory without asking anyone; --join then only \
            checks that the endpoint is a node of the same cluster (another cluster is refused).

            Peers talk mutual TLS with --peer-cert FILE --peer-key FILE --peer-ca FILE (all three): each node \
            presents its certificate and accepts only peers whose certificate chains to the CA and names them (a \
            DNS subject alternative name equal to the node's name). SIGHUP reloads the three files; connections \
            made after it use them. Without them peers talk plain TCP, which a node allows only when every address \
            it listens on or is reached at is loopback: else it refuses to start, unless --insecure. \
            `raft-lite certs` makes development certificates for a cluster file.

            SIGTERM or SIGINT stops it gracefully: a leader hands leadership to another voter first, requests in \
            flight are answered, the log is synced, and the process exits 0.
            """
    )

    @Option(
        help:
            "The cluster configuration file (JSON): the bootstrap configuration. Not needed with --join, or on a data directory that already holds cluster.json."
    )
    var config: String?

    @Option(
        name: [.customLong("id"), .customLong("name")],
        help: "This node's name (in the configuration, or the name it joins with).")
    var id: String

    @Option(
        name: [.customLong("data-dir"), .customLong("data")], help: "The node's data directory (created if needed).")
    var dataDir: String

    @Option(help: "Join a running cluster through any of its nodes (http://host:port: that node's HTTP API).")
    var join: String?

    @Option(help: "The address other nodes reach this node at (a node not in the cluster file; default 127.0.0.1).")
    var ip: String?

    @Option(help: "The port for peers (a node not in the cluster file).")
    var port: Int?

    @Option(help: "The port for clients (a node not in the cluster file).")
    var httpPort: Int?

    @Flag(help: "With --join: join as a learner (receives the log, does not vote) instead of a voter.")
    var learner = false

    @Option(help: "With --join: how long to keep asking to be added before giving up, in seconds.")
    var joinTimeoutSeconds = 600

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

    @Option(
        help: """
            But not before the bytes applied since the last snapshot reach this multiple of its size (0: no such \
            wait), so that a large state is not written out again for every --snapshot-bytes applied; the log may \
            then hold up to this multiple of the state's size.
            """)
    var snapshotStateFactor = 2.0

    @Option(help: "Entries kept in the log before the latest snapshot, for followers slightly behind.")
    var compactionMargin = 5_000

    @Option(help: "But no more bytes of entries than this (0: no byte bound): each compaction rewrites what it keeps.")
    var compactionMarginBytes = 64 << 20

    @Option(help: "Snapshots go to followers in chunks of this many bytes.")
    var snapshotChunkBytes = 256 << 10

    @Flag(
        help:
            "Serve GET ?consistency=lease on the leader without a heartbeat round while its lease holds. Rests on the clocks: every voter's ticks must run no faster than the leader's clock by more than --lease-clock-drift-ms over an election timeout. Turns the leader lease strict: a crashed leader is replaced after an election timeout, not at once."
    )
    var leaseReads = false

    @Option(
        name: .customLong("lease-clock-drift-ms"),
        help:
            "With --lease-reads: the allowance for clock drift taken off the lease, in milliseconds (the lease is 9 ticks minus this; default 100)."
    )
    var leaseClockDriftMilliseconds: Int?

    @Option(
        name: .customLong("read-timeout-ms"),
        help:
            "How long a read waits for its leader's confirmation and for this node to apply up to its index, in milliseconds (then 503)."
    )
    var readTimeoutMilliseconds = 5000

    @Option(help: "A client session not used for this many seconds expires (POST /v1/sessions).")
    var sessionTimeoutSeconds = 3600

    @Option(help: "The most client sessions kept; registering one more drops the least recently used.")
    var maxSessions = 50_000

    // MARK: Client authentication and limits (docs/operations.md, "Limits"; applied in `clientServerOptions`)

    @Option(
        help:
            "Require a bearer token on every client request: the tokens, hashed, one a line as `raft-lite tokens add` writes them. Reloaded on SIGHUP."
    )
    var tokensFile: String?

    @Flag(help: "With --tokens-file: GET /metrics needs a token too (by default it is open).")
    var authMetrics = false

    @Flag(help: "With --tokens-file: GET /v1/status needs a token too (by default it is open).")
    var authStatus = false

    @Option(
        help:
            "With --join, for a cluster started with --tokens-file: a file whose first line is a readwrite token, sent when asking to join."
    )
    var joinTokenFile: String?

    @Option(help: "The most client connections open at once; more are answered 503 and closed as they arrive.")
    var maxConnections = KVServer.Options().maxConnections

    @Option(help: "The most connections to the peer port open at once; more are closed as they arrive.")
    var maxPeerConnections = TCPTransport.Options().maxInboundConnections

    @Option(help: "The most connections to the peer port open at once from one IP address; more are closed.")
    var maxPeerConnectionsPerAddress = TCPTransport.Options().maxInboundConnectionsPerAddress

    @Option(help: "The most client connections open at once from one IP address; more are closed as they arrive.")
    var maxConnectionsPerAddress = KVServer.Options().maxConnectionsPerAddress

    @Option(help: "The most client requests answered at once; more get 503 overloaded with Retry-After.")
    var maxRequestsInFlight = KVServer.Options().maxRequestsInFlight

    @Option(help: "The largest request head (request line and headers) accepted, in bytes (then 400, closed).")
    var maxHeaderBytes = KVServer.Options().maxHeaderBytes

    @Option(
        help:
            "A client connection with nothing read for this many seconds is closed (at least the request timeout + 10 s)."
    )
    var clientIdleTimeoutSeconds = 60

    @Option(help: "HTTPS for clients: this node's certificate chain (PEM). Goes with --tls-key. Reloaded on SIGHUP.")
    var tlsCert: String?

    @Option(help: "HTTPS: the private key of --tls-cert (PEM).")
    var tlsKey: String?

    @Option(
        help:
            "HTTPS: the CA certificates (PEM) that the cluster's HTTPS certificates chain to: they verify the leader when this node forwards a request to it, and, with --tls-client-auth, clients' certificates (default for forwarding: the system's)."
    )
    var tlsCa: String?

    @Flag(help: "HTTPS: every client must present a certificate that chains to --tls-ca.")
    var tlsClientAuth = false

    @Option(help: "Peer TLS: this node's certificate chain (PEM). Goes with --peer-key and --peer-ca.")
    var peerCert: String?

    @Option(help: "Peer TLS: the private key of --peer-cert (PEM).")
    var peerKey: String?

    @Option(help: "Peer TLS: the CA certificates that peers' certificates must chain to (PEM).")
    var peerCa: String?

    @Flag(
        help:
            "Allow plain TCP between peers on addresses that are not loopback (anyone who reaches the peer port can take part in the cluster)."
    )
    var insecure = false

    /// Testing only: reads without a quorum check (deliberately broken; the Jepsen-style suite must catch it).
    @Flag(help: .hidden)
    var unsafeLocalReads = false

    /// Testing only: linearizable reads served at the node's own commit index, without confirming that it still
    /// leads (deliberately broken; the Jepsen-style suite must catch it on a deposed leader).
    @Flag(help: .hidden)
    var unsafeReadsWithoutConfirmation = false

    /// `RaftNode.Options.leaseClockDrift`'s default, in milliseconds.
    static var defaultLeaseClockDriftMilliseconds: Int {
        Int(RaftNode<KVStore>.Options().leaseClockDrift.nanoseconds / 1_000_000)
    }

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
        guard snapshotStateFactor.isFinite, (0...1000).contains(snapshotStateFactor) else {
            throw ValidationError("--snapshot-state-factor must be a number from 0 to 1000")
        }
        guard compactionMargin >= 0 else { throw ValidationError("--compaction-margin must be 0 or more") }
        guard compactionMarginBytes >= 0 else { throw ValidationError("--compaction-margin-bytes must be 0 or more") }
        guard (64...(16 << 20)).contains(snapshotChunkBytes) else {
            throw ValidationError("--snapshot-chunk-bytes must be 64...16777216")
        }
        for (flag, value) in [("--port", port), ("--http-port", httpPort)] {
            if let value, !(1...65535).contains(value) { throw ValidationError("\(flag) must be 1...65535") }
        }
        if let ip, ip.isEmpty { throw ValidationError("--ip must not be empty") }
        if let join, Joiner.endpoint(in: join) == nil {
            throw ValidationError("--join \(join) is not an endpoint: expected http://host:port")
        }
        if learner && join == nil { throw ValidationError("--learner goes with --join") }
        if let drift = leaseClockDriftMilliseconds {
            guard leaseReads else { throw ValidationError("--lease-clock-drift-ms goes with --lease-reads") }
            guard drift >= 0 else { throw ValidationError("--lease-clock-drift-ms must be 0 or more") }
        }
        if leaseReads {
            // RaftNode.Options' lease: (electionTicks - 1) ticks less the drift allowance.
            let ticks = RaftNode<KVStore>.Options().electionTicks - 1
            let lease = ticks * tickMilliseconds
            let drift = leaseClockDriftMilliseconds ?? Self.defaultLeaseClockDriftMilliseconds
            guard drift < lease else {
                throw ValidationError(
                    "--lease-clock-drift-ms \(drift) leaves no lease: a lease lasts \(lease) ms at "
                        + "--tick-milliseconds \(tickMilliseconds) (\(ticks) ticks), less the drift allowance; give a smaller "
                        + "drift or longer ticks")
            }
        }
        guard (1...600_000).contains(readTimeoutMilliseconds) else {
            throw ValidationError("--read-timeout-ms must be 1...600000")
        }
        guard (1...(366 * 86_400)).contains(sessionTimeoutSeconds) else {
            throw ValidationError("--session-timeout-seconds must be 1...31622400")
        }
        guard (1...10_000_000).contains(maxSessions) else {
            throw ValidationError("--max-sessions must be 1...10000000")
        }
        let peerFiles = [peerCert, peerKey, peerCa].compactMap { $0 }
        guard peerFiles.isEmpty || peerFiles.count == 3 else {
            throw ValidationError("--peer-cert, --peer-key and --peer-ca go together: give all three or none")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together: give both or neither")
        }
        if tlsCa != nil && tlsCert == nil { throw ValidationError("--tls-ca goes with --tls-cert and --tls-key") }
        if tlsClientAuth && (tlsCa == nil || tlsCert == nil) {
            throw ValidationError(
                "--tls-client-auth needs --tls-cert, --tls-key and --tls-ca (to verify clients against)")
        }
        guard joinTimeoutSeconds >= 1 else { throw ValidationError("--join-timeout-seconds must be 1 or more") }
        try validateClientLimits()
        guard !id.isEmpty, id.utf8.count <= 255 else { throw ValidationError("--id must have 1 to 255 bytes") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "raftlite")
        logger[metadataKey: "node"] = "\(id)"

        let plan = try await resolveConfiguration(logger: logger)
        let cluster = plan.bootstrap
        let me = plan.me
        let httpPort: Int
        do {
            guard let port = try me.port(field: "http_port") else {
                throw ValidationError(
                    "\(id).http_port is missing in \(config ?? "the configuration"): the node needs a port for clients")
            }
            httpPort = port
        } catch let error as ClusterConfigurationError {
            throw ValidationError("\(error)")
        }

        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)

        let peerTLS = try makePeerTLS(bootstrap: cluster, me: me, logger: logger)

        var options = RaftNode<KVStore>.Options()
        options.peerTLS = peerTLS
        options.transport.maxInboundConnections = maxPeerConnections
        options.transport.maxInboundConnectionsPerAddress = maxPeerConnectionsPerAddress
        options.tickInterval = .milliseconds(Int64(tickMilliseconds))
        options.proposalTimeout = .milliseconds(Int64(requestTimeoutMilliseconds))
        options.maxProposalBytes = maxValueBytes + maxKeyBytes + 64
        options.listenHost = listenHost
        options.snapshotEntries = snapshotEntries
        options.snapshotBytes = snapshotBytes
        options.snapshotStateFactor = snapshotStateFactor
        options.compactionMargin = compactionMargin
        options.compactionMarginBytes = compactionMarginBytes
        options.snapshotChunkBytes = snapshotChunkBytes
        options.snapshotWindowBytes = max(options.snapshotWindowBytes, 4 * snapshotChunkBytes)
        options.leaseReads = leaseReads
        options.leaseClockDrift = .milliseconds(
            Int64(leaseClockDriftMilliseconds ?? Self.defaultLeaseClockDriftMilliseconds))
        options.readTimeout = .milliseconds(Int64(readTimeoutMilliseconds))
        options.sessionTimeout = .seconds(Int64(sessionTimeoutSeconds))
        options.maxSessions = maxSessions
        options.unsafeReadsWithoutConfirmation = unsafeReadsWithoutConfirmation
        options.logger = logger
        if leaseReads {
            logger.notice(
                "lease reads on: they rest on the clocks",
                metadata: [
                    "drift_allowance_ms": "\(leaseClockDriftMilliseconds ?? Self.defaultLeaseClockDriftMilliseconds)"
                ])
        }
        if unsafeReadsWithoutConfirmation {
            logger.warning(
                "--unsafe-reads-without-confirmation: reads are NOT linearizable (testing only)")
        }
        let node = try RaftNode(
            cluster: cluster, name: id, stateMachine: KVStore(), dataDirectory: dataDir, options: options,
            address: plan.isBootstrapMember ? nil : me)
        // The directory is open (locked, its identity checked): record the cluster in it, for restarts.
        let record = StoredCluster(bootstrap: cluster, selfEntry: plan.isBootstrapMember ? nil : me)
        if record != plan.stored {
            do {
                try record.write(dataDirectory: dataDir)
                logger.info(
                    "recorded the cluster's bootstrap configuration in the data directory",
                    metadata: ["file": "\(dataDir)/\(StoredCluster.fileName)", "cluster": "\(cluster.clusterID)"])
            } catch {
                guard plan.stored != nil || plan.isBootstrapMember else {
                    await node.stop()
                    throw error
                }
                logger.warning("\(error)")
            }
        }

        var serverOptions = KVServer.Options()
        serverOptions.host = listenHost ?? me.host
        serverOptions.port = httpPort
        serverOptions.maxValueBytes = maxValueBytes
        serverOptions.maxKeyBytes = maxKeyBytes
        serverOptions.unsafeLocalReads = unsafeLocalReads
        if unsafeLocalReads { logger.warning("--unsafe-local-reads: reads are NOT linearizable (testing only)") }
        let tokenReload: (any DispatchSourceSignal)?
        do {
            tokenReload = try clientServerOptions(&serverOptions, logger: logger)
        } catch {
            await node.stop()
            throw error
        }
        defer { tokenReload?.cancel() }
        let httpTLS: [ReloadableTLSContext]
        do {
            httpTLS = try clientTLS(&serverOptions, logger: logger)
        } catch {
            await node.stop()
            throw error
        }
        let server = KVServer(node: node, options: serverOptions, logger: logger) { registry.emitToBuffer() }

        let joinToken = try joinToken()
        let joiner = plan.joinEndpoint.map { endpoint in
            Joiner(
                node: node, endpoint: endpoint, known: cluster.httpEndpoints, member: me, learner: learner,
                patience: .seconds(joinTimeoutSeconds), logger: logger, token: joinToken,
                tls: serverOptions.forwardTLS?.context)
        }
        let service = KVService(
            node: node, server: server, logger: logger,
            drainTimeout: .milliseconds(Int64(requestTimeoutMilliseconds) + 1000), joiner: joiner,
            peerPort: me.port, peerTLS: peerTLS, httpTLS: httpTLS)
        let group = ServiceGroup(
            configuration: .init(
                services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

extension Serve {
    /// HTTPS for the client API from --tls-cert/--tls-key (and --tls-ca, --tls-client-auth): the server's context,
    /// and the client context it forwards to the leader with. Returns both, for SIGHUP to reload; none without
    /// --tls-cert.
    func clientTLS(_ options: inout KVServer.Options, logger: Logger) throws -> [ReloadableTLSContext] {
        guard let tlsCert, let tlsKey else {
            logger.notice("no --tls-cert: the client API is plain HTTP")
            return []
        }
        do {
            let files = TLSFiles(certificateChain: tlsCert, privateKey: tlsKey, trustRoots: tlsCa)
            let server = try ReloadableTLSContext(
                files: files, role: .server(clientCertificates: tlsClientAuth ? .required : .none))
            let forward = try ReloadableTLSContext(files: files, role: .client(verifyHostname: true))
            options.tls = server
            options.forwardTLS = forward
            logger.info(
                "the client API is HTTPS",
                metadata: [
                    "cert": "\(tlsCert)", "client_certificates": "\(tlsClientAuth ? "required" : "not asked for")",
                ])
            return [server, forward]
        } catch {
            throw ValidationError("client TLS: \(error)")
        }
    }

    /// The client context that --join speaks HTTPS with: this node's HTTPS files, the cluster's API being HTTPS
    /// whenever this node's is (nil without --tls-cert).
    func joinTLS() throws -> NIOSSLContext? {
        guard let tlsCert, let tlsKey else { return nil }
        do {
            return try TLSFiles(certificateChain: tlsCert, privateKey: tlsKey, trustRoots: tlsCa).load()
                .makeClientContext(verifyHostname: true)
        } catch {
            throw ValidationError("client TLS: \(error)")
        }
    }

    func validateClientLimits() throws {
        for (flag, value, range) in [
            ("--max-connections", maxConnections, 1...1_000_000),
            ("--max-connections-per-address", maxConnectionsPerAddress, 1...1_000_000),
            ("--max-peer-connections", maxPeerConnections, 1...1_000_000),
            ("--max-peer-connections-per-address", maxPeerConnectionsPerAddress, 1...1_000_000),
            ("--max-requests-in-flight", maxRequestsInFlight, 1...1_000_000),
            ("--max-header-bytes", maxHeaderBytes, 256...(1 << 20)),
            ("--client-idle-timeout-seconds", clientIdleTimeoutSeconds, 1...86_400),
        ] where !range.contains(value) {
            throw ValidationError("\(flag) must be \(range.lowerBound)...\(range.upperBound)")
        }
        if joinTokenFile != nil && join == nil { throw ValidationError("--join-token-file goes with --join") }
        if (authMetrics || authStatus) && tokensFile == nil {
            throw ValidationError("--auth-metrics and --auth-status go with --tokens-file")
        }
    }

    /// The token in --join-token-file (its first line), or nil without one; throws if it cannot be read.
    func joinToken() throws -> String? {
        guard let joinTokenFile else { return nil }
        guard let text = try? String(contentsOfFile: joinTokenFile, encoding: .utf8),
            let first = text.split(whereSeparator: \.isNewline).first?.trimmingCharacters(in: .whitespaces),
            !first.isEmpty
        else { throw ValidationError("--join-token-file \(joinTokenFile) cannot be read, or holds no token") }
        return first
    }

    /// The client connection limits and, with --tokens-file, the tokens (a bad file is a startup error naming its
    /// line); returns what reloads the tokens on SIGHUP, if there are tokens.
    func clientServerOptions(_ options: inout KVServer.Options, logger: Logger) throws -> (any DispatchSourceSignal)? {
        options.maxConnections = maxConnections
        options.maxConnectionsPerAddress = maxConnectionsPerAddress
        options.maxRequestsInFlight = maxRequestsInFlight
        options.maxHeaderBytes = maxHeaderBytes
        // A request waiting for its answer reads nothing: the idle timeout must outlast the longest wait.
        options.idleTimeout = .milliseconds(
            Int64(max(clientIdleTimeoutSeconds * 1000, requestTimeoutMilliseconds + 10_000)))
        options.authenticateMetrics = authMetrics
        options.authenticateStatus = authStatus
        guard let tokensFile else {
            logger.notice("no --tokens-file: client requests are not authenticated")
            return nil
        }
        let store: TokenStore
        do {
            store = try TokenStore(contentsOfFile: tokensFile)
        } catch {
            throw ValidationError("--tokens-file: \(error)")
        }
        options.tokens = store
        logger.info(
            "client requests need a bearer token",
            metadata: [
                "tokens_file": "\(tokensFile)", "tokens": "\(store.current.entries.count)",
                "metrics": "\(authMetrics ? "authenticated" : "open")",
                "status": "\(authStatus ? "authenticated" : "open")",
            ])
        return reloadTokensOnHangup(store, logger: logger)
    }

    /// The peer TLS contexts from --peer-cert/--peer-key/--peer-ca, or nil for plain TCP — which is refused when an
    /// address of the cluster, this node or --listen-host is not loopback, unless --insecure.
    func makePeerTLS(bootstrap: ClusterConfiguration, me: ClusterConfiguration.Member, logger: Logger) throws
        -> PeerTLS?
    {
        if let peerCert, let peerKey, let peerCa {
            do {
                let tls = try PeerTLS(
                    files: TLSFiles(certificateChain: peerCert, privateKey: peerKey, trustRoots: peerCa))
                if !tls.contexts.ownNames.contains(id) {
                    logger.warning(
                        "this node's certificate does not name it: peers will refuse its connections",
                        metadata: [
                            "file": "\(peerCert)", "names": "\(tls.contexts.ownNames.joined(separator: ","))",
                        ])
                }
                return tls
            } catch {
                throw ValidationError("peer TLS: \(error)")
            }
        }
        var addresses = bootstrap.members.map { (what: "member \"\($0.name)\"'s address", host: $0.host) }
        addresses.append((what: "this node's address", host: me.host))
        if let listenHost { addresses.append((what: "--listen-host", host: listenHost)) }
        if let refusal = PeerTLSRequirement.refusal(addresses: addresses, tlsConfigured: false, insecure: insecure) {
            throw ValidationError(refusal)
        }
        if let address = PeerTLSRequirement.firstNonLoopback(addresses) {
            logger.warning(
                "--insecure: peers talk plain TCP on an address that is not loopback",
                metadata: ["address": "\(address.host)"])
        }
        return nil
    }
}

/// Where a node's configuration comes from, decided before the node is created.
struct ServePlan {
    /// The cluster's bootstrap configuration (with its id), as the node is created with.
    var bootstrap: ClusterConfiguration
    /// This node's entry.
    var me: ClusterConfiguration.Member
    /// Whether this node is one of the bootstrap members (else it joined, or joins, a running cluster).
    var isBootstrapMember: Bool
    /// What the data directory held (nil: nothing yet).
    var stored: StoredCluster?
    /// Where to ask to be added (nil: no --join).
    var joinEndpoint: Endpoint?
}

extension Serve {
    /// Decides the bootstrap configuration and this node's entry:
    ///
    /// - a data directory holding `cluster.json`: that bootstrap configuration and cluster id (the cluster file, if
    ///   given, only moves addresses; its member list is ignored); with --join the endpoint must be of that cluster;
    /// - --join on a directory without it: the configuration the endpoint reports (GET /v1/cluster);
    /// - else the cluster file — restricted to the bootstrap members and cluster id the directory's IDENTITY
    ///   records, if it has one (a directory set up before cluster.json existed).
    func resolveConfiguration(logger: Logger) async throws -> ServePlan {
        let stored = try StoredCluster.read(dataDirectory: dataDir)
        let identity: DataDirectoryIdentity?
        do {
            identity = try DataDirectoryIdentity.stored(inDataDirectory: dataDir)
        } catch {
            throw ValidationError("\(error)")
        }
        var file: ClusterConfiguration?
        if let config {
            do {
                file = try ClusterConfiguration(contentsOfFile: config)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        let joinEndpoint = join.flatMap(Joiner.endpoint(in:))
        var remote: ClusterInfo?
        if let joinEndpoint {
            do {
                // A node with a stored configuration only checks the endpoint's cluster: it does not wait long.
                remote = try await ClusterInfo.fetch(
                    from: joinEndpoint, patience: stored == nil ? .seconds(30) : .seconds(3), logger: logger,
                    token: try joinToken(), tls: try joinTLS())
                logger.info(
                    "the cluster to join",
                    metadata: ["cluster": "\(remote?.clusterID ?? "")", "endpoint": "\(joinEndpoint)"])
            } catch {
                guard stored != nil else { throw ValidationError("cannot join through \(joinEndpoint): \(error)") }
                logger.warning(
                    "could not ask the --join endpoint which cluster it is; starting from the stored configuration",
                    metadata: ["endpoint": "\(joinEndpoint)", "error": "\(error)"])
            }
        }
        // The cluster id and bootstrap members this directory is bound to, if it is bound already.
        let boundClusterID = stored?.clusterID ?? identity?.clusterID
        if let remote, let boundClusterID, remote.clusterID != boundClusterID {
            throw ValidationError(
                "the data directory \(dataDir) belongs to cluster \"\(boundClusterID)\", but \(joinEndpoint.map { "\($0)" } ?? "")"
                    + " is a node of cluster \"\(remote.clusterID)\": a node never moves to another cluster. To add a "
                    + "node to that cluster, start it with a new, empty data directory")
        }

        var bootstrap: ClusterConfiguration
        if let stored {
            bootstrap = stored.bootstrap
            if let file {
                bootstrap = bootstrap.withAddresses(from: file)
                let fileNames = file.members.map(\.name)
                let storedNames = stored.bootstrap.members.map(\.name)
                if fileNames != storedNames {
                    logger.notice(
                        "the cluster file's member list differs from the bootstrap configuration stored in the data directory; the file only bootstraps a cluster, so its member list is ignored (the membership in effect is the one in the log)",
                        metadata: [
                            "file": "\(fileNames.joined(separator: ","))",
                            "bootstrap": "\(storedNames.joined(separator: ","))",
                        ])
                }
            }
        } else if let remote {
            if file != nil {
                logger.notice(
                    "--config is ignored with --join on a new data directory: the cluster gives the bootstrap configuration"
                )
            }
            bootstrap = remote.bootstrap
        } else if let file {
            bootstrap = file
            if let identity, identity.members.contains(identity.nodeName),
                let restricted = file.restricted(to: identity.members, clusterID: identity.clusterID),
                restricted.members.map(\.name) != file.members.map(\.name)
            {
                logger.notice(
                    "the cluster file lists members the data directory was not created with; the file only bootstraps a cluster, so they are ignored (the membership in effect is the one in the log)",
                    metadata: ["bootstrap": "\(identity.members.joined(separator: ","))"])
                bootstrap = restricted
            }
        } else if join != nil {
            throw ValidationError("cannot join: the --join endpoint did not tell which cluster it is")
        } else {
            throw ValidationError(
                "no cluster configuration: give --config FILE (a node of the cluster file), --join http://HOST:PORT "
                    + "(a node joining a running cluster), or a data directory that holds \(StoredCluster.fileName) (a "
                    + "node restarting)")
        }

        if let entry = bootstrap[id] {
            if stored == nil && identity == nil && remote != nil {
                throw ValidationError(
                    "\"\(id)\" is a bootstrap member of the cluster, and this data directory is new: a member that lost "
                        + "its data must not come back under its old name (it could vote twice in a term). Join under a "
                        + "new name, and remove \"\(id)\" with DELETE /v1/members/\(id)")
            }
            for (flag, given, actual) in [
                ("--ip", ip, entry.host), ("--port", port.map(String.init), String(entry.port)),
                (
                    "--http-port", httpPort.map(String.init),
                    (try? entry.port(field: "http_port")).flatMap { $0.map(String.init) }
                ),
            ] where given != nil && given != actual {
                throw ValidationError(
                    "\(flag) \(given ?? "") differs from the address the cluster configuration gives \"\(id)\" "
                        + "(\(actual ?? "none")): a bootstrap member's address comes from the cluster file")
            }
            return ServePlan(
                bootstrap: bootstrap, me: entry, isBootstrapMember: true, stored: stored, joinEndpoint: joinEndpoint)
        }
        let previous = stored?.selfEntry
        guard join != nil || previous != nil else {
            throw ValidationError(
                "node \"\(id)\" is not in the cluster configuration (members: "
                    + bootstrap.members.map(\.name).joined(separator: ", ")
                    + "). To add a node to a running cluster, start it with --join http://HOST:PORT --port N --http-port N"
            )
        }
        if let previous, previous.name != id {
            throw ValidationError(
                "the data directory \(dataDir) belongs to node \"\(previous.name)\", not \"\(id)\": start \"\(id)\" on its own data directory"
            )
        }
        guard let peerPort = port ?? previous?.port else {
            throw ValidationError("--port is required for a node that is not in the cluster file (the port for peers)")
        }
        guard let clientPort = httpPort ?? (try? previous?.port(field: "http_port")) ?? nil else {
            throw ValidationError(
                "--http-port is required for a node that is not in the cluster file (the port for clients)")
        }
        var fields = previous?.fields ?? [:]
        fields["http_port"] = .number(Double(clientPort))
        let me = ClusterConfiguration.Member(
            name: id, host: ip ?? previous?.host ?? "127.0.0.1", port: peerPort, fields: fields)
        if let collision = bootstrap.member(id: me.id) {
            throw ValidationError(
                "the name \"\(id)\" has the same id as bootstrap member \"\(collision.name)\": choose another")
        }
        if let previous, previous != me {
            logger.warning(
                "the node's address differs from the one it joined with: the other members know it by the address in the membership until it changes",
                metadata: ["joined": "\(previous.host):\(previous.port)", "now": "\(me.host):\(me.port)"])
        }
        return ServePlan(
            bootstrap: bootstrap, me: me, isBootstrapMember: false, stored: stored, joinEndpoint: joinEndpoint)
    }
}

/// Runs a node and its HTTP server until a graceful shutdown: then stops taking requests, answers those in
/// flight, and stops the node (which syncs and closes its log).
struct KVService: Service {
    let node: RaftNode<KVStore>
    let server: KVServer
    let logger: Logger
    let drainTimeout: TimeAmount
    /// Asks the cluster to add this node once it serves (`serve --join`).
    var joiner: Joiner? = nil
    /// The port this node listens on for peers (for the log).
    var peerPort: Int? = nil
    /// Reloaded on SIGHUP.
    var peerTLS: PeerTLS? = nil
    /// The client API's TLS contexts, reloaded on SIGHUP too.
    var httpTLS: [ReloadableTLSContext] = []

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
                "peers": "\(peerPort ?? node.cluster[node.name]?.port ?? 0)",
            ])
        let joining = joiner.map { joiner in Task { await joiner.run() } }
        let reloading =
            (peerTLS == nil && httpTLS.isEmpty)
            ? nil
            : Task { [logger, peerTLS, httpTLS] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    if let tls = peerTLS {
                        do {
                            try tls.reload()
                            logger.notice(
                                "SIGHUP: reloaded the peer TLS files; new connections use them",
                                metadata: ["cert": "\(tls.files.certificateChain ?? "")"])
                        } catch {
                            logger.error(
                                "SIGHUP: could not reload the peer TLS files; still using the ones loaded before",
                                metadata: ["error": "\(error)"])
                        }
                    }
                    var reloaded = !httpTLS.isEmpty
                    for tls in httpTLS {
                        do {
                            try tls.reload()
                        } catch {
                            reloaded = false
                            logger.error(
                                "SIGHUP: could not reload the client API's TLS files; still using the ones loaded before",
                                metadata: ["error": "\(error)"])
                        }
                    }
                    if reloaded { logger.notice("SIGHUP: reloaded the client API's TLS files") }
                }
            }
        defer { reloading?.cancel() }
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
        joining?.cancel()
        if let failure {
            logger.critical("the node stopped on its own: \(failure)")
            await server.drain(timeout: .seconds(1))
            throw failure
        }
        logger.info("shutting down")
        // A leader hands over first, while everything still runs: the transfer needs only the transport, and the
        // requests still arriving meanwhile are forwarded to the new leader once it leads.
        await handOverLeadership()
        logger.info("shutting down: answering requests in flight")
        await server.drain(timeout: drainTimeout)
        // stop() hands over again if this node still leads (and another voter answers), then syncs and closes.
        await node.stop()
        logger.info("stopped cleanly")
    }

    /// If this node leads a cluster with other voters, hands leadership to the most up-to-date one.
    func handOverLeadership() async {
        guard node.options.transferLeadershipOnStop, await node.role == .leader,
            let membership = await node.membership(),
            membership.voters.contains(where: { $0.name != node.name })
        else { return }
        logger.notice("handing leadership over before stopping")
        do {
            let successor = try await node.transferLeadership()
            logger.notice("handed leadership over before stopping", metadata: ["to": "\(successor)"])
        } catch {
            logger.warning("could not hand leadership over before stopping", metadata: ["error": "\(error)"])
        }
    }
}
