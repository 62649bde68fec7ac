// RaftCoreBench: the core alone — three voters in one process, in-memory storage and messages, driven by one
// single-threaded loop — on the same workload as the reference programs in ../shared/bench/core
// (etcd_core_bench.go), loop for loop:
//
//     deliver queued messages (step) -> for every node with a ready:
//       persist hard state and entries to its MemoryStorage -> queue its messages for their targets
//       -> apply committed entries to a trivial state machine -> advance
//     tick every node every -tick milliseconds of wall-clock time
//
// Node 1 is elected by campaigning; then it gets N proposals of -size bytes, with at most K outstanding (proposed
// but not yet applied on the leader). It prints entries committed and applied on the leader per second, and the
// latency from propose to the leader's apply, in the reference programs' format.
//
//     swift run -c release --package-path Benchmarks RaftCoreBench -n 200000 -k 1000
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import RaftCore

struct Options {
    var total = 200_000
    var inFlight = 1
    var size = 128
    var tickMillis = 10
    var label = ""

    init(_ arguments: [String]) throws {
        var k = 1
        while k < arguments.count {
            let flag = arguments[k]
            guard k + 1 < arguments.count else { throw UsageError("missing value after \(flag)") }
            let value = arguments[k + 1]
            switch flag {
            case "-n": total = try Options.int(value, flag)
            case "-k": inFlight = try Options.int(value, flag)
            case "-size": size = max(8, try Options.int(value, flag))
            case "-tick": tickMillis = try Options.int(value, flag)
            case "-label": label = value
            default: throw UsageError("unknown flag \(flag)")
            }
            k += 2
        }
    }

    static func int(_ text: String, _ flag: String) throws -> Int {
        guard let v = Int(text), v > 0 else { throw UsageError("\(flag) needs a positive integer, not \(text)") }
        return v
    }
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = "usage: RaftCoreBench [-n N] [-k K] [-size BYTES] [-tick MS] [-label L]: \(d)" }
}

@inline(__always) func nanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

#if canImport(Glibc)
    let rusageSelf = __rusage_who_t(RUSAGE_SELF.rawValue)
#else
    let rusageSelf = RUSAGE_SELF
#endif

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(rusageSelf, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
}

func maxRSSMiB() -> Double {
    var usage = rusage()
    getrusage(rusageSelf, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// CPU seconds used by every process on the machine (user, nice, system, irq, softirq, steal in /proc/stat), so
/// that the share taken by others during the run can be reported, as the reference programs do.
func machineBusySeconds() -> Double {
    guard let file = fopen("/proc/stat", "r") else { return 0 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return 0 }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let fields = line.split(separator: " ")
    guard fields.count >= 9, fields[0] == "cpu" else { return 0 }
    let jiffies = [1, 2, 3, 6, 7, 8].reduce(0.0) { $0 + (Double(fields[$1]) ?? 0) }
    return jiffies / 100
}

struct Node {
    var raft: Raft
    var storage = MemoryStorage()
    var inbox: [Message] = []
    var applied = 0
    var sum: UInt64 = 0
}

final class Cluster {
    var nodes: [Node]
    var proposedAt: [Int64] = []
    var latency: [Int64] = []
    var trackLatency = false
    let leaderIndex = 0

    init(count: Int) throws {
        let ids = Set((1...count).map { NodeID(UInt64($0)) })
        nodes = try (1...count).map { k in
            let configuration = RaftConfiguration(
                id: NodeID(UInt64(k)), voters: ids, electionTick: 10, heartbeatTick: 1,
                maxMessageBytes: 1 << 20, maxInflightMessages: 256, randomSeed: UInt64(k))
            return Node(raft: try Raft(configuration: configuration))
        }
    }

    func tick() {
        for k in nodes.indices { nodes[k].raft.tick() }
    }

    /// Delivers every queued message, then carries out one ready per node. Returns whether anything happened.
    @discardableResult
    func round() -> Bool {
        var busy = false
        for k in nodes.indices where !nodes[k].inbox.isEmpty {
            var messages: [Message] = []
            swap(&messages, &nodes[k].inbox)
            for message in messages { nodes[k].raft.step(message) }
            messages.removeAll(keepingCapacity: true)
            if nodes[k].inbox.isEmpty { swap(&messages, &nodes[k].inbox) }
            busy = true
        }
        for k in nodes.indices where nodes[k].raft.hasReady {
            busy = true
            let ready = nodes[k].raft.ready()
            // In-memory storage cannot fail on the core's own writes.
            try? nodes[k].storage.persist(entries: ready.entries, hardState: ready.hardState)
            for message in ready.messages { nodes[Int(message.to.rawValue) - 1].inbox.append(message) }
            for message in ready.messagesAfterPersist { nodes[Int(message.to.rawValue) - 1].inbox.append(message) }
            let isLeader = k == leaderIndex
            let now = isLeader && trackLatency && !ready.committedEntries.isEmpty ? nanoseconds() : 0
            for entry in ready.committedEntries where entry.kind == .normal && entry.data.count >= 8 {
                let sequence = entry.data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
                nodes[k].applied += 1
                nodes[k].sum &+= sequence ^ UInt64(entry.data[entry.data.count - 1])
                if isLeader && trackLatency && sequence < latency.count {
                    latency[Int(sequence)] = now - proposedAt[Int(sequence)]
                }
            }
            nodes[k].raft.advance(ready)
        }
        return busy
    }
}

func run() throws {
    let options = try Options(CommandLine.arguments)
    let cluster = try Cluster(count: 3)
    let tickInterval = Int64(options.tickMillis) * 1_000_000
    var lastTick = nanoseconds()
    cluster.nodes[0].raft.campaign()
    while cluster.nodes[0].raft.role != .leader {
        cluster.round()
        if nanoseconds() - lastTick >= tickInterval {
            cluster.tick()
            lastTick = nanoseconds()
        }
    }
    while cluster.round() {}  // settle: the leader's no-op is committed everywhere

    let n = options.total
    cluster.proposedAt = Array(repeating: 0, count: n)
    cluster.latency = Array(repeating: 0, count: n)
    cluster.trackLatency = true
    let cpu0 = cpuSeconds()
    let busy0 = machineBusySeconds()
    let t0 = nanoseconds()
    var proposed = 0
    var dropped = 0
    while cluster.nodes[0].applied < n {
        while proposed < n && proposed - cluster.nodes[0].applied < options.inFlight {
            var command = [UInt8](repeating: 0, count: options.size)  // a fresh client buffer per command
            withUnsafeBytes(of: UInt64(proposed).littleEndian) { bytes in
                for j in 0..<8 { command[j] = bytes[j] }
            }
            for j in 8..<command.count { command[j] = UInt8(truncatingIfNeeded: proposed + j) }
            cluster.proposedAt[proposed] = nanoseconds()
            do {
                try cluster.nodes[0].raft.propose(command)
            } catch {
                dropped += 1
                break
            }
            proposed += 1
        }
        cluster.round()
        let now = nanoseconds()
        if now - lastTick >= tickInterval {
            cluster.tick()
            lastTick = now
        }
    }
    let elapsed = Double(nanoseconds() - t0) / 1e9
    let cpu = cpuSeconds() - cpu0
    let other = machineBusySeconds() - busy0 - cpu

    // Let the followers catch up (not timed) and check that every replica applied the same commands.
    var rounds = 0
    while rounds < 1000 && (cluster.nodes[1].applied < n || cluster.nodes[2].applied < n) {
        if !cluster.round() { cluster.tick() }
        rounds += 1
    }
    for node in cluster.nodes where node.applied != n || node.sum != cluster.nodes[0].sum {
        FileHandleStderr.write("WARNING: \(node.raft.id) applied=\(node.applied) sum=\(node.sum)\n")
    }

    var latency = cluster.latency
    latency.sort()
    let mean = Double(latency.reduce(0, +)) / Double(latency.count) / 1e3
    let p50 = Double(latency[latency.count / 2]) / 1e3
    let p99 = Double(latency[latency.count * 99 / 100]) / 1e3
    func f(_ v: Double, _ digits: Int) -> String {
        let scale = [1.0, 10, 100, 1000][digits]
        return "\((v * scale).rounded() / scale)"
    }
    print(
        "lib=raftlite workload=A label=\"\(options.label)\" n=\(n) k=\(options.inFlight) size=\(options.size) "
            + "elapsed_s=\(f(elapsed, 3)) entries_per_s=\(Int((Double(n) / elapsed).rounded())) "
            + "lat_mean_us=\(f(mean, 1)) lat_p50_us=\(f(p50, 1)) lat_p99_us=\(f(p99, 1)) "
            + "cpu_s=\(f(cpu, 3)) cpu_pct=\(Int((100 * cpu / elapsed).rounded())) "
            + "cpu_us_per_entry=\(f(cpu * 1e6 / Double(n), 2)) other_procs_cpu_pct=\(Int((100 * other / elapsed).rounded())) "
            + "maxrss_MiB=\(f(maxRSSMiB(), 1)) dropped=\(dropped)")
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

do {
    try run()
} catch {
    FileHandleStderr.write("\(error)\n")
    exit(2)
}
