/// What a snapshot is of: the last log entry it covers, and the membership in effect at that entry.
///
/// A snapshot replaces the log up to `index`: a node that holds one needs no entry at or below it, and a leader
/// that has compacted its log past a follower's needs sends it one instead (`Message.Kind.installSnapshot`). The
/// bytes of the snapshot (the application's state and the proposal sessions) never pass through the core; the core
/// deals only in this metadata, and the shell moves the bytes.
public struct SnapshotMetadata: Sendable, Hashable, CustomStringConvertible {
    /// The last entry the snapshot covers, and its term.
    public var index: LogIndex
    public var term: Term
    /// The membership in effect at `index` (the latest configuration at or before it).
    public var membership: Membership
    /// The voters in effect at `index` (of both configurations, if joint), in increasing order.
    public var voters: [NodeID] { membership.voters.union(membership.outgoing).sorted() }
    /// The learners in effect at `index`, in increasing order (members that receive the log but do not vote).
    public var learners: [NodeID] { membership.learners.union(membership.learnersNext).sorted() }

    public init(index: LogIndex, term: Term, membership: Membership) {
        self.index = index
        self.term = term
        self.membership = membership
    }

    public init(index: LogIndex, term: Term, voters: [NodeID], learners: [NodeID] = []) {
        self.init(index: index, term: term, membership: Membership(voters: Set(voters), learners: Set(learners)))
    }

    public var description: String { "snapshot at \(index) (\(term))" }
}

/// One piece of a snapshot's bytes on its way from a leader to a follower. Runtime traffic: the core never sees it
/// (the shell streams the snapshot's file in chunks and steps the core with `installSnapshot` once it holds all of
/// it, checked).
public struct SnapshotChunk: Sendable, Hashable {
    /// Which snapshot the bytes belong to.
    public var index: LogIndex
    public var snapshotTerm: Term
    /// Where in the snapshot's bytes `data` begins.
    public var offset: UInt64
    /// The size of the whole snapshot, in bytes.
    public var totalSize: UInt64
    public var data: [UInt8]

    public init(index: LogIndex, snapshotTerm: Term, offset: UInt64, totalSize: UInt64, data: [UInt8]) {
        self.index = index
        self.snapshotTerm = snapshotTerm
        self.offset = offset
        self.totalSize = totalSize
        self.data = data
    }
}

/// A follower's answer to snapshot chunks: how far it holds the snapshot. Runtime traffic, as `SnapshotChunk` is.
public struct SnapshotChunkAck: Sendable, Hashable {
    public enum Status: UInt8, Sendable, Hashable {
        /// The bytes before `offset` are written; send on from there (also the answer that resumes a transfer).
        case accepted = 0
        /// The whole snapshot arrived, checked out, and was handed to the core.
        case complete = 1
        /// The follower will not take this snapshot (it has a newer one, it cannot store it, or the bytes failed
        /// their checksum): stop sending it.
        case rejected = 2
    }

    public var index: LogIndex
    public var snapshotTerm: Term
    /// The bytes of the snapshot the follower holds, from its start.
    public var offset: UInt64
    public var status: Status

    public init(index: LogIndex, snapshotTerm: Term, offset: UInt64, status: Status) {
        self.index = index
        self.snapshotTerm = snapshotTerm
        self.offset = offset
        self.status = status
    }
}
