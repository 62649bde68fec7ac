import RaftCore
import RaftTesting
import Testing

/// A cluster of `count` voters with node 1 elected and its no-op committed everywhere.
func elected(
    _ count: Int = 3, configure: (inout RaftConfiguration) -> Void = { _ in }
) throws -> LockstepCluster {
    var cluster = try LockstepCluster(count: count, configure: configure)
    cluster.campaign(NodeID(1))
    cluster.stabilize()
    try #require(cluster[NodeID(1)]?.role == .leader)
    return cluster
}
