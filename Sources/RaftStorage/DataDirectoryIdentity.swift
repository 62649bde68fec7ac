import Foundation
import RaftCore

/// Whose data directory this is: one node of one cluster, created for one bootstrap member set.
///
/// Written to `DIR/IDENTITY` (atomically, synced) when the directory is set up, and checked on every open: two
/// nodes must never share a vote history (a node started on another node's directory, or a copy of it, could grant
/// a second vote in a term), and a bootstrap member list changed under existing data can lose committed entries (a
/// majority of a larger cluster need not overlap the majority that committed them). Only names and ids count:
/// addresses may change freely.
///
/// `members` is the cluster's *bootstrap* configuration — the member list of the cluster file it was created with —
/// not the membership in effect: that one lives in the log (configuration entries) and snapshots, changes through
/// the log, and never invalidates a directory. A node that joined a running cluster is not one of `members`: its
/// identity binds its own name to the cluster it joined (that cluster's id and bootstrap members).
public struct DataDirectoryIdentity: Sendable, Hashable, CustomStringConvertible {
    public var clusterID: String
    public var nodeName: String
    public var nodeID: NodeID
    /// The bootstrap configuration's member names, sorted (unchanged by later membership changes).
    public var members: [String]

    public init(clusterID: String, nodeName: String, nodeID: NodeID, members: [String]) {
        self.clusterID = clusterID
        self.nodeName = nodeName
        self.nodeID = nodeID
        self.members = members.sorted()
    }

    public var description: String {
        "node \"\(nodeName)\" (id \(String(nodeID.rawValue, radix: 16))) of cluster \"\(clusterID)\" with members "
            + members.joined(separator: ", ")
    }

    // MARK: - The IDENTITY file

    private struct File: Codable {
        var format: Int
        var cluster: String
        var node: String
        /// Hexadecimal: a JSON number cannot hold every 64-bit id exactly.
        var nodeID: String
        var members: [String]
    }

    func encoded() -> [UInt8] {
        let file = File(
            format: WriteAheadLog.formatVersion, cluster: clusterID, node: nodeName,
            nodeID: String(nodeID.rawValue, radix: 16), members: members)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array((try? encoder.encode(file)) ?? Data()) + [10]
    }

    /// The identity recorded in a data directory (its IDENTITY file), read without opening the directory or taking
    /// its lock; nil if the directory has none (new, or set up before identities existed).
    /// - Throws: `StorageFailure` if the file exists but cannot be read or is not an identity.
    public static func stored(
        inDataDirectory directory: String, fileSystem: any FileSystem = PosixFileSystem()
    ) throws(StorageFailure) -> DataDirectoryIdentity? {
        let path = directory + "/IDENTITY"
        guard fileSystem.exists(path) else { return nil }
        guard let identity = decode(try fileSystem.read(path, upTo: 1 << 20)) else {
            throw StorageFailure(.corrupt, "the data directory's IDENTITY file cannot be read", file: path)
        }
        return identity
    }

    /// The identity in an IDENTITY file's bytes, or nil if they are not one.
    static func decode(_ bytes: [UInt8]) -> DataDirectoryIdentity? {
        guard let file = try? JSONDecoder().decode(File.self, from: Data(bytes)),
            let id = UInt64(file.nodeID, radix: 16)
        else { return nil }
        return DataDirectoryIdentity(
            clusterID: file.cluster, nodeName: file.node, nodeID: NodeID(id), members: file.members)
    }

    /// Why a directory of identity `self` must not be opened by `expected`, or nil if it may.
    func refusal(toOpenAs expected: DataDirectoryIdentity) -> String? {
        if nodeName != expected.nodeName || nodeID != expected.nodeID {
            return "this data directory belongs to node \"\(nodeName)\" of cluster \"\(clusterID)\", not to node "
                + "\"\(expected.nodeName)\" of cluster \"\(expected.clusterID)\": two nodes must never share one vote "
                + "history (a copy of another node's directory is refused too). Start node \"\(expected.nodeName)\" on "
                + "its own data directory"
        }
        if members != expected.members {
            return
                "this data directory was created for node \"\(nodeName)\" of cluster \"\(clusterID)\" with bootstrap "
                + "members \(members.joined(separator: ", ")), but the node is now configured with members "
                + "\(expected.members.joined(separator: ", ")) (cluster \"\(expected.clusterID)\"). The cluster file only "
                + "bootstraps the first configuration, and changing its member list under existing data can lose "
                + "committed entries: membership changes are not supported through the cluster file. Change the "
                + "membership through the log (RaftNode.addVoter/removeMember, or `raft-lite serve --join` and the "
                + "HTTP /v1/members API) and restore the original member list in the cluster file; a new cluster needs "
                + "new, empty data directories"
        }
        if clusterID != expected.clusterID {
            return "this data directory belongs to cluster \"\(clusterID)\", not to cluster \"\(expected.clusterID)\" "
                + "(both have a node \"\(nodeName)\" and members \(members.joined(separator: ", "))): nodes of two "
                + "clusters must never share a log. Give this node its own data directory (a new cluster needs new, "
                + "empty data directories), or use the cluster id the directory was created with"
        }
        return nil
    }
}
