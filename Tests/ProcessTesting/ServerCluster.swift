import Foundation

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
    public private(set) var processes: [String: ChildProcess] = [:]

    /// Writes the cluster file and starts every node. `extraArguments` go to every `serve`.
    public init(nodes: Int = 3, extraArguments: [String] = []) throws {
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
        for name in names { try start(name) }
    }

    public var endpoints: String { httpPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    public func httpPort(_ name: String) -> Int { httpPorts[names.firstIndex(of: name) ?? 0] }

    /// Starts (or restarts) a node on its data directory.
    public func start(_ name: String) throws {
        processes[name] = try ChildProcess(
            raftLiteExecutable(),
            [
                "serve", "--config", configPath, "--id", name, "--data-dir", scratch.path + "/" + name,
                "--tick-milliseconds", "20", "--log-level", "info",
            ] + extraArguments,
            label: name)
    }

    public func kill(_ name: String) {
        processes[name]?.kill9()
    }

    public func stopAll() {
        for child in processes.values { child.kill9() }
    }

    /// Ports that were free a moment ago.
    public static func freePorts(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            sockets.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }

    deinit { stopAll() }
}
