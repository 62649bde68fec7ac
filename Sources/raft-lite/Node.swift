import ArgumentParser
import Foundation
import Logging
import NIOCore
import RaftLite

/// One node of the plain library, as in the seed's multi-program use: prints leadership changes and committed
/// entries, and proposes every line typed on standard input.
struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one node of a cluster described by a JSON file; each line on standard input is proposed.",
        discussion: """
            The file uses the seed's format: {"node0": {"ip": "127.0.0.1", "port": "5567"}, ...}.

            With --data-dir the node keeps its term, vote and log in a write-ahead log there and can be stopped, \
            killed and restarted safely. Without it the log is in memory: restarting the process loses term, vote \
            and log, which is only safe for experiments.

            The file bootstraps the cluster: its members are the first configuration, and the data directory is \
            bound to that member list (keep the file's member list as it was; addresses may change). Once the log \
            holds a membership change, that membership is in effect, whatever the file says.

            Output lines: "ok #INDEX: LINE" when a proposal made here is committed, "committed #INDEX (term T): \
            LINE" for every entry applied, and role changes.
            """
    )

    @Option(help: "The cluster configuration file (JSON).")
    var config: String

    @Option(help: "This node's name in the configuration.")
    var id: String

    @Option(help: "The node's data directory (created if needed); without it the log is kept in memory.")
    var dataDir: String?

    @Option(help: "Milliseconds per Raft tick (an election timeout is 10 to 20 ticks).")
    var tickMilliseconds = 100

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "warning"

    @Flag(
        help:
            "Allow plain TCP between peers on addresses that are not loopback (`node` has no TLS: use `serve --peer-cert` for that)."
    )
    var insecure = false

    func validate() throws {
        guard (1...10_000).contains(tickMilliseconds) else {
            throw ValidationError("--tick-milliseconds must be 1...10000")
        }
    }

    func run() async throws {
        let cluster: ClusterConfiguration
        do {
            cluster = try ClusterConfiguration(contentsOfFile: config)
        } catch {
            throw ValidationError("\(error)")
        }
        // Plain TCP only on loopback, as for `serve` (this command has no TLS).
        if let refusal = PeerTLSRequirement.refusal(
            addresses: cluster.members.map { (what: "member \"\($0.name)\"'s address", host: $0.host) },
            tlsConfigured: false, insecure: insecure)
        {
            throw ValidationError(refusal)
        }
        var options = RaftNode<NoStateMachine>.Options()
        options.tickInterval = .milliseconds(Int64(tickMilliseconds))
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown --log-level \(logLevel)")
        }
        options.logger.logLevel = level
        let node: RaftNode<NoStateMachine>
        if let dataDir {
            node = try RaftNode(cluster: cluster, name: id, dataDirectory: dataDir, options: options)
        } else {
            node = try RaftNode(cluster: cluster, name: id, options: options)
            say("warning: no --data-dir: the log is kept in memory and lost when this process exits")
        }
        // Subscribe first, so that the entries re-applied from the log at start are printed too.
        let changes = node.leadershipChanges()
        let entries = node.committedEntries(buffer: 1 << 20)
        try await node.start()
        say("\(id) is running; type a line to propose it, Ctrl-D to stop.")

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await change in changes { say("[\(id)] \(change)") }
            }
            group.addTask {
                for await entry in entries { say("[\(id)] committed \(entry)") }
            }
            group.addTask {
                while let line = readLine() {
                    guard !line.isEmpty else { continue }
                    do {
                        let committed = try await node.propose(line)
                        say("ok #\(committed.index.rawValue): \(line)")
                    } catch {
                        say("[\(id)] proposal failed: \(error)")
                    }
                }
            }
            // Stop on end of input; the other tasks end when the node's streams finish.
            try await group.next()
            await node.stop()
        }
    }
}

/// Writes a line to standard output at once (unbuffered), so that whoever reads it through a pipe sees each line as it
/// happens.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
