import Foundation
import NIOSSL
import RaftTLS
import SwiftASN1
import Testing
import X509

@Suite struct TLSCertificateTests {
    @Test func aNodeCertificateNamesTheNodeLoopbackAndItsHostForBothEnds() throws {
        let ca = try DevelopmentCA.generate()
        let node = try ca.issueNode(name: "node1", host: "10.1.2.3")
        let names = try #require(try node.certificate.extensions.subjectAlternativeNames)
        #expect(Array(names).contains(.dnsName("node1")))
        #expect(Array(names).contains(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))))
        #expect(Array(names).contains(.ipAddress(ASN1OctetString(contentBytes: [10, 1, 2, 3]))))
        let usages = try #require(try node.certificate.extensions.extendedKeyUsage)
        #expect(usages.contains(.serverAuth) && usages.contains(.clientAuth))
        #expect(node.certificate.issuer == ca.certificate.subject)
        #expect(try node.certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(try ca.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        // A host name (not an address) goes in as a DNS name.
        let named = try ca.issueNode(name: "node2", host: "db2.example.internal")
        #expect(
            Array(try #require(try named.certificate.extensions.subjectAlternativeNames)).contains(
                .dnsName("db2.example.internal")))
        // What the transport reads from the certificate it is shown.
        let pem = try node.certificatePEM()
        let loaded = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)
        #expect(try PeerIdentity.dnsNames(of: loaded) == ["node1"])
        #expect(PeerIdentity.mismatch(loaded, expectedName: "node1") == nil)
        #expect(
            PeerIdentity.mismatch(loaded, expectedName: "node2")
                == "the peer's certificate is for \"node1\", not \"node2\"")
        #expect(PeerIdentity.mismatch(nil, expectedName: "node1") != nil)
        // A client certificate from the same CA, even one bearing a node's name, is not a node's.
        let client = try ca.issueClient(name: "node1")
        let clientLoaded = try NIOSSLCertificate(bytes: Array(try client.certificatePEM().utf8), format: .pem)
        #expect(
            PeerIdentity.mismatch(clientLoaded, expectedName: "node1")?.contains("not for TLS servers") == true,
            "\(PeerIdentity.mismatch(clientLoaded, expectedName: "node1") ?? "accepted")")
    }

    @Test func validityIsAsAskedSoThatAnExpiredCertificateCanBeMade() throws {
        let ca = try DevelopmentCA.generate()
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        let node = try ca.issueNode(name: "n", validity: .days(30, from: start))
        #expect(node.certificate.notValidBefore == start - 3600)
        #expect(node.certificate.notValidAfter == start + 30 * 86_400)
        let expired = try ca.issueClient(
            name: "old", validity: CertificateValidity(notBefore: Date() - 7200, notAfter: Date() - 3600))
        #expect(expired.certificate.notValidAfter < Date())
        let usages = try #require(try expired.certificate.extensions.extendedKeyUsage)
        #expect(usages.contains(.clientAuth) && !usages.contains(.serverAuth))
    }

    @Test func loadingSaysWhichFileIsWrongAndHow() throws {
        let directory = NSTemporaryDirectory() + "raftlite-tlsfiles-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try DevelopmentCA.generate()
        let one = try ca.issueNode(name: "one")
        let two = try ca.issueNode(name: "two")
        let cert = directory + "/one.pem"
        let key = directory + "/one-key.pem"
        let otherKey = directory + "/two-key.pem"
        let caFile = directory + "/ca.pem"
        let garbage = directory + "/garbage.pem"
        try PEMFile.write(try one.certificatePEM(), to: cert, privateKey: false, overwrite: false)
        try PEMFile.write(try one.privateKeyPEM(), to: key, privateKey: true, overwrite: false)
        try PEMFile.write(try two.privateKeyPEM(), to: otherKey, privateKey: true, overwrite: false)
        try PEMFile.write(try ca.issued.certificatePEM(), to: caFile, privateKey: false, overwrite: false)
        try PEMFile.write("hello\n", to: garbage, privateKey: false, overwrite: false)

        let good = TLSFiles(certificateChain: cert, privateKey: key, trustRoots: caFile)
        let material = try good.load()
        #expect(material.dnsNames == ["one"])
        _ = try material.makeServerContext(clientCertificates: .required)
        _ = try material.makeServerContext(clientCertificates: .optional)
        _ = try material.makeClientContext()
        _ = try PeerTLS(files: good)

        func failure(_ files: TLSFiles) -> TLSFilesError? {
            do {
                _ = try files.load()
                return nil
            } catch {
                return error
            }
        }
        let missing = directory + "/missing.pem"
        #expect(
            failure(TLSFiles(certificateChain: missing, privateKey: key, trustRoots: caFile))
                == .unreadable(file: missing, reason: "no such file"))
        #expect(
            failure(TLSFiles(certificateChain: garbage, privateKey: key, trustRoots: caFile))
                == .notPEM(file: garbage, expected: "CERTIFICATE"))
        #expect(
            failure(TLSFiles(certificateChain: cert, privateKey: garbage, trustRoots: caFile))
                == .notPEM(file: garbage, expected: "PRIVATE KEY"))
        #expect(
            failure(TLSFiles(certificateChain: cert, privateKey: otherKey, trustRoots: caFile))
                == .keyDoesNotMatch(file: otherKey))
        #expect(
            failure(TLSFiles(certificateChain: cert, privateKey: key, trustRoots: garbage))
                == .notPEM(file: garbage, expected: "CERTIFICATE"))
        #expect(failure(TLSFiles(certificateChain: cert, privateKey: nil, trustRoots: caFile)) != nil)
        #expect(throws: TLSFilesError.self) {
            try PeerTLS(files: TLSFiles(certificateChain: cert, privateKey: key, trustRoots: nil))
        }
        #expect("\(TLSFilesError.keyDoesNotMatch(file: otherKey))".contains(otherKey))
    }

    @Test func certificateFilesAreWrittenWithPrivateKeysUnreadableToOthersAndNeverOverwrittenUnlessAsked() throws {
        let directory = NSTemporaryDirectory() + "raftlite-certs-\(UUID().uuidString)/out"
        defer { try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent) }
        let nodes = [
            DevelopmentCertificateFiles.Node(name: "node0", host: "127.0.0.1"),
            DevelopmentCertificateFiles.Node(name: "node1", host: "10.0.0.2"),
        ]
        let written = try DevelopmentCertificateFiles.write(
            nodes: nodes, clients: ["client"], directory: directory, validity: .days(2), overwrite: false)
        #expect(
            written.map { ($0 as NSString).lastPathComponent } == [
                "ca.pem", "ca-key.pem", "node0.pem", "node0-key.pem", "node1.pem", "node1-key.pem", "client.pem",
                "client-key.pem",
            ])
        for path in written {
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
            #expect(mode == (path.hasSuffix("-key.pem") ? 0o600 : 0o644), "\(path): \(String(mode, radix: 8))")
        }
        // What was written works together: node1's certificate and key, checked against the CA.
        let files = TLSFiles(
            certificateChain: directory + "/node1.pem", privateKey: directory + "/node1-key.pem",
            trustRoots: directory + "/ca.pem")
        #expect(try PeerTLS(files: files).contexts.ownNames == ["node1"])

        let before = try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8)
        #expect(throws: TLSFilesError.exists(file: directory + "/ca.pem")) {
            try DevelopmentCertificateFiles.write(
                nodes: nodes, clients: ["client"], directory: directory, validity: .days(2), overwrite: false)
        }
        #expect(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8) == before)
        // A key file someone made readable is set back to 0600 when overwritten.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: directory + "/node0-key.pem")
        _ = try DevelopmentCertificateFiles.write(
            nodes: nodes, clients: ["client"], directory: directory, validity: .days(2), overwrite: true)
        #expect(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8) != before)
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/node0-key.pem")[.posixPermissions]
        #expect(mode as? Int == 0o600)

        #expect(throws: TLSFilesError.self) {
            try DevelopmentCertificateFiles.write(
                nodes: [.init(name: "../escape", host: nil)], clients: [], directory: directory,
                validity: .days(1), overwrite: true)
        }
        #expect(throws: TLSFilesError.self) {
            try DevelopmentCertificateFiles.write(
                nodes: nodes, clients: ["node0"], directory: directory, validity: .days(1), overwrite: true)
        }
    }
}
