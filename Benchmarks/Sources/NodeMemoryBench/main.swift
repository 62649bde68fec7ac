// NodeMemoryBench: what a follower that is down costs the rest of the cluster in memory.
//
// Three RaftNodes in this process on loopback TCP (in-memory storage). With `-down 1`, one follower is stopped
// before the load starts. Then `-clients` tasks propose `-size`-byte commands to the leader for `-seconds` seconds.
// Every few seconds it prints the process's resident memory, the entries committed so far, and the bytes the leader
// has queued for each peer. Run it once with `-down 0` and once with `-down 1` and compare resident memory at the
// same number of committed entries: the log itself is held in memory in both runs (until log compaction exists).
//
//     swift run -c release --package-path Benchmarks NodeMemoryBench -down 1 -seconds 60
#if canImport(Glibc)
    import Glibc
#endif
import NIOCore
import RaftCore
import RaftLite

func residentMiB() -> Double {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return 0 }
    let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(
        separator: " ")
    guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

func argument(_ name: String, _ fallback: Int) -> Int {
    let args = CommandLine.arguments
    guard let k = args.firstIndex(of: name), k + 1 < args.count, let v = Int(args[k + 1]) else { return fallback }
    return v
}

let down = argument("-down", 1)
let seconds = argument("-seconds", 60)
let clients = argument("-clients", 32)
let size = argument("-size", 1024)

let names = ["node0", "node1", "node2"]
let ports = try FreePorts.reserve(3)
let cluster = try ClusterConfiguration(
    members: zip(names, ports).map { ClusterConfiguration.Member(name: $0, host: "127.0.0.1", port: $1) })
var options = RaftNode<NoStateMachine>.Options()
options.tickInterval = .milliseconds(50)
options.logger.logLevel = .error
let nodes = try names.map { try RaftNode(cluster: cluster, name: $0, options: options) }
for node in nodes { try await node.start() }

var leader: RaftNode<NoStateMachine>?
while leader == nil {
    for node in nodes where await node.role == .leader { leader = node }
    try await Task.sleep(for: .milliseconds(20))
}
guard let leader else { exit(1) }
let followers = nodes.filter { $0.name != leader.name }
for node in followers.prefix(down) { await node.stop() }
print("leader \(leader.name); stopped: \(followers.prefix(down).map(\.name)); baseline RSS \(residentMiB()) MiB")

let deadline = ContinuousClock.now + .seconds(seconds)
let command = [UInt8](repeating: 7, count: size)
await withTaskGroup(of: Void.self) { group in
    for _ in 0..<clients {
        group.addTask {
            while ContinuousClock.now < deadline { _ = try? await leader.propose(command) }
        }
    }
    group.addTask {
        while ContinuousClock.now < deadline {
            try? await Task.sleep(for: .seconds(5))
            let status = await leader.status()
            let queued = await leader.peerStatistics().mapValues(\.queuedBytes).sorted { $0.key < $1.key }
            print("committed=\(status.commitIndex.rawValue) rss_MiB=\(Int(residentMiB())) queued_bytes=\(queued)")
        }
    }
}
let status = await leader.status()
print(
    "down=\(down) seconds=\(seconds) clients=\(clients) size=\(size) committed=\(status.commitIndex.rawValue) "
        + "rss_MiB=\(Int(residentMiB())) rss_per_committed_KiB=\(Double(Int(residentMiB() * 1024 * 100 / Double(max(1, status.commitIndex.rawValue)))) / 100)"
)
for node in nodes { await node.stop() }
