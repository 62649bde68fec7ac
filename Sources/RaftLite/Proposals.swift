import NIOCore
import RaftCore

/// What a proposal's caller waits on.
struct ProposalWaiter<Output: Sendable> {
    /// A command's caller waits for its commitment; a session registration's for its client id.
    enum Promise {
        case command(EventLoopPromise<Committed<Output>>)
        case registration(EventLoopPromise<UInt64>)
    }

    var promise: Promise
    var timeout: Scheduled<Void>?
    var started: NIODeadline

    init(promise: EventLoopPromise<Committed<Output>>, started: NIODeadline) {
        self.promise = .command(promise)
        self.started = started
    }

    init(registration: EventLoopPromise<UInt64>, started: NIODeadline) {
        self.promise = .registration(registration)
        self.started = started
    }

    func fail(_ error: any Error) {
        switch promise {
        case .command(let p): p.fail(error)
        case .registration(let p): p.fail(error)
        }
    }
}

/// The error a proposal's caller gets when the proposal is settled without being applied: the rules alone, apart
/// from the node that carries them out. Only `timedOut` and `stoppedOutcomeUnknown` leave the outcome open, and only
/// when the tracker says a copy might still commit.
enum ProposalFailure {
    /// The proposal's deadline passed (`Options.proposalTimeout`). Never handed on: no leader appeared in time, so
    /// it was not applied. Every copy proven unable to commit: dropped. Otherwise the outcome is unknown.
    static func atDeadline<W>(_ settlement: ProposalTracker<W>.Settlement) -> RaftNodeError {
        switch settlement {
        case .neverHanded: .notLeader(leaderHint: nil)
        case .lost: .dropped("every copy was overtaken by entries of a later term")
        case .unknown, .applied: .timedOut
        }
    }

    /// The core refused the proposal for good (`ProposalTracker.Refusal`); `leaderName` names a node id.
    static func refused<W>(_ refusal: ProposalTracker<W>.Refusal, leaderName: (NodeID) -> String?) -> RaftNodeError {
        if case .unknown = refusal.settlement { return .timedOut }
        let error = refusal.error
        switch error.code {
        case .notLeader: return .notLeader(leaderHint: error.leaderHint.flatMap(leaderName))
        case .tooLarge: return .tooLarge(size: error.size ?? 0, limit: error.limit ?? 0)
        case .empty: return .invalidProposal("empty proposal")
        default: return .invalidProposal("\(error)")
        }
    }

    /// The node stops with the proposal pending: unknown if a copy might still commit, else `definite`.
    static func atStop<W>(_ settlement: ProposalTracker<W>.Settlement, definite: RaftNodeError) -> RaftNodeError {
        if case .unknown = settlement { return .stoppedOutcomeUnknown }
        return definite
    }
}

// The node's side of its proposals: deadlines, handing them to the core, and failing them by the rules above.
extension RaftNode {
    /// Fails the proposal `sequence` when `Options.proposalTimeout` passes before it is settled.
    func armDeadline(_ sequence: UInt64, _ rt: NodeRuntime<Machine>) {
        rt.tracker[sequence]?.timeout = eventLoop.scheduleTask(in: options.proposalTimeout) { [weak self] in
            guard let self, let rt = self.runtime.value, let (waiter, settlement) = rt.tracker.settle(sequence) else {
                return
            }
            self.fail(waiter, ProposalFailure.atDeadline(settlement), rt)
        }
    }

    /// Gives a pending proposal to the core (see `ProposalTracker.hand`), failing it if the core refuses it for good.
    func hand(_ sequence: UInt64, _ rt: NodeRuntime<Machine>) {
        if let refusal = rt.tracker.hand(sequence, to: &rt.raft) { failRefused(refusal, rt) }
    }

    func failRefused(_ refusal: ProposalTracker<ProposalWaiter<Machine.Output>>.Refusal, _ rt: NodeRuntime<Machine>) {
        fail(refusal.waiter, ProposalFailure.refused(refusal) { self.member(id: $0, rt)?.name }, rt)
    }

    /// Settles every pending proposal (the node stops): those that may still commit fail as of unknown outcome.
    func settleAll(_ rt: NodeRuntime<Machine>, _ definite: RaftNodeError) {
        for (waiter, settlement) in rt.tracker.settleAll() {
            fail(waiter, ProposalFailure.atStop(settlement, definite: definite), rt)
        }
    }

    func fail(_ waiter: ProposalWaiter<Machine.Output>, _ error: RaftNodeError, _ rt: NodeRuntime<Machine>) {
        rt.failures += 1
        waiter.timeout?.cancel()
        waiter.fail(error)
    }
}
