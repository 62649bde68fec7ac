import Foundation
import ProcessTesting
import RaftCore
import RaftLite
import Testing

/// A data directory belongs to one node of one cluster: any other node, cluster or member set is refused.
@Suite(.clusterSlot) struct DataDirectoryIdentityTests {
    static func configuration(_ names: [String], ports: [Int]? = nil, clusterID: String? = nil) throws
        -> ClusterConfiguration
    {
        let ports = ports ?? names.indices.map { 7100 + $0 }
        return try ClusterConfiguration(
            members: zip(names, ports).map { ClusterConfiguration.Member(name: $0, host: "127.0.0.1", port: $1) },
            clusterID: clusterID)
    }

    static let three = ["node0", "node1", "node2"]

    /// node0's directory, created and released.
    static func directoryOfNode0(in scratch: ScratchDirectory) async throws -> String {
        let path = scratch.path + "/node0"
        let node = try RaftNode(cluster: try configuration(three), name: "node0", dataDirectory: path)
        await node.stop()
        return path
    }

    /// The error that refused to create the node, or "" (and the node is stopped) if it was created.
    static func refusal(_ body: () throws -> RaftNode<NoStateMachine>) async -> String {
        do {
            let node = try body()
            await node.stop()
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func aNodeOnAnotherNodesDirectoryIsRefusedNamingBoth() async throws {
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let message = await Self.refusal {
            try RaftNode(cluster: try Self.configuration(Self.three), name: "node1", dataDirectory: path)
        }
        #expect(message.contains("\"node0\"") && message.contains("\"node1\""), "\(message)")
    }

    @Test func aNodeOnACopyOfAnotherNodesDirectoryIsRefused() async throws {
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let copy = scratch.path + "/copy"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let message = await Self.refusal {
            try RaftNode(cluster: try Self.configuration(Self.three), name: "node1", dataDirectory: copy)
        }
        #expect(message.contains("\"node0\"") && message.contains("\"node1\""), "\(message)")
    }

    @Test func aNodeOfAnotherClusterIsRefusedNamingBothClusters() async throws {
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let other = try Self.configuration(Self.three, clusterID: "another-cluster")
        let message = await Self.refusal { try RaftNode(cluster: other, name: "node0", dataDirectory: path) }
        #expect(message.contains("another-cluster") && message.contains("raftlite:node0,node1,node2"), "\(message)")
    }

    @Test func aNodeWhoseMemberListWasEditedIsRefusedAndToldHowToProceed() async throws {
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let five = try Self.configuration(Self.three + ["node3", "node4"])
        let message = await Self.refusal { try RaftNode(cluster: five, name: "node0", dataDirectory: path) }
        #expect(
            message.contains("node0, node1, node2") && message.contains("node0, node1, node2, node3, node4"),
            "\(message)")
        #expect(message.contains("membership changes are not supported"), "\(message)")
        #expect(message.contains("restore the original member list"), "\(message)")
    }

    @Test func theBinaryRefusesAnotherNodesDirectoryOnStandardErrorAndExitsNonzero() async throws {
        let executable = raftLiteExecutable()
        try #require(FileManager.default.isExecutableFile(atPath: executable), "build raft-lite first: \(executable)")
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let config = scratch.path + "/cluster.json"
        let json =
            "{"
            + Self.three.enumerated().map { "\"\($1)\": {\"ip\": \"127.0.0.1\", \"port\": \(7100 + $0)}" }
            .joined(separator: ", ") + "}"
        try json.write(toFile: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["node", "--config", config, "--id", "node1", "--data-dir", path]
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        try input.fileHandleForWriting.close()  // a node that did start would stop at the end of its input
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(
            errorText.contains("belongs to node \"node0\"") && errorText.contains("not to node \"node1\""),
            "\(errorText)")
    }

    @Test func theSameNodeWithNewAddressesStarts() async throws {
        let scratch = ScratchDirectory("identity")
        let path = try await Self.directoryOfNode0(in: scratch)
        let ports = try FreePorts.reserve(3)
        var options = RaftNode<NoStateMachine>.Options()
        options.logger.logLevel = .critical
        let moved = try ClusterConfiguration(
            members: zip(Self.three, ports).map { ClusterConfiguration.Member(name: $0, host: "127.0.0.1", port: $1) })
        let node = try RaftNode(cluster: moved, name: "node0", dataDirectory: path, options: options)
        try await node.start()
        await node.stop()
    }
}
