import JepsenKit
import ProcessTesting
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The nemesis's proxies must forward every connection they let through: a connection the proxy accepts and joins
/// to its target, but whose bytes it never reads, cuts a link that the run believes healthy (a follower that never
/// hears the leader, pre-vote answers that never arrive).
@Suite(.clusterSlot) struct LinkProxyTests {
    @Test func everyConnectionThroughAnOpenProxyCarriesItsBytes() async throws {
        let target = try Listener()
        defer { close(target.fd) }
        let port = try #require(try ServerCluster.freePorts(1).first)
        let proxy = LinkProxy(listenPort: port, targetPort: target.port)
        try await proxy.start()
        let count = 100
        let hello: [UInt8] = Array("hello".utf8)
        var clients: [Int32] = []
        var servers: [Int32] = []
        defer { for fd in clients + servers { close(fd) } }
        for k in 0..<count {
            let client = try #require(Self.dial(port), "connection \(k) to the proxy")
            clients.append(client)
            #expect(send(client, hello, hello.count, 0) == hello.count)
            // The proxy connects to the target when it accepts: the target sees a connection for each client.
            servers.append(try #require(target.next(waitingMilliseconds: 10_000), "the proxy reached the target"))
        }
        let received = Self.receiveAll(servers, count: hello.count, waitingMilliseconds: 10_000)
        await proxy.stop()
        let wedged = received.filter { $0 != hello }.count
        #expect(wedged == 0, "\(wedged) of \(count) connections through the proxy carried nothing")
    }

    /// TLS between the nodes passes through a proxy untouched (it forwards bytes, never records), and the proxy
    /// tells a connection that began with a TLS handshake record from one that began with a plain RaftLite frame —
    /// what the TLS Jepsen run counts to show its peers really spoke TLS.
    @Test func aProxyForwardsTLSBytesAsTheyAreAndCountsHowEachConnectionBegan() async throws {
        let target = try Listener()
        defer { close(target.fd) }
        let port = try #require(try ServerCluster.freePorts(1).first)
        let proxy = LinkProxy(listenPort: port, targetPort: target.port)
        try await proxy.start()
        // The start of a TLS 1.2 ClientHello record (type 22, version 3.1, a length, handshake type 1), sent with its
        // first byte alone; and a plain frame (length 7, version 1, type 0, a checksum, a byte).
        let tls: [UInt8] = [0x16, 0x03, 0x01, 0x00, 0x2F, 0x01, 0x00, 0x00, 0x2B, 0x03, 0x03]
        let plain: [UInt8] = [0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0x00]
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var servers: [Int32] = []
        for (k, bytes) in [tls, plain].enumerated() {
            let client = try #require(Self.dial(port), "connection \(k) to the proxy")
            fds.append(client)
            let server = try #require(target.next(waitingMilliseconds: 10_000), "the proxy reached the target")
            fds.append(server)
            servers.append(server)
            #expect(send(client, bytes, 1, 0) == 1)
            usleep(50_000)
            #expect(send(client, Array(bytes.dropFirst()), bytes.count - 1, 0) == bytes.count - 1)
        }
        let received = Self.receiveAll(servers, count: tls.count, waitingMilliseconds: 10_000)
        let seen = proxy.connectionsSeen
        await proxy.stop()
        #expect(received == [tls, plain], "the bytes arrived as they were sent")
        #expect(seen == LinkConnections(tls: 1, plain: 1), "\(seen)")
    }

    private static func dial(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Self.streamType, 0)
        guard fd >= 0 else { return nil }
        var address = Self.loopback(port: port)
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        if !ok {
            close(fd)
            return nil
        }
        return fd
    }

    /// Reads from every socket until each gave `count` bytes or closed, or nothing came for `waitingMilliseconds`.
    private static func receiveAll(_ fds: [Int32], count: Int, waitingMilliseconds: Int32) -> [[UInt8]] {
        var received = [[UInt8]](repeating: [], count: fds.count)
        var open = Set(fds.indices)
        var buffer = [UInt8](repeating: 0, count: 256)
        while !open.isEmpty {
            let waiting = open.sorted()
            var pollers = waiting.map { pollfd(fd: fds[$0], events: Int16(POLLIN), revents: 0) }
            guard poll(&pollers, nfds_t(pollers.count), waitingMilliseconds) > 0 else { break }
            for (i, poller) in zip(waiting, pollers) where poller.revents != 0 {
                let n = recv(fds[i], &buffer, buffer.count, 0)
                if n > 0 { received[i] += buffer[0..<n] }
                if n <= 0 || received[i].count >= count { open.remove(i) }
            }
        }
        return received
    }

    fileprivate static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    #if canImport(Glibc)
        fileprivate static let streamType = Int32(SOCK_STREAM.rawValue)
    #else
        fileprivate static let streamType = SOCK_STREAM
    #endif
}

/// A listening socket on a free loopback port.
private struct Listener {
    let fd: Int32
    let port: Int

    struct Failure: Error {}

    init() throws {
        fd = socket(AF_INET, LinkProxyTests.streamType, 0)
        guard fd >= 0 else { throw Failure() }
        var address = LinkProxyTests.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw Failure()
        }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// The next connection made to it, if one comes within `waitingMilliseconds`.
    func next(waitingMilliseconds: Int32) -> Int32? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, waitingMilliseconds) == 1 else { return nil }
        let client = accept(fd, nil, nil)
        return client >= 0 ? client : nil
    }
}
