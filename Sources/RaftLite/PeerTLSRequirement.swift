/// The rule for running without TLS between peers: plain TCP only when every address a node listens on or is
/// reached at is a loopback address, since only then is nobody else able to reach its peer port.
public enum PeerTLSRequirement {
    /// Whether `host` names this machine's loopback interface only: an IPv4 address in 127.0.0.0/8, `::1`
    /// (bracketed or not), or `localhost`. Anything else, `0.0.0.0` and host names included, counts as reachable
    /// from elsewhere.
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { part in
            part.count <= 3 && !part.isEmpty && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber)
                && (Int(part) ?? 256) <= 255
        }
    }

    /// The first address that is not loopback, described (e.g. "node1's address 10.0.0.2"), nil when all are.
    ///
    /// - Parameter addresses: what each address is (for the message) and the host.
    public static func firstNonLoopback(_ addresses: [(what: String, host: String)]) -> (what: String, host: String)? {
        addresses.first { !isLoopback($0.host) }
    }

    /// Why a node must not start as configured, nil when it may: some address is not loopback, no peer TLS is
    /// configured, and `insecure` was not given.
    public static func refusal(
        addresses: [(what: String, host: String)], tlsConfigured: Bool, insecure: Bool
    ) -> String? {
        guard !tlsConfigured, !insecure, let address = firstNonLoopback(addresses) else { return nil }
        return "\(address.what) \(address.host) is not a loopback address, and peers would talk plain TCP: anyone "
            + "who can reach the peer port could join the cluster's votes. Give --peer-cert FILE --peer-key FILE "
            + "--peer-ca FILE (raft-lite certs makes development ones), or pass --insecure to run without TLS anyway"
    }
}
