// WALBench: the write-ahead log's group commit, next to the raw sync rate of the same disk, and its restart time.
//
//   swift run -c release --package-path Benchmarks WALBench [-dir DIR] [-seconds 5] [-restart-entries 1000000]
//
// 1. raw: append 4 KiB to a file and fdatasync, in a loop (what ../shared/bench/physlimits.py measures).
// 2. For 1, 16 and 256 appenders (threads): each appends one 128-byte entry and waits until it is durable, then
//    the next; the log's writer covers everything queued with one fdatasync. Appends per second, syncs per second,
//    and the ratio to one appender.
// 3. Restart: a log of N entries of 128 bytes is written, closed, and opened again; the time to open it (replay,
//    checksums, rebuilding the in-memory log) is reported, best and median of 3.
import Foundation
import RaftCore
import RaftStorage

#if canImport(Glibc)
    import Glibc
#endif

func argument(_ name: String, _ fallback: String) -> String {
    let args = CommandLine.arguments
    guard let k = args.firstIndex(of: name), k + 1 < args.count else { return fallback }
    return args[k + 1]
}

let base = argument("-dir", FileManager.default.temporaryDirectory.path)
let seconds = Double(argument("-seconds", "5")) ?? 5
let restartEntries = Int(argument("-restart-entries", "1000000")) ?? 1_000_000
let appenderCounts = argument("-appenders", "1,16,256").split(separator: ",").compactMap { Int($0) }

func scratch(_ name: String) -> String {
    let path = base + "/walbench-\(name)-\(getpid())"
    try? FileManager.default.removeItem(atPath: path)
    return path
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

// 1. The raw sync rate.
func rawSyncRate() -> (perSecond: Double, medianMs: Double) {
    let path = scratch("raw")
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    defer {
        close(fd)
        unlink(path)
    }
    let block = [UInt8](repeating: 0xAB, count: 4096)
    var latencies: [Double] = []
    let start = now()
    while now() - start < seconds {
        _ = block.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let t = now()
        fdatasync(fd)
        latencies.append(now() - t)
    }
    latencies.sort()
    return (Double(latencies.count) / (now() - start), latencies[latencies.count / 2] * 1000)
}

// 2. Group commit: appenders are concurrent tasks, as in a Swift server; each awaits its own write.
final class IndexAllocator: @unchecked Sendable {
    // @unchecked Sendable: `next` is only touched with `lock` held.
    private let lock = NSLock()
    private var next: UInt64 = 1

    /// Takes the next index and queues the write under one lock, so that writes reach the log in index order.
    func append(_ payload: [UInt8], to log: WriteAheadLog, completion: @escaping @Sendable ((any Error)?) -> Void) {
        lock.lock()
        let index = next
        next += 1
        log.persist(
            entries: [Entry(term: Term(1), index: LogIndex(index), data: payload)], hardState: nil,
            completion: completion)
        lock.unlock()
    }
}

func groupCommit(appenders: Int) async throws -> (perSecond: Double, syncsPerSecond: Double, p50Ms: Double) {
    let path = scratch("group\(appenders)")
    defer { try? FileManager.default.removeItem(atPath: path) }
    let log = try WriteAheadLog(directory: path)
    let allocator = IndexAllocator()
    let payload = [UInt8](repeating: 7, count: 128)
    let deadline = now() + seconds
    let before = log.statistics
    let start = now()
    let latencies = await withTaskGroup(of: [Double].self) { group in
        for _ in 0..<appenders {
            group.addTask {
                var mine: [Double] = []
                while now() < deadline {
                    let t = now()
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        allocator.append(payload, to: log) { _ in done.resume() }
                    }
                    mine.append(now() - t)
                }
                return mine
            }
        }
        var all: [Double] = []
        for await mine in group { all += mine }
        return all
    }
    let elapsed = now() - start
    let stats = log.statistics
    log.close()
    let sorted = latencies.sorted()
    return (
        Double(stats.writes - before.writes) / elapsed, Double(stats.syncs - before.syncs) / elapsed,
        sorted.isEmpty ? 0 : sorted[sorted.count / 2] * 1000
    )
}

// 3. Restart time.
func restartTime(entries count: Int) throws -> [Double] {
    let path = scratch("restart")
    defer { try? FileManager.default.removeItem(atPath: path) }
    var options = WriteAheadLog.Options()
    options.sync = false  // writing the log is not what is measured; it is synced once at the end
    do {
        let log = try WriteAheadLog(directory: path, options: options)
        let payload = [UInt8](repeating: 9, count: 128)
        var index: UInt64 = 1
        while index <= UInt64(count) {
            let batch = (index..<min(index + 1000, UInt64(count) + 1)).map {
                Entry(term: Term(1), index: LogIndex($0), data: payload)
            }
            try log.persist(entries: batch, hardState: nil)
            index += UInt64(batch.count)
        }
        try log.persist(
            entries: [], hardState: HardState(term: Term(1), votedFor: nil, commit: LogIndex(UInt64(count))))
        log.close()
    }
    sync()
    var times: [Double] = []
    for _ in 0..<3 {
        let t = now()
        let log = try WriteAheadLog(directory: path)
        let last = log.initialState().lastIndex
        times.append(now() - t)
        log.close()
        precondition(last == LogIndex(UInt64(count)), "replayed \(last), expected \(count)")
    }
    return times.sorted()
}

let raw = rawSyncRate()
print(
    "raw fdatasync after a 4 KiB append: \(Int(raw.perSecond)) syncs/s, median \(String(format: "%.3f", raw.medianMs)) ms  (dir \(base))"
)
var single = 0.0
for appenders in appenderCounts {
    let result = try await groupCommit(appenders: appenders)
    if appenders == 1 { single = result.perSecond }
    let ratio = single > 0 ? result.perSecond / single : 0
    print(
        "appenders=\(appenders) appends_per_s=\(Int(result.perSecond)) syncs_per_s=\(Int(result.syncsPerSecond)) "
            + "appends_per_sync=\(String(format: "%.1f", result.perSecond / max(1, result.syncsPerSecond))) "
            + "p50_ms=\(String(format: "%.3f", result.p50Ms)) vs_one_appender=\(String(format: "%.1f", ratio))x "
            + "vs_raw_sync_rate=\(String(format: "%.1f", result.perSecond / raw.perSecond))x")
}
if restartEntries > 0 {
    let times = try restartTime(entries: restartEntries)
    print(
        "restart: \(restartEntries) entries of 128 bytes replayed in best \(String(format: "%.2f", times[0])) s, "
            + "median \(String(format: "%.2f", times[1])) s")
}
