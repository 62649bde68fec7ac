/// A change of membership, as a leader proposes it and a configuration entry (`EntryKind.configChange`) carries it.
///
/// A change is a list of steps (add a voter, add a learner or demote a voter to one, remove a member) applied
/// together. Applied to a configuration that is not joint, it enters a joint configuration (thesis §4.3): the old
/// voters stay as `outgoing` and every decision needs a majority of both, until a second entry, the empty change,
/// leaves it. A change of at most one voter may instead be applied directly (`Transition.simple`, thesis §4.1): any
/// majority of the old voters and any of the new then overlap.
///
/// Applying a change is a pure function of the membership and the change, so every node that holds the same log
/// holds the same membership; a change that is invalid where it lands (a malformed entry from a hostile peer) leaves
/// the membership as it was, on every node alike.
public struct ConfigChange: Sendable, Hashable, CustomStringConvertible {
    public enum Action: UInt8, Sendable, Hashable {
        /// Adds a voter, or promotes a learner.
        case addVoter = 0
        /// Adds a learner, or demotes a voter to a learner.
        case addLearner = 1
        /// Removes a member, whatever it is.
        case remove = 2
    }

    public struct Step: Sendable, Hashable {
        public var action: Action
        public var node: NodeID
        /// Stored with the member (its name and address, for the runtime); empty keeps what the member had.
        public var context: [UInt8]

        public init(_ action: Action, _ node: NodeID, context: [UInt8] = []) {
            self.action = action
            self.node = node
            self.context = context
        }
    }

    /// How a change is carried out.
    public enum Transition: UInt8, Sendable, Hashable {
        /// Through a joint configuration that the leader leaves by itself as soon as it is committed.
        case auto = 0
        /// Through a joint configuration that stays until an explicit `leaveJoint` change.
        case explicit = 1
        /// Directly, without a joint configuration: only for a change of at most one voter.
        case simple = 2
    }

    public var steps: [Step]
    public var transition: Transition

    public init(_ steps: [Step], transition: Transition = .auto) {
        self.steps = steps
        self.transition = transition
    }

    /// The change that leaves a joint configuration.
    public static let leaveJoint = ConfigChange([], transition: .auto)

    public var isLeaveJoint: Bool { steps.isEmpty }

    public var description: String {
        if isLeaveJoint { return "leave joint" }
        let steps = self.steps.map { step in
            switch step.action {
            case .addVoter: "v\(step.node.rawValue)"
            case .addLearner: "l\(step.node.rawValue)"
            case .remove: "r\(step.node.rawValue)"
            }
        }
        return steps.joined(separator: " ") + " (\(transition))"
    }

    /// The membership after this change, or why it cannot be applied to `current`.
    public func applied(to current: Membership) -> Result<Membership, MembershipError> {
        if isLeaveJoint {
            guard current.isJoint else { return .failure(.invalid("the configuration is not joint: nothing to leave")) }
            var next = current
            next.outgoing = []
            next.learners.formUnion(next.learnersNext)
            next.learnersNext = []
            next.autoLeave = false
            next.forgetContextsOfNonMembers()
            return .success(next)
        }
        guard !current.isJoint else {
            return .failure(.invalid("a joint configuration is in effect: leave it before another change"))
        }
        var seen = Set<NodeID>()
        for step in steps {
            guard seen.insert(step.node).inserted else {
                return .failure(.invalid("node \(step.node) appears twice in one change"))
            }
        }
        var next = current
        let joint = transition != .simple
        if joint {
            next.outgoing = current.voters
            next.autoLeave = transition == .auto
        }
        for step in steps {
            switch step.action {
            case .addVoter:
                next.voters.insert(step.node)
                next.learners.remove(step.node)
                next.learnersNext.remove(step.node)
            case .addLearner:
                next.voters.remove(step.node)
                if next.outgoing.contains(step.node) {
                    // Still a voter of the outgoing configuration: it learns once that one is left.
                    next.learnersNext.insert(step.node)
                } else {
                    next.learners.insert(step.node)
                }
            case .remove:
                next.voters.remove(step.node)
                next.learners.remove(step.node)
                next.learnersNext.remove(step.node)
            }
            if !step.context.isEmpty { next.contexts[step.node] = step.context }
        }
        if !joint {
            let changedVoters = current.voters.symmetricDifference(next.voters)
            guard changedVoters.count <= 1 else {
                return .failure(
                    .invalid(
                        "a simple change may change at most one voter (this one changes \(changedVoters.count)); "
                            + "use a joint change"))
            }
        } else if next.outgoing == next.voters && next.learnersNext.isEmpty {
            // Nothing about the voters changes: no joint phase is needed for learners alone.
            next.outgoing = []
            next.autoLeave = false
        }
        if let problem = next.validate() { return .failure(.invalid(problem)) }
        next.forgetContextsOfNonMembers()
        return .success(next)
    }
}

// MARK: - Encoding

extension ConfigChange {
    /// The change as the bytes of a configuration entry: a version byte, the transition, the number of steps, then
    /// each step as (action, id, context length, context), little-endian.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [1, transition.rawValue]
        ByteCoding.append(UInt32(steps.count), to: &out)
        for step in steps {
            out.append(step.action.rawValue)
            ByteCoding.append(step.node.rawValue, to: &out)
            ByteCoding.append(UInt32(step.context.count), to: &out)
            out += step.context
        }
        return out
    }

    /// Reads what `encoded()` wrote; nil for bytes that are not a change.
    public init?(decoding bytes: some Collection<UInt8>, maxSteps: Int = 1 << 12, maxContextBytes: Int = 1 << 16) {
        var reader = ByteCoding.Reader(Array(bytes))
        guard reader.byte() == 1, let rawTransition = reader.byte(),
            let transition = Transition(rawValue: rawTransition),
            let count = reader.u32(), count <= maxSteps
        else { return nil }
        var steps: [Step] = []
        for _ in 0..<count {
            guard let rawAction = reader.byte(), let action = Action(rawValue: rawAction), let node = reader.u64(),
                let length = reader.u32(), length <= maxContextBytes, let context = reader.bytes(Int(length))
            else { return nil }
            steps.append(Step(action, NodeID(node), context: context))
        }
        guard reader.isAtEnd else { return nil }
        self.init(steps, transition: transition)
    }
}

/// Why a membership change or a leadership transfer was refused.
public struct MembershipError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case notLeader, inProgress, notReady, invalid, wouldLoseQuorum, transferring
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// Only the leader changes the membership. Details: `leaderHint`.
        public static let notLeader = Code(.notLeader)
        /// A change is already in the log and not yet committed, or a joint configuration is still to be left.
        public static let inProgress = Code(.inProgress)
        /// A new leader has not yet committed an entry of its own term (thesis errata: until it has, a change could
        /// be decided by a majority that does not overlap one of an earlier, uncommitted change).
        public static let notReady = Code(.notReady)
        /// The change does not apply to the membership in effect. Details: `reason`.
        public static let invalid = Code(.invalid)
        /// Too few of the voters the change leaves have answered the leader lately: the cluster would stop
        /// committing. Details: `reason`.
        public static let wouldLoseQuorum = Code(.wouldLoseQuorum)
        /// A leadership transfer is in progress.
        public static let transferring = Code(.transferring)

        public var description: String { value.rawValue }
    }

    public let code: Code
    public let leaderHint: NodeID?
    public let reason: String

    private init(code: Code, leaderHint: NodeID? = nil, reason: String = "") {
        self.code = code
        self.leaderHint = leaderHint
        self.reason = reason
    }

    public static func notLeader(leaderHint: NodeID?) -> MembershipError {
        MembershipError(code: .notLeader, leaderHint: leaderHint)
    }
    public static let inProgress = MembershipError(code: .inProgress)
    public static let notReady = MembershipError(code: .notReady)
    public static let transferring = MembershipError(code: .transferring)
    public static func invalid(_ reason: String) -> MembershipError { MembershipError(code: .invalid, reason: reason) }
    public static func wouldLoseQuorum(_ reason: String) -> MembershipError {
        MembershipError(code: .wouldLoseQuorum, reason: reason)
    }

    public var description: String {
        switch code {
        case .notLeader:
            if let leaderHint { return "this node is not the leader; the leader is \(leaderHint)" }
            return "this node is not the leader, and no leader is known yet; retry later"
        case .inProgress: return "a membership change is already in progress; retry once it is committed"
        case .notReady: return "the leader has not yet committed an entry of its term; retry shortly"
        case .invalid: return "invalid membership change: \(reason)"
        case .wouldLoseQuorum: return "the change would lose quorum: \(reason)"
        case .transferring: return "a leadership transfer is in progress; retry once it ends"
        default: return "\(code)"
        }
    }
}
