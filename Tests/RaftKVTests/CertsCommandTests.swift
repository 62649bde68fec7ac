import Foundation
import ProcessTesting
import Testing

/// `raft-lite certs`, and `raft-lite serve`'s refusal of plain TCP off loopback, run as the real binary.
@Suite struct CertsCommandTests {
    func run(_ arguments: [String]) throws -> (status: Int32, output: String) { try runRaftLite(arguments) }

    @Test func certsWritesEveryMembersFilesAndRefusesToOverwriteThemWithoutForce() throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        let directory = NSTemporaryDirectory() + "raftlite-certs-cmd-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cluster = directory + "/cluster.json"
        try """
        {"node0": {"ip": "127.0.0.1", "port": 9081, "http_port": 8081},
         "node1": {"ip": "127.0.0.1", "port": 9082, "http_port": 8082}}
        """.write(toFile: cluster, atomically: true, encoding: .utf8)
        let out = directory + "/certs"

        let first = try run(["certs", "--cluster", cluster, "--out", out, "--client", "alice"])
        #expect(first.status == 0, "\(first.output)")
        for name in ["ca", "node0", "node1", "alice"] {
            #expect(first.output.contains("wrote \(out)/\(name).pem"), "\(first.output)")
            let key = try FileManager.default.attributesOfItem(atPath: "\(out)/\(name)-key.pem")
            #expect(key[.posixPermissions] as? Int == 0o600, "\(name)-key.pem")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(out)/client.pem"), "--client replaces the default client")

        let again = try run(["certs", "--cluster", cluster, "--out", out, "--client", "alice"])
        #expect(again.status != 0)
        #expect(again.output.contains("exists already (pass --force to overwrite it)"), "\(again.output)")
        let forced = try run(["certs", "--cluster", cluster, "--out", out, "--client", "alice", "--force"])
        #expect(forced.status == 0, "\(forced.output)")
    }

    @Test func serveRefusesPlainTCPOnAnAddressThatIsNotLoopback() throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        let directory = NSTemporaryDirectory() + "raftlite-insecure-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cluster = directory + "/cluster.json"
        // node1's address is not loopback; nothing is ever sent to it: the node refuses before it starts.
        try """
        {"node0": {"ip": "127.0.0.1", "port": 9081, "http_port": 8081},
         "node1": {"ip": "10.0.0.2", "port": 9082, "http_port": 8082}}
        """.write(toFile: cluster, atomically: true, encoding: .utf8)
        let refused = try run(["serve", "--config", cluster, "--id", "node0", "--data-dir", directory + "/node0"])
        #expect(refused.status != 0)
        #expect(
            refused.output.contains("member \"node1\"'s address 10.0.0.2 is not a loopback address"),
            "\(refused.output)")
        #expect(refused.output.contains("--insecure"))

        let half = try run([
            "serve", "--config", cluster, "--id", "node0", "--data-dir", directory + "/node0", "--peer-cert", "x.pem",
        ])
        #expect(half.status != 0)
        #expect(half.output.contains("give all three or none"), "\(half.output)")
    }
}
