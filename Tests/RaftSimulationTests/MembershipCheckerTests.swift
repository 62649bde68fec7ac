import RaftCore
import RaftSimulation
import Testing

/// The membership checks are shown to catch what they are for, on logs fed to real cores by hand.
@Suite struct MembershipCheckerTests {
    static let voters: Set<NodeID> = [NodeID(1), NodeID(2), NodeID(3)]

    static func config(_ index: UInt64, _ term: UInt64, _ change: ConfigChange) -> Entry {
        Entry(term: Term(term), index: LogIndex(index), kind: .configChange, data: change.encoded())
    }

    /// Node 2 as a follower of node 1 in `term`, having appended `entries` with `commit` committed.
    static func follower(_ entries: [Entry], commit: UInt64, term: UInt64 = 1) throws -> Raft {
        var raft = try Raft(configuration: RaftConfiguration(id: NodeID(2), voters: voters))
        let append = AppendEntries(prevIndex: .zero, prevTerm: .zero, entries: entries, commit: LogIndex(commit))
        raft.step(Message(from: NodeID(1), to: NodeID(2), term: Term(term), kind: .appendEntries(append)))
        try #require(raft.log.lastIndex == LogIndex(UInt64(entries.count)))
        return raft
    }

    @Test func twoUncommittedConfigurationEntriesInOneLogAreCaught() throws {
        var checker = InvariantChecker()
        let noop = Entry(term: Term(1), index: LogIndex(1), kind: .noop)
        let addLearner = Self.config(2, 1, ConfigChange([.init(.addLearner, NodeID(4))]))
        let addAnother = Self.config(3, 1, ConfigChange([.init(.addLearner, NodeID(5))]))
        try checker.observe(NodeID(2), Self.follower([noop, addLearner], commit: 1))
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observe(NodeID(2), Self.follower([noop, addLearner, addAnother], commit: 1))
        }
        #expect(error?.invariant == .membership)
        // With the first one committed, the second is fine.
        var fine = InvariantChecker()
        try fine.observe(NodeID(2), Self.follower([noop, addLearner, addAnother], commit: 2))
    }

    @Test func aCommittedConfigurationEntryTruncatedAwayIsCaught() throws {
        var checker = InvariantChecker()
        let noop = Entry(term: Term(1), index: LogIndex(1), kind: .noop)
        let removal = Self.config(2, 1, ConfigChange([.init(.remove, NodeID(3))], transition: .simple))
        try checker.observe(NodeID(2), Self.follower([noop, removal], commit: 2))
        // The same node later holds another history at index 2, the committed removal gone.
        let other = Entry(term: Term(2), index: LogIndex(2), data: [1])
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observe(NodeID(2), Self.follower([noop, other], commit: 1, term: 2))
        }
        #expect(error?.invariant == .membership)
    }
}
