import RaftCore

/// The simulated state machine: what a node applied, as a digest, with the proposal sessions that guard it.
///
/// The simulator has no application state of its own; the digest of every applied entry (its index, term, bytes,
/// and whether `ProposalSessions` let it take effect) stands for it, so that two nodes with equal digests at an
/// index have applied the same history there.
public struct SimulatedState: Sendable, Hashable {
    /// The index the state machine has applied.
    public var applied = LogIndex.zero
    /// The digest of everything applied, in order (FNV-1a, 64 bits).
    public var digest: UInt64 = 0xCBF2_9CE4_8422_2325
    /// Which proposals took effect: replicated state, snapshotted and restored with the rest.
    public var sessions = ProposalSessions()

    public init() {}

    /// Folds one applied entry into the digest.
    public mutating func apply(_ entry: Entry, admitted: Bool) {
        mix(entry.index.rawValue)
        mix(entry.term.rawValue)
        mix(admitted ? 1 : 0)
        mix(UInt64(entry.data.count))
        for byte in entry.data { mixByte(byte) }
        applied = entry.index
    }

    private mutating func mix(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { mixByte(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    private mutating func mixByte(_ byte: UInt8) {
        digest = (digest ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }
}

/// A snapshot's contents: the metadata the core deals in and the state machine frozen at its index. In the real
/// runtime these are bytes on disk, streamed to followers; the simulator keeps one copy per (index, term) in a
/// store that stands for every node's snapshot files and the transfers between them.
public struct SimulatedSnapshot: Sendable, Hashable {
    public var meta: SnapshotMetadata
    public var state: SimulatedState

    public init(meta: SnapshotMetadata, state: SimulatedState) {
        self.meta = meta
        self.state = state
    }
}

extension ProposalSessions {
    /// Whether the proposal with this header took effect already (or can no longer take effect: its sequence is
    /// below its session's floor) — asked of a copy, so the table is unchanged. For a proposal its proposer has not
    /// settled the floor is at or below its sequence, so false means it was applied.
    func hasAdmitted(_ header: ProposalEnvelope.Header) -> Bool {
        var probe = self
        return !probe.admit(header, term: .zero)
    }
}
