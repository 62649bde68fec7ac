import RaftCore
import RaftLite
import Testing

@Suite struct ClusterConfigurationTests {
    @Test func readsTheSeedsFormatWithStringOrNumberPorts() throws {
        let json = """
            {"node0": {"ip": "127.0.0.1", "port": "5567"},
             "node1": {"ip": "127.0.0.1", "port": 5566, "http_port": 8566, "zone": "b"},
             "node2": {"ip": "10.0.0.3", "port": " 5565 "}}
            """
        let cluster = try ClusterConfiguration(json: Array(json.utf8))
        #expect(cluster.members.map(\.name) == ["node0", "node1", "node2"])
        #expect(cluster.members.map(\.port) == [5567, 5566, 5565])
        #expect(cluster["node2"]?.host == "10.0.0.3")
        #expect(try cluster["node1"]?.port(field: "http_port") == 8566)
        #expect(cluster["node1"]?.fields["zone"] == .string("b"), "unknown fields are kept")
        #expect(cluster["node0"]?.id == ClusterConfiguration.nodeID(for: "node0"))
        // The same names give the same ids and cluster id, whatever the addresses.
        let elsewhere = try ClusterConfiguration([
            "node0": ["ip": "192.168.1.1", "port": 1], "node1": ["ip": "h", "port": 2],
            "node2": ["ip": "h", "port": 3],
        ])
        #expect(elsewhere.clusterID == cluster.clusterID)
        #expect(elsewhere.members.map(\.id) == cluster.members.map(\.id))
        // And it survives a round trip through its own JSON.
        #expect(try ClusterConfiguration(json: Array(cluster.json().utf8)) == cluster)
    }

    @Test(arguments: [
        (#"{"node0": {"ip": "127.0.0.1", "port": "abc"}}"#, "node0.port"),
        (#"{"node0": {"ip": "127.0.0.1", "port": 70000}}"#, "node0.port"),
        (#"{"node0": {"ip": "127.0.0.1", "port": 5.5}}"#, "node0.port"),
        (#"{"node0": {"port": 5567}}"#, "node0.ip"),
        (#"{"node0": {"ip": 12, "port": 5567}}"#, "node0.ip"),
        (#"{"node0": {"ip": "127.0.0.1"}}"#, "node0.port"),
        (#"{"node0": "127.0.0.1:5567"}"#, "node0"),
        (#"{"node0": {"ip": "127.0.0.1", "port": 1, "http_port": "x"}}"#, "node0.http_port"),
    ])
    func aMalformedConfigurationNamesTheFieldAtFault(json: String, field: String) throws {
        do {
            let cluster = try ClusterConfiguration(json: Array(json.utf8))
            _ = try cluster["node0"]?.port(field: "http_port")
            Issue.record("accepted \(json)")
        } catch {
            #expect(error.path == field, "\(error)")
            #expect("\(error)".contains(field))
        }
    }

    @Test func invalidJsonAndEmptyClustersAreRefused() {
        for json in ["", "{", "[1, 2]", "{}", "null"] {
            #expect(throws: ClusterConfigurationError.self, "\(json)") {
                try ClusterConfiguration(json: Array(json.utf8))
            }
        }
        #expect(throws: ClusterConfigurationError.self) {
            try ClusterConfiguration(contentsOfFile: "/nonexistent/c.json")
        }
    }

    @Test func aNodeNotInTheConfigurationIsRefusedByName() throws {
        let cluster = try ClusterConfiguration(["node0": ["ip": "127.0.0.1", "port": "5567"]])
        #expect(throws: RaftNodeError.self) { try RaftNode(cluster: cluster, name: "node9") }
    }
}
