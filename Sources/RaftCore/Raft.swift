/// One Raft node's consensus state machine: the whole algorithm, with no I/O, no clock and no threads.
///
/// The caller drives it with four kinds of input: `tick()` (logical time), `step(_:)` (a message from a peer),
/// `propose(_:)` (a client command) and `advance(_:)` (the last `Ready` is durable). After any of them it asks
/// `ready()` for the work that resulted: entries and hard state to persist, messages to send, committed entries
/// to apply. `Ready` documents the order in which that work must be carried out.
///
/// Everything the node does follows from its inputs and `RaftConfiguration.randomSeed`, so a run can be replayed
/// exactly. Messages from the network are untrusted: a malformed one, or one from an unknown node, is ignored;
/// nothing a peer sends can crash the node.
///
/// Section numbers refer to the Raft paper (Ongaro and Ousterhout, 2014) and thesis (Ongaro, 2014).
public struct Raft: Sendable {
    /// The part a node plays in its current term (Raft §5.1, thesis §9.6).
    public enum Role: String, Sendable, Hashable {
        case follower
        /// Polling the voters (PreVote) before starting a real election.
        case preCandidate = "pre-candidate"
        case candidate
        case leader
    }

    /// This node's id.
    public var id: NodeID { configuration.id }
    public private(set) var configuration: RaftConfiguration
    public private(set) var role: Role = .follower
    /// The latest term this node has seen.
    public private(set) var term: Term
    /// The candidate this node voted for in `term`, if any.
    public private(set) var votedFor: NodeID?
    /// The leader of `term`, if this node knows it.
    public private(set) var leader: NodeID?
    /// The log, with its commit, apply and durability marks.
    public private(set) var log: RaftLog
    /// The latest durable snapshot this node holds (made here or received from a leader): what a leader sends a
    /// follower that needs entries it has compacted away.
    public private(set) var snapshot: SnapshotMetadata?

    /// The members, the leader's view of each follower, the votes of an election, and the quorum arithmetic.
    private var tracker: ProgressTracker
    /// Ticks since the last election timeout reset (followers, candidates), or since the last quorum check (leader).
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    /// This term's election timeout, drawn from `electionTick ..< 2 * electionTick` (Raft §5.2).
    private var randomizedElectionTimeout = 0
    private var random: SplitMix64
    /// Outgoing messages that may be sent at once, and those that must wait for persistence (see `Ready`).
    private var messages: [Message] = []
    private var messagesAfterPersist: [Message] = []
    /// The hard state last handed out in a `Ready` (or restored from storage).
    private var lastHardState: HardState
    /// The highest term known durable: a restart would resume in this term or a later one.
    private var durableTerm: Term
    /// Leader: something may now be sendable to a follower (new entries, a freed window, a new commit index).
    private var needsFlush = false
    /// `snapshot` was received from the leader and is to be handed out in the next `Ready` for installing. (A
    /// flag rather than a second copy of the metadata: the core is a value, copied whole by some shells.)
    private var snapshotToInstall = false
    /// The configurations of the log, oldest first: the first is the one in effect before the log's entries (a
    /// snapshot's, or the bootstrap configuration); each later one was made by a configuration entry, and is in
    /// effect from its index on. The membership in effect is the last one's: the latest in the log, committed or not
    /// (thesis §4.1). A configuration entry truncated away takes its point with it.
    private var configs: [ConfigPoint]
    /// Leader: the voter leadership is being handed to, whether it was told to campaign, and ticks since the
    /// transfer began.
    public private(set) var transferee: NodeID?
    private var timeoutNowSent = false
    private var transferElapsed = 0
    /// Follower: the shell reported the connection to the leader lost, and nothing came from the leader since.
    private var leaderLost = false
    /// Leader: linearizable reads waiting for the leader to confirm it still leads (thesis §6.4).
    private var reads = PendingReads()
    /// Reads confirmed, and this node's reads dropped, since the last `Ready`.
    private var readStates: [ReadState] = []
    private var readsDropped: [UInt64] = []
    /// With `RaftConfiguration.strictLease`: a node that has just started keeps the lease promise of a heartbeat it
    /// may have answered before it went down, refusing votes for an election timeout.
    private var leaseHoldoff = false
    /// Leader: this term's lease is given up (a transfer told another voter to campaign, and voters grant that
    /// election within the lease).
    private var leaseForfeited = false

    struct ConfigPoint: Sendable, Hashable {
        var index: LogIndex
        var term: Term
        var membership: Membership
    }

    // MARK: - Creating a node

    /// Creates a node from its configuration and whatever its storage holds.
    ///
    /// - Parameters:
    ///   - configuration: the node's id, the voters, and the tunables.
    ///   - state: what the node persisted before it last stopped (empty for a new node).
    ///   - applied: the highest index the application's state machine has already applied (and kept) — entries up
    ///     to it are not handed out again.
    ///   - snapshot: the latest snapshot in storage, if any (the state machine was restored from it, so `applied`
    ///     is at least its index). The log may start before it, never after it.
    /// - Throws: `ConfigurationError` if the configuration is invalid or the restored state is inconsistent
    ///   (entries out of order, terms going backwards, an applied index the log cannot account for).
    public init(
        configuration: RaftConfiguration,
        state: PersistentState = PersistentState(),
        applied: LogIndex = .zero,
        snapshot: SnapshotMetadata? = nil
    ) throws(ConfigurationError) {
        try configuration.validate()
        try Raft.validate(state, applied: applied)
        if let snapshot {
            guard applied >= snapshot.index else {
                throw .invalid(
                    "the state machine applied up to \(applied) but was restored from a snapshot at \(snapshot.index)")
            }
            guard state.snapshotIndex <= snapshot.index, state.term(at: snapshot.index) == snapshot.term else {
                throw .invalid(
                    "the log (after \(state.snapshotIndex), to \(state.lastIndex)) does not hold the snapshot's last "
                        + "entry (\(snapshot.index), \(snapshot.term))")
            }
        }
        let lastTerm = state.entries.last?.term ?? state.snapshotTerm
        let hs = state.hardState
        // A crash between writing entries and writing the hard state can leave entries of a later term than the
        // stored term. The node has then sent nothing in that term, so it may simply adopt it, with no vote.
        let term = max(hs.term, lastTerm)
        self.configuration = configuration
        var configs = [
            snapshot.map { ConfigPoint(index: $0.index, term: $0.term, membership: $0.membership) }
                ?? ConfigPoint(
                    index: .zero, term: .zero,
                    membership: Membership(
                        voters: configuration.voters, learners: configuration.learners,
                        contexts: configuration.contexts))
        ]
        for entry in state.entries where entry.kind == .configChange && entry.index > configs[configs.count - 1].index {
            configs.append(Raft.configPoint(for: entry, after: configs[configs.count - 1].membership))
        }
        self.configs = configs
        let membership = configs[configs.count - 1].membership
        self.tracker = ProgressTracker(
            id: configuration.id, voters: membership.jointConfig,
            learners: membership.learners.union(membership.learnersNext))
        self.random = SplitMix64(seed: configuration.randomSeed)
        self.term = term
        self.votedFor = hs.term == term ? hs.votedFor : nil
        // Anything applied was committed; the stored commit index is only a hint and may lag.
        let committed = max(min(hs.commit, state.lastIndex), applied, state.snapshotIndex)
        self.log = RaftLog(
            snapshotIndex: state.snapshotIndex,
            snapshotTerm: state.snapshotTerm,
            entries: state.entries,
            committed: committed,
            applied: max(applied, state.snapshotIndex)
        )
        self.lastHardState = hs
        self.durableTerm = term
        self.snapshot = snapshot
        // A node that never had a term never answered a leader; one that had may have, just before it went down.
        self.leaseHoldoff = configuration.strictLease && term > .zero
        resetElectionTimer()
    }

    private static func validate(_ state: PersistentState, applied: LogIndex) throws(ConfigurationError) {
        var expected = state.snapshotIndex.next
        var previousTerm = state.snapshotTerm
        for entry in state.entries {
            if entry.index != expected {
                throw .invalid("restored log is not contiguous: expected index \(expected), found \(entry.index)")
            }
            if entry.term < previousTerm {
                throw .invalid(
                    "restored log goes back in term at index \(entry.index): \(entry.term) after \(previousTerm)")
            }
            previousTerm = entry.term
            expected = expected.next
        }
        if state.hardState.term >= Term.ceiling || previousTerm >= Term.ceiling {
            throw .invalid("restored term is beyond the ceiling of \(Term.ceiling): the storage is corrupt")
        }
        if applied > state.lastIndex {
            throw .invalid("the state machine applied up to \(applied) but the log ends at \(state.lastIndex)")
        }
    }

    // MARK: - Observing the node

    /// A snapshot of what this node knows, for status pages and failure detectors.
    public struct Status: Sendable, Hashable {
        public var id: NodeID
        public var role: Role
        public var term: Term
        public var leader: NodeID?
        public var commitIndex: LogIndex
        public var appliedIndex: LogIndex
        public var lastIndex: LogIndex
        /// The leader's view of each follower; empty on other nodes.
        public var progress: [NodeID: Progress]
        /// The membership in effect (the latest in the log), and the index of the entry that made it (zero for the
        /// bootstrap configuration); it is committed once `commitIndex` reaches that index.
        public var membership: Membership
        public var membershipIndex: LogIndex
        /// Leader: the voter leadership is being handed to.
        public var transferee: NodeID?
    }

    public var status: Status {
        Status(
            id: id, role: role, term: term, leader: leader, commitIndex: log.committed,
            appliedIndex: log.applied, lastIndex: log.lastIndex, progress: tracker.progress,
            membership: membership, membershipIndex: configs.last?.index ?? .zero, transferee: transferee)
    }

    /// The membership in effect: the latest configuration in the log, committed or not.
    public var membership: Membership { configs.last?.membership ?? .empty }

    /// The index and term of the configuration entry in effect (zero for the bootstrap configuration; a snapshot's
    /// for one that came with a snapshot): a cheap way for a shell to notice that the membership changed.
    public var membershipIndex: LogIndex { configs.last?.index ?? .zero }
    public var membershipTerm: Term { configs.last?.term ?? .zero }

    /// The leader's view of `peer`, if this node is the leader.
    public func progress(of peer: NodeID) -> Progress? { tracker.progress[peer] }

    /// The hard state as it is now (term, vote, commit).
    public var hardState: HardState { HardState(term: term, votedFor: votedFor, commit: log.committed) }

    // MARK: - Inputs

    /// Advances logical time by one tick: followers and candidates count towards an election timeout, the leader
    /// towards its next heartbeat and its next quorum check.
    public mutating func tick() {
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    private mutating func tickElection() {
        // A node that cannot stand lets its timer run on, so that its leader's lease runs out and it grants votes
        // (a learner may be the one vote a joint configuration's election needs).
        if electionElapsed < Int.max { electionElapsed += 1 }
        if electionElapsed >= configuration.electionTick { leaseHoldoff = false }
        if electionElapsed >= randomizedElectionTimeout && isPromotable {
            electionElapsed = 0
            campaign()
        }
    }

    private mutating func tickLeader() {
        // Every tick, not every heartbeat: read rounds restart the heartbeat count, and with a round every tick (a
        // lease renewed) the heartbeat would never fall due — nor would the catch-up of a follower whose
        // acknowledgement was lost (the simulator found a joint configuration stuck that way).
        tracker.newHeartbeatPeriod()
        // Reads waiting for a round whose answers may never come — the configuration changed under them (to this
        // node alone, say: then no answer ever arrives to check them again) — are checked against the quorum in
        // effect now (the simulator found a single voter's read waiting for ever).
        if !reads.waiting.isEmpty { confirmReads() }
        heartbeatElapsed += 1
        electionElapsed += 1
        if transferee != nil {
            transferElapsed += 1
            // The transferee did not win within an election timeout: take proposals again (thesis §3.10).
            if transferElapsed >= configuration.electionTick {
                abortTransfer()
                // A joint configuration with auto-leave that committed during the transfer was not left then (the
                // transferee was to catch up with a log that stays still); leave it now, or it stays until the next
                // entry commits.
                configCommitted()
                guard role == .leader else { return }
            }
        }
        if electionElapsed >= configuration.electionTick {
            electionElapsed = 0
            // Thesis §6.2: a leader that has not heard from a quorum in an election timeout steps down, so that
            // clients can find the real leader and a partitioned leader stops serving.
            if configuration.checkQuorum {
                if !tracker.quorumActive() {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
        }
        if heartbeatElapsed >= configuration.heartbeatTick {
            heartbeatElapsed = 0
            // Reads waiting for a round take this heartbeat for theirs.
            if reads.wantsRound { beginReadRound() } else { broadcastHeartbeat() }
        }
    }

    /// Starts an election now (a pre-vote poll first, if enabled), whatever the election timer says. Tests and
    /// benchmarks use it to choose the first leader.
    public mutating func campaign() {
        guard isPromotable, role != .leader, term < Term.ceiling else { return }
        campaign(configuration.preVote ? .preElection : .election)
    }

    /// Whether this node may become leader: only voters stand for election — of the configuration in effect, or of
    /// the committed one while a later one is not committed yet (thesis §4.2.2: a node that an uncommitted
    /// configuration removes may still be needed to elect a leader, for it may hold the only up-to-date log; its own
    /// vote counts only where it is a voter, and a leader that is not a voter steps down once its configuration
    /// commits).
    private var isPromotable: Bool {
        tracker.isVoter(id)
            || ((configs.last?.index ?? .zero) > log.committed && membership(at: log.committed).isVoter(id))
    }

    /// Handles a message from a peer.
    ///
    /// The reaction to the message's term comes first and is the same for every kind of message (Raft §5.1): a
    /// higher term makes this node a follower in that term; a message from an older term is ignored (with the
    /// exceptions noted below). Messages not addressed to this node, from nodes outside the cluster, or malformed
    /// (entries out of order, oversized proposals) are ignored.
    public mutating func step(_ m: Message) {
        // Messages from nodes outside this node's configuration are taken too: the sender's may be newer (a voter
        // just added may lead before this node has appended the entry that adds it). The transport keeps strangers
        // out; a removed node cannot disrupt the cluster, because PreVote fails for its shorter log and voters that
        // hear from a leader ignore its vote requests.
        guard m.to == id, m.from != id, isWellFormed(m) else { return }
        switch m.kind {
        case .snapshotChunk, .snapshotChunkAck:
            return  // The shells' traffic: they move a snapshot's bytes and step the core with `installSnapshot`.
        default:
            break
        }

        if m.term > term {
            switch m.kind {
            case .requestVote(let request):
                // Thesis §4.2.3: a node that heard from a leader within the minimum election timeout ignores vote
                // requests, so a removed or partitioned node cannot depose a healthy leader.
                // The exceptions: an election the leader itself asked for (a transfer), and, with fast failover,
                // a leader this node has lost its connection to as well.
                // With a strict lease (lease reads), neither the fast-failover exception nor a restart ends it.
                let inLease =
                    configuration.checkQuorum && (leader != nil || leaseHoldoff)
                    && electionElapsed < configuration.electionTick && !request.transfer
                    && (!leaderLost || configuration.strictLease)
                if inLease { return }
                // A pre-vote request carries the term the candidate would use; it changes nothing here.
                if !request.preVote { becomeFollower(term: m.term, leader: nil) }
            case .requestVoteResponse(let response) where response.preVote && response.granted:
                // A granted pre-vote carries the term this node would campaign in; it is not a newer term.
                break
            case .appendEntries, .heartbeat, .commitNotice, .installSnapshot, .timeoutNow:
                becomeFollower(term: m.term, leader: m.from)
            case .appendEntriesResponse, .requestVoteResponse, .heartbeatResponse, .propose, .snapshotChunk,
                .snapshotChunkAck, .readIndex, .readIndexResponse:
                becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            switch m.kind {
            case .appendEntries, .heartbeat:
                guard configuration.checkQuorum || configuration.preVote else { break }
                // A leader of an older term is still talking to us. Perhaps its messages were delayed; or perhaps
                // this node's term rose while it was cut off, and now it can neither win an election (its pre-votes
                // fail) nor rejoin at the old term. Answering with our term makes the old leader step down, so that
                // a new election can include this node.
                send(
                    .appendEntriesResponse(AppendEntriesResponse(success: false, index: .zero)), to: m.from,
                    immediately: true)
            case .requestVote(let request) where request.preVote:
                // Tell a pre-candidate with an old term that it is behind, so that it stops polling.
                send(.requestVoteResponse(RequestVoteResponse(preVote: true, granted: false)), to: m.from)
            default:
                break  // Stale: ignore.
            }
            return
        }

        switch m.kind {
        case .requestVote(let request):
            handleRequestVote(from: m.from, term: m.term, request)
        case .propose(let batch):
            // Dropped during a transfer, as a leader's own are refused; the proposer retries.
            if role == .leader && transferee == nil { appendProposals(batch) }
        case .readIndex(let request):
            if role == .leader {
                takeRead(context: request.context, from: m.from)
            } else {
                let refusal = ReadIndexResponse(context: request.context, index: .zero, granted: false)
                send(.readIndexResponse(refusal), to: m.from, immediately: true)
            }
        case .readIndexResponse(let response):
            guard role != .leader else { return }
            if response.granted {
                readStates.append(ReadState(context: response.context, index: response.index))
            } else {
                readsDropped.append(response.context)
            }
        default:
            switch role {
            case .leader: stepLeader(m)
            case .candidate, .preCandidate: stepCandidate(m)
            case .follower: stepFollower(m)
            }
        }
    }

    /// Proposes a command for the log.
    ///
    /// On the leader the command is appended at once; it is committed later, when a quorum holds it (watch
    /// `committedEntries` for its index). On a follower it is forwarded to the leader, or refused, as
    /// `RaftConfiguration.forwardProposals` says. A forwarded proposal may be lost (the leader may change), or
    /// reach the log more than once (the network may duplicate it): `ProposalTracker` and `ProposalSessions` are
    /// the bookkeeping that retries what may be lost and applies one copy only.
    ///
    /// - Returns: where the command went.
    /// - Throws: `ProposalError` when the command is too large, or this node cannot take it.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(ProposalError) -> ProposalOutcome {
        try propose(contentsOf: CollectionOfOne(data))
    }

    /// Proposes several commands at once; they get consecutive indexes.
    @discardableResult
    public mutating func propose(contentsOf batch: some Collection<[UInt8]>) throws(ProposalError) -> ProposalOutcome {
        guard !batch.isEmpty else { throw .empty }
        for data in batch where data.count > configuration.maxProposalBytes {
            throw .tooLarge(size: data.count, limit: configuration.maxProposalBytes)
        }
        switch role {
        case .leader:
            guard transferee == nil else { throw .transferring }
            let first = log.lastIndex.next
            appendProposals(batch)
            return .appended(first...log.lastIndex, term: term)
        case .follower, .preCandidate, .candidate:
            guard configuration.forwardProposals, let leader else { throw .notLeader(leaderHint: leader) }
            // A forwarded proposal becomes an entry of the term it is sent in, or of none. Sending it only once that
            // term is durable means that after a restart this node resumes in a term at least as high as any of its
            // proposals' entries (what `ProposalSessions` relies on to forget a restarted proposer's old session).
            send(.propose(Array(batch)), to: leader, immediately: term <= durableTerm)
            return .forwarded(to: leader)
        }
    }

    // MARK: - Handing out work

    /// Whether `ready()` would hand out anything.
    public var hasReady: Bool {
        // One test per line rather than one `||` chain: asked after every step, and an unoptimized build copies the
        // whole core into each operand's closure.
        if !messages.isEmpty || !messagesAfterPersist.isEmpty { return true }
        if log.hasUnpersisted { return true }
        if log.hasCommittedToApply { return true }
        if snapshotToInstall { return true }
        if !readStates.isEmpty || !readsDropped.isEmpty { return true }
        if role == .leader {
            if reads.wantsRound { return true }
            if needsFlush { return true }
        }
        if term != lastHardState.term { return true }
        return votedFor != lastHardState.votedFor
    }

    /// Takes the work that has accumulated: see `Ready` for what to do with it, and in which order.
    public mutating func ready() -> Ready {
        // Every read that arrived since the last ready shares one round.
        if role == .leader && reads.wantsRound { beginReadRound() }
        if role == .leader && needsFlush { flushReplication() }
        needsFlush = false
        var rd = Ready()
        rd.snapshot = snapshotToInstall ? snapshot : nil
        snapshotToInstall = false
        rd.entries = log.takeUnpersisted()
        // Term and vote must be durable before the messages that depend on them; the commit index is only a hint
        // for a faster restart, so a change of it alone costs no write: it rides along with the next one.
        let hs = hardState
        if hs.term != lastHardState.term || hs.votedFor != lastHardState.votedFor
            || ((!rd.entries.isEmpty || rd.snapshot != nil) && hs.commit != lastHardState.commit)
        {
            rd.hardState = hs
            lastHardState = hs
        }
        rd.committedEntries = log.takeCommitted()
        swap(&rd.messages, &messages)
        swap(&rd.messagesAfterPersist, &messagesAfterPersist)
        swap(&rd.readStates, &readStates)
        swap(&rd.readsDropped, &readsDropped)
        return rd
    }

    /// Tells the core that `ready`'s entries and hard state are durable (and its messages sent, its committed
    /// entries applied or being applied).
    public mutating func advance(_ ready: Ready) {
        if let hs = ready.hardState { durableTerm = max(durableTerm, hs.term) }
        guard let last = ready.entries.last else { return }
        durableTerm = max(durableTerm, last.term)
        let before = log.stable
        log.persisted(upTo: last.index, term: last.term)
        // The leader counts its own log towards a quorum only once it is durable (thesis §10.2.1).
        if role == .leader && log.stable > before { maybeCommit() }
    }

    // MARK: - Snapshots

    /// What a snapshot of a state machine that has applied everything handed out would be of: the last entry handed
    /// out to apply (`log.applied`) and the membership in effect there. Nil before anything is applied, or when that
    /// entry is the latest snapshot's. A shell that applies readies later than it takes them (its pipeline holds
    /// readies not yet durable) must use `snapshotCandidate(at:)` with what its state machine has really applied.
    public var snapshotCandidate: SnapshotMetadata? { snapshotCandidate(at: log.applied) }

    /// What a snapshot of a state machine that has applied every entry up to `index` would be of; nil if `index` is
    /// beyond what was handed out to apply, not after the latest snapshot, or no longer in the log.
    public func snapshotCandidate(at index: LogIndex) -> SnapshotMetadata? {
        guard index <= log.applied, index > (snapshot?.index ?? .zero), let term = log.term(at: index) else {
            return nil
        }
        return SnapshotMetadata(index: index, term: term, membership: membership(at: index))
    }

    /// The shell made a snapshot durable (one from `snapshotCandidate`, written while the node went on): the core
    /// sends it to followers that need entries from before the log's start. An older one than the latest is ignored.
    public mutating func snapshotCreated(_ meta: SnapshotMetadata) {
        guard meta.index > (snapshot?.index ?? .zero), meta.index <= log.applied,
            log.term(at: meta.index).map({ $0 == meta.term }) ?? (meta.index <= log.snapshotIndex)
        else { return }
        snapshot = meta
    }

    /// Drops the log's entries up to `index` from memory: never beyond the latest snapshot, nor beyond what is
    /// applied and durable. Returns the index the log now starts after. The shell compacts its storage to the same
    /// index; it keeps a margin below the snapshot, so that a follower slightly behind still gets entries.
    @discardableResult
    public mutating func compact(through index: LogIndex) -> LogIndex {
        let start = log.compact(through: min(index, snapshot?.index ?? .zero))
        // The configuration in effect at the log's new start becomes the first point; older ones are not needed.
        if let k = configs.lastIndex(where: { $0.index <= start }), k > 0 { configs.removeFirst(k) }
        return start
    }

    /// The membership in effect at `index`: the latest configuration at or before it.
    public func membership(at index: LogIndex) -> Membership {
        (configs.last { $0.index <= index } ?? configs.first)?.membership ?? .empty
    }

    /// The shell's transfer of a snapshot to `peer` ended: delivered (the follower's acknowledgement will move it
    /// on) or failed (the leader probes it again, and sends the snapshot again if it is still needed, after the
    /// next heartbeat's answer).
    public mutating func reportSnapshot(to peer: NodeID, succeeded: Bool) {
        guard role == .leader else { return }
        tracker.update(peer) { pr in
            guard pr.state == .snapshot else { return }
            if !succeeded { pr.pendingSnapshot = .zero }
            pr.becomeProbe()
            // Wait for an answer (the acknowledgement, or a heartbeat's) before sending again.
            pr.probeSent = true
        }
    }

    // MARK: - Roles

    private mutating func resetElectionTimer() {
        electionElapsed = 0
        let spread = UInt64(configuration.electionTick)
        randomizedElectionTimeout = configuration.electionTick + Int(random.next() % spread)
    }

    /// Moves to `newTerm` (forgetting the vote if the term changes) and clears per-role state.
    private mutating func reset(term newTerm: Term) {
        if newTerm != term {
            term = newTerm
            votedFor = nil
            // Messages still queued from an older term may promise what this node no longer holds: an
            // acknowledgement of entries that a leader of the new term has since overwritten, in the same batch of
            // inputs, would be counted by the old leader as a durable copy. Messages may be lost; drop them.
            messages.removeAll { $0.term < newTerm }
            messagesAfterPersist.removeAll { $0.term < newTerm }
        }
        leader = nil
        leaderLost = false
        leaseHoldoff = false
        leaseForfeited = false
        readsDropped += reads.dropAll(own: id)
        heartbeatElapsed = 0
        resetElectionTimer()
        tracker.resetVotes()
        tracker.clearProgress()
        needsFlush = false
        abortTransfer()
    }

    private mutating func becomeFollower(term newTerm: Term, leader newLeader: NodeID?) {
        reset(term: newTerm)
        role = .follower
        leader = newLeader
    }

    /// Starts a pre-vote poll. A pre-candidate keeps its term and vote: the poll changes nothing durable, on any node.
    private mutating func becomePreCandidate() {
        leader = nil
        tracker.resetVotes()
        tracker.clearProgress()
        resetElectionTimer()
        role = .preCandidate
    }

    /// Starts a real election: a new term, with this node's vote for itself.
    private mutating func becomeCandidate() {
        reset(term: term.next)
        role = .candidate
        votedFor = id
    }

    private mutating func becomeLeader() {
        reset(term: term)
        role = .leader
        leader = id
        let next = log.lastIndex.next
        // Every follower is probed from the end of our log, and has a full CheckQuorum period before it must have
        // answered.
        tracker.resetProgress(next: next, maxInflight: configuration.maxInflightMessages)
        // Raft §8: a new leader appends an empty entry of its own term; committing it commits everything before
        // it (§5.4.2), and tells the leader which of its entries are committed.
        log.appendAsLeader(Entry(term: term, index: next, kind: .noop))
        needsFlush = true
    }

    /// The ways a node stands for election.
    enum CampaignKind: Sendable, Hashable {
        /// A poll that a real election would succeed (thesis §9.6): asks for votes in the next term without
        /// entering it.
        case preElection
        /// A real election in the next term (Raft §5.2).
        case election
        /// A real election that the leader asked for (`timeoutNow`): voters grant it within the leader's lease.
        case transfer
    }

    /// Asks the voters for their votes: in a real election, or in a pre-vote poll.
    private mutating func campaign(_ kind: CampaignKind) {
        let electionTerm: Term
        switch kind {
        case .preElection:
            becomePreCandidate()
            electionTerm = term.next
        case .election, .transfer:
            becomeCandidate()
            electionTerm = term
        }
        if tracker.recordVote(from: id, granted: true) == .won {
            // A single-voter cluster wins at once.
            switch kind {
            case .preElection: campaign(.election)
            case .election, .transfer: becomeLeader()
            }
            return
        }
        let request = RequestVote(
            preVote: kind == .preElection, lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm,
            transfer: kind == .transfer)
        for voter in tracker.peers where tracker.isVoter(voter) {
            // A vote request goes out only after the candidate's own term and vote are durable (it is a
            // message-after-persist), so a crash cannot make it vote twice in this term.
            send(.requestVote(request), to: voter, term: electionTerm)
        }
    }

    // MARK: - Elections

    /// Raft §5.2, §5.4.1: grant a vote if we have not voted for someone else in this term and the candidate's log is
    /// at least as up to date as ours. Pre-votes are granted on the same log condition, for a later term, and
    /// recorded nowhere.
    private mutating func handleRequestVote(from candidate: NodeID, term requestTerm: Term, _ request: RequestVote) {
        let canVote =
            votedFor == candidate
            || (votedFor == nil && leader == nil)
            || (request.preVote && requestTerm > term)
        if canVote && log.isUpToDate(lastIndex: request.lastLogIndex, lastTerm: request.lastLogTerm) {
            // Answer in the term of the request: for a pre-vote that is the candidate's future term.
            send(
                .requestVoteResponse(RequestVoteResponse(preVote: request.preVote, granted: true)),
                to: candidate, term: requestTerm)
            if !request.preVote {
                votedFor = candidate
                electionElapsed = 0
            } else if role == .preCandidate && leaderLost && yields(to: candidate, request) {
                // Fast failover: when a leader dies, every follower loses its connection at the same moment and
                // polls at once, and each grants the others' polls; were they all to stand, each would vote for
                // itself and the vote would split. A node polling because it lost the leader stands down for a
                // peer whose log is more up to date, or as up to date with a lower id: one of them stands.
                becomeFollower(term: term, leader: nil)
            }
        } else {
            send(.requestVoteResponse(RequestVoteResponse(preVote: request.preVote, granted: false)), to: candidate)
        }
    }

    /// Whether a pre-candidate gives way to `candidate`'s poll (see `handleRequestVote`): its log is more up to date
    /// than this node's, or as up to date and its id is lower.
    private func yields(to candidate: NodeID, _ request: RequestVote) -> Bool {
        if request.lastLogTerm != log.lastTerm { return request.lastLogTerm > log.lastTerm }
        if request.lastLogIndex != log.lastIndex { return request.lastLogIndex > log.lastIndex }
        return candidate < id
    }

    private mutating func stepCandidate(_ m: Message) {
        switch m.kind {
        case .appendEntries, .heartbeat, .commitNotice, .installSnapshot:
            // Someone else won this term (Raft §5.2).
            becomeFollower(term: m.term, leader: m.from)
            stepFollower(m)
        case .requestVoteResponse(let response):
            guard response.preVote == (role == .preCandidate) else { return }
            // A granted pre-vote must answer this poll (for the next term), not an earlier one.
            if response.preVote && response.granted && m.term != term.next { return }
            switch tracker.recordVote(from: m.from, granted: response.granted) {
            case .won:
                if role == .preCandidate { campaign(.election) } else { becomeLeader() }
            case .lost:
                becomeFollower(term: term, leader: nil)
            case .pending:
                break
            }
        default:
            break
        }
    }

    // MARK: - Followers

    private mutating func stepFollower(_ m: Message) {
        switch m.kind {
        case .appendEntries(let request):
            electionElapsed = 0
            leader = m.from
            leaderLost = false
            handleAppendEntries(from: m.from, request)
        case .heartbeat(let heartbeat):
            electionElapsed = 0
            leader = m.from
            leaderLost = false
            // The leader caps the commit index at what it knows we hold, so it can be adopted as it is.
            log.commit(to: heartbeat.commit)
            // "I am here" promises nothing durable: send it at once, so a slow disk cannot fail CheckQuorum.
            send(.heartbeatResponse(HeartbeatResponse(context: heartbeat.context)), to: m.from, immediately: true)
        case .commitNotice(let commit):
            electionElapsed = 0
            leader = m.from
            log.commit(to: commit)
        case .installSnapshot(let meta):
            electionElapsed = 0
            leader = m.from
            leaderLost = false
            handleSnapshot(from: m.from, meta)
        case .timeoutNow:
            // The leader hands leadership over (thesis §3.10): campaign at once, without a pre-vote, and tell the
            // voters so, for they still hear from the leader.
            if m.from == leader && isPromotable { campaign(.transfer) }
        default:
            break
        }
    }

    /// The leader sent a snapshot (the shell received all of it, checked, before stepping the core with it). A
    /// snapshot this node's log already covers changes nothing; one whose last entry the log holds only moves the
    /// commit index; any other replaces the whole log, and the state machine is restored from it (`Ready.snapshot`).
    /// The answer is the acknowledgement of an AppendEntries that ended at the snapshot's index.
    private mutating func handleSnapshot(from leaderID: NodeID, _ meta: SnapshotMetadata) {
        if meta.index <= log.committed {
            // Older than what this node has committed: installing it would move the state machine backwards.
            send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: log.committed)), to: leaderID)
            return
        }
        if log.matches(index: meta.index, term: meta.term) {
            // The log holds the snapshot's last entry, so (Log Matching) everything before it too: no need to
            // restore anything, the entries are committed.
            log.commit(to: meta.index)
        } else {
            log.restore(index: meta.index, term: meta.term)
            snapshot = meta
            snapshotToInstall = true
            configs = [ConfigPoint(index: meta.index, term: meta.term, membership: meta.membership)]
            membershipChanged()
        }
        // Sent after persisting: the snapshot (or the entries) must be durable before the leader counts them.
        send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: meta.index)), to: leaderID)
    }

    /// Raft §5.3: append the leader's entries if our log holds the entry they follow; otherwise refuse, with a hint
    /// of where the logs may match so the leader can skip back a whole term at a time.
    private mutating func handleAppendEntries(from leaderID: NodeID, _ request: AppendEntries) {
        var prevIndex = request.prevIndex
        var prevTerm = request.prevTerm
        var entries = request.entries
        if prevIndex < log.committed {
            // Everything up to our commit index is known to match the leader. Skip the entries we have committed.
            let skip = Int(min(UInt64(entries.count), log.committed.rawValue - prevIndex.rawValue))
            if skip == 0 || skip == entries.count {
                send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: log.committed)), to: leaderID)
                return
            }
            prevIndex = entries[skip - 1].index
            prevTerm = entries[skip - 1].term
            entries.removeFirst(skip)
        }
        switch log.append(after: prevIndex, prevTerm: prevTerm, entries: entries) {
        case .appended(let lastNew):
            syncConfigs(appended: entries, after: prevIndex)
            log.commit(to: min(request.commit, lastNew))
            // Sent after persisting: the leader will count these entries as held by us.
            send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID)
        case .mismatch:
            let hint = log.lastIndex(atOrBelow: prevIndex, withTermAtMost: prevTerm)
            let response = AppendEntriesResponse(
                success: false, index: prevIndex, rejectHintIndex: hint.index, rejectHintTerm: hint.term)
            send(.appendEntriesResponse(response), to: leaderID)
        case .conflictsWithCommitted:
            // No correct leader sends entries that conflict with committed ones; refuse to damage the log.
            break
        }
    }

    // MARK: - Leaders

    private mutating func stepLeader(_ m: Message) {
        switch m.kind {
        case .appendEntriesResponse(let response) where response.success:
            let lastIndex = log.lastIndex
            let firstIndex = log.firstIndex
            let advanced =
                tracker.update(m.from) { pr in
                    pr.recentActive = true
                    pr.heardFrom = true
                    // An acknowledgement of entries we never sent is malformed; ignore it.
                    guard response.index <= lastIndex, pr.update(match: response.index) else { return false }
                    switch pr.state {
                    case .probe: pr.becomeReplicate()
                    case .replicate: pr.inflights.free(upTo: response.index)
                    case .snapshot:
                        // The follower holds the snapshot (or caught up some other way, far enough that the log
                        // has what it needs next): replicate from its match.
                        if pr.match >= pr.pendingSnapshot || pr.match.next >= firstIndex {
                            pr.becomeProbe()
                            pr.becomeReplicate()
                        }
                    }
                    return true
                } ?? false
            if advanced {
                needsFlush = true
                maybeCommit()
            }
            if m.from == transferee { maybeSendTimeoutNow() }
        case .appendEntriesResponse(let response):
            // Where might the logs match? The follower's hint is its last index at or below the rejected one with
            // a term at most the one we sent there; find the matching place in our log.
            var matchHint = response.rejectHintIndex
            if response.rejectHintTerm > .zero {
                matchHint = log.lastIndex(atOrBelow: matchHint, withTermAtMost: response.rejectHintTerm).index
            }
            let hint = matchHint
            let backedOff =
                tracker.update(m.from) { pr in
                    pr.recentActive = true
                    pr.heardFrom = true
                    guard pr.backOff(rejected: response.index, matchHint: hint) else { return false }
                    if pr.state == .replicate { pr.becomeProbe() }
                    return true
                } ?? false
            if backedOff { needsFlush = true }
        case .heartbeatResponse(let response):
            let patience = snapshotPatience
            let lastIndex = log.lastIndex
            let behind =
                tracker.update(m.from) { pr in
                    pr.recentActive = true
                    pr.heardFrom = true
                    pr.probeSent = false
                    pr.readRound = max(pr.readRound, response.context)
                    if pr.state == .snapshot {
                        // The follower is alive but has not acknowledged the snapshot. The shell reports every
                        // transfer's end (`reportSnapshot`); should a report be lost, do not wait for ever: probe
                        // again, which asks for the snapshot again if it is still needed (a shell whose transfer of
                        // that snapshot is still running just lets it run).
                        pr.snapshotWaits += 1
                        if pr.snapshotWaits >= patience {
                            pr.pendingSnapshot = .zero
                            pr.becomeProbe()
                        }
                    }
                    // The follower is alive: if the window is full, a message may have been lost; make room.
                    if pr.state == .replicate && pr.inflights.isFull { pr.inflights.freeFirst() }
                    // Behind: send what it lacks (a probe, a snapshot to retry, or in the replicate state an append
                    // that may have been lost) — in the replicate state once per tick, not once per read round,
                    // which would double the messages of every round while writes flow.
                    guard pr.match < lastIndex else { return false }
                    if pr.state == .replicate {
                        guard !pr.catchUpSent else { return false }
                        pr.catchUpSent = true
                    }
                    return true
                } ?? false
            if behind { sendAppend(to: m.from, allowEmpty: true) }
            if !reads.waiting.isEmpty { confirmReads() }
        default:
            break
        }
    }

    // MARK: - Reads

    /// Asks for a linearizable read (thesis §6.4). The answer comes in a later `Ready`: `readStates` with the read
    /// index (serve the read once the state machine has applied up to it), or `readsDropped` (this node stopped
    /// leading, or the leader refused: ask again). Nothing is appended to the log and nothing is written.
    ///
    /// On the leader the read index is the commit index when the read arrives — once an entry of the leader's own
    /// term is committed; before that, the read waits — confirmed by a quorum answering a heartbeat round that began
    /// after it (all the reads that arrive while a round is in flight share the next one). On a follower the read is
    /// sent to the leader, which answers with the index; a request or answer lost on the way is never reported, so
    /// the caller retries after a while of its choosing (with the same context, or a new one).
    ///
    /// - Parameter context: the caller's name for the read, echoed in the answer; unique among its reads in flight.
    /// - Throws: `ReadIndexError.noLeader` on a node that knows no leader.
    public mutating func readIndex(context: UInt64) throws(ReadIndexError) {
        switch role {
        case .leader:
            takeRead(context: context, from: id)
        case .follower:
            guard let leader else { throw .noLeader }
            send(.readIndex(ReadIndexRequest(context: context)), to: leader, immediately: true)
        case .preCandidate, .candidate:
            throw .noLeader
        }
    }

    /// Whether this node may serve a read from its lease, without a round (thesis §6.4.1): it leads, with
    /// CheckQuorum, has committed an entry of its term, and has not told another voter to campaign in this term. The
    /// lease's length is the shell's to measure, on its clock, from a confirmed read (see `readIndex`): voters ignore
    /// vote requests for `electionTick` ticks after they last heard from the leader — strictly so with
    /// `RaftConfiguration.strictLease`, which lease reads need.
    public var leaseReadsAllowed: Bool {
        role == .leader && configuration.checkQuorum && configuration.strictLease && !leaseForfeited
            && hasCommittedInTerm
    }

    /// Whether the leader's commit index is at an entry of its own term.
    private var hasCommittedInTerm: Bool { log.term(at: log.committed) == term }

    private mutating func takeRead(context: UInt64, from asker: NodeID) {
        if hasCommittedInTerm {
            reads.enqueue(context: context, from: asker, index: log.committed)
        } else {
            reads.awaitingCommit.append(PendingReads.Asker(context: context, from: asker))
        }
    }

    /// Begins a read round: a heartbeat to every follower, carrying the round's number.
    private mutating func beginReadRound() {
        reads.beginRound()
        broadcastHeartbeat()
        heartbeatElapsed = 0
        confirmReads()
    }

    /// Hands out (or sends the follower that asked) every read whose round a quorum has confirmed.
    private mutating func confirmReads() {
        let tracker = self.tracker
        let confirmed = reads.release { round in tracker.hasConfirmed(readRound: round) }
        for read in confirmed {
            if read.from == id {
                readStates.append(ReadState(context: read.context, index: read.index))
            } else {
                let answer = ReadIndexResponse(context: read.context, index: read.index, granted: true)
                send(.readIndexResponse(answer), to: read.from, immediately: true)
            }
        }
    }

    // MARK: - Membership

    /// Proposes a change of membership (thesis §4): it takes effect as soon as it is appended, here and on every node
    /// that appends it. One change at a time: refused while an earlier one is not committed or a joint configuration
    /// remains to be left, before the leader has committed an entry of its own term (the fix in the thesis errata
    /// for single-server changes, applied to every change), during a transfer, and when the voters it leaves that
    /// were heard from lately could not make a quorum.
    ///
    /// - Returns: the index of the configuration entry; the change is done once it is committed (and, for a joint
    ///   change with `Transition.auto`, the leader then appends the entry that leaves the joint configuration).
    @discardableResult
    public mutating func proposeConfigChange(_ change: ConfigChange) throws(MembershipError) -> LogIndex {
        guard role == .leader else { throw .notLeader(leaderHint: leader) }
        guard transferee == nil else { throw .transferring }
        guard log.term(at: log.committed) == term else { throw .notReady }
        guard (configs.last?.index ?? .zero) <= log.committed else { throw .inProgress }
        if membership.isJoint && !change.isLeaveJoint { throw .inProgress }
        let next: Membership
        switch change.applied(to: membership) {
        case .success(let m): next = m
        case .failure(let error): throw error
        }
        guard tracker.hasActiveQuorum(next.jointConfig) else {
            throw .wouldLoseQuorum("too few of the voters it leaves (\(next)) were heard from lately")
        }
        return appendConfigEntry(change)
    }

    @discardableResult
    private mutating func appendConfigEntry(_ change: ConfigChange) -> LogIndex {
        let entry = Entry(term: term, index: log.lastIndex.next, kind: .configChange, data: change.encoded())
        log.appendAsLeader(entry)
        configs.append(Raft.configPoint(for: entry, after: membership))
        membershipChanged()
        needsFlush = true
        return entry.index
    }

    /// The configuration a configuration entry makes from the one before it. An entry that does not decode, or
    /// whose change does not apply, changes nothing — the same on every node, since it depends on the log alone.
    static func configPoint(for entry: Entry, after current: Membership) -> ConfigPoint {
        var next = current
        if let change = ConfigChange(decoding: entry.data), case .success(let m) = change.applied(to: current) {
            next = m
        }
        return ConfigPoint(index: entry.index, term: entry.term, membership: next)
    }

    /// After a follower appended `entries` after `prevIndex`: configuration entries it truncated away take their
    /// configurations with them; new ones take effect.
    private mutating func syncConfigs(appended entries: [Entry], after prevIndex: LogIndex) {
        var changed = false
        while configs.count > 1, let last = configs.last, last.index > prevIndex, log.term(at: last.index) != last.term
        {
            configs.removeLast()
            changed = true
        }
        for entry in entries where entry.kind == .configChange && entry.index > (configs.last?.index ?? .zero) {
            configs.append(Raft.configPoint(for: entry, after: membership))
            changed = true
        }
        if changed { membershipChanged() }
    }

    /// The membership in effect changed: the tracker follows, and a transfer to a node that no longer votes ends.
    private mutating func membershipChanged() {
        tracker.setMembership(
            membership, next: max(log.lastIndex, LogIndex(1)), maxInflight: configuration.maxInflightMessages,
            leading: role == .leader)
        if let transferee, !membership.voters.contains(transferee) { abortTransfer() }
    }

    /// The commit index moved on the leader: a committed joint configuration with auto-leave is left; a committed
    /// configuration without this node as a voter makes it step down (thesis §4.2.2), handing leadership to the
    /// most up-to-date voter first.
    private mutating func configCommitted() {
        guard role == .leader, let last = configs.last, last.index <= log.committed else { return }
        if membership.isJoint && membership.autoLeave && transferee == nil {
            appendConfigEntry(.leaveJoint)
        } else if !membership.isVoter(id) {
            if let successor = mostUpToDateVoter(), tracker.progress[successor]?.match == log.lastIndex {
                send(.timeoutNow, to: successor, immediately: true)
            }
            becomeFollower(term: term, leader: nil)
        }
    }

    // MARK: - Leadership transfer

    /// Hands leadership to `target`, or to the most up-to-date voter (thesis §3.10): proposals are refused until the
    /// transfer ends; once the target's log matches the leader's it is told to campaign at once (`timeoutNow`); if
    /// it has not won within an election timeout, this node takes proposals again.
    ///
    /// - Returns: the node leadership is handed to.
    @discardableResult
    public mutating func transferLeadership(to target: NodeID? = nil) throws(MembershipError) -> NodeID {
        guard role == .leader else { throw .notLeader(leaderHint: leader) }
        let chosen: NodeID
        if let target {
            guard target != id else { throw .invalid("this node already leads") }
            guard membership.voters.contains(target) else { throw .invalid("\(target) is not a voter") }
            chosen = target
        } else {
            guard let best = mostUpToDateVoter() else {
                throw .invalid("there is no other voter to hand leadership to")
            }
            chosen = best
        }
        if transferee != chosen {
            transferee = chosen
            transferElapsed = 0
            timeoutNowSent = false
        }
        maybeSendTimeoutNow()
        if !timeoutNowSent { sendAppend(to: chosen, allowEmpty: true) }
        return chosen
    }

    /// The voter (of the configuration being entered) other than this node whose log matches the leader's furthest,
    /// among those heard from lately if any were; the lowest id among equals.
    private func mostUpToDateVoter() -> NodeID? {
        var best: (id: NodeID, active: Bool, match: LogIndex)?
        for voter in membership.voters.sorted() where voter != id {
            let pr = tracker.progress[voter]
            let active = pr.map { $0.recentActive || $0.wasActive } ?? false
            let match = pr?.match ?? .zero
            if let b = best, (b.active ? 1 : 0, b.match) >= (active ? 1 : 0, match) { continue }
            best = (voter, active, match)
        }
        return best?.id
    }

    private mutating func maybeSendTimeoutNow() {
        guard let transferee, !timeoutNowSent, tracker.progress[transferee]?.match == log.lastIndex else { return }
        timeoutNowSent = true
        leaseForfeited = true
        send(.timeoutNow, to: transferee, immediately: true)
    }

    private mutating func abortTransfer() {
        transferee = nil
        timeoutNowSent = false
        transferElapsed = 0
    }

    // MARK: - Failure detection

    /// The shell's report that its connection to `peer` was lost (reset or closed: the peer's process may have
    /// died). With `RaftConfiguration.fastFailover`, a follower that loses its leader starts a pre-vote at once, and
    /// grants pre-votes and votes in the leader's lease, as the other voters that lost it will too; a leader that a
    /// quorum still hears keeps leading. Of several followers polling at once for that reason, those that see a poll
    /// from a peer with a more up-to-date log (or as up to date, with a lower id) stand down, so that the vote does
    /// not split. Reports about other peers change nothing.
    public mutating func connectionLost(to peer: NodeID) {
        // With a strict lease, a follower that acknowledged the leader's heartbeat keeps its promise not to take part
        // in an election for an election timeout, even as a candidate: no hurried poll.
        guard configuration.fastFailover, !configuration.strictLease, configuration.preVote, role == .follower,
            peer == leader
        else { return }
        leaderLost = true
        if isPromotable && term < Term.ceiling { campaign(.preElection) }
    }

    private mutating func appendProposals(_ batch: some Collection<[UInt8]>) {
        for data in batch {
            log.appendAsLeader(Entry(term: term, index: log.lastIndex.next, kind: .normal, data: data))
        }
        needsFlush = true
    }

    /// Raft §5.3, §5.4.2: the commit index moves to the highest index a quorum holds — but only if that entry is
    /// from the current term. Entries of earlier terms are committed only indirectly, by a later entry of this
    /// term (Figure 8 shows why counting replicas of an old entry is unsafe).
    private mutating func maybeCommit() {
        let index = tracker.committedIndex(own: log.stable)
        guard index > log.committed, log.term(at: index) == term else { return }
        log.commit(to: index)
        needsFlush = true
        // An entry of this term is committed: the commit index now holds every earlier leader's, and can answer the
        // reads that waited for that.
        for asker in reads.awaitingCommit { reads.enqueue(context: asker.context, from: asker.from, index: index) }
        reads.awaitingCommit = []
        configCommitted()
    }

    /// Sends every follower whatever it can take now: new entries up to its window, or, if it has nothing to
    /// receive, a commit notice when its commit index is behind.
    private mutating func flushReplication() {
        let committed = log.committed
        for peer in tracker.peers {
            var sent = false
            while sendAppend(to: peer, allowEmpty: false) { sent = true }
            guard !sent else { continue }
            let notice = tracker.update(peer) { pr -> LogIndex? in
                let commit = min(committed, pr.match)
                guard commit > pr.commitSent else { return nil }
                pr.commitSent = commit
                return commit
            }
            if let commit = notice ?? nil { send(.commitNotice(commit), to: peer, immediately: true) }
        }
    }

    /// Sends `peer` an AppendEntries with the entries after its `next` index (bounded by the message limits), unless
    /// the follower is paused. Returns whether a message was sent.
    @discardableResult
    private mutating func sendAppend(to peer: NodeID, allowEmpty: Bool) -> Bool {
        guard let next = tracker.progress[peer].flatMap({ $0.isPaused ? nil : $0.next }) else { return false }
        let prevIndex = next.previous
        guard let prevTerm = log.term(at: prevIndex) else { return sendSnapshot(to: peer) }
        let entries = log.entries(
            from: next, maxBytes: configuration.maxMessageBytes, maxCount: configuration.maxMessageEntries)
        if entries.isEmpty && !allowEmpty { return false }
        let last = entries.last?.index ?? prevIndex
        let commit = log.committed
        let isEmpty = entries.isEmpty
        tracker.update(peer) { pr in
            pr.sent(entriesThrough: last, isEmpty: isEmpty)
            pr.commitSent = max(pr.commitSent, min(commit, last))
        }
        let request = AppendEntries(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        send(.appendEntries(request), to: peer, immediately: true)
        return true
    }

    /// How many heartbeat answers a leader waits, with a follower in the snapshot state, for the snapshot's
    /// acknowledgement or the shell's report before it probes the follower again: ten election timeouts' worth.
    var snapshotPatience: Int { max(1, 10 * configuration.electionTick / max(1, configuration.heartbeatTick)) }

    /// Sends `peer` the latest snapshot, because the log no longer holds the entries it needs next. Only to a
    /// follower heard from recently: a snapshot is large, and one that cannot be delivered is retried later.
    private mutating func sendSnapshot(to peer: NodeID) -> Bool {
        guard let snapshot else { return false }
        let started =
            tracker.update(peer) { pr -> Bool in
                guard pr.recentActive else { return false }
                pr.becomeSnapshot(snapshot.index)
                return true
            } ?? false
        guard started else { return false }
        send(.installSnapshot(snapshot), to: peer, immediately: true)
        return true
    }

    private mutating func broadcastHeartbeat() {
        let committed = log.committed
        for peer in tracker.peers {
            let commit = tracker.update(peer) { pr in
                let commit = min(committed, pr.match)
                pr.commitSent = max(pr.commitSent, commit)
                return commit
            }
            if let commit {
                send(.heartbeat(Heartbeat(commit: commit, context: reads.lastRound)), to: peer, immediately: true)
            }
        }
    }

    // MARK: - Messages

    /// Queues a message. `immediately` marks messages that promise nothing about this node's durable state (a
    /// leader's replication traffic, forwarded proposals); all others wait until the ready they belong to is
    /// persisted.
    private mutating func send(_ kind: Message.Kind, to peer: NodeID, term: Term? = nil, immediately: Bool = false) {
        let m = Message(from: id, to: peer, term: term ?? self.term, kind: kind)
        // A leader sends nothing in a term that is not durable yet: a restart could resume in that term and append
        // other entries in it. (A leader's term is durable before it is elected, since its vote requests wait for
        // the write — except a single voter's, which wins without asking anyone and may have learners to replicate
        // to at once.) A follower's immediate answers create nothing and go at once.
        if immediately && (role != .leader || m.term <= durableTerm) {
            messages.append(m)
        } else {
            messagesAfterPersist.append(m)
        }
    }

    /// Whether a message is internally consistent. A well-behaved peer only sends well-formed messages; anything
    /// else is dropped before it can touch the log.
    private func isWellFormed(_ m: Message) -> Bool {
        guard m.term < Term.ceiling else { return false }
        switch m.kind {
        case .appendEntries(let request):
            guard request.prevTerm <= m.term,
                request.prevIndex.rawValue <= UInt64.max - UInt64(request.entries.count)
            else { return false }
            var expected = request.prevIndex.next
            var lastTerm = request.prevTerm
            for entry in request.entries {
                guard entry.index == expected, entry.term >= lastTerm, entry.term <= m.term else { return false }
                lastTerm = entry.term
                expected = expected.next
            }
            return true
        case .propose(let batch):
            return !batch.isEmpty && batch.allSatisfy { $0.count <= configuration.maxProposalBytes }
        case .installSnapshot(let meta):
            return meta.term <= m.term && !meta.voters.isEmpty
        case .appendEntriesResponse, .requestVote, .requestVoteResponse, .heartbeat, .heartbeatResponse,
            .commitNotice, .snapshotChunk, .snapshotChunkAck, .timeoutNow, .readIndex, .readIndexResponse:
            return true
        }
    }
}

/// Where a proposal went.
public enum ProposalOutcome: Sendable, Hashable {
    /// Appended to the leader's log at these indexes, in this term. It is committed once applied entries reach
    /// the last index with the same term; if a later leader overwrites it, it never commits.
    case appended(ClosedRange<LogIndex>, term: Term)
    /// Forwarded to the leader.
    case forwarded(to: NodeID)
}
