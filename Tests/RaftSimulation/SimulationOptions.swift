import RaftCore

/// Everything that shapes one simulated schedule. `SimulationOptions(seed:)` derives all of it from the seed, so a
/// seed alone replays a run.
public struct SimulationOptions: Sendable, Hashable, CustomStringConvertible {
    /// The seed behind every random choice of the run: the options, the network, the faults, and each node's
    /// election timeouts.
    public var seed: UInt64
    public var nodeCount: Int
    /// Virtual time units per tick.
    public var tickInterval: Int64
    public var electionTick: Int
    public var heartbeatTick: Int
    /// How long faults are injected, in ticks; afterwards the network heals and crashed nodes restart.
    public var faultTicks: Int
    /// Message delay range, in virtual time units. A wide range reorders messages.
    public var minDelay: Int64
    public var maxDelay: Int64
    /// Chance that a message overtakes those sent before it on its link, which are otherwise delivered in order.
    public var reorderRate: Double
    /// Chance that a message is lost, or delivered twice, during the fault phase.
    public var dropRate: Double
    public var duplicateRate: Double
    /// How long one write to storage takes, at most.
    public var maxPersistDelay: Int64
    /// Average time between two fault decisions, and the chance of each fault kind at each decision.
    public var nemesisInterval: Int64
    public var crashWeight: Int
    public var pauseWeight: Int
    public var partitionWeight: Int
    public var healWeight: Int
    /// How often a fault strikes the current leader rather than any node (0...1).
    public var leaderBias: Double
    /// Chance that a newly elected leader is struck down (crashed or cut off) within a few round trips.
    public var assassinationRate: Double
    /// How long a crashed node stays down, at most, in ticks.
    public var maxDowntimeTicks: Int
    /// Chance that a crash leaves a torn write: part of the write in progress reaches the disk.
    public var tornWriteRate: Double
    /// Average time between two client proposals during the fault phase.
    public var proposalInterval: Int64
    /// Proposals made once faults stop, each of which must commit.
    public var livenessProposals: Int
    /// How long a client waits for its proposal before it gives up (its outcome is then unknown, or definite if no
    /// copy of it can commit), in ticks.
    public var proposalTimeoutTicks: Int
    /// Chance that liveness is judged under a partition that stays (with PreVote and CheckQuorum only).
    public var steadyPartitionRate: Double
    /// The core's PreVote and CheckQuorum settings (on by default; off in some schedules, as some users run it).
    public var preVote: Bool
    public var checkQuorum: Bool
    /// Whether the core forwards proposals made on followers.
    public var forwardProposals: Bool
    /// Smaller message limits force many AppendEntries per catch-up, to exercise batching and the pipeline window.
    public var maxMessageEntries: Int
    public var maxInflightMessages: Int
    /// Chance that a delivered message waits in the node's inbox to be stepped together with the others that arrive
    /// within `burstWindow`, before one `Ready` is taken — as the runtime steps everything read from its sockets in
    /// one go.
    public var burstRate: Double
    public var burstWindow: Int64
    /// Snapshots: each node snapshots its state machine every `snapshotEvery` applied entries, and on demand at
    /// any tick with `snapshotOnDemandRate`; writing one takes up to `maxSnapshotDelay` (a crash meanwhile loses
    /// it, the previous one stays). After a snapshot is durable, the log is compacted up to `compactionMargin`
    /// entries before it, in memory and in storage.
    public var snapshotEvery: Int
    public var snapshotOnDemandRate: Double
    public var maxSnapshotDelay: Int64
    public var compactionMargin: UInt64
    /// The extra time an InstallSnapshot takes on the network (a snapshot is big), at most.
    public var snapshotTransferDelay: Int64
    /// Chance that the leader's shell does not learn how a snapshot transfer ended. It then reports the transfer
    /// as failed after `snapshotReportTimeoutTicks` (as a shell gives up on a transfer that went silent), or, with
    /// `lostReportsStay`, never at all.
    public var lostReportRate: Double
    public var snapshotReportTimeoutTicks: Int
    /// Whether a lost report stays lost (not part of the seed: off unless a test turns it on). The core then has
    /// only the follower's acknowledgement to leave the snapshot state, and gets stuck if that is lost too.
    public var lostReportsStay = false
    /// The weight of the laggard fault: a follower cut off long enough (up to `laggardTicks`) for the leader to
    /// compact its log past it, so that it needs a snapshot when it comes back.
    public var laggardWeight: Int
    public var laggardTicks: Int
    /// Membership: `spareNodes` more nodes than the `nodeCount` bootstrap voters, which start with an empty log and
    /// the bootstrap configuration and are members only once a change adds them. Every `membershipInterval` on
    /// average (zero: never) the simulator asks the leader for a membership action: a change (learners, voters,
    /// removals, replacements, several at once; auto, explicit or simple), leaving an explicit joint
    /// configuration, a leadership transfer, or a spurious report of a lost connection to the leader.
    public var spareNodes: Int
    public var membershipInterval: Int64
    /// The core's fast failover (followers that lose their connection to the leader campaign at once).
    public var fastFailover: Bool
    /// Chance that a crash is reported (`connectionLost`) to each node that had the crashed node as its leader.
    public var connectionLostRate: Double
    /// Reads: every `readInterval` on average (zero: never), during the fault phase, a client asks a node for a
    /// linearizable read (`Raft.readIndex(context:)`): the node that leads (or thinks it does) `leaderReadRate` of
    /// the time, otherwise any member. It gives up after `readTimeoutTicks` of the node's ticks (in virtual time).
    public var readInterval: Int64
    public var leaderReadRate: Double
    public var readTimeoutTicks: Int
    /// Lease reads (with CheckQuorum only): the core keeps the lease strictly (`RaftConfiguration.strictLease`, which
    /// also disables fast failover), the leader's shell keeps a `ReadLease` on the virtual clock, less
    /// `leaseClockDrift` units, and `leaseReadRate` of the reads are asked as lease reads. The simulator gives every
    /// node the same clock speed (a tick every `tickInterval` of virtual time; a paused node's ticks stop, but
    /// virtual time, which the lease is measured on, runs on), so the drift only shortens the lease.
    public var strictLease: Bool
    public var leaseReadRate: Double
    public var leaseClockDrift: Int64
    /// TESTING ONLY (not part of the seed): a broken read path, which the checker must catch. Serve every read at
    /// the node's own commit index without asking the core (as `RaftNode.Options.unsafeReadsWithoutConfirmation`).
    public var unsafeReadsWithoutConfirmation = false
    /// TESTING ONLY (not part of the seed): the lease's duration in virtual time units, instead of
    /// `(electionTick - 1) * tickInterval - leaseClockDrift` (a longer one is unsafe, and the checker must say so).
    public var leaseDurationOverride: Int64?

    /// Every node of the schedule: the bootstrap voters and the spares.
    public var poolSize: Int { nodeCount + spareNodes }

    /// The options for `seed`: node count 3, 5 or 7 and every fault rate drawn from the seed.
    public init(seed: UInt64) {
        var r = SplitMix64(seed: seed ^ 0x5EED_0F0B_7104_5A5A)
        func pick<T>(_ choices: [T]) -> T { choices[Int(r.next() % UInt64(choices.count))] }
        func chance(_ p: Double) -> Bool { Double(r.next() % 1_000_000) / 1_000_000 < p }
        self.seed = seed
        nodeCount = pick([3, 3, 5, 5, 7])
        tickInterval = 100
        electionTick = 10
        heartbeatTick = pick([1, 2, 3])
        faultTicks = pick([100, 200, 300])
        minDelay = pick([1, 5])
        maxDelay = pick([10, 40, 150, 400])
        reorderRate = pick([0, 0.01, 0.1])
        dropRate = pick([0, 0.01, 0.05, 0.15])
        duplicateRate = pick([0, 0.01, 0.05])
        maxPersistDelay = pick([1, 10, 60, 250])
        nemesisInterval = pick([300, 1000, 3000])
        crashWeight = pick([0, 1, 3])
        pauseWeight = pick([0, 1, 2])
        partitionWeight = pick([0, 1, 3])
        healWeight = pick([1, 2])
        tornWriteRate = pick([0, 0.5, 1])
        proposalInterval = pick([20, 100, 400])
        livenessProposals = pick([3, 10])
        proposalTimeoutTicks = pick([5, 20, 60])
        steadyPartitionRate = 0.3
        forwardProposals = chance(0.5)
        preVote = chance(0.85)
        checkQuorum = chance(0.85)
        maxMessageEntries = pick([2, 16, 4096])
        maxInflightMessages = pick([1, 4, 256])
        burstRate = pick([0, 0.3, 1])
        burstWindow = pick([0, 10, 60])
        leaderBias = 0.5
        assassinationRate = 0
        maxDowntimeTicks = 20
        if crashWeight + pauseWeight + partitionWeight == 0 { partitionWeight = 1 }
        // Snapshot settings come from a generator of their own, so that the options above stay what they were for
        // each seed before snapshots existed.
        var s = SplitMix64(seed: seed ^ 0x5_4A95_07C0_4ABC)
        func pickS<T>(_ choices: [T]) -> T { choices[Int(s.next() % UInt64(choices.count))] }
        // Half the schedules snapshot very often (they commit few entries under heavy faults), half up to every 50.
        snapshotEvery = 2 + Int(s.next() % (s.next() % 2 == 0 ? 9 : 49))
        snapshotOnDemandRate = pickS([0, 0.01, 0.05])
        maxSnapshotDelay = pickS([1, 50, 300, 1000])
        compactionMargin = s.next() % 11
        snapshotTransferDelay = pickS([0, 100, 500])
        lostReportRate = pickS([0, 0, 0.2, 0.5])
        snapshotReportTimeoutTicks = pickS([5, 20, 50])
        laggardWeight = pickS([1, 2, 3])
        laggardTicks = pickS([20, 50, 100])
        // Membership settings come from a generator of their own too, for the same reason. Removed voters disrupt a
        // cluster that has neither PreVote nor CheckQuorum (thesis §4.2.3: the shell must shut them down), so those
        // schedules change nothing.
        var m = SplitMix64(seed: seed ^ 0x3E3B_E125_41B0_C4A7)
        func pickM<T>(_ choices: [T]) -> T { choices[Int(m.next() % UInt64(choices.count))] }
        spareNodes = pickM([0, 1, 2, 2, 3])
        membershipInterval = preVote || checkQuorum ? pickM([0, 200, 400, 400, 1000]) : 0
        if membershipInterval == 0 { spareNodes = 0 }
        fastFailover = preVote && pickM([false, false, true])
        connectionLostRate = pickM([0.5, 1])
        // Read settings come from a generator of their own too.
        var q = SplitMix64(seed: seed ^ 0x7EAD_1DE8_C0FF_EE11)
        func pickQ<T>(_ choices: [T]) -> T { choices[Int(q.next() % UInt64(choices.count))] }
        readInterval = pickQ([100, 300, 600])
        leaderReadRate = pickQ([0.2, 0.5, 0.8])
        readTimeoutTicks = pickQ([10, 30, 50])
        strictLease = checkQuorum && pickQ([false, false, true])
        leaseReadRate = strictLease ? pickQ([0.5, 0.9]) : 0
        leaseClockDrift = pickQ([0, 10, 100])
        if chance(0.5) {
            // Leader churn: faults strike the leader every few ticks and nodes come back quickly, so that short-lived
            // leaders leave divergent log suffixes behind (the material of the paper's Figures 7 and 8).
            nemesisInterval = pick([100, 300, 1000])
            leaderBias = 0.9
            assassinationRate = pick([0.3, 0.7])
            maxDowntimeTicks = pick([2, 5])
            crashWeight = max(crashWeight, 2)
            proposalInterval = pick([10, 30])
            maxMessageEntries = pick([1, 2])
            maxInflightMessages = pick([1, 2, 8])
            forwardProposals = true
        }
    }

    public var description: String {
        "seed=\(seed) nodes=\(nodeCount) faultTicks=\(faultTicks) delay=\(minDelay)...\(maxDelay) reorder=\(reorderRate) drop=\(dropRate) "
            + "dup=\(duplicateRate) persist<=\(maxPersistDelay) nemesis/\(nemesisInterval) "
            + "crash:pause:partition:heal=\(crashWeight):\(pauseWeight):\(partitionWeight):\(healWeight) "
            + "leaderBias=\(leaderBias) assassination=\(assassinationRate) downtime<=\(maxDowntimeTicks) "
            + "torn=\(tornWriteRate) proposals/\(proposalInterval) forward=\(forwardProposals) "
            + "preVote=\(preVote) checkQuorum=\(checkQuorum) "
            + "maxEntries=\(maxMessageEntries) window=\(maxInflightMessages) heartbeatTick=\(heartbeatTick) "
            + "burst=\(burstRate)/\(burstWindow) proposalTimeout=\(proposalTimeoutTicks) "
            + "snapshotEvery=\(snapshotEvery) onDemand=\(snapshotOnDemandRate) snapshotDelay<=\(maxSnapshotDelay) "
            + "margin=\(compactionMargin) transfer+<=\(snapshotTransferDelay) lostReport=\(lostReportRate)/\(snapshotReportTimeoutTicks)\(lostReportsStay ? " (stays lost)" : "") "
            + "laggard=\(laggardWeight)/\(laggardTicks) spares=\(spareNodes) membership/\(membershipInterval) "
            + "fastFailover=\(fastFailover) connectionLost=\(connectionLostRate) "
            + "reads/\(readInterval) leaderReads=\(leaderReadRate) readTimeout=\(readTimeoutTicks) "
            + "strictLease=\(strictLease) leaseReads=\(leaseReadRate) drift=\(leaseClockDrift)"
            + (unsafeReadsWithoutConfirmation ? " UNSAFE-READS" : "")
            + (leaseDurationOverride.map { " LEASE=\($0)" } ?? "")
    }
}
