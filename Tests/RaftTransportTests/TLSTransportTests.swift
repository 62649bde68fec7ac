import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftTLS
import RaftTransport
import RaftWire
import Testing

/// Keeps the warnings (and worse) logged through it.
final class LogRecorder: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])

    func record(_ line: String) { lines.withLockedValue { $0.append(line) } }
    var all: [String] { lines.withLockedValue { $0 } }
    func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }

    func logger(_ label: String) -> Logger {
        var logger = Logger(label: label) { _ in RecordingLogHandler(recorder: self) }
        logger.logLevel = .warning
        return logger
    }
}

struct RecordingLogHandler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        recorder.record("\(event.level) \(event.message) \(fields)")
    }
}

/// A CA, a second (untrusted) CA, and certificates written to a temporary directory.
struct CertificateFixture {
    let directory: String
    let ca: DevelopmentCA
    let otherCA: DevelopmentCA

    init() throws {
        directory = NSTemporaryDirectory() + "raftlite-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try DevelopmentCA.generate()
        otherCA = try DevelopmentCA.generate(commonName: "someone else's CA")
        try PEMFile.write(try ca.issued.certificatePEM(), to: path("ca.pem"), privateKey: false, overwrite: false)
        try PEMFile.write(
            try otherCA.issued.certificatePEM(), to: path("other-ca.pem"), privateKey: false, overwrite: false)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Writes `file`.pem and `file`-key.pem for a node certificate named `name`, and returns the files for a
    /// transport (trusting the good CA).
    @discardableResult
    func node(
        _ name: String, file: String? = nil, issuer: DevelopmentCA? = nil,
        validity: CertificateValidity = .days(1), overwrite: Bool = false
    ) throws -> TLSFiles {
        let file = file ?? name
        let issued = try (issuer ?? ca).issueNode(name: name, validity: validity)
        try PEMFile.write(try issued.certificatePEM(), to: path("\(file).pem"), privateKey: false, overwrite: overwrite)
        try PEMFile.write(
            try issued.privateKeyPEM(), to: path("\(file)-key.pem"), privateKey: true, overwrite: overwrite)
        return TLSFiles(
            certificateChain: path("\(file).pem"), privateKey: path("\(file)-key.pem"), trustRoots: path("ca.pem"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// TCP transports with mutual TLS on loopback, each delivering into its own inbox.
final class TLSCluster {
    struct Member {
        let transport: TCPTransport
        let inbox: Inbox
        let tls: PeerTLS?
        let log: LogRecorder
    }

    var members: [NodeID: Member] = [:]

    /// Starts a transport; peers are set with `link`, once every member's port is known.
    @discardableResult
    func start(id: NodeID, name: String, tls: PeerTLS?, port: Int = 0) async throws -> Member {
        let log = LogRecorder()
        var options = TCPTransport.Options()
        options.reconnectMaxDelayMilliseconds = 200
        let transport = TCPTransport(
            localID: id, localName: name, clusterID: "tls-test", listenHost: "127.0.0.1", listenPort: port,
            peers: [], eventLoop: MultiThreadedEventLoopGroup.singleton.next(), options: options, tls: tls,
            logger: log.logger(name))
        let inbox = Inbox()
        try await transport.start { inbox.append($0) }
        let member = Member(transport: transport, inbox: inbox, tls: tls, log: log)
        members[id] = member
        return member
    }

    /// Tells every member about every other (under the name each one is known by in `names`).
    func link(names: [NodeID: String], addresses: [NodeID: NodeID] = [:]) async throws {
        var ports: [NodeID: Int] = [:]
        for (id, member) in members { ports[id] = await member.transport.boundPort }
        for (id, member) in members {
            let peers = try names.keys.filter { $0 != id }.map { peer in
                // `addresses` sends a peer's connections to another member's port (an impostor's).
                TCPTransport.Peer(
                    id: peer, name: names[peer] ?? "", host: "127.0.0.1",
                    port: try #require(ports[addresses[peer] ?? peer]))
            }
            try await member.transport.eventLoop.submit { member.transport.setPeers(peers) }.get()
        }
    }

    func send(from: NodeID, to: NodeID, _ k: UInt64 = 1) async throws {
        let transport = try #require(members[from]).transport
        let message = Message(from: from, to: to, term: Term(k), kind: .heartbeat(Heartbeat(commit: LogIndex(k))))
        try await transport.eventLoop.submit {
            transport.send(message)
            transport.flush()
        }.get()
    }

    /// Whether a message from `from` reaches `to` (sent again until it does, or 10 s pass).
    func delivers(from: NodeID, to: NodeID) async throws -> Bool {
        let inbox = try #require(members[to]).inbox
        let before = inbox.all.filter { $0.from == from }.count
        return await eventually {
            try? await self.send(from: from, to: to)
            return inbox.all.filter { $0.from == from }.count > before
        }
    }

    func shutdown() async {
        for member in members.values { await member.transport.shutdown() }
    }
}

@Suite struct TLSTransportTests {
    static let a = NodeID(1)
    static let b = NodeID(2)
    static let c = NodeID(3)
    static let names = [a: "a", b: "b", c: "c"]

    /// a and b with good certificates, started and linked, and the fixture.
    static func goodPair(_ fixture: CertificateFixture) async throws -> TLSCluster {
        let cluster = TLSCluster()
        try await cluster.start(id: a, name: "a", tls: PeerTLS(files: fixture.node("a")))
        try await cluster.start(id: b, name: "b", tls: PeerTLS(files: fixture.node("b")))
        return cluster
    }

    @Test func peersWithGoodCertificatesExchangeMessages() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        let cluster = try await Self.goodPair(fixture)
        try await cluster.start(id: Self.c, name: "c", tls: PeerTLS(files: fixture.node("c")))
        try await cluster.link(names: Self.names)
        for from in [Self.a, Self.b, Self.c] {
            for to in [Self.a, Self.b, Self.c] where to != from {
                #expect(try await cluster.delivers(from: from, to: to), "\(from) -> \(to)")
            }
        }
        // It is TLS: a plain-TCP hello is not understood.
        var hello = ByteBuffer()
        Hello(clusterID: "tls-test", sender: Self.c, senderName: "c", receiver: Self.a).write(into: &hello)
        let portA = try #require(await cluster.members[Self.a]?.transport.boundPort)
        #expect(try await strangerIsDisconnected(port: portA, sending: hello))
        await cluster.shutdown()
    }

    /// Starts `c` with `tls` next to a good pair, checks that nothing from c reaches a or b and that a (the one c
    /// dials first) logs a warning containing `logged`, and that a and b keep talking.
    func refuses(_ fixture: CertificateFixture, c tls: PeerTLS, name: String = "c", logged: String) async throws {
        let cluster = try await Self.goodPair(fixture)
        try await cluster.start(id: Self.c, name: name, tls: tls)
        try await cluster.link(names: Self.names)
        #expect(try await cluster.delivers(from: Self.a, to: Self.b))
        #expect(try await cluster.delivers(from: Self.b, to: Self.a))
        let log = try #require(cluster.members[Self.a]).log
        let noticed = await eventually {
            try? await cluster.send(from: Self.c, to: Self.a)
            try? await cluster.send(from: Self.c, to: Self.b)
            return log.contains(logged)
        }
        #expect(noticed, "a logged: \(log.all)")
        #expect(log.all.contains { $0.hasPrefix("warning") && $0.contains(logged) })
        // The good pair is still at it.
        #expect(try await cluster.delivers(from: Self.a, to: Self.b))
        #expect(try await cluster.delivers(from: Self.b, to: Self.a))
        for id in [Self.a, Self.b] {
            let fromC = try #require(cluster.members[id]).inbox.all.filter { $0.from == Self.c }
            #expect(fromC.isEmpty, "\(id) took \(fromC.count) messages from c")
        }
        await cluster.shutdown()
    }

    @Test func aPeerWithACertificateFromAnotherCAIsRefusedAndLogged() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        // c trusts the cluster's CA (so it gets as far as showing its own certificate), but its certificate is
        // signed by another.
        let files = try fixture.node("c", issuer: fixture.otherCA)
        try await refuses(fixture, c: PeerTLS(files: files), logged: "TLS handshake failed")
    }

    @Test func aPeerWithAnExpiredCertificateIsRefusedAndLogged() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        let now = Date()
        let expired = CertificateValidity(notBefore: now - 2 * 86_400, notAfter: now - 86_400)
        let files = try fixture.node("c", validity: expired)
        try await refuses(fixture, c: PeerTLS(files: files), logged: "TLS handshake failed")
    }

    @Test func aPeerClaimingAnotherNodesNameIsRefusedAndLogged() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        // c holds a valid certificate, b's: its hello says "c".
        let files = try fixture.node("b", file: "stolen-b")
        try await refuses(
            fixture, c: PeerTLS(files: files), logged: "hello from \"c\", but the peer's certificate is for \"b\"")
    }

    @Test func aNodeDialingAsAnotherWithThatNodesNameButItsOwnCertificateIsRefused() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        let cluster = try await Self.goodPair(fixture)
        try await cluster.link(names: [Self.a: "a", Self.b: "b"])
        let b = try #require(cluster.members[Self.b])
        // A second "a": a's id and name, and a valid certificate — c's.
        let log = LogRecorder()
        let impostor = TCPTransport(
            localID: Self.a, localName: "a", clusterID: "tls-test", listenHost: "127.0.0.1", listenPort: 0,
            peers: [
                TCPTransport.Peer(
                    id: Self.b, name: "b", host: "127.0.0.1", port: try #require(await b.transport.boundPort))
            ],
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), tls: try PeerTLS(files: fixture.node("c")),
            logger: log.logger("impostor"))
        try await impostor.start { _ in }
        // Its messages carry a term of their own, to tell them from the real a's.
        let forged = Message(
            from: Self.a, to: Self.b, term: Term(999), kind: .heartbeat(Heartbeat(commit: LogIndex(1))))
        let noticed = await eventually {
            try? await impostor.eventLoop.submit {
                impostor.send(forged)
                impostor.flush()
            }.get()
            return b.log.contains("hello from \"a\", but the peer's certificate is for \"c\", not \"a\"")
        }
        #expect(noticed, "b logged: \(b.log.all)")
        #expect(try await cluster.delivers(from: Self.a, to: Self.b))
        #expect(try await cluster.delivers(from: Self.b, to: Self.a))
        #expect(b.inbox.all.allSatisfy { $0.term != Term(999) }, "b took a forged message")
        await impostor.shutdown()
        await cluster.shutdown()
    }

    @Test func aServerThatIsNotTheNodeDialedIsRefusedBeforeAnythingIsSent() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        let cluster = TLSCluster()
        let a = try await cluster.start(id: Self.a, name: "a", tls: PeerTLS(files: fixture.node("a")))
        // An impostor listens where a believes b is: it has b's id and name, but only c's certificate.
        let impostor = try await cluster.start(id: Self.b, name: "b", tls: PeerTLS(files: fixture.node("c")))
        try await cluster.link(names: [Self.a: "a", Self.b: "b"])
        let noticed = await eventually {
            try? await cluster.send(from: Self.a, to: Self.b)
            return a.log.contains("the server is not the node we meant")
        }
        #expect(noticed, "a logged: \(a.log.all)")
        #expect(a.log.contains("the peer's certificate is for \"c\", not \"b\""))
        // a never counted the connection as made, and sent nothing over it.
        try? await cluster.send(from: Self.a, to: Self.b)
        try await Task.sleep(for: .milliseconds(200))
        #expect(impostor.inbox.all.isEmpty, "the impostor heard: \(impostor.inbox.all)")
        #expect(await a.transport.statistics()[Self.b]?.connects == 0)
        await cluster.shutdown()
    }

    @Test func reloadedFilesServeNewConnectionsAndAFailedReloadKeepsTheOld() async throws {
        let fixture = try CertificateFixture()
        defer { fixture.remove() }
        let now = Date()
        let expired = CertificateValidity(notBefore: now - 2 * 86_400, notAfter: now - 86_400)
        let cluster = TLSCluster()
        let a = try await cluster.start(id: Self.a, name: "a", tls: PeerTLS(files: fixture.node("a")))
        // b starts with an expired certificate: a refuses it.
        let bTLS = try PeerTLS(files: fixture.node("b", validity: expired))
        let b = try await cluster.start(id: Self.b, name: "b", tls: bTLS)
        try await cluster.link(names: [Self.a: "a", Self.b: "b"])
        let refused = await eventually {
            try? await cluster.send(from: Self.b, to: Self.a)
            return a.log.contains("TLS handshake failed")
        }
        #expect(refused)
        #expect(a.inbox.all.isEmpty)

        // New files, reloaded: b's next connection (it keeps retrying) uses them.
        try fixture.node("b", overwrite: true)
        try bTLS.reload()
        #expect(try await cluster.delivers(from: Self.b, to: Self.a))

        // A broken file: the reload fails, naming the file, and b keeps the certificate it had.
        try PEMFile.write("not a certificate\n", to: fixture.path("b.pem"), privateKey: false, overwrite: true)
        #expect {
            try bTLS.reload()
        } throws: { error in
            "\(error)".contains(fixture.path("b.pem")) && "\(error)".contains("not a PEM file")
        }
        #expect(bTLS.contexts.ownNames == ["b"])
        // A new connection: a restarts on the same port, and b reconnects with the certificate it kept.
        let portA = try #require(await a.transport.boundPort)
        await a.transport.shutdown()
        let a2 = try await cluster.start(id: Self.a, name: "a", tls: a.tls, port: portA)
        try await cluster.link(names: [Self.a: "a", Self.b: "b"])
        #expect(try await cluster.delivers(from: Self.b, to: Self.a))
        #expect(a2.inbox.all.contains { $0.from == Self.b })
        _ = b
        await cluster.shutdown()
    }
}
