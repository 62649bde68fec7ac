import Foundation
import NIOCore
import RaftCore
import RaftTransport

// Membership changes and leadership transfer, as `RaftNode` offers them: the core decides (`Raft.proposeConfigChange`,
// `Raft.transferLeadership`); this file names members, waits for changes to commit, and keeps the transport's peers
// in step with the membership in effect.

extension ClusterConfiguration.Member {
    /// The member as the context the core keeps with it in configuration entries and snapshots: its cluster-file
    /// entry as JSON, with its name (`{"name": ..., "ip": ..., "port": ..., ...fields}`).
    public var context: [UInt8] {
        var entry = fields
        entry["name"] = .string(name)
        entry["ip"] = .string(host)
        entry["port"] = .number(Double(port))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(JSONValue.object(entry))) ?? Data())
    }

    /// The member a context describes; nil for bytes that are not one (a context is replicated data: a corrupt or
    /// hostile one must not stop the node).
    public init?(context: [UInt8]) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(context)),
            case .object(let entry) = value, case .string(let name)? = entry["name"], !name.isEmpty,
            name.utf8.count <= 255, case .string(let host)? = entry["ip"], !host.isEmpty, let rawPort = entry["port"],
            let port = try? ClusterConfiguration.port(rawPort, at: "port")
        else { return nil }
        self.init(
            name: name, host: host, port: port, fields: entry.filter { !["name", "ip", "port"].contains($0.key) })
    }
}

/// The membership a node has in effect, with names and addresses.
public struct ClusterMembership: Sendable, Hashable {
    /// What a member does.
    public enum Role: String, Sendable, Hashable {
        /// Votes (in the configuration being entered, and in the one being left if joint).
        case voter
        /// Votes only in the configuration being left: a change removes or demotes it once the joint one is left.
        case outgoingVoter = "outgoing-voter"
        /// Receives the log without a vote.
        case learner
    }

    public struct Member: Sendable, Hashable {
        public var name: String
        public var host: String
        public var port: Int
        public var role: Role
        /// The member's extra fields from its cluster-file entry (for example `http_port`).
        public var fields: [String: JSONValue]
    }

    /// Every member, by name.
    public var members: [Member]
    /// A joint configuration is in effect (a change is under way).
    public var isJoint: Bool
    /// The index of the configuration entry in effect (zero for the cluster file's bootstrap configuration), and
    /// whether it is committed.
    public var index: LogIndex
    public var committed: Bool

    public var voters: [Member] { members.filter { $0.role != .learner } }
    public var learners: [Member] { members.filter { $0.role == .learner } }
}

/// One step of a membership change, by name (see `RaftNode.changeMembership`).
public enum MembershipStep: Sendable, Hashable {
    /// Adds a member with a vote, or promotes a learner.
    case addVoter(ClusterConfiguration.Member)
    /// Adds a learner, or demotes a voter.
    case addLearner(ClusterConfiguration.Member)
    /// Promotes a learner that is already a member.
    case promote(String)
    /// Removes a member.
    case remove(String)
}

/// A change that waits for its configuration entry to be applied on this node.
struct ConfigWaiter {
    var index: LogIndex
    var term: Term
    /// Whether the change leaves a joint configuration that the leader leaves by itself: then the caller waits for
    /// that too.
    var waitsForLeave: Bool
    var promise: EventLoopPromise<Void>
}

extension RaftNode {
    // MARK: - Reading the membership

    /// The membership in effect on this node (the latest in its log, committed or not), with names and addresses.
    public func membership() async -> ClusterMembership? {
        await onLoop { self.runtime.value.map { self.describeMembership($0) } } ?? nil
    }

    func describeMembership(_ rt: NodeRuntime<Machine>) -> ClusterMembership {
        let status = rt.raft.status
        let m = status.membership
        var members: [ClusterMembership.Member] = []
        for id in m.members {
            let role: ClusterMembership.Role =
                m.voters.contains(id) ? .voter : m.outgoing.contains(id) ? .outgoingVoter : .learner
            let info = member(id: id, rt)
            members.append(
                ClusterMembership.Member(
                    name: info?.name ?? "\(id)", host: info?.host ?? "", port: info?.port ?? 0, role: role,
                    fields: info?.fields ?? [:]))
        }
        return ClusterMembership(
            members: members.sorted { $0.name < $1.name }, isJoint: m.isJoint, index: status.membershipIndex,
            committed: status.membershipIndex <= status.commitIndex)
    }

    /// The name and address of node `id`: from this node's cluster file if it names the node (a local address wins:
    /// each node may reach a peer its own way, through a proxy or a NAT), else from the membership in effect (the
    /// member's context, replicated with the change that added it).
    func member(id: NodeID, _ rt: NodeRuntime<Machine>) -> ClusterConfiguration.Member? {
        if id == self.id { return selfMember }
        if let local = cluster.member(id: id) { return local }
        if let context = rt.raft.membership.contexts[id], let member = ClusterConfiguration.Member(context: context) {
            return member
        }
        return rt.knownMembers[id]
    }

    /// The name of node `id`, as best known.
    func name(of id: NodeID) -> String? {
        guard let rt = runtime.value else { return cluster.member(id: id)?.name }
        return member(id: id, rt)?.name
    }

    // MARK: - Changing it

    /// Adds a learner: a member that receives the log (and snapshots) but does not vote. Returns once the change is
    /// committed and applied here. Call on the leader.
    public func addLearner(_ member: ClusterConfiguration.Member) async throws(RaftNodeError) {
        try await changeMembership([.addLearner(member)], transition: .simple)
    }

    /// Adds a voter the safe way: as a learner first, promoted once its log is within `Options.learnerCatchUpLag`
    /// entries of the leader's (so that adding it never stalls commits), then promoted by a change of its own.
    /// Returns once the promotion is committed. A member that is already a learner is only caught up and promoted.
    public func addVoter(_ member: ClusterConfiguration.Member) async throws(RaftNodeError) {
        let current = await membership()
        if current?.members.first(where: { $0.name == member.name })?.role != .learner {
            try await addLearner(member)
        }
        try await waitUntilCaughtUp(member.id)
        try await changeMembership([.promote(member.name)], transition: .simple)
    }

    /// Promotes a learner to a voter, once it has caught up (see `addVoter`).
    public func promote(_ name: String) async throws(RaftNodeError) {
        try await waitUntilCaughtUp(ClusterConfiguration.nodeID(for: name))
        try await changeMembership([.promote(name)], transition: .simple)
    }

    /// Removes a member (voter or learner). A leader that removes itself keeps leading until the change commits,
    /// then hands leadership to the most up-to-date voter.
    public func removeMember(_ name: String) async throws(RaftNodeError) {
        try await changeMembership([.remove(name)], transition: .simple)
    }

    /// Replaces one voter with another in one joint change (the new one is caught up as a learner first).
    public func replaceVoter(_ old: String, with new: ClusterConfiguration.Member) async throws(RaftNodeError) {
        try await addLearner(new)
        try await waitUntilCaughtUp(new.id)
        try await changeMembership([.promote(new.name), .remove(old)], transition: .auto)
    }

    /// Makes several changes at once. With `.auto` (the default for more than one voter changing) they go through a
    /// joint configuration that the leader leaves by itself once it is committed, and this returns once the
    /// configuration after it is committed; with `.explicit` the joint configuration stays until `leaveJoint()`;
    /// `.simple` applies a change of at most one voter directly.
    ///
    /// - Throws: `RaftNodeError.membership` with the core's reason (not the leader, a change in progress, would
    ///   lose quorum, invalid), or the errors of a proposal (`timedOut`: the outcome is unknown; `dropped`).
    public func changeMembership(_ steps: [MembershipStep], transition: ConfigChange.Transition = .auto)
        async throws(RaftNodeError)
    {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            guard let rt = self.runtime.value, !rt.stopped else { return promise.fail(RaftNodeError.stopped) }
            var coreSteps: [ConfigChange.Step] = []
            for step in steps {
                switch step {
                case .addVoter(let m):
                    coreSteps.append(ConfigChange.Step(.addVoter, m.id, context: m.context))
                    rt.knownMembers[m.id] = m
                case .addLearner(let m):
                    coreSteps.append(ConfigChange.Step(.addLearner, m.id, context: m.context))
                    rt.knownMembers[m.id] = m
                case .promote(let name):
                    coreSteps.append(ConfigChange.Step(.addVoter, ClusterConfiguration.nodeID(for: name)))
                case .remove(let name):
                    coreSteps.append(ConfigChange.Step(.remove, ClusterConfiguration.nodeID(for: name)))
                }
            }
            self.proposeChange(ConfigChange(coreSteps, transition: transition), rt, promise: promise)
        }
        try await Self.outcome(of: promise.futureResult)
    }

    /// Leaves a joint configuration entered with `.explicit`.
    public func leaveJoint() async throws(RaftNodeError) {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            guard let rt = self.runtime.value, !rt.stopped else { return promise.fail(RaftNodeError.stopped) }
            self.proposeChange(.leaveJoint, rt, promise: promise)
        }
        try await Self.outcome(of: promise.futureResult)
    }

    static func outcome(of future: EventLoopFuture<Void>) async throws(RaftNodeError) {
        do {
            try await future.get()
        } catch let error as RaftNodeError {
            throw error
        } catch {
            throw .stopped
        }
    }

    private func proposeChange(_ change: ConfigChange, _ rt: NodeRuntime<Machine>, promise: EventLoopPromise<Void>) {
        do throws(MembershipError) {
            let index = try rt.raft.proposeConfigChange(change)
            let waiter = ConfigWaiter(
                index: index, term: rt.raft.term,
                waitsForLeave: !change.isLeaveJoint && change.transition == .auto, promise: promise)
            rt.configWaiters.append(waiter)
            let deadline = options.proposalTimeout
            eventLoop.scheduleTask(in: deadline) {
                promise.fail(RaftNodeError.timedOut)
            }
            logger.notice("membership change proposed", metadata: ["change": "\(change)", "index": "\(index)"])
            process()
        } catch {
            promise.fail(RaftNodeError.membership(error, leaderHint: rt.raft.leader.flatMap { name(of: $0) }))
        }
    }

    /// Waits until the leader sees `id`'s log within `Options.learnerCatchUpLag` entries of its own.
    func waitUntilCaughtUp(_ id: NodeID) async throws(RaftNodeError) {
        let deadline = NIODeadline.now() + options.learnerCatchUpTimeout
        while true {
            let state = await onLoop { () -> Result<Bool, RaftNodeError> in
                guard let rt = self.runtime.value, !rt.stopped else { return .failure(.stopped) }
                guard rt.raft.role == .leader else {
                    return .failure(.notLeader(leaderHint: rt.raft.leader.flatMap { self.name(of: $0) }))
                }
                guard rt.raft.membership.isMember(id) else {
                    return .failure(
                        .membership(.invalid("\(self.name(of: id) ?? "\(id)") is not a member"), leaderHint: nil))
                }
                // Caught up: it answers, replication to it streams, and its log is within the lag of the leader's.
                guard let pr = rt.raft.progress(of: id), pr.recentActive, pr.state == .replicate else {
                    return .success(false)
                }
                return .success(pr.match.distance(to: rt.raft.log.lastIndex) <= Int64(self.options.learnerCatchUpLag))
            }
            switch state {
            case .success(true): return
            case .success(false): break
            case .failure(let error): throw error
            case nil: throw .stopped
            }
            guard NIODeadline.now() < deadline else {
                throw .membership(
                    .invalid("the learner did not catch up within \(options.learnerCatchUpTimeout)"), leaderHint: nil)
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Settles the changes waiting for `entry` (a configuration entry just applied here).
    func configApplied(_ entry: Entry, _ rt: NodeRuntime<Machine>) {
        guard !rt.configWaiters.isEmpty else { return }
        let membership = rt.raft.membership(at: entry.index)
        var waiting: [ConfigWaiter] = []
        for var waiter in rt.configWaiters {
            if waiter.index == entry.index {
                if waiter.term != entry.term {
                    waiter.promise.fail(RaftNodeError.dropped("a new leader replaced the membership change"))
                } else if waiter.waitsForLeave && membership.isJoint {
                    // The leader appends the entry that leaves the joint configuration; wait for it.
                    waiter.waitsForLeave = false
                    waiter.index = .zero
                    waiting.append(waiter)
                } else {
                    waiter.promise.succeed(())
                }
            } else if waiter.index == .zero, entry.kind == .configChange, !membership.isJoint {
                waiter.promise.succeed(())
            } else if waiter.index != .zero && waiter.index < entry.index {
                // Skipped (a snapshot covered it): whether it was ours is not known here.
                waiter.promise.fail(RaftNodeError.timedOut)
            } else {
                waiting.append(waiter)
            }
        }
        rt.configWaiters = waiting
    }

    // MARK: - Leadership transfer

    /// Hands leadership to `name`, or to the most up-to-date voter: returns once another node leads (proposals
    /// wait meanwhile), or fails after an election timeout, when this node takes proposals again.
    /// - Returns: the new leader's name.
    @discardableResult
    public func transferLeadership(to name: String? = nil) async throws(RaftNodeError) -> String {
        let started = await onLoop { () -> Result<NodeID, RaftNodeError> in
            guard let rt = self.runtime.value, !rt.stopped else { return .failure(.stopped) }
            do throws(MembershipError) {
                let target = try rt.raft.transferLeadership(to: name.map(ClusterConfiguration.nodeID(for:)))
                self.metrics.leadershipTransfers.increment()
                self.logger.notice(
                    "handing leadership over", metadata: ["to": "\(self.name(of: target) ?? "\(target)")"])
                self.process()
                return .success(target)
            } catch {
                return .failure(.membership(error, leaderHint: rt.raft.leader.flatMap { self.name(of: $0) }))
            }
        }
        let target: NodeID
        switch started {
        case .success(let t): target = t
        case .failure(let error): throw error
        case nil: throw .stopped
        }
        // The core gives up after an election timeout; wait a little longer than that for the new leader to be known.
        let deadline = NIODeadline.now() + options.tickInterval * Int64(options.electionTicks * 2 + 2)
        while NIODeadline.now() < deadline {
            let state = await onLoop { () -> (Raft.Role, String?, Bool, String)? in
                guard let rt = self.runtime.value, !rt.stopped else { return nil }
                let leader = rt.raft.leader.flatMap { $0 == self.id ? nil : self.name(of: $0) ?? "\($0)" }
                return (rt.raft.role, leader, rt.raft.transferee != nil, self.name(of: target) ?? "\(target)")
            }
            guard let (role, leader, transferring, targetName) = state ?? nil else { throw .stopped }
            if role != .leader, let leader { return leader }
            if role == .leader && !transferring {
                throw .membership(.invalid("\(targetName) did not take over in time"), leaderHint: nil)
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        throw .timedOut
    }

    // MARK: - Keeping the transport in step

    /// After each round of processing: if the membership in effect changed, the transport gets its new peers.
    func syncPeers(_ rt: NodeRuntime<Machine>) {
        let membership = rt.raft.membership
        if membership != rt.metricsMembership {
            metrics.record(membership: membership, after: rt.metricsMembership)
            rt.metricsMembership = membership
        }
        var peers: [TCPTransport.Peer] = []
        // Everyone this node may have to talk to: the members in effect, those of the committed configuration (a
        // member being removed leaves once its removal is committed: a removed leader must hear the acknowledgements
        // that commit its removal), and the leader (this node may not know it yet, joining).
        var ids = Set(membership.members).union(rt.raft.membership(at: rt.raft.log.committed).members)
        if let leader = rt.raft.leader { ids.insert(leader) }
        for id in ids.sorted() where id != self.id {
            guard let m = member(id: id, rt) else {
                logger.warning("no address for member \(id): it cannot be reached")
                continue
            }
            peers.append(TCPTransport.Peer(id: id, name: m.name, host: m.host, port: m.port))
        }
        guard peers != rt.peers else { return }
        rt.peers = peers
        transport.setPeers(peers)
        logger.info(
            "membership in effect",
            metadata: ["membership": "\(describeMembership(rt).members.map { "\($0.name):\($0.role.rawValue)" })"])
    }
}
