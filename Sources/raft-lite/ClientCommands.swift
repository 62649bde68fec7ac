import ArgumentParser
import Foundation
import NIOCore
import NIOSSL
import RaftKVClient

/// The endpoints of the local cluster that `raft-lite cluster` starts by default.
let defaultEndpoints = "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"

/// The bearer token a client command sends: `--token`, else `--token-file`, else `RAFT_LITE_TOKEN`, else none.
struct TokenOptions: ParsableArguments {
    /// The environment variable a token may come from.
    static let environmentVariable = "RAFT_LITE_TOKEN"

    @Option(
        help: ArgumentHelp(
            "The bearer token for a node started with --tokens-file (default: $RAFT_LITE_TOKEN).",
            discussion:
                "A token on the command line is visible to other users in the process list: prefer --token-file or the environment."
        ))
    var token: String?

    @Option(help: "Read the bearer token from this file (its first line).")
    var tokenFile: String?

    func validate() throws {
        if token != nil && tokenFile != nil { throw ValidationError("give --token or --token-file, not both") }
        if let token, token.isEmpty { throw ValidationError("--token must not be empty") }
    }

    /// The token to send, or nil; throws if --token-file cannot be read or holds none.
    func resolve() throws -> String? {
        if let token { return token }
        if let tokenFile {
            let text: String
            do {
                text = try String(contentsOfFile: tokenFile, encoding: .utf8)
            } catch {
                throw ValidationError("--token-file \(tokenFile) cannot be read: \(error.localizedDescription)")
            }
            let first = text.split(whereSeparator: \.isNewline).first.map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard let first, !first.isEmpty else { throw ValidationError("--token-file \(tokenFile) holds no token") }
            return first
        }
        if let value = ProcessInfo.processInfo.environment[Self.environmentVariable], !value.isEmpty {
            return value.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return nil
    }
}

/// What a client command says when the server refused its credentials (401, 403): nil for any other answer.
func credentialsRefusal(_ response: HTTPResponse) -> String? {
    guard let refused = HTTPClientError.refusedCredentials(response) else { return nil }
    return response.status == 401
        ? "\(refused); give a token with --token, --token-file or \(TokenOptions.environmentVariable)"
        : "\(refused)"
}

struct EndpointOptions: ParsableArguments {
    @Option(help: "Comma-separated host:port HTTP endpoints of the cluster's nodes.")
    var endpoints = defaultEndpoints

    @Option(help: "Seconds to wait for an answer.")
    var timeout = 10.0

    @OptionGroup var credentials: TokenOptions

    @OptionGroup var tls: ClientTLSOptions

    func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be in (0, 3600] seconds") }
    }

    func client() throws -> KVClient {
        let (endpoints, token, tls) = try resolve(endpoints: endpoints, credentials: credentials, tls: self.tls)
        return KVClient(endpoints: endpoints, timeout: .milliseconds(Int64(timeout * 1000)), token: token, tls: tls)
    }
}

/// A client command's endpoints, token and TLS context: as given, or — when it was given none of the three — those
/// `raft-lite cluster` left for its local cluster (`LocalClusterFile`), if any.
func resolve(endpoints text: String, credentials: TokenOptions, tls: ClientTLSOptions) throws -> (
    [Endpoint], String?, NIOSSLContext?
) {
    var endpointText = text
    var token = try credentials.resolve()
    var context = try tls.context()
    if text == defaultEndpoints, token == nil, context == nil, let local = LocalClusterFile.load() {
        endpointText = local.endpoints
        if let tokenFile = local.tokenFile {
            token = try TokenOptions.parse(["--token-file", tokenFile]).resolve()
        }
        context = try tls.context(defaultCA: local.cacert)
    }
    do {
        return (try Endpoint.list(endpointText), token, context)
    } catch {
        throw ValidationError("--endpoints: \(error)")
    }
}

/// How `kv put|delete|cas` make their write: in a client session, retried while its outcome is unknown.
struct WriteOptions: ParsableArguments {
    @Flag(
        name: .customLong("no-session"),
        help: "Send the write once, outside a client session (an unknown outcome is not retried).")
    var noSession = false

    @Option(help: "How many times a write whose outcome is unknown (504, timeout, lost connection) may be sent.")
    var attempts = 10

    func validate() throws {
        guard (1...1000).contains(attempts) else { throw ValidationError("--attempts must be 1...1000") }
    }

    /// Sends the write in a new session (or, with `--no-session`, once, plain).
    func send(
        _ client: KVClient, plain: @escaping @Sendable () async throws -> HTTPResponse,
        inSession: @escaping @Sendable (KVSession) async throws -> HTTPResponse
    ) async throws -> HTTPResponse {
        if noSession { return try await plain() }
        let session = try await KVSession.register(with: client, maxAttempts: attempts)
        let response = try await inSession(session)
        let retries = await session.retries
        if retries > 0 {
            FileHandle.standardError.write(
                Data("(sent \(retries + 1) times in client session \(session.clientID))\n".utf8))
        }
        return response
    }
}

/// `raft-lite kv put|get|delete|cas`.
struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and write the replicated key-value store.",
        subcommands: [Put.self, Get.self, Delete.self, CompareAndSet.self]
    )

    /// Sends a request and prints its outcome; exits with 0 (done), 1 (not found, precondition failed) or 2 (error,
    /// including no endpoint reachable).
    static func run(printValue: Bool = false, _ request: () async throws -> HTTPResponse) async throws {
        let response: HTTPResponse
        do {
            response = try await request()
        } catch let error as HTTPClientError where error.code == .unauthorized {
            let hint =
                error.details.hasPrefix("unauthorized")
                ? "; give a token with --token, --token-file or \(TokenOptions.environmentVariable)" : ""
            FileHandle.standardError.write(Data("error: \(error)\(hint)\n".utf8))
            throw ExitCode(2)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        try finish(response, printValue: printValue)
    }

    /// The server's explanation in an error body, if it has one.
    static func message(_ response: HTTPResponse) -> String {
        KVErrorReply.decode(response)?.message ?? response.text
    }

    static func finish(_ response: HTTPResponse, printValue: Bool = false) throws {
        switch response.status {
        case 200..<300:
            if printValue {
                FileHandle.standardOutput.write(Data(response.body))
                if response.body.last != UInt8(ascii: "\n") { print() }
            } else {
                print("OK \(response.text)")
            }
        case 404:
            FileHandle.standardError.write(Data("not found\n".utf8))
            throw ExitCode(1)
        case 412:
            FileHandle.standardError.write(Data("precondition failed: \(message(response))\n".utf8))
            throw ExitCode(1)
        case 401, 403:
            FileHandle.standardError.write(Data("error: \(credentialsRefusal(response) ?? response.text)\n".utf8))
            throw ExitCode(2)
        default:
            FileHandle.standardError.write(Data("error: HTTP \(response.status) \(response.text)\n".utf8))
            throw ExitCode(2)
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a key's value.",
            discussion: """
                The write goes in a client session of its own: if its outcome is unknown (a 504, a timeout, a lost \
                connection), it is sent again, to the next endpoint, and the cluster applies it once (see \
                --attempts, --no-session).
                """)
        @OptionGroup var connection: EndpointOptions
        @OptionGroup var write: WriteOptions
        @Argument var key: String
        @Argument var value: String
        @Option(help: "Only if the current value is this (compare-and-set).")
        var prevValue: String?

        func run() async throws {
            let client = try connection.client()
            let (key, value, prevValue) = (key, Array(value.utf8), prevValue.map { Array($0.utf8) })
            try await KV.run {
                try await write.send(
                    client, plain: { try await client.put(key, value, prevValue: prevValue) },
                    inSession: { try await $0.put(key, value, prevValue: prevValue) })
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a key's value (linearizable, from any node).",
            discussion: """
                --consistency linearizable (the default) confirms with the leader that the answer is current; lease \
                skips that round trip on a leader started with --lease-reads; serializable reads the node's own \
                copy, which may be stale. --min-index N waits until the node has applied entry N.
                """)
        @OptionGroup var connection: EndpointOptions
        @Argument var key: String
        @Flag(help: "Read the first endpoint's own copy, which may be stale (--consistency serializable).")
        var serializable = false
        @Option(help: "linearizable, lease or serializable.")
        var consistency: String?
        @Option(help: "Wait until the answering node has applied at least this log index.")
        var minIndex: UInt64?

        func validate() throws {
            if let consistency, !["linearizable", "lease", "serializable"].contains(consistency) {
                throw ValidationError(
                    "--consistency must be linearizable, lease or serializable, not \"\(consistency)\"")
            }
            if serializable, let consistency, consistency != "serializable" {
                throw ValidationError("--serializable and --consistency \(consistency) contradict each other")
            }
        }

        func run() async throws {
            let client = try connection.client()
            let chosen = serializable ? "serializable" : consistency
            try await KV.run(printValue: true) { try await client.get(key, consistency: chosen, minIndex: minIndex) }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a key.")
        @OptionGroup var connection: EndpointOptions
        @OptionGroup var write: WriteOptions
        @Argument var key: String

        func run() async throws {
            let client = try connection.client()
            let key = key
            try await KV.run {
                try await write.send(
                    client, plain: { try await client.delete(key) }, inSession: { try await $0.delete(key) })
            }
        }
    }

    struct CompareAndSet: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cas", abstract: "Replace a key's value only if it currently is EXPECTED.")
        @OptionGroup var connection: EndpointOptions
        @OptionGroup var write: WriteOptions
        @Argument var key: String
        @Argument var expected: String
        @Argument var value: String

        func run() async throws {
            let client = try connection.client()
            let (key, value, expected) = (key, Array(value.utf8), Array(expected.utf8))
            try await KV.run {
                try await write.send(
                    client, plain: { try await client.put(key, value, prevValue: expected) },
                    inSession: { try await $0.put(key, value, prevValue: expected) })
            }
        }
    }
}

/// `raft-lite status`: a table of every node.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show every node's role, term, leader and log positions, and the members' roles.",
        discussion: """
            After the table come the members (voter, outgoing-voter or learner) as the leader sees them, and whether \
            a joint configuration is in effect.

            SNAPSHOT is the index the node's latest snapshot ends at (0: none yet); FIRST is the first entry its log \
            still holds (1 until the log is compacted). A node too old to report them shows "-".
            """)
    @OptionGroup var connection: EndpointOptions

    func run() async throws {
        let client = try connection.client()
        let results = await withTaskGroup(of: (Int, Result<NodeStatusReport, any Error>).self) { group in
            for (k, endpoint) in client.endpoints.enumerated() {
                group.addTask {
                    do {
                        let response = try await client.request(.GET, "/v1/status", at: endpoint)
                        if let refused = credentialsRefusal(response) {
                            return (k, .failure(HTTPClientError(.unauthorized, refused)))
                        }
                        return (k, .success(try NodeStatusReport.decode(response)))
                    } catch {
                        return (k, .failure(error))
                    }
                }
            }
            var all: [(Int, Result<NodeStatusReport, any Error>)] = []
            for await r in group { all.append(r) }
            return all.sorted { $0.0 < $1.0 }
        }
        let reports = results.compactMap { try? $0.1.get() }
        if reports.isEmpty,
            let refused = results.lazy.compactMap({ r -> HTTPClientError? in
                guard case .failure(let e as HTTPClientError) = r.1, e.code == .unauthorized else { return nil }
                return e
            }).first
        {
            FileHandle.standardError.write(Data("error: \(refused)\n".utf8))
            throw ExitCode(2)
        }
        let highestCommit = reports.map(\.commitIndex).max() ?? 0
        var rows = [["ENDPOINT", "NODE", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "SNAPSHOT", "FIRST"]]
        for (k, result) in results {
            let endpoint = client.endpoints[k].description
            switch result {
            case .success(let s):
                rows.append([
                    endpoint, s.id, s.role, "\(s.term)", s.leader ?? "-", "\(s.commitIndex)", "\(s.appliedIndex)",
                    "\(highestCommit - min(highestCommit, s.appliedIndex))",
                    s.snapshotIndex.map { "\($0)" } ?? "-", s.firstIndex.map { "\($0)" } ?? "-",
                ])
            case .failure(let error):
                let text = "\(error)"
                let reason =
                    text.contains("refused") ? "connection refused" : text.contains("no response") ? "timeout" : text
                // The reason goes last, where its length widens no other column.
                rows.append([endpoint, "-", "unreachable", "-", "-", "-", "-", "-", "-", reason])
            }
        }
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            print(
                zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        let leaders = Set(reports.filter { $0.role == "leader" }.map(\.term))
        if reports.isEmpty { throw ExitCode(2) }
        if leaders.isEmpty { print("\nno leader at the moment") }
        // The members and their roles, as the leader sees them (else the first node that reports a membership).
        let viewer =
            reports.first { $0.role == "leader" && $0.membership != nil } ?? reports.first { $0.membership != nil }
        if let viewer, let membership = viewer.membership {
            print("\nmembers (as \(viewer.id) sees them):")
            let rows =
                [["  NAME", "ROLE", "ADDRESS"]]
                + membership.members.map { ["  " + $0.name, $0.role, "\($0.ip):\($0.port)"] }
            for line in layout(rows) { print(line) }
            print(Members.summary(membership))
        }
        // The failure detector: how every other member looks from each node.
        for report in reports {
            guard let peers = report.peers, !peers.isEmpty else { continue }
            print("\nas \(report.id) sees the others:")
            let rows =
                [["  PEER", "REACHABLE", "LAST HEARD", "ROUND TRIP", "ACTIVE"]]
                + peers.map { p in
                    [
                        "  " + p.name, p.reachable ? "yes" : "NO",
                        p.lastContactMs.map { String(format: "%.0f ms ago", $0) } ?? "never",
                        p.roundTripMs.map { String(format: "%.2f ms", $0) } ?? "-",
                        p.active.map { $0 ? "yes" : "no" } ?? "-",
                    ]
                }
            for line in layout(rows) { print(line) }
        }
    }
}

/// `raft-lite snapshot`: asks nodes to snapshot now.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Ask nodes to snapshot their state now and compact their logs.",
        discussion: """
            Each endpoint in --endpoints is asked in turn (POST /v1/snapshot), one at a time so that the nodes do not \
            all write at once; give one endpoint to snapshot one node. For each node it prints the index and term the \
            snapshot ends at, once the snapshot is durable. A node with nothing new since its last snapshot answers \
            with that one. Exits with 2 if any node could not snapshot (the reason goes to standard error).
            """)
    @OptionGroup var connection: EndpointOptions

    func run() async throws {
        let client = try connection.client()
        var failed = false
        for endpoint in client.endpoints {
            do {
                let response = try await client.snapshot(at: endpoint)
                if let reply = SnapshotReply.decode(response) {
                    print("\(endpoint): snapshot at index \(reply.index), term \(reply.term)")
                } else {
                    failed = true
                    let reason =
                        credentialsRefusal(response) ?? KVErrorReply.decode(response).map {
                            "\($0.error): \($0.message)"
                        }
                        ?? response.text
                    FileHandle.standardError.write(
                        Data("\(endpoint): error: HTTP \(response.status) \(reason)\n".utf8))
                }
            } catch {
                failed = true
                FileHandle.standardError.write(Data("\(endpoint): error: \(error)\n".utf8))
            }
        }
        if failed { throw ExitCode(2) }
    }
}

/// `raft-lite bench`: the load generator.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load the key-value store over HTTP and report throughput and latency percentiles.",
        discussion: """
            Each client is one keep-alive connection with one request in flight (a closed loop); clients are spread \
            round-robin over the endpoints. Latency runs from writing a request to reading its whole response, into \
            an HDR histogram.

            A progress line goes to standard error each second; the report ends with ops/s and p50, p90, p99, p99.9 \
            and max latency.

            Each client writes in a client session of its own (unless --no-sessions): a write whose outcome is \
            unknown (a 504, a timeout, a lost connection) is sent again with the same sequence, up to --attempts \
            times, and is applied once; its latency runs to the definite answer, and the report counts the retries.
            """
    )
    @Option(help: "Comma-separated host:port HTTP endpoints.") var endpoints = defaultEndpoints
    @Option(help: "Concurrent clients (connections).") var clients = 16
    @Option(help: "Seconds measured (after the warm-up).") var seconds = 10.0
    @Option(help: "Seconds of load before measuring.") var warmup = 2.0
    @Option(help: "Bytes per value.") var valueSize = 128
    @Option(help: "Distinct keys.") var keys = 1000
    @Option(help: "put, get or mixed (90% gets).") var op = "put"
    @Option(help: "Event-loop threads for the clients.") var threads = 1
    @Option(help: "Also write the report as JSON to this file (- for standard output).") var json: String?
    @Flag(help: "Write without client sessions: an unknown outcome is counted as an error, not retried.")
    var noSessions = false
    @Option(help: "How many times a write may be sent in its session, in all.") var attempts = 10
    @Option(help: "Comma-separated pids of server processes whose CPU over the measured seconds to report.")
    var pids: String?
    @OptionGroup var credentials: TokenOptions
    @OptionGroup var tls: ClientTLSOptions

    /// The pids of `--pids`, or nil if one is not a positive number.
    var serverPIDs: [Int32]? {
        guard let pids else { return [] }
        let parsed = pids.split(separator: ",").map { Int32($0.trimmingCharacters(in: .whitespaces)) }
        guard parsed.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parsed.compactMap { $0 }
    }

    func validate() throws {
        guard serverPIDs != nil else { throw ValidationError("--pids must be comma-separated positive numbers") }
        guard LoadGenerator.Operation(rawValue: op) != nil else {
            throw ValidationError("--op must be put, get or mixed")
        }
        guard (1...10_000).contains(clients) else { throw ValidationError("--clients must be 1...10000") }
        guard seconds > 0, seconds <= 86_400, warmup >= 0, warmup <= 3600 else {
            throw ValidationError("--seconds must be in (0, 86400] and --warmup in [0, 3600]")
        }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1...64") }
        guard (0...(64 << 20)).contains(valueSize) else { throw ValidationError("--value-size must be 0...67108864") }
        guard keys >= 1 else { throw ValidationError("--keys must be at least 1") }
        guard (1...1000).contains(attempts) else { throw ValidationError("--attempts must be 1...1000") }
    }

    func run() async throws {
        let (endpointList, token, tlsContext) = try resolve(endpoints: endpoints, credentials: credentials, tls: tls)
        var options = LoadGenerator.Options(endpoints: endpointList)
        options.token = token
        options.tls = tlsContext
        options.clients = clients
        options.seconds = seconds
        options.warmup = warmup
        options.valueSize = valueSize
        options.keys = keys
        options.operation = LoadGenerator.Operation(rawValue: op) ?? .put
        options.threads = threads
        options.sessions = !noSessions
        options.maxAttempts = attempts
        options.serverPIDs = serverPIDs ?? []
        let warm = Int(warmup.rounded(.up))
        FileHandle.standardError.write(
            Data(
                "bench: \(op), \(clients) clients on \(options.endpoints.count) endpoints, \(valueSize)-byte values, \(warmup) s warm-up + \(seconds) s\n"
                    .utf8))
        let report: LoadGenerator.Report
        do {
            report = try await LoadGenerator(options: options).run { second, ops, errors in
                let phase = second <= warm ? " (warm-up)" : ""
                FileHandle.standardError.write(
                    Data("  t=\(second)s  \(ops) ops/s  errors=\(errors)\(phase)\n".utf8))
            }
        } catch let error as HTTPClientError where error.code == .unauthorized {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        print(
            String(
                format: "%@: %.0f ops/s  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  errors %d",
                op, report.opsPerSecond, report.p50Ms, report.p90Ms, report.p99Ms, report.p999Ms, report.maxMs,
                report.errors))
        if let client = report.clientCPUPercent {
            var line = String(format: "CPU: this generator %.1f%% of a core", client)
            if let servers = report.serverCPUPercent {
                let each = servers.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)%" }.joined(separator: ", ")
                line += "; servers \(each)"
            }
            if let perOp = report.serverCPUMicrosPerOp {
                line += String(format: "; %.1f µs of server CPU per op", perOp)
            }
            print(line)
        }
        if !report.errorKinds.isEmpty { print("errors by kind: \(report.errorKinds)") }
        if report.sessions { print("client sessions: \(report.retries) writes sent again after an unknown outcome") }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(report)
            if json == "-" {
                print(String(decoding: data, as: UTF8.self))
            } else {
                try data.write(to: URL(fileURLWithPath: json))
            }
        }
    }
}

/// `raft-lite members list|add|remove|promote`.
struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List and change the cluster's members.",
        discussion: """
            A change goes to the first endpoint that answers; a follower forwards it to the leader. It returns once \
            the change is committed, and prints the membership then. An error answer exits with 2; a timeout leaves \
            the outcome open (see `raft-lite members list`).
            """,
        subcommands: [List.self, Add.self, Remove.self, Promote.self]
    )

    /// Prints the membership of a 200 answer, or the error; exits with 2 on an error.
    static func finish(_ response: HTTPResponse) throws {
        if let refused = credentialsRefusal(response) {
            FileHandle.standardError.write(Data("error: \(refused)\n".utf8))
            throw ExitCode(2)
        }
        guard response.status == 200, let report = MembershipReport.decode(response) else {
            let reason = KVErrorReply.decode(response).map { "\($0.error): \($0.message)" } ?? response.text
            FileHandle.standardError.write(Data("error: HTTP \(response.status) \(reason)\n".utf8))
            throw ExitCode(2)
        }
        print(table(report))
    }

    /// The membership as a table, with a line for the configuration entry and the leader.
    static func table(_ report: MembershipReport) -> String {
        var rows = [["NAME", "ROLE", "ADDRESS", "HTTP"]]
        for m in report.members {
            rows.append([
                m.name + (m.name == report.leader ? " *" : ""), m.role, "\(m.ip):\(m.port)",
                m.httpPort.map { "\(m.ip):\($0)" } ?? "-",
            ])
        }
        var lines = layout(rows)
        lines.append("")
        lines.append(summary(report))
        return lines.joined(separator: "\n")
    }

    /// `configuration at index 12 (committed), joint: no, leader: node0`.
    static func summary(_ report: MembershipReport) -> String {
        let at = report.index == 0 ? "the bootstrap configuration" : "configuration at index \(report.index)"
        return "\(at) (\(report.committed ? "committed" : "not yet committed")), joint: "
            + (report.joint ? "yes (a change is under way)" : "no") + ", leader: \(report.leader ?? "none known")"
    }

    static func run(_ request: () async throws -> HTTPResponse) async throws {
        let response: HTTPResponse
        do {
            response = try await request()
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        try finish(response)
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every member, its role and address, as the first endpoint that answers sees them.")
        @OptionGroup var connection: EndpointOptions

        func run() async throws {
            let client = try connection.client()
            try await Members.run { try await client.members() }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Add a member: a voter (added as a learner, caught up, then promoted), or with --learner a learner.",
            discussion: """
                Start the new node first (`raft-lite serve --join`), so that it can catch up. Adding a voter waits \
                until it has caught up: raise --timeout for a large log.
                """)
        @OptionGroup var connection: EndpointOptions
        @Argument(help: "The new member's name.") var name: String
        @Option(help: "The address its peers reach it at.") var ip: String
        @Option(help: "Its Raft port.") var port: Int
        @Option(help: "Its HTTP API's port (kept in the membership, so followers can forward to it).")
        var httpPort: Int?
        @Flag(help: "Add it as a learner, which receives the log without a vote, and leave it one.")
        var learner = false

        func validate() throws {
            guard !name.isEmpty, name.utf8.count <= 255 else { throw ValidationError("NAME must have 1 to 255 bytes") }
            guard !ip.isEmpty else { throw ValidationError("--ip must not be empty") }
            guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
            if let httpPort, !(1...65535).contains(httpPort) {
                throw ValidationError("--http-port must be in 1...65535")
            }
        }

        func run() async throws {
            let client = try connection.client()
            try await Members.run {
                try await client.addMember(name: name, ip: ip, port: port, httpPort: httpPort, learner: learner)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a member (a leader that removes itself hands leadership over once the change commits).")
        @OptionGroup var connection: EndpointOptions
        @Argument(help: "The member's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            try await Members.run { try await client.removeMember(name) }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Promote a learner to a voter, once it has caught up.")
        @OptionGroup var connection: EndpointOptions
        @Argument(help: "The learner's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            try await Members.run { try await client.promoteMember(name) }
        }
    }
}

/// `raft-lite leader transfer`.
struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Act on the cluster's leadership.", subcommands: [Transfer.self])

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hand leadership to another voter (by default the most up-to-date one).",
            discussion: """
                Prints the new leader once it leads. Writes wait during the hand-over (an election timeout at most); \
                if the target does not take over in time, the old leader takes writes again and this exits with 2.
                """)
        @OptionGroup var connection: EndpointOptions
        @Option(help: "The voter to hand leadership to.") var to: String?

        func run() async throws {
            let client = try connection.client()
            let response: HTTPResponse
            do {
                response = try await client.transferLeadership(to: to)
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
            guard let reply = LeaderTransferReply.decode(response) else {
                let reason = KVErrorReply.decode(response).map { "\($0.error): \($0.message)" } ?? response.text
                FileHandle.standardError.write(Data("error: HTTP \(response.status) \(reason)\n".utf8))
                throw ExitCode(2)
            }
            print("leader: \(reply.leader)")
        }
    }
}

/// Rows of cells as lines, each column as wide as its widest cell.
func layout(_ rows: [[String]]) -> [String] {
    let columns = rows.map(\.count).max() ?? 0
    let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { row in
        var line = zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
        while line.last == " " { line.removeLast() }
        return line
    }
}
