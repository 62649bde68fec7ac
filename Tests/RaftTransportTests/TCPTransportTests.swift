import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftTransport
import RaftWire
import Testing

/// Collects what a transport delivers.
final class Inbox: Sendable {
    private let messages = NIOLockedValueBox<[Message]>([])
    func append(_ m: Message) { messages.withLockedValue { $0.append(m) } }
    var all: [Message] { messages.withLockedValue { $0 } }
}

func eventually(_ limit: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return await condition()
}

/// Two transports, "a" and "b", on loopback, each delivering into an inbox.
struct Pair {
    let a: TCPTransport
    let b: TCPTransport
    let inboxA: Inbox
    let inboxB: Inbox
    let portB: Int
    static let idA = NodeID(1)
    static let idB = NodeID(2)

    static func make(cluster: String = "test", options: TCPTransport.Options = .init()) async throws -> Pair {
        let group = MultiThreadedEventLoopGroup.singleton
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // b listens on a free port from below the ephemeral range (one the kernel chose could be taken by another
        // connection's local port while b is restarted on it); a then learns it.
        let b = TCPTransport(
            localID: idB, localName: "b", clusterID: cluster, listenHost: "127.0.0.1",
            listenPort: try FreePorts.reserve(1)[0],
            peers: [], eventLoop: group.next(), options: options, logger: logger)
        let inboxB = Inbox()
        try await b.start { inboxB.append($0) }
        let portB = try #require(await b.boundPort)
        let a = TCPTransport(
            localID: idA, localName: "a", clusterID: cluster, listenHost: "127.0.0.1", listenPort: 0,
            peers: [TCPTransport.Peer(id: idB, name: "b", host: "127.0.0.1", port: portB)],
            eventLoop: group.next(), options: options, logger: logger)
        let inboxA = Inbox()
        try await a.start { inboxA.append($0) }
        // b accepts a's connections only if it knows a: rebuild b with a as a peer.
        await b.shutdown()
        let b2 = TCPTransport(
            localID: idB, localName: "b", clusterID: cluster, listenHost: "127.0.0.1", listenPort: portB,
            peers: [TCPTransport.Peer(id: idA, name: "a", host: "127.0.0.1", port: try #require(await a.boundPort))],
            eventLoop: group.next(), options: options, logger: logger)
        try await b2.start { inboxB.append($0) }
        return Pair(a: a, b: b2, inboxA: inboxA, inboxB: inboxB, portB: portB)
    }

    func send(_ messages: [Message], from transport: TCPTransport) async throws {
        try await transport.eventLoop.submit {
            for m in messages { transport.send(m) }
            transport.flush()
        }.get()
    }

    func shutdown() async {
        await a.shutdown()
        await b.shutdown()
    }
}

/// A raw client that connects, writes bytes, and reports whether the server closed the connection.
func strangerIsDisconnected(port: Int, sending bytes: ByteBuffer) async throws -> Bool {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get()
    let closed = NIOLockedValueBox(false)
    channel.closeFuture.whenComplete { _ in closed.withLockedValue { $0 = true } }
    // On a loaded machine the node may have closed the connection before these bytes go out: the write then fails,
    // and the stranger was disconnected all the same.
    try? await channel.writeAndFlush(bytes)
    let result = await eventually(.seconds(5)) { closed.withLockedValue { $0 } }
    try? await channel.close()
    return result
}

@Suite struct TCPTransportTests {
    static func heartbeat(_ k: UInt64) -> Message {
        Message(from: Pair.idA, to: Pair.idB, term: Term(k), kind: .heartbeat(Heartbeat(commit: LogIndex(k))))
    }

    @Test func messagesArriveInOrderAtTheNodeTheyAreFor() async throws {
        let pair = try await Pair.make()
        // Until the link is up, messages may be dropped (a transport is best-effort); wait for it.
        let warmUp = Message(from: Pair.idA, to: Pair.idB, term: Term(0), kind: .heartbeatResponse(HeartbeatResponse()))
        let linked = await eventually {
            try? await pair.send([warmUp], from: pair.a)
            return !pair.inboxB.all.isEmpty
        }
        try #require(linked)
        let messages = (1...1000).map(Self.heartbeat)
        // Sent in batches: each batch becomes one write.
        for batch in stride(from: 0, to: messages.count, by: 100) {
            try await pair.send(Array(messages[batch..<batch + 100]), from: pair.a)
        }
        // The warm-up may have been sent more than once, and a late copy may arrive among these: leave it out.
        let heartbeats = { pair.inboxB.all.filter { if case .heartbeat = $0.kind { true } else { false } } }
        #expect(await eventually { heartbeats().count == 1000 })
        #expect(heartbeats() == messages)
        #expect(pair.inboxA.all.isEmpty, "nothing is broadcast")
        // A message for a node the transport does not know goes nowhere.
        try await pair.send(
            [Message(from: Pair.idA, to: NodeID(77), term: Term(1), kind: .heartbeatResponse(HeartbeatResponse()))],
            from: pair.a)
        await pair.shutdown()
    }

    @Test func garbageBytesOversizedFramesAndStrangersAreDisconnected() async throws {
        var options = TCPTransport.Options()
        options.maxFrameSize = 4096
        let pair = try await Pair.make(options: options)
        var garbage = ByteBuffer()
        garbage.writeBytes((0..<64).map { UInt8(truncatingIfNeeded: $0 &* 97) })
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: garbage))

        var oversized = ByteBuffer()
        oversized.writeMultipleIntegers(UInt32(1 << 20), UInt8(1), UInt8(1), UInt32(0))
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: oversized))

        var otherCluster = ByteBuffer()
        Hello(clusterID: "another cluster", sender: Pair.idA, senderName: "a", receiver: Pair.idB).write(
            into: &otherCluster)
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: otherCluster))

        // A node of the cluster that is not a peer (yet) is heard since membership changes (issue 13; see
        // IncomingConnectionTests); one that claims a peer's id under another name is not.
        var impostor = ByteBuffer()
        Hello(clusterID: "test", sender: Pair.idA, senderName: "mallory", receiver: Pair.idB).write(into: &impostor)
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: impostor))

        // A known peer that sends a message in someone else's name is cut off too.
        var spoof = ByteBuffer()
        Hello(clusterID: "test", sender: Pair.idA, senderName: "a", receiver: Pair.idB).write(into: &spoof)
        Frame.write(
            Message(from: NodeID(3), to: Pair.idB, term: Term(1), kind: .heartbeatResponse(HeartbeatResponse())),
            into: &spoof)
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: spoof))

        // Meanwhile the real peer's messages still arrive.
        try await pair.send([Self.heartbeat(1), Self.heartbeat(2)], from: pair.a)
        #expect(await eventually { pair.inboxB.all.count == 2 })
        #expect(!pair.inboxB.all.contains { $0.from == NodeID(3) })
        await pair.shutdown()
    }

    /// A flood of connections to the peer port from one address gets its share, no more; the real peer, from
    /// another address, is still heard. (Without the per-address check the flood holds all 20 and the count fails.)
    @Test func aConnectionFloodOnThePeerPortDoesNotShutOutThePeers() async throws {
        var options = TCPTransport.Options()
        options.maxInboundConnectionsPerAddress = 4
        options.helloTimeoutMilliseconds = 60_000
        let pair = try await Pair.make(options: options)
        var flood: [any Channel] = []
        for _ in 0..<20 {
            guard
                let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .bind(to: try SocketAddress(ipAddress: "127.0.0.2", port: 0))
                    .connect(host: "127.0.0.1", port: pair.portB).get()
            else { continue }
            flood.append(channel)
        }
        try #require(flood.count == 20, "cannot connect from 127.0.0.2")
        #expect(await eventually { await pair.b.inboundConnectionCounts().refused >= 16 })
        let counts = await pair.b.inboundConnectionCounts()
        #expect(counts.refused == 16, "\(counts)")
        // Meanwhile the real peer's messages arrive.
        let heard = await eventually {
            try? await pair.send([Self.heartbeat(1)], from: pair.a)
            return !pair.inboxB.all.isEmpty
        }
        #expect(heard)
        for channel in flood { try? await channel.close() }
        await pair.shutdown()
    }

    @Test func aConnectionThatNeverIntroducesItselfIsClosed() async throws {
        var options = TCPTransport.Options()
        options.helloTimeoutMilliseconds = 200
        let pair = try await Pair.make(options: options)
        #expect(try await strangerIsDisconnected(port: pair.portB, sending: ByteBuffer()))
        await pair.shutdown()
    }

    @Test func aDeadPeerCostsBoundedMemoryAndTheLinkRecoversWhenItReturns() async throws {
        var options = TCPTransport.Options()
        options.maxQueuedBytesPerPeer = 256 << 10
        options.reconnectMaxDelayMilliseconds = 100
        let pair = try await Pair.make(options: options)
        await pair.b.shutdown()  // the peer dies
        let big = Message(
            from: Pair.idA, to: Pair.idB, term: Term(1), kind: .propose([[UInt8](repeating: 7, count: 4096)]))
        for _ in 0..<200 {
            try await pair.send(Array(repeating: big, count: 50), from: pair.a)  // 40 MB offered in all
        }
        let stats = try #require(await pair.a.statistics()[Pair.idB])
        #expect(stats.queuedBytes <= options.maxQueuedBytesPerPeer + 8192)
        #expect(stats.messagesDropped > 0)

        // The peer comes back on the same port; the link reconnects by itself.
        let inbox = Inbox()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let reborn = TCPTransport(
            localID: Pair.idB, localName: "b", clusterID: "test", listenHost: "127.0.0.1", listenPort: pair.portB,
            peers: [
                TCPTransport.Peer(
                    id: Pair.idA, name: "a", host: "127.0.0.1", port: try #require(await pair.a.boundPort))
            ],
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), options: options, logger: logger)
        try await reborn.start { inbox.append($0) }
        let arrived = await eventually {
            try? await pair.send([Self.heartbeat(5)], from: pair.a)
            return !inbox.all.isEmpty
        }
        #expect(arrived)
        await reborn.shutdown()
        await pair.a.shutdown()
    }
}

/// `TransportError`: its code, equality and the description of before.
@Suite struct TransportErrorTests {
    @Test func stoppedIsDescribedAsBefore() {
        #expect(TransportError.stopped.description == "the transport was shut down while starting")
        #expect(TransportError.stopped.code == .stopped)
        #expect(TransportError.stopped == .stopped)
        #expect(TransportError.Code.stopped.description == "stopped")
    }
}
