import RaftLite
import Testing

@Suite struct PeerTLSRequirementTests {
    @Test func onlyLoopbackAddressesCountAsLoopback() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]"] {
            #expect(PeerTLSRequirement.isLoopback(host), "\(host)")
        }
        for host in [
            "0.0.0.0", "10.0.0.1", "192.168.1.1", "::", "node1.example", "127.0.0.1.example", "127.0.0", "127.0.0.256",
            "127.0.0.-1", "", "128.0.0.1",
        ] {
            #expect(!PeerTLSRequirement.isLoopback(host), "\(host)")
        }
    }

    @Test func plainTCPOnAnAddressThatIsNotLoopbackIsRefusedUnlessInsecureOrTLS() {
        let loopback = [
            (what: "member \"node0\"'s address", host: "127.0.0.1"), (what: "this node's address", host: "localhost"),
        ]
        #expect(PeerTLSRequirement.refusal(addresses: loopback, tlsConfigured: false, insecure: false) == nil)

        let open = loopback + [(what: "--listen-host", host: "0.0.0.0")]
        let refusal = PeerTLSRequirement.refusal(addresses: open, tlsConfigured: false, insecure: false)
        #expect(refusal?.contains("--listen-host 0.0.0.0 is not a loopback address") == true, "\(refusal ?? "")")
        #expect(refusal?.contains("--peer-cert") == true)
        #expect(refusal?.contains("--insecure") == true)
        #expect(PeerTLSRequirement.refusal(addresses: open, tlsConfigured: true, insecure: false) == nil)
        #expect(PeerTLSRequirement.refusal(addresses: open, tlsConfigured: false, insecure: true) == nil)

        let member = [(what: "member \"node2\"'s address", host: "10.0.0.3")] + loopback
        #expect(
            PeerTLSRequirement.refusal(addresses: member, tlsConfigured: false, insecure: false)?.hasPrefix(
                "member \"node2\"'s address 10.0.0.3") == true)
    }
}
