import NIOConcurrencyHelpers
import NIOSSL
import X509

/// Who a certificate says its holder is.
public enum PeerIdentity {
    /// The DNS names in the certificate's subject alternative names (none if it has no such extension).
    public static func dnsNames(of certificate: NIOSSLCertificate) throws -> [String] {
        let parsed = try Certificate(derEncoded: certificate.toDERBytes())
        guard let names = try parsed.extensions.subjectAlternativeNames else { return [] }
        return names.compactMap { name in
            if case .dnsName(let dns) = name { return dns }
            return nil
        }
    }

    /// Why `certificate` is not the certificate of the node named `name`, nil if it is: one of its DNS subject
    /// alternative names must be `name` exactly (node names are compared as given, case and all: no wildcards), and
    /// it must be a server's certificate as well as a client's — if it limits its uses (extended key usage), serverAuth
    /// must be among them — so that a client certificate from the same CA (`raft-lite certs` makes them clientAuth
    /// only) cannot pass for a node on the peer port.
    public static func mismatch(_ certificate: NIOSSLCertificate?, expectedName name: String) -> String? {
        guard let certificate else { return "the peer presented no certificate" }
        let names: [String]
        do {
            let parsed = try Certificate(derEncoded: certificate.toDERBytes())
            if let usage = try parsed.extensions.extendedKeyUsage, !usage.contains(.serverAuth) {
                return "the peer's certificate is not a node's: it is not for TLS servers (a client certificate?)"
            }
            names = try dnsNames(of: certificate)
        } catch {
            return "the peer's certificate cannot be parsed (\(error))"
        }
        guard names.contains(name) else {
            return
                "the peer's certificate is for \(names.isEmpty ? "no DNS name" : names.map { "\"\($0)\"" }.joined(separator: ", ")), not \"\(name)\""
        }
        return nil
    }
}

/// The TLS contexts a node uses with its peers (mutual TLS: each end presents a certificate and verifies the
/// other's against the CA), reloadable from their files while running.
///
/// - Every connection made or accepted after `reload()` returns uses the files as they were then; connections
///   already open keep the contexts they started with.
/// - A `reload()` that fails (a file missing, not PEM, a key that does not match) changes nothing: the contexts
///   loaded before stay in use, and the error says which file and what is wrong.
/// - The contexts verify the chain only: the peer's name is the transport's to check (against the DNS subject
///   alternative names, `PeerIdentity`), since node names need not be host names.
public final class PeerTLS: Sendable {
    /// The contexts in use, and the names in this node's own certificate.
    public struct Contexts: Sendable {
        public var server: NIOSSLContext
        public var client: NIOSSLContext
        public var ownNames: [String]
    }

    public let files: TLSFiles
    private let current: NIOLockedValueBox<Contexts>

    /// Loads the files. All three are needed: the node's certificate, its key, and the CA its peers' chain to.
    public init(files: TLSFiles) throws(TLSFilesError) {
        self.files = files
        self.current = NIOLockedValueBox(try Self.load(files))
    }

    /// The contexts for a new connection.
    public var contexts: Contexts { current.withLockedValue { $0 } }

    /// Loads the files again; on success new connections use them, on failure nothing changes.
    public func reload() throws(TLSFilesError) {
        let fresh = try Self.load(files)
        current.withLockedValue { $0 = fresh }
    }

    private static func load(_ files: TLSFiles) throws(TLSFilesError) -> Contexts {
        guard files.certificateChain != nil, files.privateKey != nil, files.trustRoots != nil else {
            throw .incomplete("peer TLS needs a certificate, its private key and a CA file")
        }
        let material = try files.load()
        return Contexts(
            server: try material.makeServerContext(clientCertificates: .required),
            client: try material.makeClientContext(verifyHostname: false),
            ownNames: material.dnsNames)
    }
}

/// One TLS context (a server's or a client's, e.g. for the HTTP API), reloadable from its files while running,
/// with the same guarantees as `PeerTLS`: new connections use what the last successful `reload()` loaded, a failed
/// one changes nothing.
public final class ReloadableTLSContext: Sendable {
    public enum Role: Sendable, Hashable {
        case server(clientCertificates: ClientCertificatePolicy)
        case client(verifyHostname: Bool)
    }

    public let files: TLSFiles
    public let role: Role
    private let current: NIOLockedValueBox<NIOSSLContext>

    public init(files: TLSFiles, role: Role) throws(TLSFilesError) {
        self.files = files
        self.role = role
        self.current = NIOLockedValueBox(try Self.load(files, role))
    }

    /// The context for a new connection.
    public var context: NIOSSLContext { current.withLockedValue { $0 } }

    public func reload() throws(TLSFilesError) {
        let fresh = try Self.load(files, role)
        current.withLockedValue { $0 = fresh }
    }

    private static func load(_ files: TLSFiles, _ role: Role) throws(TLSFilesError) -> NIOSSLContext {
        let material = try files.load()
        switch role {
        case .server(let policy): return try material.makeServerContext(clientCertificates: policy)
        case .client(let verifyHostname): return try material.makeClientContext(verifyHostname: verifyHostname)
        }
    }
}
