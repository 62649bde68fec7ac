import Foundation
import NIOConcurrencyHelpers
import RaftTLS

/// Development certificates for a test cluster's peers (mutual TLS), in one directory: a CA and one certificate per
/// node, each naming its node (a DNS subject alternative name, as `raft-lite serve` checks), all from that one CA.
///
/// The first nodes' files are made at once (`DevelopmentCertificateFiles.write`, as `raft-lite certs` does); a node
/// named later (a spare added by a membership change, a node that joins) gets its certificate from the same CA the
/// first time `serveArguments(for:)` names it, so every node of the cluster trusts every other.
public final class PeerCertificates: Sendable {
    /// Where the files are: `ca.pem`, `ca-key.pem`, `NAME.pem` and `NAME-key.pem`.
    public let directory: String
    private let ca: DevelopmentCA
    /// The names that have a certificate; issuing holds the lock, so a name is issued once.
    private let issued: NIOLockedValueBox<Set<String>>

    /// Makes a CA and a certificate for each of `nodes` in `directory` (created if needed; nothing there may exist).
    public init(directory: String, nodes: [String]) throws {
        self.directory = directory
        _ = try DevelopmentCertificateFiles.write(
            nodes: nodes.map { DevelopmentCertificateFiles.Node(name: $0, host: "127.0.0.1") }, clients: [],
            directory: directory, validity: .days(2), overwrite: false)
        ca = try DevelopmentCA(
            certificatePEM: String(contentsOfFile: directory + "/ca.pem", encoding: .utf8),
            privateKeyPEM: String(contentsOfFile: directory + "/ca-key.pem", encoding: .utf8))
        issued = NIOLockedValueBox(Set(nodes))
    }

    /// The CA bundle every node trusts.
    public var caFile: String { directory + "/ca.pem" }
    public func certificateFile(_ name: String) -> String { directory + "/\(name).pem" }
    public func keyFile(_ name: String) -> String { directory + "/\(name)-key.pem" }

    /// Makes `name`'s certificate from the cluster's CA unless it has one.
    public func issue(_ name: String) throws {
        try issued.withLockedValue { names in
            guard !names.contains(name) else { return }
            let node = try ca.issueNode(name: name, host: "127.0.0.1", validity: .days(2))
            try PEMFile.write(
                node.certificatePEM(), to: certificateFile(name), privateKey: false, overwrite: false)
            try PEMFile.write(node.privateKeyPEM(), to: keyFile(name), privateKey: true, overwrite: false)
            names.insert(name)
        }
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` for node `name`: its client API over HTTPS with the same certificate
    /// (made first if it has none).
    public func httpsArguments(for name: String) throws -> [String] {
        try issue(name)
        return ["--tls-cert", certificateFile(name), "--tls-key", keyFile(name), "--tls-ca", caFile]
    }

    /// `--peer-cert`, `--peer-key` and `--peer-ca` for node `name` (its certificate made first if it has none).
    public func serveArguments(for name: String) throws -> [String] {
        try issue(name)
        return ["--peer-cert", certificateFile(name), "--peer-key", keyFile(name), "--peer-ca", caFile]
    }
}
