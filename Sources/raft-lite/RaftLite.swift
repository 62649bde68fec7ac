import ArgumentParser

@main
struct RaftLiteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft-lite",
        abstract: "Raft consensus for Swift: demos, nodes and tools.",
        subcommands: [
            Demo.self, Node.self, Serve.self, Cluster.self, KV.self, Status.self, SnapshotCommand.self, Bench.self,
            Repair.self, Members.self, Leader.self, Tokens.self, Certs.self,
        ]
    )
}
