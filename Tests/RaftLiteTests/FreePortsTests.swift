import Foundation
import NIOCore
import NIOPosix
import RaftLite
import Testing

@Suite struct FreePortsTests {
    /// Ports are distinct across calls, come from below the kernel's ephemeral range (where no outgoing connection's
    /// local port can take one), and can be listened on.
    @Test func portsAreDistinctBelowTheEphemeralRangeAndCanBeBound() async throws {
        let first = try FreePorts.reserve(20)
        let second = try FreePorts.reserve(20)
        let all = first + second
        #expect(Set(all).count == all.count, "\(all)")
        #if os(Linux)
            let text = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
            let low = try #require(text.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) })
            if low - 10000 >= 2000 {
                #expect(all.allSatisfy { (10000..<low).contains($0) }, "\(all) against an ephemeral range from \(low)")
            }
        #endif
        let group = MultiThreadedEventLoopGroup.singleton
        for port in first {
            let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: port).get()
            try await channel.close()
        }
    }
}
