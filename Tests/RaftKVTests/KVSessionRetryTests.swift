import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftKVClient
import Testing

/// A loopback HTTP server that answers from a script: registration gives client id 5; each write gets the next
/// status of `writeStatuses` (200 once they run out). It records every write's session headers.
private final class ScriptedServer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let seen = NIOLockedValueBox<[(String, String)]>([])
    let statuses: NIOLockedValueBox<[Int]>
    private var head: HTTPRequestHead?

    init(writeStatuses: [Int]) { statuses = NIOLockedValueBox(writeStatuses) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            var status = 200
            var body = #"{"index":9}"#
            if head.uri == "/v1/sessions" {
                body = #"{"client_id":5}"#
            } else {
                seen.withLockedValue {
                    $0.append((head.headers["Raft-Client-Id"].first ?? "", head.headers["Raft-Sequence"].first ?? ""))
                }
                status = statuses.withLockedValue { $0.isEmpty ? 200 : $0.removeFirst() }
                if status != 200 { body = #"{"error":"unknown_outcome","message":"scripted"}"# }
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            headers.add(name: "Content-Type", value: "application/json")
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

@Suite struct KVSessionRetryTests {
    @Test func anUnknownOutcomeIsSentAgainWithTheSameSequenceAndTheNextWriteMovesOn() async throws {
        let handler = ScriptedServer(writeStatuses: [504, 503, 504])
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(channel.localAddress?.port)
        let client = KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)], timeout: .seconds(5))
        let session = try await KVSession.register(with: client, retryDelay: .milliseconds(1))
        #expect(session.clientID == 5)
        let first = try await session.put("k", [1])
        #expect(first.status == 200)
        #expect(await session.retries == 3)
        let second = try await session.delete("k")
        #expect(second.status == 200)
        let sent = handler.seen.withLockedValue { $0 }
        #expect(sent.map(\.0) == Array(repeating: "5", count: 5))
        #expect(sent.map(\.1) == ["1", "1", "1", "1", "2"], "the retries carry the first write's sequence")
        // A bound on the attempts: the last unknown answer is returned.
        handler.statuses.withLockedValue { $0 = [504, 504, 504] }
        await session.setMaxAttempts(2)
        let gaveUp = try await session.put("k", [2])
        #expect(gaveUp.status == 504)
        #expect(handler.seen.withLockedValue { $0.suffix(2).map(\.1) } == ["3", "3"])
        try await channel.close()
    }
}
