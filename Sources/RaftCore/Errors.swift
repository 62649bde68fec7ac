// The core's public errors. Each is a struct with a `code` rather than an enum, so that later versions can add codes
// without breaking anyone's `switch`: match on `error.code` (with a `default:`) and read the details that the code
// documents. Two errors are equal when their codes and their details are.

/// Why a proposal was refused.
public struct ProposalError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case notLeader, tooLarge, empty, transferring
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// This node is not the leader, and is not forwarding proposals (or knows no leader to forward to). Details:
        /// `leaderHint`.
        public static let notLeader = Code(.notLeader)
        /// The command exceeds `RaftConfiguration.maxProposalBytes`. Details: `size`, `limit`.
        public static let tooLarge = Code(.tooLarge)
        /// An empty batch of commands.
        public static let empty = Code(.empty)
        /// The leader is handing leadership over: proposals wait until the transfer ends (retry shortly).
        public static let transferring = Code(.transferring)

        public var description: String { value.rawValue }
    }

    public let code: Code
    /// For `notLeader`: the leader, if one is known.
    public let leaderHint: NodeID?
    /// For `tooLarge`: the command's size and the limit, in bytes.
    public let size: Int?
    public let limit: Int?

    private init(code: Code, leaderHint: NodeID? = nil, size: Int? = nil, limit: Int? = nil) {
        self.code = code
        self.leaderHint = leaderHint
        self.size = size
        self.limit = limit
    }

    public static func notLeader(leaderHint: NodeID?) -> ProposalError {
        ProposalError(code: .notLeader, leaderHint: leaderHint)
    }
    public static func tooLarge(size: Int, limit: Int) -> ProposalError {
        ProposalError(code: .tooLarge, size: size, limit: limit)
    }
    public static let empty = ProposalError(code: .empty)
    public static let transferring = ProposalError(code: .transferring)

    public var description: String {
        switch code {
        case .notLeader:
            if let leaderHint { return "this node is not the leader; the leader is \(leaderHint)" }
            return "this node is not the leader, and no leader is known yet; retry later"
        case .tooLarge: return "proposal of \(size ?? 0) bytes exceeds the limit of \(limit ?? 0) bytes"
        case .empty: return "empty batch of proposals"
        case .transferring: return "the leader is handing leadership over; retry shortly"
        default: return "\(code)"
        }
    }
}

/// A configuration or restored state that the core cannot start from.
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case invalid
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// A setting is out of range, or the restored state is inconsistent. Details: `reason`.
        public static let invalid = Code(.invalid)

        public var description: String { value.rawValue }
    }

    public let code: Code
    /// What is wrong, naming the setting or the entry at fault.
    public let reason: String

    private init(code: Code, reason: String) {
        self.code = code
        self.reason = reason
    }

    public static func invalid(_ reason: String) -> ConfigurationError {
        ConfigurationError(code: .invalid, reason: reason)
    }

    public var description: String {
        switch code {
        case .invalid: return "invalid Raft configuration: \(reason)"
        default: return "\(code): \(reason)"
        }
    }
}
