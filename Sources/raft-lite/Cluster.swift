import ArgumentParser
import Foundation
import ServiceLifecycle
import Logging

/// `raft-lite cluster`: a whole local cluster in one command.
struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a local cluster of raft-lite serve processes; Ctrl-C stops them all.",
        discussion: """
            Writes DIR/cluster.json, starts one `raft-lite serve` per node (node0, node1, ...) with its data in \
            DIR/nodeK and its log in DIR/nodeK.log, prints the endpoints, and waits. Node K serves clients on \
            base-port + K and talks to its peers on peer-base-port + K.

            A node that is killed stays down; the line printed for each node is the command that starts it again.
            """
    )
    @Option(help: "How many nodes.") var nodes = 3
    @Option(help: "The directory for the configuration, data and logs.") var dataDir: String
    @Option(help: "HTTP port of node0; node K uses base-port + K.") var basePort = 8081
    @Option(help: "Peer port of node0; node K uses peer-base-port + K.") var peerBasePort = 9081
    @Option(help: "Milliseconds per Raft tick.") var tickMilliseconds = 100

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
        var children: [(String, Process)] = []
        for k in 0..<nodes {
            let name = "node\(k)"
            let arguments = [
                "serve", "--config", config, "--id", name, "--data-dir", directory + "/" + name,
                "--tick-milliseconds", "\(tickMilliseconds)",
            ]
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
        let endpoints = (0..<nodes).map { "127.0.0.1:\(basePort + $0)" }.joined(separator: ",")
        say("cluster configuration: \(config)")
        say("endpoints: \(endpoints)")
        say("try: \(executable) status --endpoints \(endpoints)")
        say("Ctrl-C stops every node.")

        let service = ChildrenService(children: children)
        var logger = Logger(label: "raftlite.cluster")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
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
