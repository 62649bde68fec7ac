import CoreMetrics
import NIOCore
import RaftCore
import RaftTransport

// The failure detector the seed was built to be: per member, when this node last heard from it and the round trip
// to it (the transport pings every peer), and on the leader, which followers answered within the current CheckQuorum
// period (the signal CheckQuorum itself uses). A stream reports members becoming reachable, unreachable and removed.

/// How one member looks from this node.
public struct MemberHealth: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var role: ClusterMembership.Role
    /// How long ago anything arrived from the member (nil: never, since this node started).
    public var lastContact: TimeAmount?
    /// The latest round trip the transport measured to it.
    public var roundTrip: TimeAmount?
    /// Leader only: the member answered within the current or the previous CheckQuorum period. Nil elsewhere.
    public var active: Bool?
    /// Heard from within an election timeout.
    public var reachable: Bool

    public var description: String {
        let contact = lastContact.map { "\(Double($0.nanoseconds) / 1e6) ms ago" } ?? "never"
        return "\(name) (\(role.rawValue)): \(reachable ? "reachable" : "unreachable"), last heard \(contact)"
    }
}

/// A change in how a member looks from this node (`RaftNode.memberHealthChanges()`).
public enum MemberHealthChange: Sendable, Hashable, CustomStringConvertible {
    case reachable(String)
    /// Nothing heard from the member for an election timeout; `since` is how long ago it was last heard from
    /// (nil: never).
    case unreachable(String, since: TimeAmount?)
    /// The member is no longer in the membership in effect.
    case removed(String)

    public var description: String {
        switch self {
        case .reachable(let name): "\(name) is reachable"
        case .unreachable(let name, let since):
            "\(name) is unreachable" + (since.map { " (last heard \(Double($0.nanoseconds) / 1e6) ms ago)" } ?? "")
        case .removed(let name): "\(name) was removed"
        }
    }
}

extension RaftNode {
    /// How every other member looks from this node, by name.
    public func memberHealth() async -> [MemberHealth] {
        let stats = await transport.statistics()
        return await onLoop { self.runtime.value.map { self.health(stats, $0) } ?? [] } ?? []
    }

    /// Members becoming reachable, unreachable, or removed, as this node sees them (checked every tick). The stream
    /// ends when the node stops.
    public func memberHealthChanges() -> AsyncStream<MemberHealthChange> {
        streams.healthChanges()
    }

    func health(_ stats: [NodeID: PeerStatistics], _ rt: NodeRuntime<Machine>) -> [MemberHealth] {
        let now = NIODeadline.now()
        let timeout = options.tickInterval * Int64(options.electionTicks)
        let membership = rt.raft.membership
        let leading = rt.raft.role == .leader
        var result: [MemberHealth] = []
        for id in membership.members where id != self.id {
            let s = stats[id]
            let contact = s?.lastContact.map {
                TimeAmount.nanoseconds(Int64(now.uptimeNanoseconds) - Int64($0.uptimeNanoseconds))
            }
            let role: ClusterMembership.Role =
                membership.voters.contains(id) ? .voter : membership.outgoing.contains(id) ? .outgoingVoter : .learner
            let progress = leading ? rt.raft.progress(of: id) : nil
            result.append(
                MemberHealth(
                    name: member(id: id, rt)?.name ?? "\(id)", role: role, lastContact: contact,
                    roundTrip: s?.roundTrip, active: progress.map(\.recentActive),
                    reachable: contact.map { $0 < timeout } ?? false))
        }
        return result.sorted { $0.name < $1.name }
    }

    /// Compares the members' health with the last report and publishes what changed; updates the metrics.
    func checkHealth() {
        guard runtime.value != nil else { return }
        let transport = self.transport
        Task {
            let stats = await transport.statistics()
            self.eventLoop.execute {
                guard let rt = self.runtime.value, !rt.stopped else { return }
                let now = self.health(stats, rt)
                var previous = rt.lastHealth
                var changes: [MemberHealthChange] = []
                for h in now {
                    let was = previous.removeValue(forKey: h.name)
                    if was != h.reachable {
                        changes.append(h.reachable ? .reachable(h.name) : .unreachable(h.name, since: h.lastContact))
                    }
                    Gauge(label: "raft_peer_last_contact_seconds", dimensions: [("node", self.name), ("peer", h.name)])
                        .record(h.lastContact.map { Double($0.nanoseconds) / 1e9 } ?? -1)
                }
                for name in previous.keys.sorted() { changes.append(.removed(name)) }
                rt.lastHealth = Dictionary(uniqueKeysWithValues: now.map { ($0.name, $0.reachable) })
                for change in changes {
                    self.logger.info("member health", metadata: ["change": "\(change)"])
                    self.observers.value.publish(change)
                }
            }
        }
    }
}
