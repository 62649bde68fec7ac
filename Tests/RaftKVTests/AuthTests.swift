import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessTesting
import RaftCore
import RaftKVClient
import RaftLite
import RaftTesting
import Testing

@testable import RaftKV

#if canImport(Glibc)
    import Glibc
#endif

/// One node (a cluster of one, so it leads at once) and its HTTP server on a free port of 127.0.0.1.
struct OneNodeServer {
    let node: RaftNode<KVStore>
    let server: KVServer
    let port: Int

    static func start(
        readTimeout: TimeAmount = .seconds(5), _ configure: (inout KVServer.Options) -> Void = { _ in }
    ) async throws -> OneNodeServer {
        let cluster = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "n0", host: "127.0.0.1", port: 1000)])
        var options = RaftNode<KVStore>.Options()
        options.tickInterval = .milliseconds(20)
        options.readTimeout = readTimeout
        options.logger.logLevel = .critical
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let node = try RaftNode(
            cluster: cluster, name: "n0", stateMachine: KVStore(), options: options, eventLoop: loop,
            transport: InMemoryTransport(
                id: ClusterConfiguration.nodeID(for: "n0"), network: InMemoryNetwork(), eventLoop: loop))
        try await node.start()
        _ = await eventually { await node.status().role == .leader }
        var serverOptions = KVServer.Options()
        serverOptions.port = 0
        configure(&serverOptions)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = KVServer(node: node, options: serverOptions, logger: logger) { Array("metrics 1\n".utf8) }
        try await server.start()
        let port = try #require(await server.boundPort)
        return OneNodeServer(node: node, server: server, port: port)
    }

    func client(token: String? = nil) -> KVClient {
        KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)], timeout: .seconds(10), token: token)
    }

    func stop() async {
        await server.drain(timeout: .seconds(1))
        await node.stop()
    }
}

enum TestTokens {
    static let writer = "rw-token-for-tests"
    static let reader = "ro-token-for-tests"
    static let table = TokenTable(entries: [
        .init(role: .readwrite, digest: TokenTable.digest(of: writer), name: "writer"),
        .init(role: .read, digest: TokenTable.digest(of: reader), name: "reader"),
    ])
}

/// Bearer tokens on the HTTP API, over real sockets.
@Suite(.serialized, .clusterSlot) struct AuthTests {
    /// Every request that would change something, and the reads, through `client`.
    static func everyKindOfRequest(_ client: KVClient) async throws -> [(String, HTTPResponse)] {
        [
            ("PUT", try await client.put("k", Array("evil".utf8))),
            ("CAS", try await client.put("k", Array("evil".utf8), prevValue: Array("before".utf8))),
            ("DELETE", try await client.delete("k")),
            ("POST /v1/sessions", try await client.registerSession()),
            ("POST /v1/snapshot", try await client.request(.POST, "/v1/snapshot")),
            ("POST /v1/members", try await client.addMember(name: "evil", ip: "127.0.0.1", port: 9, learner: true)),
            ("DELETE /v1/members/n0", try await client.removeMember("n0")),
            ("POST /v1/leader/transfer", try await client.transferLeadership()),
        ]
    }

    @Test func aRequestWithoutATokenOrWithAWrongOneIs401AndWritesNothing() async throws {
        let one = try await OneNodeServer.start { $0.tokens = TokenStore(TestTokens.table) }
        let good = one.client(token: TestTokens.writer)
        #expect(try await good.put("k", Array("before".utf8)).status == 200)
        let lastIndex = await one.node.status().lastIndex

        for (label, client) in [
            ("no token", one.client()), ("a wrong token", one.client(token: "not-a-token")),
            // The hash itself, as found in a tokens file, is not a token.
            ("the token's hash", one.client(token: TokenTable.hex(TokenTable.digest(of: TestTokens.writer)))),
        ] {
            for (request, response) in try await Self.everyKindOfRequest(client) + [
                ("GET", try await client.get("k")), ("GET /v1/members", try await client.members()),
            ] {
                #expect(response.status == 401, "\(request) with \(label): \(response.status) \(response.text)")
                #expect(KVErrorReply.decode(response)?.error == "unauthorized", "\(request) with \(label)")
                #expect(response.header("WWW-Authenticate")?.hasPrefix("Bearer") == true, "\(request) with \(label)")
            }
        }
        // A malformed header, or two of them.
        for headers in [
            [("Authorization", "Basic cnc6cnc=")], [("Authorization", "Bearer")],
            [("Authorization", "Bearer " + TestTokens.writer), ("Authorization", "Bearer " + TestTokens.writer)],
        ] {
            let response = try await one.client().request(.PUT, "/v1/kv/k", body: Array("evil".utf8), headers: headers)
            #expect(response.status == 401, "\(headers): \(response.status) \(response.text)")
        }

        // Nothing was proposed, and the value is the one written with the good token.
        #expect(await one.node.status().lastIndex == lastIndex)
        #expect(try await good.get("k").text == "before")
        await one.stop()
    }

    @Test func aReadOnlyTokenReadsAndCannotWrite() async throws {
        let one = try await OneNodeServer.start { $0.tokens = TokenStore(TestTokens.table) }
        let good = one.client(token: TestTokens.writer)
        #expect(try await good.put("k", Array("before".utf8)).status == 200)
        let lastIndex = await one.node.status().lastIndex

        let reader = one.client(token: TestTokens.reader)
        let read = try await reader.get("k")
        #expect(read.status == 200 && read.text == "before")
        #expect(try await reader.get("k", serializable: true).text == "before")
        #expect(try await reader.members().status == 200)
        #expect(try await reader.cluster().status == 200)
        for (request, response) in try await Self.everyKindOfRequest(reader) {
            #expect(response.status == 403, "\(request) with a read token: \(response.status) \(response.text)")
            #expect(KVErrorReply.decode(response)?.error == "forbidden", "\(request)")
            #expect(KVErrorReply.decode(response)?.message.contains("reader") == true, "names the token: \(request)")
        }
        #expect(await one.node.status().lastIndex == lastIndex)
        #expect(try await good.get("k").text == "before")
        await one.stop()
    }

    @Test func aReadWriteTokenDoesEverything() async throws {
        let one = try await OneNodeServer.start { $0.tokens = TokenStore(TestTokens.table) }
        let client = one.client(token: TestTokens.writer)
        #expect(try await client.put("k", Array("one".utf8)).status == 200)
        #expect(try await client.put("k", Array("two".utf8), prevValue: Array("one".utf8)).status == 200)
        #expect(try await client.get("k").text == "two")
        let session = try await KVSession.register(with: client)
        #expect(try await session.put("s", Array("once".utf8)).status == 200)
        #expect(try await client.delete("k").status == 200)
        #expect(try await client.get("k").status == 404)
        await one.stop()
    }

    @Test func aSessionWithARefusedTokenFailsAtOnceWithoutRetrying() async throws {
        let one = try await OneNodeServer.start { $0.tokens = TokenStore(TestTokens.table) }
        for token in ["wrong", TestTokens.reader] {
            do {
                _ = try await KVSession.register(with: one.client(token: token), maxAttempts: 1000)
                Issue.record("registered a session with \(token)")
            } catch let error as HTTPClientError {
                #expect(error.code == .unauthorized, "\(error)")
            }
        }
        await one.stop()
    }

    @Test func metricsAndStatusAreOpenByDefaultAndNeedATokenWhenAskedTo() async throws {
        let open = try await OneNodeServer.start { $0.tokens = TokenStore(TestTokens.table) }
        #expect(try await open.client().request(.GET, "/metrics").status == 200)
        #expect(try await open.client().request(.GET, "/v1/status").status == 200)
        // Open means those two GETs only.
        #expect(try await open.client().request(.POST, "/metrics").status == 401)
        await open.stop()

        let closed = try await OneNodeServer.start {
            $0.tokens = TokenStore(TestTokens.table)
            $0.authenticateMetrics = true
            $0.authenticateStatus = true
        }
        for path in ["/metrics", "/v1/status"] {
            let refused = try await closed.client().request(.GET, path)
            #expect(refused.status == 401, "\(path): \(refused.text)")
            #expect(try await closed.client(token: "wrong").request(.GET, path).status == 401)
            #expect(try await closed.client(token: TestTokens.reader).request(.GET, path).status == 200, "\(path)")
        }
        await closed.stop()
    }

    @Test func withoutATokensFileEveryRequestIsServedAsBefore() async throws {
        let one = try await OneNodeServer.start()
        #expect(try await one.client().put("k", Array("v".utf8)).status == 200)
        #expect(try await one.client(token: "anything").get("k").text == "v")
        await one.stop()
    }

    @Test func replacingTheTokensTakesEffectOnTheNextRequest() async throws {
        let store = TokenStore(TestTokens.table)
        let one = try await OneNodeServer.start { $0.tokens = store }
        #expect(try await one.client(token: TestTokens.writer).put("k", Array("v".utf8)).status == 200)
        store.replace(
            with: TokenTable(entries: [.init(role: .readwrite, digest: TokenTable.digest(of: "new"), name: "new")]))
        #expect(try await one.client(token: TestTokens.writer).get("k").status == 401)
        #expect(try await one.client(token: "new").get("k").text == "v")
        await one.stop()
    }
}

/// The tokens file: parsing, hashing, comparing.
@Suite struct TokenFileTests {
    static let hashA = TokenTable.hex(TokenTable.digest(of: "a"))
    static let hashB = TokenTable.hex(TokenTable.digest(of: "b"))

    @Test func aFileListsRolesHashesAndNamesWithCommentsAndBlankLines() throws {
        let text = """
            # tokens for the test cluster

            readwrite \(Self.hashA) deploy bot
              read\t\(Self.hashB.uppercased())   # not a comment: part of the name
            """
        let table = try TokenTable(parsing: text, path: "t")
        #expect(table.entries.count == 2)
        #expect(table.entries[0] == .init(role: .readwrite, digest: TokenTable.digest(of: "a"), name: "deploy bot"))
        #expect(table.entries[1].role == .read)
        #expect(table.entry(for: Array("a".utf8))?.name == "deploy bot")
        #expect(table.entry(for: Array("b".utf8))?.role == .read)
        #expect(table.entry(for: Array("c".utf8)) == nil)
        // The file holds hashes: presenting the hash is presenting another token.
        #expect(table.entry(for: Array(Self.hashA.utf8)) == nil)
        // A line written for an entry parses back to it.
        #expect(try TokenTable(parsing: table.entries[0].line, path: "t").entries == [table.entries[0]])
    }

    @Test func aBadLineIsAnErrorThatNamesIt() {
        let cases: [(String, Int, String)] = [
            ("# ok\nwrite \(Self.hashA)", 2, "unknown role"),
            ("readwrite", 1, "ROLE SHA256-HEX"),
            ("read \(Self.hashA.dropLast())", 1, "64 hexadecimal digits"),
            ("read \(Self.hashA.dropLast())z", 1, "64 hexadecimal digits"),
            ("read my-plain-token", 1, "64 hexadecimal digits"),
            ("read \(Self.hashA)\n\nreadwrite \(Self.hashA) again", 3, "line 1 already"),
            ("# nothing\n\n", 0, "lists no token"),
            ("", 0, "lists no token"),
        ]
        for (text, line, reason) in cases {
            do {
                _ = try TokenTable(parsing: text, path: "tokens.txt")
                Issue.record("accepted \(text.debugDescription)")
            } catch {
                #expect(error.line == line, "\(text.debugDescription): \(error)")
                #expect(error.description.contains(reason), "\(text.debugDescription): \(error)")
                #expect(error.description.contains("tokens.txt"))
            }
        }
    }

    @Test func aFileThatCannotBeReadIsAnErrorNamingIt() {
        #expect(throws: TokenFileError.self) { try TokenTable(contentsOfFile: "/nonexistent/tokens") }
    }

    @Test func reloadingABadFileKeepsTheTokensInEffect() throws {
        let scratch = ScratchDirectory("tokens")
        let path = scratch.path + "/tokens"
        try "readwrite \(Self.hashA)\n".write(toFile: path, atomically: true, encoding: .utf8)
        let store = try TokenStore(contentsOfFile: path)
        try "read \(Self.hashB)\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try store.reload() == 1)
        #expect(store.current.entry(for: Array("b".utf8))?.role == .read)
        #expect(store.current.entry(for: Array("a".utf8)) == nil)
        try "read nothex\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: TokenFileError.self) { try store.reload() }
        #expect(store.current.entry(for: Array("b".utf8))?.role == .read)
    }

    @Test func digestsAreComparedByValue() {
        #expect(TokenTable.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!TokenTable.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!TokenTable.constantTimeEqual([9, 2, 3], [1, 2, 3]))
        #expect(!TokenTable.constantTimeEqual([1, 2], [1, 2, 3]))
        #expect(TokenTable.digest(of: "a").count == 32)
        #expect(
            TokenTable.hex(TokenTable.digest(of: "abc"))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func generatedTokensAreLongAndDifferent() {
        let tokens = (0..<100).map { _ in TokenTable.generate() }
        #expect(Set(tokens).count == 100)
        #expect(
            tokens.allSatisfy {
                $0.count == 46 && $0.hasPrefix("rl_") && !$0.contains(" ") && !$0.contains("/") && !$0.contains("+")
            })
    }

    @Test func theBearerSchemeIsReadAsRFC6750SaysAndNothingElse() {
        func token(_ value: String) -> String? { KVRouter.bearerToken(value).map { String(Substring($0)) } }
        #expect(token("Bearer abc") == "abc")
        #expect(token("bearer abc") == "abc")
        #expect(token("BEARER  abc ") == "abc")
        #expect(token("Bearer") == nil)
        #expect(token("Bearer ") == nil)
        #expect(token("Basic abc") == nil)
        #expect(token("Bearer a b") == nil)
        #expect(token("abc") == nil)
    }
}
