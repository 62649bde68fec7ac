import RaftCore
import RaftSimulation
import Testing

/// The checker's snapshot rules: the state at each index is one, every snapshot of an index holds it, and an
/// install never takes a node back.
@Suite struct SnapshotCheckerTests {
    static let node = NodeID(1)
    static let other = NodeID(2)

    /// A state machine that applied `count` entries of term 1, and its states along the way.
    static func state(applying count: UInt64, salt: UInt8 = 0) -> (SimulatedState, [SimulatedState]) {
        var state = SimulatedState()
        var states: [SimulatedState] = []
        for i in 1...count {
            state.apply(Entry(term: Term(1), index: LogIndex(i), data: [UInt8(i), salt]), admitted: false)
            states.append(state)
        }
        return (state, states)
    }

    /// The checker sees a node apply its way through `states` (the states at each index, in order).
    static func feed(_ checker: inout InvariantChecker, _ states: [SimulatedState]) throws {
        for state in states { try checker.observeState(node, state) }
    }

    static func snapshot(_ state: SimulatedState) -> SimulatedSnapshot {
        SimulatedSnapshot(
            meta: SnapshotMetadata(index: state.applied, term: Term(1), voters: [node, other]), state: state)
    }

    @Test func twoStatesAtOneIndexBreakStateMachineSafety() throws {
        var checker = InvariantChecker()
        let (a, states) = Self.state(applying: 3)
        let (b, _) = Self.state(applying: 3, salt: 1)
        try Self.feed(&checker, states)
        try checker.observeState(Self.other, a)
        let error = #expect(throws: InvariantViolation.self) { try checker.observeState(Self.other, b) }
        #expect(error?.invariant == .stateMachineSafety)
    }

    @Test func snapshotsOfOneIndexMustHoldTheSameState() throws {
        var checker = InvariantChecker()
        let (a, states) = Self.state(applying: 2)
        try Self.feed(&checker, states)
        var b = a
        // Same digest, different proposal sessions: still a different snapshot.
        let header = try #require(
            ProposalEnvelope.Header(
                decoding: ProposalEnvelope(
                    proposer: Self.node, incarnation: 1, sequence: 1, floor: 1, id: nil, command: [1]
                ).encoded()))
        _ = b.sessions.admit(header, term: Term(1))
        try checker.observeSnapshot(Self.node, Self.snapshot(a))
        try checker.observeSnapshot(Self.node, Self.snapshot(a))
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observeSnapshot(Self.other, Self.snapshot(b))
        }
        #expect(error?.invariant == .stateMachineSafety)
        #expect(error?.detail.contains("proposal sessions differ") == true)
    }

    @Test func anInstallNeverTakesANodeBack() throws {
        var checker = InvariantChecker()
        let (two, _) = Self.state(applying: 2)
        let (four, states) = Self.state(applying: 4)
        try Self.feed(&checker, states)
        try checker.observeSnapshot(Self.other, Self.snapshot(two))
        try checker.observeSnapshot(Self.other, Self.snapshot(four))
        // A node that installs the snapshot at 4 with its state machine restored from it is fine.
        try checker.observeInstalled(Self.node, Self.snapshot(four), restored: four)
        // Going back to 2 is not, nor restoring anything other than the snapshot's state.
        let back = #expect(throws: InvariantViolation.self) {
            try checker.observeInstalled(Self.node, Self.snapshot(two), restored: two)
        }
        #expect(back?.detail.contains("going back") == true)
        let (wrong, _) = Self.state(applying: 4, salt: 9)
        let mismatch = #expect(throws: InvariantViolation.self) {
            try checker.observeInstalled(Self.other, Self.snapshot(four), restored: wrong)
        }
        #expect(mismatch?.invariant == .stateMachineSafety)
    }

    @Test func aRestartBehindItsSnapshotBreaksDurability() throws {
        var checker = InvariantChecker()
        let (two, states) = Self.state(applying: 2)
        try Self.feed(&checker, states)
        try checker.observeRestoredState(Self.node, two, durableSnapshot: LogIndex(2))
        let error = #expect(throws: InvariantViolation.self) {
            try checker.observeRestoredState(Self.node, two, durableSnapshot: LogIndex(3))
        }
        #expect(error?.invariant == .durability)
    }
}
