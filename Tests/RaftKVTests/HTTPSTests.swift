import Foundation
import NIOCore
import NIOSSL
import ProcessTesting
import RaftKVClient
import RaftTLS
import Testing

@testable import RaftKV

/// The client API over HTTPS, with real sockets: a client that trusts the cluster's CA is served; plain HTTP, a
/// client that trusts another CA, and (with client certificates required) a client without one are refused, and
/// nothing they sent is written.
@Suite(.serialized, .clusterSlot) struct HTTPSTests {
    /// A CA with a certificate for node "n0" and one for client "alice", in a new directory; and a second CA.
    struct Material {
        let directory: String
        var ca: String { directory + "/ca.pem" }
        var cert: String { directory + "/n0.pem" }
        var key: String { directory + "/n0-key.pem" }
        var clientCert: String { directory + "/alice.pem" }
        var clientKey: String { directory + "/alice-key.pem" }
        var otherCA: String { directory + "/other/ca.pem" }
        var otherClientCert: String { directory + "/other/mallory.pem" }
        var otherClientKey: String { directory + "/other/mallory-key.pem" }

        static func make() throws -> Material {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "raftlite-https-\(UUID().uuidString)"
            ).path
            _ = try DevelopmentCertificateFiles.write(
                nodes: [.init(name: "n0", host: "127.0.0.1")], clients: ["alice"], directory: directory,
                validity: .days(1), overwrite: false)
            _ = try DevelopmentCertificateFiles.write(
                nodes: [], clients: ["mallory"], directory: directory + "/other", validity: .days(1), overwrite: false)
            return Material(directory: directory)
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }

        func server(_ policy: ClientCertificatePolicy) throws -> ReloadableTLSContext {
            try ReloadableTLSContext(
                files: TLSFiles(certificateChain: cert, privateKey: key, trustRoots: ca),
                role: .server(clientCertificates: policy))
        }

        func client(trusting ca: String, cert: String? = nil, key: String? = nil) throws -> NIOSSLContext {
            try TLSFiles(certificateChain: cert, privateKey: key, trustRoots: ca).load().makeClientContext(
                verifyHostname: true)
        }
    }

    static func client(_ server: OneNodeServer, tls: NIOSSLContext?) -> KVClient {
        KVClient(endpoints: [Endpoint(host: "127.0.0.1", port: server.port)], timeout: .seconds(5), tls: tls)
    }

    /// What the store holds for `key`, read by a client that is let in.
    static func stored(_ server: OneNodeServer, _ key: String, _ tls: NIOSSLContext) async throws -> Int {
        try await client(server, tls: tls).get(key).status
    }

    @Test func aClientThatTrustsTheCAIsServedAndPlainHTTPOrAnotherCAIsRefused() async throws {
        let material = try Material.make()
        defer { material.remove() }
        let server = try await OneNodeServer.start { $0.tls = try? material.server(.none) }
        let good = try material.client(trusting: material.ca)

        let put = try await Self.client(server, tls: good).put("k", Array("v".utf8))
        #expect(put.status == 200)
        let get = try await Self.client(server, tls: good).get("k")
        #expect(get.status == 200 && get.text == "v")

        // Plain HTTP on the HTTPS port: a readable refusal, and nothing written.
        let plain = try await Self.client(server, tls: nil).put("plain", Array("x".utf8))
        #expect(plain.status == 400 && plain.text.contains("tls_required"), "\(plain.status) \(plain.text)")
        #expect(try await Self.stored(server, "plain", good) == 404)

        // A client that trusts another CA does not accept the server's certificate: it sends nothing.
        let stranger = try material.client(trusting: material.otherCA)
        await #expect(throws: (any Error).self) {
            _ = try await Self.client(server, tls: stranger).put("stranger", Array("x".utf8))
        }
        #expect(try await Self.stored(server, "stranger", good) == 404)
        await server.stop()
    }

    @Test func withClientCertificatesRequiredOnlyAClientWithOneFromTheCAIsServed() async throws {
        let material = try Material.make()
        defer { material.remove() }
        let server = try await OneNodeServer.start { $0.tls = try? material.server(.required) }
        let alice = try material.client(trusting: material.ca, cert: material.clientCert, key: material.clientKey)
        #expect(try await Self.client(server, tls: alice).put("k", Array("v".utf8)).status == 200)

        let anonymous = try material.client(trusting: material.ca)
        let mallory = try material.client(
            trusting: material.ca, cert: material.otherClientCert, key: material.otherClientKey)
        for (name, context) in [("no certificate", anonymous), ("another CA's certificate", mallory)] {
            await #expect(throws: (any Error).self, "\(name)") {
                _ = try await Self.client(server, tls: context).put("k", Array("evil".utf8))
            }
        }
        let read = try await Self.client(server, tls: alice).get("k")
        #expect(read.status == 200 && read.text == "v", "nothing the refused clients sent was written")
        await server.stop()
    }
}
