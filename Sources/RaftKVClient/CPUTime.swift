import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// CPU time used by processes, for load reports: a load generator that reports its own CPU beside the server's
/// shows when it, not the server, is the limit.
enum CPUTime {
    /// User plus system CPU seconds of this process so far.
    static func ofThisProcess() -> Double {
        var time = timespec()
        guard clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time) == 0 else { return 0 }
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// User plus system CPU seconds of process `pid` so far, from `/proc/PID/stat` (Linux); nil where that cannot
    /// be read (another system, a process that has gone).
    static func ofProcess(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // After the command name (in parentheses, which may hold spaces): state is field 0, utime 11, stime 12.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ticks > 0 ? (user + system) / ticks : nil
    }

    /// What a set of processes had used at one moment.
    struct Sample {
        var at: NIODeadline
        var client: Double
        var servers: [Int32: Double]

        static func now(servers pids: [Int32]) -> Sample {
            var servers: [Int32: Double] = [:]
            for pid in pids { servers[pid] = ofProcess(pid) }
            return Sample(at: .now(), client: ofThisProcess(), servers: servers)
        }
    }
}
