import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import RaftLite
import RaftStorage
import RaftTransport
import StorageTesting
import Testing
import RaftTesting
import ProcessTesting

/// Three nodes in this process, each on a write-ahead log over its own simulated file system; while proposals flow,
/// the power of a random node (the leader included) is cut again and again, and a new node starts on what survived.
@Suite(.serialized, .clusterSlot) struct PowerCutClusterTests {
    /// Everything the test shares between its tasks.
    final class World: Sendable {
        let running = NIOLockedValueBox<[String: RaftNode<Recorder>]>([:])
        let fileSystems = NIOLockedValueBox<[String: SimulatedFileSystem]>([:])
        /// Every incarnation's state machine, in the order they were started.
        let incarnations = NIOLockedValueBox<[(String, Recorder)]>([])
        let acknowledged = NIOLockedValueBox<[(UInt64, String)]>([])
        /// Restarts that found a torn write to cut.
        let tornTails = NIOLockedValueBox(0)
        let proposing = NIOLockedValueBox(true)
        let sent = NIOLockedValueBox(0)
    }

    static let directory = "/node"

    @Test func nodesWhosePowerIsCutLoseNoAcknowledgedProposal() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["CLUSTER_POWER_CUT_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        let wanted = environment["CLUSTER_POWER_CUTS"].flatMap(Int.init) ?? 15
        print(
            "cluster power cuts: seed \(seed) (replay the same schedule of cuts: CLUSTER_POWER_CUT_SEED=\(seed) swift "
                + "test --filter nodesWhosePowerIsCutLoseNoAcknowledgedProposal; thread timing still varies)")
        var rng = SplitMix64(seed: seed)
        let names = ["node0", "node1", "node2"]
        let cluster = try ClusterConfiguration(
            members: names.enumerated().map {
                ClusterConfiguration.Member(name: $1, host: "127.0.0.1", port: 1000 + $0)
            })
        let network = InMemoryNetwork()
        var options = LocalCluster.options(tickMilliseconds: 10)
        options.proposalTimeout = .seconds(2)
        options.logger = Logger(label: "power-cut") { _ in SwiftLogNoOpLogHandler() }
        var walOptions = WriteAheadLog.Options()
        walOptions.segmentBytes = 64 << 10
        let world = World()
        world.fileSystems.withLockedValue { fs in for name in names { fs[name] = SimulatedFileSystem() } }

        /// Starts a node on a log over the name's file system as it is now.
        func start(_ name: String) async throws {
            let fs = try #require(world.fileSystems.withLockedValue { $0[name] })
            let log = try WriteAheadLog(directory: Self.directory, options: walOptions, fileSystem: fs)
            if log.report.tornBytesCut > 0 { world.tornTails.withLockedValue { $0 += 1 } }
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let recorder = Recorder()
            let node = try RaftNode(
                cluster: cluster, name: name, stateMachine: recorder, storage: log, options: options, eventLoop: loop,
                transport: InMemoryTransport(
                    id: ClusterConfiguration.nodeID(for: name), network: network, eventLoop: loop))
            try await node.start()
            world.incarnations.withLockedValue { $0.append((name, recorder)) }
            world.running.withLockedValue { $0[name] = node }
        }
        for name in names { try await start(name) }

        // Clients: each proposes to a random running node (followers forward), one proposal at a time.
        let clients = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        var k = 0
                        while world.proposing.withLockedValue({ $0 }) {
                            let value = "c\(client)-\(k)"
                            k += 1
                            guard let node = world.running.withLockedValue({ $0.values.randomElement() }) else {
                                try? await Task.sleep(for: .milliseconds(5))
                                continue
                            }
                            world.sent.withLockedValue { $0 += 1 }
                            if let committed = try? await node.propose(value) {
                                world.acknowledged.withLockedValue { $0.append((committed.index.rawValue, value)) }
                            } else {
                                try? await Task.sleep(for: .milliseconds(5))
                            }
                        }
                    }
                }
            }
        }

        // Cuts: every 200-500 ms, a node (the leader one time in three) loses power and restarts on what survived.
        var cuts = 0
        var leaderCuts = 0
        var inPageCache = 0
        let deadline = ContinuousClock.now + .seconds(45)
        while cuts < wanted && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200 + Int(rng.next() % 300)))
            var victim = names[Int(rng.next() % 3)]
            if rng.next() % 3 == 0 {
                for node in world.running.withLockedValue({ Array($0.values) }) {
                    if await node.role == .leader { victim = node.name }
                }
            }
            if let node = world.running.withLockedValue({ $0[victim] }), await node.role == .leader { leaderCuts += 1 }
            guard let old = world.fileSystems.withLockedValue({ $0[victim] }) else { continue }
            // The cut lands on one of the victim's next few file-system operations (under load: a write or its
            // sync), so that it often finds a write in the page cache; an idle node is cut as it is.
            old.failAtOperation = old.operationCount + 1 + Int(rng.next() % 4)
            _ = await eventually(.seconds(1)) { old.isFrozen }
            if old.unsyncedWrites(toFilesUnder: Self.directory + "/wal/") > 0 { inPageCache += 1 }
            let survivor = old.powerCut(using: &rng)
            let node = world.running.withLockedValue { $0.removeValue(forKey: victim) }
            await node?.stop()
            world.fileSystems.withLockedValue { $0[victim] = survivor }
            cuts += 1
            do {
                try await start(victim)
            } catch {
                Issue.record("cut \(cuts): \(victim) could not start again on what survived: \(error) (seed \(seed))")
                break
            }
        }

        // The faults stop; a last proposal must be applied by every node.
        world.proposing.withLockedValue { $0 = false }
        await clients.value
        var final: Committed<LogIndex>?
        for _ in 0..<50 where final == nil {
            if let node = world.running.withLockedValue({ $0.values.randomElement() }) {
                final = try? await node.propose("final")
            }
        }
        let marker = try #require(final, "the cluster commits again once the cuts stop").index
        let current = world.incarnations.withLockedValue { incarnations in
            names.compactMap { name in incarnations.last { $0.0 == name }?.1 }
        }
        let settled = await eventually(.seconds(30)) { current.allSatisfy { $0.indexes.contains(marker) } }
        #expect(settled, "every node applied the final proposal")
        for node in world.running.withLockedValue({ Array($0.values) }) { await node.stop() }

        // Every incarnation applied a prefix of one sequence, and every acknowledged proposal is in it where it was
        // acknowledged.
        let sequences = world.incarnations.withLockedValue {
            $0.map { zip($0.1.indexes, $0.1.commands).map { ($0, $1) } }
        }
        let longest = try #require(sequences.max { $0.count < $1.count })
        for sequence in sequences {
            let isPrefix =
                sequence.count <= longest.count && zip(sequence, longest).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            #expect(isPrefix, "an incarnation applied something else (seed \(seed))")
        }
        let applied = Dictionary(
            longest.map { ($0.0.rawValue, String(decoding: $0.1, as: UTF8.self)) },
            uniquingKeysWith: { first, _ in first })
        let acks = world.acknowledged.withLockedValue { $0 }
        var lost = 0
        for (index, value) in acks where applied[index] != value {
            lost += 1
            if lost <= 5 {
                Issue.record(
                    "acknowledged \(value) at #\(index), applied: \(applied[index] ?? "nothing") (seed \(seed))")
            }
        }
        #expect(cuts >= wanted, "enough cuts were made: \(cuts)")
        #expect(acks.count >= 100, "enough proposals were acknowledged to mean something: \(acks.count)")
        print(
            "cluster power cuts: \(cuts) cuts (\(leaderCuts) of the leader, \(inPageCache) with log writes in the page "
                + "cache, \(world.tornTails.withLockedValue { $0 }) torn writes cut at restart), \(world.sent.withLockedValue { $0 }) "
                + "proposals sent, \(acks.count) acknowledged, \(longest.count) entries applied, "
                + (lost == 0 ? "none lost" : "\(lost) LOST") + " (seed \(seed))")
    }
}
