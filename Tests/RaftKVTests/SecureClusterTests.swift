import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import ProcessTesting
import RaftKVClient
import RaftTLS
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `raft-lite cluster --tls` and the client commands against it, run as the real binary: a secure local cluster in
/// one command, and `raft-lite kv` and `raft-lite status` that work against it with no flags.
@Suite(.serialized, .clusterSlot) struct SecureClusterTests {
    func run(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, output: String) {
        try runRaftLite(arguments, environment: environment)
    }

    @Test func aTLSClusterInOneCommandAndClientsThatNeedNoFlags() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        let scratch = ScratchDirectory("raftlite-secure-cluster")
        let home = scratch.path + "/home"
        let environment = ["RAFT_LITE_HOME": home]
        let ports = try #require(Self.consecutiveFreePorts(6))
        let cluster = try ChildProcess(
            raftLiteExecutable(),
            [
                "cluster", "--tls", "--data-dir", scratch.path + "/data", "--base-port", "\(ports[0])",
                "--peer-base-port", "\(ports[3])", "--tick-milliseconds", "50",
            ],
            label: "cluster", environment: environment)
        defer { if cluster.isRunning { cluster.signal(SIGTERM) } }
        let up = await cluster.waitForLine(seconds: 60) { $0.contains("Ctrl-C stops every node") }
        try #require(up != nil, "the cluster started\n\(cluster.lines.joined(separator: "\n"))")

        // No flags: the local cluster's endpoints, CA and token come from what `cluster` recorded.
        var put: (status: Int32, output: String) = (1, "")
        for _ in 0..<100 {
            put = try run(["kv", "put", "greeting", "hello"], environment: environment)
            if put.status == 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(put.status == 0, "\(put.output)")
        let get = try run(["kv", "get", "greeting"], environment: environment)
        #expect(get.status == 0 && get.output.contains("hello"), "\(get.output)")
        let status = try run(["status"], environment: environment)
        #expect(status.status == 0 && status.output.contains("leader"), "\(status.output)")

        // Elsewhere, without the recorded file: plain HTTP is refused, and so is HTTPS without the token.
        let endpoints = (0..<3).map { "127.0.0.1:\(ports[0] + $0)" }.joined(separator: ",")
        let bare = ["RAFT_LITE_HOME": scratch.path + "/nowhere"]
        let plain = try run(["kv", "get", "greeting", "--endpoints", endpoints], environment: bare)
        #expect(plain.status != 0 && plain.output.contains("HTTPS"), "\(plain.output)")
        let ca = scratch.path + "/data/certs/ca.pem"
        let noToken = try run(["kv", "get", "greeting", "--endpoints", endpoints, "--cacert", ca], environment: bare)
        #expect(noToken.status != 0 && noToken.output.contains("token"), "\(noToken.output)")
        let withBoth = try run(
            [
                "kv", "get", "greeting", "--endpoints", endpoints, "--cacert", ca, "--token-file",
                scratch.path + "/data/client-token",
            ], environment: bare)
        #expect(withBoth.status == 0 && withBoth.output.contains("hello"), "\(withBoth.output)")

        // A stranger with a certificate from another CA dials a node's peer port: refused and logged, and the
        // cluster goes on committing.
        let strangerFiles = scratch.path + "/stranger"
        _ = try DevelopmentCertificateFiles.write(
            nodes: [.init(name: "node1", host: "127.0.0.1")], clients: [], directory: strangerFiles,
            validity: .days(1), overwrite: false)
        var strangerTLS = TLSConfiguration.makeClientConfiguration()
        strangerTLS.certificateVerification = .none
        strangerTLS.certificateChain = try NIOSSLCertificate.fromPEMFile(strangerFiles + "/node1.pem").map {
            .certificate($0)
        }
        strangerTLS.privateKey = .privateKey(try NIOSSLPrivateKey(file: strangerFiles + "/node1-key.pem", format: .pem))
        let strangerContext = try NIOSSLContext(configuration: strangerTLS)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: strangerContext, serverHostname: nil))
                }
            }
            .connect(host: "127.0.0.1", port: ports[3]).get()
        try? await channel.writeAndFlush(ByteBuffer(bytes: Array("forged".utf8))).get()
        try? await channel.closeFuture.get()
        let log = scratch.path + "/data/node0.log"
        let refused = await eventually(30) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("TLS handshake failed")
        }
        #expect(refused, "node0 logged the refused handshake")
        let after = try run(["kv", "put", "greeting", "again"], environment: environment)
        #expect(after.status == 0, "the cluster still commits: \(after.output)")
        #expect(try run(["kv", "get", "greeting"], environment: environment).output.contains("again"))

        cluster.signal(SIGTERM)
        #expect(await cluster.waitForExit(seconds: 30) != nil, "the cluster and its nodes stopped")
    }

    /// `count` consecutive ports of 127.0.0.1 that were free a moment ago (`raft-lite cluster` takes base + K).
    static func consecutiveFreePorts(_ count: Int) -> [Int]? {
        for _ in 0..<50 {
            let base = Int.random(in: 20_000...40_000)
            let ports = Array(base..<base + count)
            if ports.allSatisfy(isFree) { return ports }
        }
        return nil
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
