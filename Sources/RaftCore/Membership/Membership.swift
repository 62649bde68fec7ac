/// Who is in the cluster: the voters (two sets of them in the middle of a change, thesis §4.3), the learners
/// (members that receive the log but do not vote), and for each member an opaque `context` the shell gives it (the
/// runtime keeps a member's name and address there, so that the membership in the log says where to reach it).
///
/// The membership in effect on a node is the latest in its log, committed or not (thesis §4.1): a configuration
/// entry takes effect when it is appended, and a configuration entry that is truncated away takes its effect with
/// it. `Raft` keeps the history that makes that possible; this type is one point of it.
public struct Membership: Sendable, Hashable, CustomStringConvertible {
    /// The voters of the configuration being entered (the only voters outside a change).
    public internal(set) var voters: Set<NodeID>
    /// The voters of the configuration being left; empty outside a change. While it is not, every decision needs a
    /// majority of `voters` and one of `outgoing`.
    public internal(set) var outgoing: Set<NodeID>
    /// Members that receive the log without a vote.
    public internal(set) var learners: Set<NodeID>
    /// Voters of `outgoing` that become learners when the joint configuration is left (they still vote until then,
    /// so they cannot be learners yet).
    public internal(set) var learnersNext: Set<NodeID>
    /// Whether the leader leaves the joint configuration by itself once it is committed.
    public internal(set) var autoLeave: Bool
    /// What the shell attached to each member when it was added (its name and address, for the runtime).
    public internal(set) var contexts: [NodeID: [UInt8]]

    public init(
        voters: Set<NodeID>, outgoing: Set<NodeID> = [], learners: Set<NodeID> = [], learnersNext: Set<NodeID> = [],
        autoLeave: Bool = false, contexts: [NodeID: [UInt8]] = [:]
    ) {
        self.voters = voters
        self.outgoing = outgoing
        self.learners = learners
        self.learnersNext = learnersNext
        self.autoLeave = autoLeave
        self.contexts = contexts
    }

    /// The membership of no one (a node that has not joined a cluster yet).
    public static let empty = Membership(voters: [])

    /// Whether a change is in progress: two configurations decide together.
    public var isJoint: Bool { !outgoing.isEmpty }

    /// The voters as the quorum arithmetic sees them.
    public var jointConfig: JointConfig { JointConfig(voters, outgoing: outgoing) }

    /// Whether `node` votes (in either configuration).
    public func isVoter(_ node: NodeID) -> Bool { voters.contains(node) || outgoing.contains(node) }

    /// Whether `node` is a member at all: a voter of either configuration, a learner, or a learner to be.
    public func isMember(_ node: NodeID) -> Bool {
        isVoter(node) || learners.contains(node) || learnersNext.contains(node)
    }

    /// Every member, in ascending order.
    public var members: [NodeID] { voters.union(outgoing).union(learners).union(learnersNext).sorted() }

    public var description: String {
        func list(_ s: Set<NodeID>) -> String { s.sorted().map(\.description).joined(separator: ",") }
        var text = "voters=(\(list(voters)))"
        if isJoint { text += "&&(\(list(outgoing)))" }
        if !learners.isEmpty { text += " learners=(\(list(learners)))" }
        if !learnersNext.isEmpty { text += " learners_next=(\(list(learnersNext)))" }
        if autoLeave { text += " autoleave" }
        return text
    }

    /// Checks what every membership must satisfy: some voter, and no member both voting and learning.
    func validate() -> String? {
        if voters.isEmpty { return "a configuration must keep at least one voter" }
        if !learners.isDisjoint(with: voters) || !learners.isDisjoint(with: outgoing) {
            return "a member cannot be a voter and a learner at once"
        }
        if !learnersNext.isSubset(of: outgoing) || !learnersNext.isDisjoint(with: voters) {
            return "only a voter being demoted can be a learner to be"
        }
        if !isJoint && (autoLeave || !learnersNext.isEmpty) { return "only a joint configuration can be left" }
        return nil
    }

    /// Drops the contexts of nodes that are no longer members.
    mutating func forgetContextsOfNonMembers() {
        contexts = contexts.filter { isMember($0.key) }
    }
}

// MARK: - Encoding

extension Membership {
    /// The membership as bytes (for snapshot headers and the wire): a version byte, then each set as a count and
    /// ids, the auto-leave flag, and the contexts as (id, length, bytes), all little-endian.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [1]
        for set in [voters, outgoing, learners, learnersNext] {
            ByteCoding.append(UInt32(set.count), to: &out)
            for id in set.sorted() { ByteCoding.append(id.rawValue, to: &out) }
        }
        out.append(autoLeave ? 1 : 0)
        ByteCoding.append(UInt32(contexts.count), to: &out)
        for id in contexts.keys.sorted() {
            let context = contexts[id] ?? []
            ByteCoding.append(id.rawValue, to: &out)
            ByteCoding.append(UInt32(context.count), to: &out)
            out += context
        }
        return out
    }

    /// Reads what `encoded()` wrote; nil for bytes that are not a valid membership (from a corrupt file or a hostile
    /// peer). At most `maxMembers` ids per set and `maxContextBytes` per context are accepted.
    public init?(decoding bytes: some Collection<UInt8>, maxMembers: Int = 1 << 16, maxContextBytes: Int = 1 << 16) {
        var reader = ByteCoding.Reader(Array(bytes))
        guard reader.byte() == 1 else { return nil }
        var sets: [Set<NodeID>] = []
        for _ in 0..<4 {
            guard let count = reader.u32(), count <= maxMembers else { return nil }
            var set = Set<NodeID>()
            for _ in 0..<count {
                guard let raw = reader.u64() else { return nil }
                set.insert(NodeID(raw))
            }
            sets.append(set)
        }
        guard let flag = reader.byte(), flag <= 1, let contextCount = reader.u32(), contextCount <= maxMembers * 4
        else { return nil }
        var contexts: [NodeID: [UInt8]] = [:]
        for _ in 0..<contextCount {
            guard let raw = reader.u64(), let length = reader.u32(), length <= maxContextBytes,
                let context = reader.bytes(Int(length))
            else { return nil }
            contexts[NodeID(raw)] = context
        }
        guard reader.isAtEnd else { return nil }
        self.init(
            voters: sets[0], outgoing: sets[1], learners: sets[2], learnersNext: sets[3], autoLeave: flag == 1,
            contexts: contexts)
        guard validate() == nil else { return nil }
    }
}

/// Little-endian integers in byte arrays, for the core's own small encodings (memberships, configuration changes).
enum ByteCoding {
    static func append(_ value: UInt32, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    static func append(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    struct Reader {
        let bytes: [UInt8]
        var position = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var isAtEnd: Bool { position == bytes.count }

        mutating func byte() -> UInt8? {
            guard position < bytes.count else { return nil }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func u32() -> UInt32? {
            guard bytes.count - position >= 4 else { return nil }
            var value: UInt32 = 0
            for k in 0..<4 { value |= UInt32(bytes[position + k]) << (8 * k) }
            position += 4
            return value
        }

        mutating func u64() -> UInt64? {
            guard bytes.count - position >= 8 else { return nil }
            var value: UInt64 = 0
            for k in 0..<8 { value |= UInt64(bytes[position + k]) << (8 * k) }
            position += 8
            return value
        }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard count >= 0, bytes.count - position >= count else { return nil }
            defer { position += count }
            return Array(bytes[position..<position + count])
        }
    }
}
