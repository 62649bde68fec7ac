import Foundation
import RaftLite

#if canImport(Glibc)
    import Glibc
#endif

/// A local cluster of `raft-lite serve` processes on free ports, for end-to-end tests.
public final class ServerCluster: @unchecked Sendable {
    // @unchecked Sendable: `processes` is only touched by the test that owns the cluster, one call at a time.
    public let scratch: ScratchDirectory
    public let names: [String]
    public let httpPorts: [Int]
    public let peerPorts: [Int]
    public let configPath: String
    public let extraArguments: [String]
    /// The peers' certificates when the cluster runs with peer TLS (nil: plain TCP between peers).
    public let peerCertificates: PeerCertificates?
    public private(set) var processes: [String: ChildProcess] = [:]

    /// Writes the cluster file and starts every node. `extraArguments` go to every `serve`. With `peerTLS`, peers
    /// talk mutual TLS: a development CA and a certificate per node are made in `scratch/certs`, and every node this
    /// cluster starts — those of the file and any other name given to `start(_:)` later — gets `--peer-cert`,
    /// `--peer-key` and `--peer-ca` with a certificate of its own name from that CA.
    public init(nodes: Int = 3, extraArguments: [String] = [], peerTLS: Bool = false) throws {
        let scratch = ScratchDirectory("kv")
        let names = (0..<nodes).map { "node\($0)" }
        let ports = try Self.freePorts(2 * nodes)
        let peerPorts = Array(ports.prefix(nodes))
        let httpPorts = Array(ports.suffix(nodes))
        let configPath = scratch.path + "/cluster.json"
        let entries = (0..<nodes).map { k in
            "\"\(names[k])\": {\"ip\": \"127.0.0.1\", \"port\": \(peerPorts[k]), \"http_port\": \(httpPorts[k])}"
        }
        try ("{" + entries.joined(separator: ", ") + "}").write(toFile: configPath, atomically: true, encoding: .utf8)
        self.scratch = scratch
        self.names = names
        self.peerPorts = peerPorts
        self.httpPorts = httpPorts
        self.configPath = configPath
        self.extraArguments = extraArguments
        peerCertificates = peerTLS ? try PeerCertificates(directory: scratch.path + "/certs", nodes: names) : nil
        for name in names { try start(name) }
    }

    public var endpoints: String { httpPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    public func httpPort(_ name: String) -> Int { httpPorts[names.firstIndex(of: name) ?? 0] }

    /// Starts (or restarts) a node on its data directory; `arguments` go to this `serve` only (after the cluster's
    /// `extraArguments`), e.g. `--join` for a node that is not in the cluster file.
    public func start(_ name: String, arguments: [String] = []) throws {
        processes[name] = try ChildProcess(
            raftLiteExecutable(),
            [
                "serve", "--config", configPath, "--id", name, "--data-dir", scratch.path + "/" + name,
                "--tick-milliseconds", "20", "--log-level", "info",
            ] + extraArguments + peerTLSArguments(for: name) + arguments,
            label: name)
    }

    /// The peer TLS flags for node `name` (its certificate made from the cluster's CA if it has none yet); none
    /// without peer TLS. For a node a test starts itself.
    public func peerTLSArguments(for name: String) throws -> [String] {
        try peerCertificates?.serveArguments(for: name) ?? []
    }

    public func kill(_ name: String) {
        processes[name]?.kill9()
    }

    public func stopAll() {
        for child in processes.values { child.kill9() }
    }

    /// Ports that were free a moment ago (from below the ephemeral range: see `FreePorts`).
    public static func freePorts(_ count: Int) throws -> [Int] {
        try FreePorts.reserve(count)
    }

    deinit { stopAll() }
}
