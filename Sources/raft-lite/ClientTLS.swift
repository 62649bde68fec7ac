import ArgumentParser
import Foundation
import NIOSSL
import RaftKVClient
import RaftTLS

/// HTTPS for a client command: `--cacert` (else `RAFT_LITE_CACERT`) turns it on, the nodes' certificates verified
/// against that CA, their names (or IP addresses) against the endpoints; `--cert`/`--key` present a client
/// certificate, for nodes started with `--tls-client-auth`.
struct ClientTLSOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Speak HTTPS, verifying the nodes' certificates against this CA (PEM) (default: $RAFT_LITE_CACERT).",
            valueName: "file"))
    var cacert: String?

    @Option(
        help: ArgumentHelp(
            "HTTPS: present this client certificate (PEM) (default: $RAFT_LITE_CERT).", valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("HTTPS: the private key of --cert (PEM) (default: $RAFT_LITE_KEY).", valueName: "file"))
    var key: String?

    func validate() throws {
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        if cert != nil && cacert == nil && environment("RAFT_LITE_CACERT") == nil {
            throw ValidationError("--cert needs --cacert (HTTPS is on only with a CA to verify the nodes against)")
        }
    }

    /// Whether any TLS setting was given, on the command line or in the environment.
    var isGiven: Bool { resolvedCA != nil }

    private var resolvedCA: String? { cacert ?? environment("RAFT_LITE_CACERT") }

    private func environment(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The client context, or nil for plain HTTP; throws naming the file that cannot be used.
    func context(defaultCA: String? = nil) throws -> NIOSSLContext? {
        guard let ca = resolvedCA ?? defaultCA else { return nil }
        let certificate = cert ?? environment("RAFT_LITE_CERT")
        let privateKey = key ?? environment("RAFT_LITE_KEY")
        do {
            let material = try TLSFiles(certificateChain: certificate, privateKey: privateKey, trustRoots: ca).load()
            return try material.makeClientContext(verifyHostname: true)
        } catch {
            throw ValidationError("client TLS: \(error)")
        }
    }
}

/// What `raft-lite cluster` leaves for the client commands: the local cluster's endpoints and, for a cluster
/// started with `--tls`, its CA and a token — so that `raft-lite kv` and `raft-lite status` work against it with
/// no flags. Kept in `$RAFT_LITE_HOME` (default `~/.raft-lite`) as `local-cluster.json`; used only when a command
/// is given neither endpoints, nor a CA, nor a token.
struct LocalClusterFile: Codable, Equatable {
    var endpoints: String
    var cacert: String?
    var tokenFile: String?

    enum CodingKeys: String, CodingKey {
        case endpoints
        case cacert
        case tokenFile = "token_file"
    }

    static var path: String {
        let environment = ProcessInfo.processInfo.environment
        let home =
            environment["RAFT_LITE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.raft-lite")
        return home + "/local-cluster.json"
    }

    /// The file, or nil if there is none or it cannot be read (a damaged file is ignored with a warning: the
    /// command then runs with its defaults, as without one).
    static func load() -> LocalClusterFile? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(LocalClusterFile.self, from: data)
        } catch {
            FileHandle.standardError.write(Data("warning: ignoring \(path), which cannot be read: \(error)\n".utf8))
            return nil
        }
    }

    func write() throws {
        let directory = (Self.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: Self.path), options: .atomic)
    }
}
