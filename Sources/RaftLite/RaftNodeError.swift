/// Why a node could not do what it was asked.
///
/// A struct with a `code` rather than an enum, so that later versions can add codes without breaking a `switch`:
/// match on `error.code` (with a `default:`), and read the details that code documents.
///
/// ```swift
/// switch error.code {
/// case .notLeader: retry(at: error.leaderHint)
/// case .timedOut, .stoppedOutcomeUnknown: checkLater()   // or: if error.outcomeIsUnknown
/// default: giveUp(error)
/// }
/// ```
///
/// Two errors are equal when their codes and their details are.
public struct RaftNodeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case notLeader, timedOut, stoppedOutcomeUnknown, dropped, tooLarge, invalidProposal, paused, stopped,
                notStarted, alreadyStarted, storage, configuration, appliedResultUnknown, snapshotsUnsupported,
                membership, readUnavailable, sessionExpired, sequenceSuperseded
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// This node is not the leader and does not forward proposals, or knows no leader yet. Details:
        /// `leaderHint`.
        public static let notLeader = Code(.notLeader)
        /// The command was not seen committed in time. It may still commit: the outcome is unknown.
        public static let timedOut = Code(.timedOut)
        /// The node stopped after handing the command on. It may still commit: the outcome is unknown.
        public static let stoppedOutcomeUnknown = Code(.stoppedOutcomeUnknown)
        /// The command will never commit. Details: `reason`.
        public static let dropped = Code(.dropped)
        /// The command is larger than `Options.maxProposalBytes`. Details: `size`, `limit`.
        public static let tooLarge = Code(.tooLarge)
        /// The proposal is malformed (an empty command, an id of the wrong length). Details: `reason`.
        public static let invalidProposal = Code(.invalidProposal)
        public static let paused = Code(.paused)
        public static let stopped = Code(.stopped)
        public static let notStarted = Code(.notStarted)
        public static let alreadyStarted = Code(.alreadyStarted)
        /// The storage cannot be read or written. Details: `reason`.
        public static let storage = Code(.storage)
        /// The node cannot run with what it was given. Details: `reason`.
        public static let configuration = Code(.configuration)
        /// The command was applied, but this node caught up through a snapshot that covered it, so it never saw
        /// what the state machine returned for it.
        public static let appliedResultUnknown = Code(.appliedResultUnknown)
        /// The node keeps no snapshots: it has no snapshot store (no data directory), or its state machine cannot
        /// snapshot.
        public static let snapshotsUnsupported = Code(.snapshotsUnsupported)
        /// A membership change or leadership transfer was refused: a change is in progress, it would lose quorum,
        /// it does not apply, or a transfer is under way. Details: `reason`.
        public static let membership = Code(.membership)
        /// A linearizable read could not be confirmed in time (no leader answered for it). Nothing was read; a read
        /// changes nothing, so it may simply be tried again.
        public static let readUnavailable = Code(.readUnavailable)
        /// A session write named a client session that the replicated session table does not hold: it was never
        /// registered, or it expired (idle longer than its timeout, or dropped as the least recently used). The
        /// command was not applied and never will be; register a new session.
        public static let sessionExpired = Code(.sessionExpired)
        /// A session write's sequence number is below the session's last applied one: the client has moved on, so
        /// this copy was not applied and never will be.
        public static let sequenceSuperseded = Code(.sequenceSuperseded)

        public var description: String { value.rawValue }
    }

    public let code: Code
    /// For `notLeader`: the leader's name, if one is known.
    public let leaderHint: String?
    /// For `dropped`, `invalidProposal`, `storage` and `configuration`: what happened, in words.
    public let reason: String?
    /// For `tooLarge`: the command's size and the limit, in bytes.
    public let size: Int?
    public let limit: Int?

    private init(code: Code, leaderHint: String? = nil, reason: String? = nil, size: Int? = nil, limit: Int? = nil) {
        self.code = code
        self.leaderHint = leaderHint
        self.reason = reason
        self.size = size
        self.limit = limit
    }

    public static func notLeader(leaderHint: String?) -> RaftNodeError {
        RaftNodeError(code: .notLeader, leaderHint: leaderHint)
    }
    public static let timedOut = RaftNodeError(code: .timedOut)
    public static let stoppedOutcomeUnknown = RaftNodeError(code: .stoppedOutcomeUnknown)
    public static func dropped(_ reason: String) -> RaftNodeError { RaftNodeError(code: .dropped, reason: reason) }
    public static func tooLarge(size: Int, limit: Int) -> RaftNodeError {
        RaftNodeError(code: .tooLarge, size: size, limit: limit)
    }
    public static func invalidProposal(_ reason: String) -> RaftNodeError {
        RaftNodeError(code: .invalidProposal, reason: reason)
    }
    public static let paused = RaftNodeError(code: .paused)
    public static let stopped = RaftNodeError(code: .stopped)
    public static let notStarted = RaftNodeError(code: .notStarted)
    public static let alreadyStarted = RaftNodeError(code: .alreadyStarted)
    public static func storage(_ reason: String) -> RaftNodeError { RaftNodeError(code: .storage, reason: reason) }
    public static func configuration(_ reason: String) -> RaftNodeError {
        RaftNodeError(code: .configuration, reason: reason)
    }
    public static let appliedResultUnknown = RaftNodeError(code: .appliedResultUnknown)
    public static let sessionExpired = RaftNodeError(code: .sessionExpired)
    public static let sequenceSuperseded = RaftNodeError(code: .sequenceSuperseded)
    /// A refusal from the core's membership logic; `notLeader` keeps its own code.
    public static func membership(_ error: MembershipError, leaderHint: String?) -> RaftNodeError {
        if error.code == .notLeader { return .notLeader(leaderHint: leaderHint) }
        return RaftNodeError(code: .membership, reason: error.description)
    }
    public static func readUnavailable(_ reason: String) -> RaftNodeError {
        RaftNodeError(code: .readUnavailable, reason: reason)
    }
    public static func snapshotsUnsupported(_ reason: String) -> RaftNodeError {
        RaftNodeError(code: .snapshotsUnsupported, reason: reason)
    }

    /// Whether the command may have taken effect, or may still: true only for `timedOut`, `stoppedOutcomeUnknown`
    /// and `appliedResultUnknown` (which did take effect, with a result the caller cannot know). Every other error
    /// is definite: the command was not applied and never will be.
    public var outcomeIsUnknown: Bool {
        code == .timedOut || code == .stoppedOutcomeUnknown || code == .appliedResultUnknown
    }

    public var description: String {
        let why = reason ?? ""
        switch code {
        case .notLeader:
            if let leaderHint { return "this node is not the leader; the leader is \(leaderHint)" }
            return "no leader is known yet; retry shortly"
        case .timedOut: return "the proposal was not committed in time; it may still commit (outcome unknown)"
        case .stoppedOutcomeUnknown:
            return "the node stopped after handing the proposal on; it may still commit (outcome unknown)"
        case .dropped: return "the proposal will never commit: \(why)"
        case .tooLarge: return "proposal of \(size ?? 0) bytes exceeds the limit of \(limit ?? 0) bytes"
        case .invalidProposal: return "invalid proposal: \(why)"
        case .paused: return "the node is paused"
        case .stopped: return "the node has stopped"
        case .notStarted: return "the node has not been started"
        case .alreadyStarted:
            return "the node was already started (a stopped node cannot be restarted; create a new one)"
        case .storage: return "storage: \(why)"
        case .configuration: return why
        case .appliedResultUnknown:
            return "the command was applied, but its result is not known here (this node caught up through a snapshot)"
        case .snapshotsUnsupported: return "snapshots are not available: \(why)"
        case .membership: return why
        case .readUnavailable: return "the read could not be served: \(why)"
        case .sessionExpired:
            return "the client session is not known (never registered, or expired); the command was not applied"
        case .sequenceSuperseded:
            return "the session has applied a later sequence; this command was not applied and never will be"
        default: return "\(code)"
        }
    }
}
