import Foundation
import ProcessTesting
import RaftKVClient
import Testing

/// `ServerCluster(peerTLS: true)`: every node it starts gets the three peer TLS flags with a certificate of its own
/// name from the cluster's one CA, and the cluster works.
@Suite(.serialized, .clusterSlot) struct PeerTLSClusterTests {
    @Test func aClusterStartedWithPeerTLSElectsALeaderAndCommitsThroughAFollower() async throws {
        let cluster = try ServerCluster(peerTLS: true)
        defer { cluster.stopAll() }
        let certificates = try #require(cluster.peerCertificates)
        for name in cluster.names {
            let arguments = try #require(cluster.processes[name]).process.arguments ?? []
            #expect(
                arguments.contains(certificates.certificateFile(name)) && arguments.contains(certificates.caFile),
                "\(name) was started with its certificate and the CA: \(arguments)")
        }
        let leader = try #require(await KVServerTests.waitForLeader(cluster), "the nodes agreed on a leader")
        let follower = try #require(cluster.names.first { $0 != leader })
        let response = try await KVServerTests.client(cluster, node: follower).put("k", Array("v".utf8))
        #expect(response.status == 200, "a write through a follower, which forwards it over TLS: \(response.status)")
        for name in cluster.names {
            let lines = try #require(cluster.processes[name]).lines
            #expect(!lines.contains { $0.contains("does not name it") }, "\(name)'s certificate names it")
        }
        // A node started later (a spare, a joining node) gets a certificate of its own name from the same CA.
        let later = try cluster.peerTLSArguments(for: "node3")
        #expect(
            later == [
                "--peer-cert", certificates.certificateFile("node3"), "--peer-key",
                certificates.keyFile("node3"), "--peer-ca", certificates.caFile,
            ])
        #expect(FileManager.default.fileExists(atPath: certificates.certificateFile("node3")))
    }
}
