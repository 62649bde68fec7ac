import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftTesting
import RaftTransport
import Testing
import ProcessTesting

/// Linearizable reads through `RaftNode.read`: ReadIndex on the leader and on followers, a deposed leader that must
/// not answer, and lease reads.
@Suite(.clusterSlot) struct ReadNodeTests {
    /// A register: "set X" sets it and returns the index it was set at.
    struct Register: StateMachine {
        var value = ""
        var writes = 0
        mutating func apply(_ command: [UInt8], at index: LogIndex) -> LogIndex {
            let text = String(decoding: command, as: UTF8.self)
            if text.hasPrefix("set ") {
                value = String(text.dropFirst(4))
                writes += 1
            }
            return index
        }
    }

    typealias Cluster = RaftTesting.InMemoryCluster<Register>

    static func options(_ configure: (inout RaftNode<Register>.Options) -> Void = { _ in })
        -> RaftNode<Register>.Options
    {
        var options = RaftNode<Register>.Options()
        // Ticks slow enough that a loaded machine (every suite at once on two cores) does not starve heartbeats
        // into an election after election, and proposals that may wait for one.
        options.tickInterval = .milliseconds(50)
        options.proposalTimeout = .seconds(30)
        options.readTimeout = .seconds(2)
        options.logger.logLevel = .critical
        configure(&options)
        return options
    }

    @Test func readsOnTheLeaderAndOnFollowersSeeTheLastWriteAndAppendNothing() async throws {
        let cluster = try Cluster(size: 3, options: Self.options()) { _ in Register() }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())
        let written = try await leader.propose("set one")
        let lastBefore = await leader.status().lastIndex
        for node in cluster.nodes {
            for _ in 0..<20 {
                let read = try await node.read { $0.value }
                #expect(read.value == "one", "\(node.name)")
                #expect(read.appliedIndex >= written.index, "\(node.name)")
            }
        }
        // Sixty linearizable reads, not one log entry.
        #expect(await leader.status().lastIndex == lastBefore)
        // Serializable reads of this node's copy, and "at least index N".
        let follower = try #require(cluster.nodes.first { $0.name != leader.name })
        let local = try await follower.read(.serializable, atLeast: written.index) { $0.value }
        #expect(local.value == "one" && local.appliedIndex >= written.index)
        await cluster.stopAll()
    }

    @Test func aReadWaitsForTheIndexItAsksForAndFailsIfItNeverComes() async throws {
        let cluster = try Cluster(size: 3, options: Self.options { $0.readTimeout = .milliseconds(500) }) { _ in
            Register()
        }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())
        let written = try await leader.propose("set a")
        await #expect(throws: RaftNodeError.self) {
            _ = try await leader.read(.serializable, atLeast: LogIndex(written.index.rawValue + 1_000)) { $0.value }
        }
        await cluster.stopAll()
    }

    /// The deposed leader, cut off with its client, is asked for a linearizable read while the others elect a new
    /// leader and take a write: it must not answer with the old value. With the broken read path (no confirmation)
    /// it does — which shows the test can fail.
    @Test(arguments: [false, true])
    func aDeposedLeaderCutOffDoesNotServeAStaleValue(unsafe: Bool) async throws {
        let options = Self.options {
            $0.unsafeReadsWithoutConfirmation = unsafe
            // Long enough that the old leader still believes it leads when it is asked.
            $0.electionTicks = 50
        }
        let cluster = try Cluster(size: 3, options: options) { _ in Register() }
        try await cluster.startAll()
        let old = try #require(await cluster.leader())
        _ = try await old.propose("set old")
        #expect(
            await eventually {
                for node in cluster.nodes where (try? await node.read(.serializable) { $0.value })?.value != "old" {
                    return false
                }
                return true
            })

        cluster.isolate(old.name)
        // Asked before it could know that it has been deposed.
        #expect(await old.status().role == .leader)
        let staleRead = Task { try await old.read { $0.value } }
        let new = try #require(await cluster.leader(excluding: [old.name]))
        #expect(new.name != old.name)
        _ = try await new.propose("set new")

        let answer = await staleRead.result
        if unsafe {
            // The broken path answers at once with what the old leader holds.
            #expect((try? answer.get())?.value == "old")
        } else {
            // It waited, and failed: never the stale value.
            switch answer {
            case .success(let read): Issue.record("the deposed leader answered \(read.value) at \(read.appliedIndex)")
            case .failure(let error): #expect((error as? RaftNodeError)?.code == .readUnavailable, "\(error)")
            }
            // Once healed, the same node (a follower now) reads the new value.
            cluster.heal()
            #expect(await eventually { (try? await old.read { $0.value })?.value == "new" })
        }
        await cluster.stopAll()
    }

    @Test func aLeaseReadNeedsNoRoundTripWhileTheLeaseHolds() async throws {
        // A lease of (80 - 1) × 40 ms - 100 ms = 3.06 s: long enough for the reads below on a loaded machine.
        let options = Self.options {
            $0.tickInterval = .milliseconds(40)
            $0.electionTicks = 80
            $0.leaseReads = true
            $0.readTimeout = .milliseconds(600)
        }
        let cluster = try Cluster(size: 3, options: options) { _ in Register() }
        try await cluster.startAll()
        let leader = try #require(await cluster.leader())
        _ = try await leader.propose("set leased")
        // A linearizable read confirms (and starts) the lease.
        #expect(try await leader.read { $0.value }.value == "leased")
        // Cut the leader off: no round can be confirmed any more, but the lease still holds.
        cluster.isolate(leader.name)
        let leased = try await leader.read(.lease) { $0.value }
        #expect(leased.value == "leased")
        await #expect(throws: RaftNodeError.self) { _ = try await leader.read(.linearizable) { $0.value } }
        await cluster.stopAll()
    }

    @Test func leaseReadsNeedCheckQuorumAndAPositiveLease() async throws {
        let noCheckQuorum = try Cluster(
            size: 1,
            options: Self.options {
                $0.leaseReads = true
                $0.checkQuorum = false
            }
        ) { _ in Register() }
        await #expect(throws: RaftNodeError.self) { try await noCheckQuorum.startAll() }
        let tooShort = try Cluster(
            size: 1,
            options: Self.options {
                $0.leaseReads = true
                $0.leaseClockDrift = .seconds(10)
            }
        ) { _ in Register() }
        await #expect(throws: RaftNodeError.self) { try await tooShort.startAll() }
    }
}

/// Storage whose writes complete only when the test releases them, oldest first.
final class GatedStorage: NodeStorage {
    private let inner = InMemoryNodeStorage()
    private let held = NIOLockedValueBox<[@Sendable () -> Void]>([])
    private let open = NIOLockedValueBox(true)

    func initialState() -> PersistentState { inner.initialState() }

    func persist(entries: [Entry], hardState: HardState?, completion: @escaping @Sendable ((any Error)?) -> Void) {
        let write: @Sendable () -> Void = { [inner] in
            inner.persist(entries: entries, hardState: hardState, completion: completion)
        }
        let now = open.withLockedValue { isOpen in
            if isOpen { return true }
            held.withLockedValue { $0.append(write) }
            return false
        }
        if now { write() }
    }

    /// Writes from now on wait for `release()`.
    func close() { open.withLockedValue { $0 = false } }

    /// How many writes wait.
    var waiting: Int { held.withLockedValue { $0.count } }

    /// Completes the oldest waiting write.
    func release() {
        let next = held.withLockedValue { $0.isEmpty ? nil : $0.removeFirst() }
        next?()
    }

    /// Completes every waiting write and lets later ones through.
    func openAll() {
        open.withLockedValue { $0 = true }
        while let next = held.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() }) { next() }
    }
}

@Suite(.clusterSlot) struct AppliedIndexTests {
    /// The status's applied index is what the state machine holds, not what the core handed out to apply: an entry
    /// committed but waiting in the pipeline behind a write still under way is not counted (CI once saw a follower
    /// "applied" to an index whose last writes a read of it did not yet show).
    @Test func theAppliedIndexIsWhatTheStateMachineHolds() async throws {
        let network = InMemoryNetwork()
        let cluster = try ClusterConfiguration(
            members: [ClusterConfiguration.Member(name: "solo", host: "127.0.0.1", port: 1000)])
        let storage = GatedStorage()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let node = try RaftNode(
            cluster: cluster, name: "solo", stateMachine: ReadNodeTests.Register(), storage: storage,
            options: ReadNodeTests.options(), eventLoop: loop,
            transport: InMemoryTransport(
                id: ClusterConfiguration.nodeID(for: "solo"), network: network, eventLoop: loop))
        try await node.start()
        #expect(await eventually { await node.role == .leader })
        _ = try await node.propose("set zero")

        // "set one" is written and held; "set two" is written behind it and held too.
        storage.close()
        let one = Task { try await node.propose("set one") }
        #expect(await eventually { storage.waiting == 1 })
        let two = Task { try await node.propose("set two") }
        #expect(await eventually { storage.waiting == 2 })
        // "set one" becomes durable, so it commits: the core hands it out to apply, but the ready that carries it
        // waits for the write of "set two" before it is applied.
        storage.release()
        try await Task.sleep(for: .milliseconds(200))
        let status = await node.status()
        let local = try await node.read(.serializable) { $0.value }
        #expect(local.value == "zero", "the state machine has not applied \"set one\" yet")
        #expect(status.appliedIndex == local.appliedIndex, "the status names the state the read saw")
        #expect(status.commitIndex > status.appliedIndex, "the commit index is ahead while the apply waits")

        storage.openAll()
        let applied = try await two.value
        _ = try await one.value
        #expect(await node.status().appliedIndex == applied.index)
        #expect(try await node.read(.serializable) { $0.value }.value == "two")
        await node.stop()
    }
}
