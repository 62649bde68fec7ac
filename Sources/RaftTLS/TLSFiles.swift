import Foundation
import NIOSSL
import X509

/// Why TLS files could not be used: each case names the file and what is wrong with it.
public enum TLSFilesError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file does not exist or cannot be read.
    case unreadable(file: String, reason: String)
    /// The file holds no PEM block of the kind expected ("CERTIFICATE", "PRIVATE KEY").
    case notPEM(file: String, expected: String)
    /// The file is PEM, but what it holds cannot be parsed.
    case invalid(file: String, reason: String)
    /// The private key is not the key of the certificate it goes with.
    case keyDoesNotMatch(file: String)
    /// A certificate was given without its key, or a key without its certificate.
    case incomplete(String)
    /// A file could not be written.
    case unwritable(file: String, reason: String)
    /// A file exists already and may not be overwritten.
    case exists(file: String)

    public var description: String {
        switch self {
        case .unreadable(let file, let reason): return "cannot read \(file): \(reason)"
        case .notPEM(let file, let expected): return "\(file) is not a PEM file with a \(expected) block"
        case .invalid(let file, let reason): return "\(file) cannot be used: \(reason)"
        case .keyDoesNotMatch(let file):
            return "the private key in \(file) is not the key of its certificate (the two files do not belong together)"
        case .incomplete(let what): return what
        case .unwritable(let file, let reason): return "cannot write \(file): \(reason)"
        case .exists(let file): return "\(file) exists already (pass --force to overwrite it)"
        }
    }
}

/// Whether a server asks its clients for certificates.
public enum ClientCertificatePolicy: Sendable, Hashable {
    /// Clients present no certificate.
    case none
    /// A client may present a certificate; one that it presents must verify against the trust roots.
    case optional
    /// Every client must present a certificate that verifies against the trust roots.
    case required
}

/// Where a node's TLS material is: its certificate chain, its private key, and the CA bundle its peers' (or
/// clients') certificates must chain to. Paths only: `load()` reads them.
public struct TLSFiles: Sendable, Hashable {
    /// PEM: the node's certificate first, then any intermediates.
    public var certificateChain: String?
    /// PEM: the private key of the chain's first certificate.
    public var privateKey: String?
    /// PEM: the CA certificates trusted to sign the other end's certificate (nil: the system's, for a client).
    public var trustRoots: String?

    public init(certificateChain: String?, privateKey: String?, trustRoots: String?) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.trustRoots = trustRoots
    }

    /// Reads and checks the files: each is readable PEM of the right kind, and the key belongs to the certificate.
    public func load() throws(TLSFilesError) -> TLSMaterial {
        switch (certificateChain, privateKey) {
        case (.some(let chainFile), .some(let keyFile)):
            let chain = try Self.certificates(in: chainFile)
            let key = try Self.privateKey(in: keyFile)
            try Self.check(key: keyFile, matches: chainFile)
            return TLSMaterial(
                certificateChain: chain, privateKey: key,
                trustRoots: try trustRoots.map { path throws(TLSFilesError) in try Self.certificates(in: path) })
        case (nil, nil):
            return TLSMaterial(
                certificateChain: [], privateKey: nil,
                trustRoots: try trustRoots.map { path throws(TLSFilesError) in try Self.certificates(in: path) })
        case (.some(let chainFile), nil):
            throw .incomplete("a certificate (\(chainFile)) was given without its private key")
        case (nil, .some(let keyFile)):
            throw .incomplete("a private key (\(keyFile)) was given without its certificate")
        }
    }

    static func read(_ path: String) throws(TLSFilesError) -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason =
                FileManager.default.fileExists(atPath: path) ? "\(error.localizedDescription)" : "no such file"
            throw .unreadable(file: path, reason: reason)
        }
        guard let text = String(data: data, encoding: .utf8) else { throw .notPEM(file: path, expected: "PEM") }
        return text
    }

    static func certificates(in path: String) throws(TLSFilesError) -> [NIOSSLCertificate] {
        let text = try read(path)
        guard text.contains("-----BEGIN CERTIFICATE-----") else { throw .notPEM(file: path, expected: "CERTIFICATE") }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(text.utf8))
        } catch {
            throw .invalid(file: path, reason: "its certificates cannot be parsed (\(error))")
        }
        guard !certificates.isEmpty else { throw .notPEM(file: path, expected: "CERTIFICATE") }
        return certificates
    }

    static func privateKey(in path: String) throws(TLSFilesError) -> NIOSSLPrivateKey {
        let text = try read(path)
        guard text.contains("-----BEGIN"), text.contains("PRIVATE KEY-----") else {
            throw .notPEM(file: path, expected: "PRIVATE KEY")
        }
        do {
            return try NIOSSLPrivateKey(bytes: Array(text.utf8), format: .pem)
        } catch {
            throw .invalid(file: path, reason: "its private key cannot be parsed (\(error))")
        }
    }

    /// The key's public half is the public key of the chain's first certificate. (Parsed again with swift-certificates,
    /// which reads P-256/384/521, RSA and Ed25519 keys; a key of another kind is left to the TLS library to check.)
    static func check(key keyFile: String, matches chainFile: String) throws(TLSFilesError) {
        guard let key = try? Certificate.PrivateKey(pemEncoded: read(keyFile)) else { return }
        let certificate: Certificate
        do {
            let pem = try read(chainFile)
            // The first block is the node's own certificate.
            guard let end = pem.range(of: "-----END CERTIFICATE-----") else {
                throw TLSFilesError.notPEM(file: chainFile, expected: "CERTIFICATE")
            }
            certificate = try Certificate(pemEncoded: String(pem[..<end.upperBound]))
        } catch let error as TLSFilesError {
            throw error
        } catch {
            throw .invalid(file: chainFile, reason: "its first certificate cannot be parsed (\(error))")
        }
        guard key.publicKey == certificate.publicKey else { throw .keyDoesNotMatch(file: keyFile) }
    }
}

/// TLS material read from files, checked, ready to build contexts from.
public struct TLSMaterial: Sendable {
    public var certificateChain: [NIOSSLCertificate]
    public var privateKey: NIOSSLPrivateKey?
    /// nil: the system's trust roots.
    public var trustRoots: [NIOSSLCertificate]?

    public init(certificateChain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey?, trustRoots: [NIOSSLCertificate]?)
    {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.trustRoots = trustRoots
    }

    /// The names (DNS subject alternative names) of this end's own certificate.
    public var dnsNames: [String] {
        certificateChain.first.flatMap { try? PeerIdentity.dnsNames(of: $0) } ?? []
    }

    /// A server's context: it presents its chain, and asks clients for certificates as `clientCertificates` says,
    /// verified against the trust roots (no host name check: a server has no name to expect of its clients). TLS 1.2
    /// at least.
    public func makeServerContext(clientCertificates: ClientCertificatePolicy) throws(TLSFilesError) -> NIOSSLContext {
        guard let privateKey, !certificateChain.isEmpty else {
            throw .incomplete("a TLS server needs a certificate and its private key")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificateChain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv12
        switch clientCertificates {
        case .none:
            configuration.certificateVerification = .none
        case .optional, .required:
            guard let trustRoots else {
                throw .incomplete(
                    "a TLS server that verifies client certificates needs a CA file to verify them against")
            }
            configuration.trustRoots = .certificates(trustRoots)
            configuration.sendCANameList = true
            configuration.certificateVerification =
                clientCertificates == .required ? .noHostnameVerification : .optionalVerification
        }
        return try Self.context(configuration)
    }

    /// A client's context: it verifies the server's chain against the trust roots (the system's if none were
    /// given) and, with `verifyHostname`, the server's name against the name the connection is opened with
    /// (`NIOSSLClientHandler`'s `serverHostname`); it presents its own chain if it has one. TLS 1.2 at least.
    public func makeClientContext(verifyHostname: Bool = true) throws(TLSFilesError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let trustRoots { configuration.trustRoots = .certificates(trustRoots) }
        configuration.certificateVerification = verifyHostname ? .fullVerification : .noHostnameVerification
        if let privateKey, !certificateChain.isEmpty {
            configuration.certificateChain = certificateChain.map { .certificate($0) }
            configuration.privateKey = .privateKey(privateKey)
        }
        return try Self.context(configuration)
    }

    private static func context(_ configuration: TLSConfiguration) throws(TLSFilesError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw .invalid(file: "the TLS configuration", reason: "\(error)")
        }
    }
}

/// Writing PEM files.
public enum PEMFile {
    /// Writes `text` to `path`: created with mode 0600 when it holds a private key (0644 otherwise); an existing file
    /// is refused unless `overwrite` (then it is replaced, and a key file's mode set to 0600).
    public static func write(_ text: String, to path: String, privateKey: Bool, overwrite: Bool) throws(TLSFilesError) {
        let mode: mode_t = privateKey ? 0o600 : 0o644
        var flags = O_WRONLY | O_CREAT | O_TRUNC
        if !overwrite { flags |= O_EXCL }
        let fd = open(path, flags, mode)
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST { throw .exists(file: path) }
            throw .unwritable(file: path, reason: String(cString: strerror(code)))
        }
        defer { close(fd) }
        // An existing file keeps its mode through O_TRUNC: a key must not stay readable by others.
        guard fchmod(fd, mode) == 0 else { throw .unwritable(file: path, reason: String(cString: strerror(errno))) }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw .unwritable(file: path, reason: String(cString: strerror(errno)))
            }
            bytes = bytes.dropFirst(written)
        }
        guard fsync(fd) == 0 else { throw .unwritable(file: path, reason: String(cString: strerror(errno))) }
    }
}
