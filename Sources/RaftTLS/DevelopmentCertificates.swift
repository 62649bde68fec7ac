import Crypto
import Foundation
import SwiftASN1
import X509

/// When a certificate is valid: from `notBefore` to `notAfter`.
public struct CertificateValidity: Sendable, Hashable {
    public var notBefore: Date
    public var notAfter: Date

    /// A window that starts at `notBefore` and ends at `notAfter` (a window already over makes an expired
    /// certificate, for tests).
    public init(notBefore: Date, notAfter: Date) {
        self.notBefore = notBefore
        self.notAfter = notAfter
    }

    /// Valid from an hour before `start` (clocks differ a little between machines) for `days` days after it.
    public static func days(_ days: Int, from start: Date = Date()) -> CertificateValidity {
        CertificateValidity(
            notBefore: start.addingTimeInterval(-3600), notAfter: start.addingTimeInterval(Double(days) * 86_400))
    }
}

/// A certificate and its private key, as PEM text.
public struct IssuedCertificate: Sendable {
    public let certificate: Certificate
    public let privateKey: Certificate.PrivateKey

    /// The certificate in PEM ("CERTIFICATE").
    public func certificatePEM() throws -> String { try certificate.serializeAsPEM().pemString }

    /// The private key in PEM (PKCS #8, "PRIVATE KEY").
    public func privateKeyPEM() throws -> String { try privateKey.serializeAsPEM().pemString }
}

/// A development certificate authority: a self-signed P-256 CA that issues node and client certificates.
///
/// Meant for development and tests (`raft-lite certs`): its key sits in a file next to the certificates. A
/// production cluster should use certificates from the organisation's own CA; the transport does not care which.
public struct DevelopmentCA: Sendable {
    public let issued: IssuedCertificate

    public var certificate: Certificate { issued.certificate }

    /// A new CA with a fresh key.
    public static func generate(
        commonName: String = "RaftLite development CA", validity: CertificateValidity = .days(3650)
    ) throws -> DevelopmentCA {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let name = try DistinguishedName {
            OrganizationName("RaftLite development")
            CommonName(commonName)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: validity.notBefore, notValidAfter: validity.notAfter, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: key)
        return DevelopmentCA(issued: IssuedCertificate(certificate: certificate, privateKey: key))
    }

    /// A CA loaded from its certificate and key (PEM).
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        let certificate = try Certificate(pemEncoded: certificatePEM)
        let key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        guard key.publicKey == certificate.publicKey else { throw TLSFilesError.keyDoesNotMatch(file: "CA key") }
        self.issued = IssuedCertificate(certificate: certificate, privateKey: key)
    }

    private init(issued: IssuedCertificate) { self.issued = issued }

    /// A node's certificate: its subject alternative names hold the node's name as a DNS name (the identity peers
    /// check against the name in its hello), IP 127.0.0.1, and `host` (an IP address or a DNS name) if given; it
    /// serves for both ends of a connection (serverAuth and clientAuth).
    public func issueNode(name: String, host: String? = nil, validity: CertificateValidity = .days(365)) throws
        -> IssuedCertificate
    {
        var names: [GeneralName] = [.dnsName(name), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))]
        if let host, host != name, host != "127.0.0.1" {
            if let address = Self.ipAddressBytes(host) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                names.append(.dnsName(host))
            }
        }
        return try issue(commonName: name, names: names, usages: [.serverAuth, .clientAuth], validity: validity)
    }

    /// A client's certificate (clientAuth only), its name as both the common name and a DNS name.
    public func issueClient(name: String, validity: CertificateValidity = .days(365)) throws -> IssuedCertificate {
        try issue(commonName: name, names: [.dnsName(name)], usages: [.clientAuth], validity: validity)
    }

    private func issue(
        commonName: String, names: [GeneralName], usages: [ExtendedKeyUsage.Usage], validity: CertificateValidity
    ) throws -> IssuedCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName {
            OrganizationName("RaftLite development")
            CommonName(commonName)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            try ExtendedKeyUsage(usages)
            SubjectAlternativeNames(names)
            SubjectKeyIdentifier(hash: key.publicKey)
            AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier)
        }
        let issuedCertificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: validity.notBefore, notValidAfter: validity.notAfter, issuer: certificate.subject,
            subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: issued.privateKey)
        return IssuedCertificate(certificate: issuedCertificate, privateKey: key)
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 address in text, nil for anything else (a DNS name).
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        let trimmed = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        if inet_pton(AF_INET6, trimmed, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}

/// A cluster's development certificates, as files in one directory.
public enum DevelopmentCertificateFiles {
    /// A node to make a certificate for: its name (the identity peers check) and the host it is reached at.
    public struct Node: Sendable, Hashable {
        public var name: String
        public var host: String?

        public init(name: String, host: String?) {
            self.name = name
            self.host = host
        }
    }

    /// The files that `write` makes, in order: `ca.pem`, `ca-key.pem`, then `NAME.pem` and `NAME-key.pem` for each
    /// node and each client.
    public static func fileNames(nodes: [Node], clients: [String]) -> [String] {
        ["ca.pem", "ca-key.pem"] + (nodes.map(\.name) + clients).flatMap { ["\($0).pem", "\($0)-key.pem"] }
    }

    /// Makes a CA and a certificate for each node and each client, and writes them to `directory` (created if
    /// needed): private keys with mode 0600. Unless `overwrite`, nothing is written if any of the files exists.
    /// Names that could leave the directory (with "/", or "." and "..") or repeat are refused.
    ///
    /// - Returns: the paths written, in the order of `fileNames`.
    public static func write(
        nodes: [Node], clients: [String], directory: String, validity: CertificateValidity, overwrite: Bool
    ) throws -> [String] {
        let names = nodes.map(\.name) + clients
        // "-key" would make NAME.pem collide with another's NAME-key.pem.
        for name in names
        where name.isEmpty || name.contains("/") || name == "." || name == ".." || name == "ca"
            || name.hasSuffix("-key")
        {
            throw TLSFilesError.incomplete("\"\(name)\" cannot be a certificate's file name")
        }
        if let repeated = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw TLSFilesError.incomplete("\"\(repeated)\" is named twice (nodes and clients need distinct names)")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TLSFilesError.unwritable(file: directory, reason: "\(error.localizedDescription)")
        }
        let paths = fileNames(nodes: nodes, clients: clients).map { "\(directory)/\($0)" }
        if !overwrite, let existing = paths.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw TLSFilesError.exists(file: existing)
        }
        let ca = try DevelopmentCA.generate(validity: validity)
        var files: [(text: String, key: Bool)] = [
            (try ca.issued.certificatePEM(), false), (try ca.issued.privateKeyPEM(), true),
        ]
        for node in nodes {
            let issued = try ca.issueNode(name: node.name, host: node.host, validity: validity)
            files += [(try issued.certificatePEM(), false), (try issued.privateKeyPEM(), true)]
        }
        for client in clients {
            let issued = try ca.issueClient(name: client, validity: validity)
            files += [(try issued.certificatePEM(), false), (try issued.privateKeyPEM(), true)]
        }
        for (path, file) in zip(paths, files) {
            try PEMFile.write(file.text, to: path, privateKey: file.key, overwrite: overwrite)
        }
        return paths
    }
}
