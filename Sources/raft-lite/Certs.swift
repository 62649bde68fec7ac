import ArgumentParser
import Foundation
import RaftLite
import RaftTLS

/// `raft-lite certs`: development certificates for a cluster.
struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a development CA and certificates for every node of a cluster file, and for clients.",
        discussion: """
            Writes to DIR: ca.pem and ca-key.pem (a new P-256 CA), NAME.pem and NAME-key.pem for every member of \
            the cluster file (its name as a DNS subject alternative name, which is what peers check, plus \
            127.0.0.1 and its ip; good for both ends of a connection), and for each --client name (client.pem and \
            client-key.pem if none is given). Private keys are written with mode 0600. Existing files are not \
            overwritten unless --force.

            Then start each node with

              raft-lite serve --config FILE --id NAME ... \\
                --peer-cert DIR/NAME.pem --peer-key DIR/NAME-key.pem --peer-ca DIR/ca.pem

            These are for development: the CA's key lies next to the certificates. A production cluster should use \
            its organisation's CA.
            """
    )

    @Option(help: "The cluster configuration file (JSON), as for raft-lite serve.")
    var cluster: String

    @Option(help: "The directory to write the files to (created if needed).")
    var out: String

    @Option(name: .customLong("client"), help: "A client certificate to make (repeatable; default: one named client).")
    var clients: [String] = []

    @Option(help: "How many days the certificates are valid.")
    var days = 365

    @Flag(help: "Overwrite existing files.")
    var force = false

    func validate() throws {
        guard (1...36_500).contains(days) else { throw ValidationError("--days must be 1...36500") }
    }

    func run() throws {
        let configuration: ClusterConfiguration
        do {
            configuration = try ClusterConfiguration(contentsOfFile: cluster)
        } catch {
            throw ValidationError("\(error)")
        }
        let written = try Self.write(
            members: configuration.members.map { DevelopmentCertificateFiles.Node(name: $0.name, host: $0.host) },
            clients: clients.isEmpty ? ["client"] : clients, out: out, days: days, force: force)
        for path in written { print("wrote \(path)") }
    }

    /// Writes the files, with errors as the command reports them.
    static func write(
        members: [DevelopmentCertificateFiles.Node], clients: [String], out: String, days: Int, force: Bool
    ) throws -> [String] {
        do {
            return try DevelopmentCertificateFiles.write(
                nodes: members, clients: clients, directory: out, validity: .days(days), overwrite: force)
        } catch let error as TLSFilesError {
            throw ValidationError("\(error)")
        }
    }
}
