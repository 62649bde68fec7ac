import Foundation
import ProcessTesting
import RaftKV
import RaftKVClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `raft-lite serve --tokens-file`, `raft-lite tokens`, and the client commands' `--token`, as processes.
@Suite(.serialized, .clusterSlot) struct AuthProcessTests {
    /// Runs `raft-lite ARGUMENTS` to its end: its exit status (nil: still running after 60 s) and its output lines.
    static func run(_ arguments: [String]) async throws -> (code: Int32?, lines: [String]) {
        let child = try ChildProcess(raftLiteExecutable(), arguments, label: arguments.first ?? "raft-lite")
        let code = await child.waitForExit(seconds: 60)
        _ = await eventually(2) { !child.lines.isEmpty }
        // The last lines may still be on their way through the pipe.
        try? await Task.sleep(for: .milliseconds(100))
        return (code, child.lines)
    }

    /// Makes a token with `raft-lite tokens add` and returns it (the line of the output that is one).
    static func addToken(_ file: String, role: String, name: String) async throws -> String {
        let added = try await run(["tokens", "add", "--tokens-file", file, "--role", role, "--name", name])
        #expect(added.code == 0, "\(added.lines)")
        return try #require(added.lines.first { $0.hasPrefix("rl_") && !$0.contains(" ") }, "\(added.lines)")
    }

    @Test func theCommandsSayClearlyWhenTheirTokenIsRefusedAndTheServerWritesNothing() async throws {
        let scratch = ScratchDirectory("auth")
        let tokensFile = scratch.path + "/tokens"
        let writer = try await Self.addToken(tokensFile, role: "readwrite", name: "writer")
        let reader = try await Self.addToken(tokensFile, role: "read", name: "reader")
        // The file is private, and holds hashes, never the tokens.
        let mode = try FileManager.default.attributesOfItem(atPath: tokensFile)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let text = try String(contentsOfFile: tokensFile, encoding: .utf8)
        #expect(!text.contains(writer) && !text.contains(reader))
        #expect(try TokenTable(parsing: text, path: tokensFile).entries.map(\.name) == ["writer", "reader"])
        let listed = try await Self.run(["tokens", "list", "--tokens-file", tokensFile])
        #expect(listed.code == 0 && listed.lines.contains { $0.hasPrefix("read ") }, "\(listed.lines)")
        let writerFile = scratch.path + "/writer-token"
        try (writer + "\n").write(toFile: writerFile, atomically: true, encoding: .utf8)

        let cluster = try ServerCluster(nodes: 1, extraArguments: ["--tokens-file", tokensFile, "--auth-metrics"])
        defer { cluster.stopAll() }
        #expect(await KVServerTests.waitForLeader(cluster) != nil)
        let endpoints = ["--endpoints", cluster.endpoints]

        let put = try await Self.run(["kv", "put", "k", "v", "--token-file", writerFile] + endpoints)
        #expect(put.code == 0, "\(put.lines)")
        for (label, credentials, expected) in [
            ("no token", [], "unauthorized"), ("a wrong token", ["--token", "wrong"], "unauthorized"),
            ("a read token", ["--token", reader], "forbidden"),
        ] {
            for write in [["put", "k", "evil"], ["put", "k", "evil", "--no-session"], ["delete", "k"]] {
                let refused = try await Self.run(["kv"] + write + credentials + endpoints)
                #expect(refused.code == 2, "\(write) with \(label): \(refused.lines)")
                #expect(
                    refused.lines.contains { $0.hasPrefix("error: ") && $0.contains(expected) },
                    "\(write) with \(label): \(refused.lines)")
            }
        }
        let unauthorized = try await Self.run(["kv", "get", "k"] + endpoints)
        #expect(unauthorized.lines.contains { $0.contains("--token") }, "says how to give one: \(unauthorized.lines)")
        let read = try await Self.run(["kv", "get", "k", "--token", reader] + endpoints)
        #expect(read.code == 0 && read.lines.contains("v"), "\(read.lines)")

        // The load generator stops at once, and says why.
        for (credentials, expected) in [(["--token", "wrong"], "unauthorized"), (["--token", reader], "forbidden")] {
            let bench = try await Self.run(
                ["bench", "--seconds", "30", "--warmup", "0", "--clients", "2"] + credentials + endpoints)
            #expect(bench.code == 2, "\(bench.lines)")
            #expect(bench.lines.contains { $0.hasPrefix("error: ") && $0.contains(expected) }, "\(bench.lines)")
        }

        // /metrics needs a token (--auth-metrics); /v1/status is open.
        let port = cluster.httpPorts[0]
        let anonymous = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)])
        #expect(try await anonymous.request(.GET, "/metrics").status == 401)
        #expect(try await anonymous.request(.GET, "/v1/status").status == 200)
        var withReader = anonymous
        withReader.token = reader
        #expect(try await withReader.request(.GET, "/metrics").status == 200)
        #expect(try await withReader.get("k").text == "v", "nothing refused was written")

        // A token added while the node runs is accepted after SIGHUP.
        let late = try await Self.addToken(tokensFile, role: "read", name: "late")
        var withLate = anonymous
        withLate.token = late
        #expect(try await withLate.get("k").status == 401)
        cluster.processes["node0"]?.signal(SIGHUP)
        #expect(await eventually(30) { (try? await withLate.get("k").text) == "v" })
        #expect(cluster.processes["node0"]?.isRunning == true, "SIGHUP does not stop the node")
    }

    /// A node joins a cluster that requires tokens with `--join-token-file`; without a token it is refused, and
    /// says so, rather than asking again and again.
    @Test func aNodeJoinsATokenProtectedClusterWithItsJoinToken() async throws {
        let scratch = ScratchDirectory("auth-join")
        let tokensFile = scratch.path + "/tokens"
        let writer = try await Self.addToken(tokensFile, role: "readwrite", name: "writer")
        let writerFile = scratch.path + "/writer-token"
        try (writer + "\n").write(toFile: writerFile, atomically: true, encoding: .utf8)
        let cluster = try ServerCluster(nodes: 1, extraArguments: ["--tokens-file", tokensFile])
        defer { cluster.stopAll() }
        #expect(await KVServerTests.waitForLeader(cluster) != nil)
        let ports = try ServerCluster.freePorts(2)
        func join(_ extra: [String], data: String) throws -> ChildProcess {
            try MembershipProcessTests.serve(
                [
                    "--join", "http://127.0.0.1:\(cluster.httpPorts[0])", "--name", "node1", "--port", "\(ports[0])",
                    "--http-port", "\(ports[1])", "--data-dir", scratch.path + "/" + data, "--learner",
                    "--tokens-file", tokensFile,
                ] + extra, label: "node1")
        }
        let refused = try join([], data: "refused")
        #expect(
            await refused.waitForExit(seconds: 60).map { $0 != 0 } == true, "\(MembershipProcessTests.tail(refused))")
        #expect(
            await refused.waitForLine(seconds: 10) { $0.contains("401") } != nil,
            "\(MembershipProcessTests.tail(refused))")

        let joiner = try join(["--join-token-file", writerFile], data: "node1")
        defer { joiner.kill9() }
        let joined = await joiner.waitForLine(seconds: 60) { $0.contains("joined the cluster") }
        #expect(joined != nil, "\(MembershipProcessTests.tail(joiner))")
        let members = try await KVClient(
            endpoints: [Endpoint(host: "127.0.0.1", port: cluster.httpPorts[0])], token: writer
        ).members()
        #expect(
            MembershipReport.decode(members)?.members.map(\.name).sorted() == ["node0", "node1"], "\(members.text)")
    }

    @Test func aBadTokensFileStopsServeAtStartNamingItsLine() async throws {
        let scratch = ScratchDirectory("auth")
        let tokensFile = scratch.path + "/tokens"
        let hash = String(repeating: "ab", count: 32)
        try "# tokens\nreadwrite \(hash) ok\nadmin \(hash) bad\n".write(
            toFile: tokensFile, atomically: true, encoding: .utf8)
        let cluster = try ServerCluster(nodes: 1, extraArguments: ["--tokens-file", tokensFile])
        defer { cluster.stopAll() }
        let child = try #require(cluster.processes["node0"])
        let code = await child.waitForExit(seconds: 60)
        #expect(code != nil && code != 0)
        let line = await child.waitForLine(seconds: 5) { $0.contains("line 3") }
        #expect(line?.contains("unknown role") == true, "\(child.lines)")
    }
}
