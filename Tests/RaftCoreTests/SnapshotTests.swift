import RaftCore
import RaftTesting
import Testing

private func n(_ k: UInt64) -> NodeID { NodeID(k) }

private let voters = [n(1), n(2), n(3)]

/// A three-node cluster with node 1 leading, 3 cut off while `count` commands commit, and 1 then snapshotted and
/// compacted with no margin: 3 can only catch up through the snapshot.
private func clusterWithFollowerBehindTheSnapshot(count: Int = 5) throws -> LockstepCluster {
    var cluster = try LockstepCluster(count: 3)
    cluster.campaign(n(1))
    cluster.stabilize()
    cluster.partition([n(1), n(2)])
    for k in 0..<count { try cluster.propose(n(1), [UInt8(k)]) }
    cluster.stabilize()
    let snapshot = cluster.snapshot(n(1))
    let made = try #require(snapshot)
    #expect(made.0.index == LogIndex(UInt64(count) + 1))
    #expect(made.1 == made.0.index)
    return cluster
}

/// The cluster above, healed, with the leader's installSnapshot to 3 sent and dropped: 3 is in the snapshot state.
private func clusterWaitingForTheSnapshot() throws -> LockstepCluster {
    var cluster = try clusterWithFollowerBehindTheSnapshot()
    cluster.heal()
    cluster.drop = { if case .installSnapshot = $0.kind { true } else { false } }
    cluster.tick(n(1))
    cluster.stabilize()
    return cluster
}

/// A follower of node 1 in term 2 whose log holds `entries` entries of term 2, `committed` of them committed.
private func follower(entries: Int, committed: Int) throws -> Raft {
    var node = try Raft(configuration: RaftConfiguration(id: n(2), voters: Set(voters)))
    let append = AppendEntries(
        prevIndex: .zero, prevTerm: .zero,
        entries: (1...entries).map { Entry(term: Term(2), index: LogIndex(UInt64($0)), data: [UInt8($0)]) },
        commit: LogIndex(UInt64(committed)))
    node.step(Message(from: n(1), to: n(2), term: Term(2), kind: .appendEntries(append)))
    var pipeline = ReadyPipeline()
    while let step = pipeline.take(from: &node) { if step.write != nil { _ = pipeline.writeCompleted(&node) } }
    return node
}

private func install(_ index: UInt64, term: UInt64 = 2) -> Message {
    Message(
        from: n(1), to: n(2), term: Term(2),
        kind: .installSnapshot(SnapshotMetadata(index: LogIndex(index), term: Term(term), voters: voters)))
}

private func acknowledgement(_ ready: Ready) -> LogIndex? {
    for m in ready.messagesAfterPersist {
        if case .appendEntriesResponse(let r) = m.kind, r.success { return r.index }
    }
    return nil
}

@Suite struct SnapshotTests {
    @Test func aFollowerBehindTheCompactedLogCatchesUpThroughTheSnapshotAndThenByEntries() throws {
        var cluster = try clusterWithFollowerBehindTheSnapshot()
        cluster.heal()
        cluster.tick(n(1))
        cluster.stabilize()
        let sent = cluster.delivered.filter { if case .installSnapshot = $0.kind { true } else { false } }
        #expect(sent.count == 1)
        #expect(cluster[n(3)]?.log.snapshotIndex == LogIndex(6))
        #expect(cluster.snapshots[n(3)]?.index == LogIndex(6))
        // The leader does not send the entries the snapshot covered: nothing after the snapshot starts before 7.
        let after = cluster.delivered.drop { if case .installSnapshot = $0.kind { false } else { true } }
        for m in after where m.to == n(3) {
            if case .appendEntries(let a) = m.kind { #expect(a.prevIndex >= LogIndex(6)) }
        }
        try cluster.propose(n(1), [99])
        cluster.stabilize()
        #expect(cluster[n(3)]?.log.committed == LogIndex(7))
        #expect(cluster.applied[n(3)] == cluster.applied[n(1)])
    }

    @Test func whileTheSnapshotIsOnItsWayTheFollowerGetsNothingElse() throws {
        // The installSnapshot is held back: the follower stays in the snapshot state however much is proposed.
        var cluster = try clusterWaitingForTheSnapshot()
        let progress = try #require(cluster[n(1)]?.progress(of: n(3)))
        #expect(progress.state == .snapshot)
        #expect(progress.pendingSnapshot == LogIndex(6))
        let before = cluster.delivered.count
        for k in 0..<3 { try cluster.propose(n(1), [UInt8(100 + k)]) }
        cluster.stabilize()
        let toThree = cluster.delivered[before...].filter { m in
            if case .appendEntries(let a) = m.kind { return m.to == n(3) && !a.entries.isEmpty }
            return false
        }
        #expect(toThree.isEmpty)
    }

    @Test func aFailedTransferIsRetriedAfterTheNextHeartbeatAnswer() throws {
        let cluster = try clusterWaitingForTheSnapshot()
        var leader = try #require(cluster[n(1)])
        leader.reportSnapshot(to: n(3), succeeded: false)
        let probing = try #require(leader.progress(of: n(3)))
        #expect(probing.state == .probe)
        // Paused until an answer arrives: no immediate resend.
        #expect(!leader.ready().messages.contains { if case .installSnapshot = $0.kind { true } else { false } })
        leader.step(Message(from: n(3), to: n(1), term: leader.term, kind: .heartbeatResponse(HeartbeatResponse())))
        let again = leader.ready().messages.filter { if case .installSnapshot = $0.kind { true } else { false } }
        #expect(again.map(\.to) == [n(3)])
    }

    @Test func withoutAReportTheLeaderAsksForTheSnapshotAgainAfterTenElectionTimeoutsOfHeartbeats() throws {
        let cluster = try clusterWaitingForTheSnapshot()
        var leader = try #require(cluster[n(1)])
        let heartbeats = 10 * 10  // electionTick 10, heartbeatTick 1
        var resent = 0
        for k in 1...heartbeats {
            leader.step(Message(from: n(3), to: n(1), term: leader.term, kind: .heartbeatResponse(HeartbeatResponse())))
            let sent = leader.ready().messages.filter { if case .installSnapshot = $0.kind { true } else { false } }
            if !sent.isEmpty {
                resent = k
                break
            }
        }
        // Not before the patience runs out (the transfer may be long), and not never.
        #expect(resent == heartbeats)
        #expect(leader.progress(of: n(3))?.state == .snapshot)
    }

    @Test func aSnapshotAtOrBelowTheCommitIndexIsAcknowledgedAndChangesNothing() throws {
        var node = try follower(entries: 5, committed: 4)
        node.step(install(3))
        let ready = node.ready()
        #expect(ready.snapshot == nil)
        #expect(acknowledgement(ready) == LogIndex(4))
        #expect(node.log.lastIndex == LogIndex(5))
        #expect(node.log.snapshotIndex == .zero)
        #expect(node.log.applied == LogIndex(4))
    }

    @Test func aSnapshotWhoseLastEntryTheLogHoldsOnlyCommits() throws {
        var node = try follower(entries: 5, committed: 2)
        node.step(install(4))
        let ready = node.ready()
        #expect(ready.snapshot == nil)
        #expect(node.log.committed == LogIndex(4))
        #expect(ready.committedEntries.map(\.index) == [LogIndex(3), LogIndex(4)])
        #expect(acknowledgement(ready) == LogIndex(4))
        #expect(node.log.lastIndex == LogIndex(5))
    }

    @Test func aSnapshotTheLogDoesNotMatchReplacesTheLogAndIsHandedOutToInstall() throws {
        // The follower holds 1...5 of term 2; the snapshot ends at 7 (beyond its log), then one at 4 of term 3
        // (a conflicting entry).
        for (index, term) in [(UInt64(7), UInt64(2)), (4, 1)] {
            var node = try follower(entries: 5, committed: 2)
            node.step(install(index, term: term))
            let ready = node.ready()
            #expect(ready.snapshot?.index == LogIndex(index))
            #expect(ready.snapshot?.term == Term(term))
            #expect(ready.hardState?.commit == LogIndex(index))
            #expect(ready.committedEntries.isEmpty)
            #expect(node.log.lastIndex == LogIndex(index))
            #expect(node.log.snapshotIndex == LogIndex(index))
            #expect(node.log.applied == LogIndex(index))
            #expect(node.snapshot?.index == LogIndex(index))
            // The acknowledgement waits for the install to be durable.
            #expect(acknowledgement(ready) == LogIndex(index))
            #expect(!ready.messages.contains { if case .appendEntriesResponse = $0.kind { true } else { false } })
        }
    }

    @Test func compactionNeverGoesBeyondTheSnapshotOrWhatIsAppliedAndDurable() throws {
        var cluster = try LockstepCluster(count: 1)
        cluster.campaign(n(1))
        cluster.stabilize()
        for k in 0..<10 { try cluster.propose(n(1), [UInt8(k)]) }
        cluster.stabilize()
        var node = try #require(cluster[n(1)])
        // No snapshot yet: nothing may be dropped.
        #expect(node.compact(through: LogIndex(5)) == .zero)
        let candidate = try #require(node.snapshotCandidate)
        #expect(candidate.index == LogIndex(11))
        // A shell whose state machine is behind asks for the snapshot of what it applied; never beyond the mark.
        #expect(node.snapshotCandidate(at: LogIndex(8))?.index == LogIndex(8))
        #expect(node.snapshotCandidate(at: LogIndex(8))?.term == Term(1))
        #expect(node.snapshotCandidate(at: LogIndex(12)) == nil)
        let older = SnapshotMetadata(index: LogIndex(6), term: Term(1), voters: [n(1)])
        node.snapshotCreated(older)
        #expect(node.compact(through: LogIndex(9)) == LogIndex(6))
        #expect(node.log.firstIndex == LogIndex(7))
        #expect(node.log.term(at: LogIndex(6)) == Term(1))
        // A snapshot beyond what is applied is refused.
        node.snapshotCreated(SnapshotMetadata(index: LogIndex(12), term: Term(1), voters: [n(1)]))
        #expect(node.snapshot?.index == LogIndex(6))
    }

    @Test func aRestartMustAgreeWithTheSnapshot() throws {
        let configuration = RaftConfiguration(id: n(1), voters: Set(voters))
        let entries = (4...6).map { Entry(term: Term(2), index: LogIndex(UInt64($0))) }
        let state = PersistentState(
            hardState: HardState(term: Term(2), commit: LogIndex(6)), snapshotIndex: LogIndex(3),
            snapshotTerm: Term(1), entries: entries)
        let good = SnapshotMetadata(index: LogIndex(5), term: Term(2), voters: voters)
        let node = try Raft(configuration: configuration, state: state, applied: LogIndex(5), snapshot: good)
        #expect(node.snapshot == good)
        #expect(node.log.applied == LogIndex(5))
        // Applied below the snapshot it was restored from; a snapshot whose last entry the log does not hold.
        #expect(throws: ConfigurationError.self) {
            try Raft(configuration: configuration, state: state, applied: LogIndex(4), snapshot: good)
        }
        let wrongTerm = SnapshotMetadata(index: LogIndex(5), term: Term(3), voters: voters)
        #expect(throws: ConfigurationError.self) {
            try Raft(configuration: configuration, state: state, applied: LogIndex(5), snapshot: wrongTerm)
        }
    }
}
