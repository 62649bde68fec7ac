/// The tunables of one Raft node. Time is counted in ticks: the caller decides how long a tick is.
public struct RaftConfiguration: Sendable, Hashable {
    /// This node's id.
    public var id: NodeID
    /// The voting members of the cluster's first configuration (the bootstrap one; this node need not be among
    /// them, if it joins later). Once the log or a snapshot holds a configuration, that one is in effect.
    public var voters: Set<NodeID>
    /// The learners of the first configuration.
    public var learners: Set<NodeID> = []
    /// The contexts of the first configuration's members (see `Membership.contexts`).
    public var contexts: [NodeID: [UInt8]] = [:]
    /// A follower whose shell reports that its connection to the leader was lost (`Raft.connectionLost(to:)`)
    /// starts a pre-vote at once rather than after an election timeout, and a voter that has lost the leader too
    /// grants it even within the leader's lease. Only the pre-vote is hurried: a leader that other voters still hear
    /// is not disrupted, and safety never depended on timeouts.
    public var fastFailover = false
    /// Voters keep a leader's lease strictly, as lease reads need (thesis §6.4.1): a voter that heard from a leader
    /// within `electionTick` ticks ignores vote requests even when its connection to the leader was lost (the
    /// fast-failover exception does not apply), and a node that restarts (with a term of its own) ignores them for its
    /// first `electionTick` ticks (it may have answered a heartbeat before it went down). Costs some availability: a
    /// crashed leader is replaced only after an election timeout.
    public var strictLease = false
    /// A follower that hears nothing from a leader for a random number of ticks in
    /// `electionTick ..< 2 * electionTick` starts an election (Raft §5.2). Must exceed `heartbeatTick`.
    public var electionTick: Int
    /// A leader sends heartbeats every `heartbeatTick` ticks.
    public var heartbeatTick: Int
    /// Poll the voters before starting a real election, so a node that was cut off cannot disrupt a healthy cluster
    /// by raising the term when it returns (thesis §9.6).
    public var preVote: Bool
    /// A leader that has not heard from a quorum within an election timeout steps down; followers that heard from a
    /// leader within the election timeout ignore vote requests (thesis §6.2, §4.2.3).
    public var checkQuorum: Bool
    /// The most entry bytes (counted by `Entry.byteSize`) in one AppendEntries message. At least one entry is always
    /// sent, whatever its size.
    public var maxMessageBytes: Int
    /// The most entries in one AppendEntries message.
    public var maxMessageEntries: Int
    /// The most AppendEntries messages with entries in flight to one follower in replicate state (the pipeline
    /// window).
    public var maxInflightMessages: Int
    /// The largest accepted proposal, in bytes; larger ones are refused with `ProposalError.tooLarge`.
    public var maxProposalBytes: Int
    /// What a follower does with a proposal: forward it to the leader, or refuse it with
    /// `ProposalError.notLeader(leaderHint:)`.
    public var forwardProposals: Bool
    /// The seed of the generator behind the randomized election timeout. The core draws no other random numbers.
    public var randomSeed: UInt64

    public init(
        id: NodeID,
        voters: Set<NodeID>,
        electionTick: Int = 10,
        heartbeatTick: Int = 1,
        preVote: Bool = true,
        checkQuorum: Bool = true,
        maxMessageBytes: Int = 1 << 20,
        maxMessageEntries: Int = 4096,
        maxInflightMessages: Int = 256,
        maxProposalBytes: Int = 8 << 20,
        forwardProposals: Bool = true,
        randomSeed: UInt64 = 0
    ) {
        self.id = id
        self.voters = voters
        self.electionTick = electionTick
        self.heartbeatTick = heartbeatTick
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self.maxMessageBytes = maxMessageBytes
        self.maxMessageEntries = maxMessageEntries
        self.maxInflightMessages = maxInflightMessages
        self.maxProposalBytes = maxProposalBytes
        self.forwardProposals = forwardProposals
        self.randomSeed = randomSeed
    }

    /// Checks the configuration; the error says which setting is wrong and why.
    public func validate() throws(ConfigurationError) {
        if voters.isEmpty { throw .invalid("voters must not be empty") }
        if !voters.isDisjoint(with: learners) { throw .invalid("a node cannot be both a voter and a learner") }
        if heartbeatTick < 1 { throw .invalid("heartbeatTick must be at least 1 (got \(heartbeatTick))") }
        if electionTick <= heartbeatTick {
            throw .invalid("electionTick (\(electionTick)) must be greater than heartbeatTick (\(heartbeatTick))")
        }
        if maxMessageBytes < 1 { throw .invalid("maxMessageBytes must be at least 1 (got \(maxMessageBytes))") }
        if maxMessageEntries < 1 { throw .invalid("maxMessageEntries must be at least 1 (got \(maxMessageEntries))") }
        if maxInflightMessages < 1 || maxInflightMessages > 1 << 16 {
            throw .invalid("maxInflightMessages must be in 1...65536 (got \(maxInflightMessages))")
        }
        if maxProposalBytes < 0 { throw .invalid("maxProposalBytes must not be negative (got \(maxProposalBytes))") }
    }
}
