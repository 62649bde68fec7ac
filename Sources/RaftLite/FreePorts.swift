#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Foundation
import NIOConcurrencyHelpers

/// Free loopback ports for local clusters and tests.
///
/// Ports come from below the kernel's ephemeral range when there is room there: the kernel gives an outgoing
/// connection its local port from that range, so a port chosen inside it can be taken by any connection between the
/// check and the bind (a busy test run once lost a node's listen port that way). Below it, a port is only ever taken by
/// a program that asks for it by number. In one process a cursor that starts at a random point and only moves on keeps
/// two callers from being given the same port; each port is checked by binding it.
public enum FreePorts {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Where ports are taken from: 10000 up to the start of the ephemeral range, or nil (let the kernel choose) when
    /// that leaves fewer than 2000.
    static let range: Range<Int>? = {
        let low = ephemeralRangeStart() ?? 32768
        let top = min(low, 65536)
        return top - 10000 >= 2000 ? 10000..<top : nil
    }()

    private static let cursor = NIOLockedValueBox<Int?>(nil)

    /// `count` distinct ports that were free on 127.0.0.1 a moment ago. (Another program may take one before it is
    /// used; callers retry with new ports when binding fails.)
    public static func reserve(_ count: Int) throws(Failure) -> [Int] {
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        var ports: [Int] = []
        var tries = 0
        while ports.count < count {
            tries += 1
            guard tries <= count + 5000 else {
                throw Failure(description: "found only \(ports.count) of \(count) free ports on 127.0.0.1")
            }
            let wanted = nextCandidate()
            #if canImport(Glibc)
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #else
                let fd = socket(AF_INET, SOCK_STREAM, 0)
            #endif
            guard fd >= 0 else { throw Failure(description: "cannot create a socket (errno \(errno))") }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(wanted).bigEndian
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                    bind(fd, raw, length) == 0 && getsockname(fd, raw, &length) == 0
                }
            }
            guard bound else {
                let reason = errno
                close(fd)
                // A port in use is skipped; anything else (or a failure to get any port from the kernel) is an error.
                if wanted != 0 && reason == EADDRINUSE { continue }
                throw Failure(description: "cannot bind a free port on 127.0.0.1 (errno \(reason))")
            }
            sockets.append(fd)
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }

    /// The next port to try, or 0 to let the kernel choose.
    private static func nextCandidate() -> Int {
        guard let range else { return 0 }
        return cursor.withLockedValue { cursor in
            let next =
                cursor.map { $0 + 1 < range.upperBound ? $0 + 1 : range.lowerBound }
                ?? Int.random(in: range)
            cursor = next
            return next
        }
    }

    /// The first port of the kernel's ephemeral range, where the system says it.
    private static func ephemeralRangeStart() -> Int? {
        #if os(Linux)
            guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
                let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
                let low = Int(first), (1..<65536).contains(low)
            else { return nil }
            return low
        #else
            // macOS's default (net.inet.ip.portrange.first).
            return 49152
        #endif
    }
}
