import ArgumentParser
import Foundation
import ServiceLifecycle
import Logging
import RaftKV
import RaftTLS

/// `raft-lite cluster`: a whole local cluster in one command.
struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a local cluster of raft-lite serve processes; Ctrl-C stops them all.",
        discussion: """
            Writes DIR/cluster.json, starts one `raft-lite serve` per node (node0, node1, ...) with its data in \
            DIR/nodeK and its log in DIR/nodeK.log, prints the endpoints, and waits. Node K serves clients on \
            base-port + K and talks to its peers on peer-base-port + K.

            A node that is killed stays down; the line printed for each node is the command that starts it again.

            With --tls the cluster is secured: a development CA and a certificate for each node go in DIR/certs \
            (`raft-lite certs`), the peers talk mutual TLS, the client API is HTTPS, and every request needs a bearer \
            token — a read-write one is made and kept in DIR/client-token (mode 0600), its hash in DIR/tokens. Either \
            way the cluster's endpoints (and with --tls its CA and token) are recorded for `raft-lite kv`, `status` \
            and `bench`, which then work against it with no flags (in $RAFT_LITE_HOME/local-cluster.json, default \
            ~/.raft-lite).
            """
    )
    @Option(help: "How many nodes.") var nodes = 3
    @Option(help: "The directory for the configuration, data and logs.") var dataDir: String
    @Option(help: "HTTP port of node0; node K uses base-port + K.") var basePort = 8081
    @Option(help: "Peer port of node0; node K uses peer-base-port + K.") var peerBasePort = 9081
    @Option(help: "Milliseconds per Raft tick.") var tickMilliseconds = 100
    @Flag(help: "Mutual TLS between the nodes, HTTPS and bearer tokens for clients, with certificates made here.")
    var tls = false

    func validate() throws {
        guard (1...15).contains(nodes) else { throw ValidationError("--nodes must be 1...15") }
        guard (1...65000).contains(basePort), (1...65000).contains(peerBasePort) else {
            throw ValidationError("ports must be below 65000")
        }
    }

    func run() async throws {
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let directory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        let config = directory + "/cluster.json"
        let entries = (0..<nodes).map { k in
            "\"node\(k)\": {\"ip\": \"127.0.0.1\", \"port\": \(peerBasePort + k), \"http_port\": \(basePort + k)}"
        }
        try ("{\n  " + entries.joined(separator: ",\n  ") + "\n}\n").write(
            toFile: config, atomically: true, encoding: .utf8)
        // This very binary, wherever it was found (PATH, a relative path, swift run).
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        let secured = tls ? try Self.secure(directory: directory, nodes: nodes) : nil
        let endpoints = (0..<nodes).map { "127.0.0.1:\(basePort + $0)" }.joined(separator: ",")
        do {
            try LocalClusterFile(endpoints: endpoints, cacert: secured?.cacert, tokenFile: secured?.tokenFile).write()
        } catch {
            say("warning: cannot record the cluster for the client commands in \(LocalClusterFile.path): \(error)")
        }
        var children: [(String, Process)] = []
        for k in 0..<nodes {
            let name = "node\(k)"
            var arguments = [
                "serve", "--config", config, "--id", name, "--data-dir", directory + "/" + name,
                "--tick-milliseconds", "\(tickMilliseconds)",
            ]
            if let secured { arguments += secured.arguments(name) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if !FileManager.default.fileExists(atPath: directory + "/\(name).log") {
                _ = FileManager.default.createFile(atPath: directory + "/\(name).log", contents: nil)
            }
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/\(name).log"))
            try log.seekToEnd()
            process.standardOutput = log
            process.standardError = log
            process.terminationHandler = { p in
                if p.terminationReason == .uncaughtSignal || p.terminationStatus != 0 {
                    FileHandle.standardError.write(
                        Data(
                            "\(name) (pid \(p.processIdentifier)) exited: \(p.terminationReason == .uncaughtSignal ? "signal" : "status") \(p.terminationStatus)\n"
                                .utf8))
                }
            }
            try process.run()
            children.append((name, process))
            say(
                "\(name): pid \(process.processIdentifier), http 127.0.0.1:\(basePort + k), log \(directory)/\(name).log"
            )
            say(
                "       restart with: \(executable) \(arguments.joined(separator: " ")) >> \(directory)/\(name).log 2>&1 &"
            )
        }
        say("cluster configuration: \(config)")
        say("endpoints: \(endpoints)\(secured == nil ? "" : " (HTTPS)")")
        if let secured {
            say("CA: \(secured.cacert); token: \(secured.tokenFile)")
            say(
                "try: \(executable) status   (or elsewhere: --endpoints \(endpoints) --cacert \(secured.cacert) "
                    + "--token-file \(secured.tokenFile))")
        } else {
            say("try: \(executable) status --endpoints \(endpoints)")
        }
        say("Ctrl-C stops every node.")

        let service = ChildrenService(children: children)
        var logger = Logger(label: "raftlite.cluster")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

extension Cluster {
    /// What a secured local cluster's nodes are started with, and what its clients need.
    struct Secured {
        var certificates: String
        var cacert: String
        var tokensFile: String
        var tokenFile: String

        func arguments(_ name: String) -> [String] {
            let cert = "\(certificates)/\(name).pem"
            let key = "\(certificates)/\(name)-key.pem"
            return [
                "--peer-cert", cert, "--peer-key", key, "--peer-ca", cacert,
                "--tls-cert", cert, "--tls-key", key, "--tls-ca", cacert,
                "--tokens-file", tokensFile,
            ]
        }
    }

    /// Makes (or, on a later run in the same directory, reuses) the CA, the nodes' certificates, and a read-write
    /// token.
    static func secure(directory: String, nodes: Int) throws -> Secured {
        let secured = Secured(
            certificates: directory + "/certs", cacert: directory + "/certs/ca.pem", tokensFile: directory + "/tokens",
            tokenFile: directory + "/client-token")
        // Files made by an earlier run are used again only if this user made them and nobody else can change
        // them: in a shared directory (/tmp) another user could have put their own CA or tokens there first.
        for path in [secured.certificates, secured.tokensFile, secured.tokenFile]
        where FileManager.default.fileExists(atPath: path) {
            try Self.checkOwnedAndPrivate(path)
        }
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: secured.certificates) {
            for name in existing { try Self.checkOwnedAndPrivate(secured.certificates + "/" + name) }
        }
        let names = (0..<nodes).map { "node\($0)" }
        let wanted = DevelopmentCertificateFiles.fileNames(
            nodes: names.map { .init(name: $0, host: "127.0.0.1") }, clients: []
        ).map { secured.certificates + "/" + $0 }
        if !wanted.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
            // A CA and every node's certificate, made together (replacing a partial set from an earlier run).
            _ = try DevelopmentCertificateFiles.write(
                nodes: names.map { .init(name: $0, host: "127.0.0.1") }, clients: [],
                directory: secured.certificates, validity: .days(365), overwrite: true)
            say("made a development CA and certificates for \(nodes) nodes in \(secured.certificates)")
        }
        let haveToken =
            FileManager.default.fileExists(atPath: secured.tokenFile)
            && FileManager.default.fileExists(atPath: secured.tokensFile)
        if !haveToken {
            let token = TokenTable.generate()
            let entry = TokenTable.Entry(role: .readwrite, digest: TokenTable.digest(of: token), name: "local")
            try PEMFile.write(token + "\n", to: secured.tokenFile, privateKey: true, overwrite: true)
            try PEMFile.write(entry.line + "\n", to: secured.tokensFile, privateKey: true, overwrite: true)
            say("made a read-write token in \(secured.tokenFile) (its hash in \(secured.tokensFile))")
        }
        return secured
    }

    /// Throws unless `path` belongs to this user and no one else may write it.
    static func checkOwnedAndPrivate(_ path: String) throws {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let owner = (attributes[.ownerAccountID] as? NSNumber)?.uint32Value
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o777
        guard owner == getuid(), mode & 0o022 == 0 else {
            throw ValidationError(
                "\(path) was not made by this user, or others may write it (mode \(String(mode, radix: 8))): "
                    + "refusing to use it; remove it or choose another --data-dir")
        }
    }
}

/// Waits for a graceful shutdown, then stops the child processes with SIGTERM (SIGKILL after 15 s).
struct ChildrenService: Service {
    let children: [(String, Process)]

    func run() async throws {
        try? await gracefulShutdown()
        say("stopping \(children.count) nodes")
        for (_, process) in children where process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(15)
        while children.contains(where: { $0.1.isRunning }) && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for (name, process) in children where process.isRunning {
            say("\(name) did not stop in 15 s; killing it")
            kill(process.processIdentifier, SIGKILL)
        }
        say("all nodes stopped")
    }
}
