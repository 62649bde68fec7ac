/// What a leader knows about one follower's log, and how it is sending entries to it.
///
/// A follower starts in `probe`: the leader sends one AppendEntries at a time and waits, backing `next` off on
/// each rejection until the logs match. Once a response shows a match, the follower is in `replicate`: the leader
/// streams entries optimistically, advancing `next` as it sends, with at most `maxInflightMessages` messages
/// unacknowledged (the pipeline window). A rejection in `replicate` falls back to `probe`. A follower that needs
/// entries the leader has compacted away is in `snapshot`: nothing is sent to it until the snapshot it is being
/// sent is acknowledged (or its transfer fails), then it goes back to `probe`.
public struct Progress: Sendable, Hashable {
    public enum State: Sendable, Hashable {
        case probe
        case replicate
        case snapshot
    }

    /// The highest index known to match the leader's log (and to be durable on the follower).
    public internal(set) var match: LogIndex
    /// The index of the next entry to send.
    public internal(set) var next: LogIndex
    public internal(set) var state: State
    /// In probe state: a probe is in flight; nothing more is sent until it is answered or a heartbeat response
    /// arrives.
    var probeSent: Bool
    /// Whether the follower was heard from in the current CheckQuorum period.
    public internal(set) var recentActive: Bool
    /// Whether the follower was heard from in the CheckQuorum period before the current one.
    var wasActive = false
    /// Whether the follower ever answered this leader. (`recentActive` is also set for a peer the leader just began
    /// to track, as a grace period for CheckQuorum; a membership change must not count such a peer as alive.)
    var heardFrom = false
    /// The highest commit index sent to this follower.
    var commitSent: LogIndex
    /// The latest read round the follower's heartbeat answers echoed (ReadIndex).
    var readRound: UInt64 = 0
    /// A heartbeat answer since the leader's last tick found the follower behind and prompted an append.
    var catchUpSent = false
    /// The last index of each AppendEntries message in flight, oldest first.
    var inflights: Inflights
    /// In snapshot state: the index of the snapshot being sent.
    public internal(set) var pendingSnapshot: LogIndex = .zero
    /// In snapshot state: heartbeat answers since the snapshot was sent (see `Raft.snapshotPatience`).
    var snapshotWaits = 0

    init(next: LogIndex, maxInflight: Int) {
        self.match = .zero
        self.next = next
        self.state = .probe
        self.probeSent = false
        self.recentActive = false
        self.commitSent = .zero
        self.inflights = Inflights(capacity: maxInflight)
    }

    /// Whether the leader must hold back AppendEntries messages with entries.
    var isPaused: Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflights.isFull
        case .snapshot: true
        }
    }

    /// Records that the follower holds the leader's log up to `index`. Returns false for news already known
    /// (a stale or duplicated response).
    mutating func update(match index: LogIndex) -> Bool {
        var updated = false
        if index > match {
            match = index
            probeSent = false
            updated = true
        }
        if index >= next { next = index.next }
        return updated
    }

    /// Handles a rejection of the AppendEntries whose `prevIndex` was `rejected`; `matchHint` is where the leader
    /// now expects the logs to match. Returns false if the rejection is stale (it answers a message that no longer
    /// matters).
    mutating func backOff(rejected: LogIndex, matchHint: LogIndex) -> Bool {
        switch state {
        case .replicate:
            // Entries were sent optimistically; a rejection at or below the match is a stale, reordered response.
            guard rejected > match else { return false }
            next = match.next
            return true
        case .probe:
            // Only the answer to the latest probe counts.
            guard rejected == next.previous else { return false }
            if rejected <= match {
                // The follower no longer holds an entry it acknowledged: it lost its log (a wiped disk, or storage
                // that does not survive restarts). Raft's guarantees assume that never happens; the least the
                // leader can do is bring the follower back up to date rather than probe the same index forever.
                match = min(matchHint, rejected.previous)
            }
            next = max(min(rejected, matchHint.next), match.next)
            probeSent = false
            return true
        case .snapshot:
            // Waiting for the snapshot: a rejection of an earlier AppendEntries says nothing new.
            return false
        }
    }

    mutating func becomeProbe() {
        // After a snapshot, the follower holds at least what it covered (if it installed it): probe from there.
        next = state == .snapshot ? max(match, pendingSnapshot).next : match.next
        state = .probe
        probeSent = false
        pendingSnapshot = .zero
        inflights.reset()
    }

    /// Starts sending the follower the snapshot at `index`: nothing else is sent to it until it is acknowledged or
    /// its transfer fails.
    mutating func becomeSnapshot(_ index: LogIndex) {
        state = .snapshot
        pendingSnapshot = index
        snapshotWaits = 0
        probeSent = false
        inflights.reset()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match.next
        probeSent = false
        pendingSnapshot = .zero
        inflights.reset()
    }

    /// Checks, in debug builds, the marks every record keeps: the next index lies beyond the match, and in replicate
    /// state the messages in flight lie between them, oldest first.
    func checkInvariants() {
        assert(next > match, "progress: next \(next) must exceed match \(match)")
        assert(state == .replicate || inflights.count == 0, "progress: messages in flight while probing")
        assert(inflights.isOrdered(below: next), "progress: in-flight window out of order or beyond next \(next)")
    }

    /// Notes that an AppendEntries was sent: with entries up to `last`, or none (`isEmpty`).
    mutating func sent(entriesThrough last: LogIndex, isEmpty: Bool = false) {
        switch state {
        case .replicate:
            // Only messages with entries take a slot of the window: an empty one is answered, or lost, cheaply.
            guard !isEmpty else { return }
            next = last.next
            inflights.add(last)
        case .probe:
            probeSent = true
        case .snapshot:
            break
        }
    }
}

/// The in-flight AppendEntries messages to one follower: a ring buffer of their last indexes.
struct Inflights: Sendable, Hashable {
    private var buffer: [LogIndex]
    private var start = 0
    private(set) var count = 0

    init(capacity: Int) {
        buffer = Array(repeating: .zero, count: max(1, capacity))
    }

    var isFull: Bool { count == buffer.count }

    mutating func add(_ last: LogIndex) {
        guard !isFull else { return }
        buffer[(start + count) % buffer.count] = last
        count += 1
    }

    /// Frees every message whose last index is at or below `index` (they have been acknowledged).
    mutating func free(upTo index: LogIndex) {
        while count > 0, buffer[start] <= index {
            start = (start + 1) % buffer.count
            count -= 1
        }
    }

    /// Frees the oldest message, so that one more can be sent (used when a heartbeat shows the follower is alive
    /// but the window is full).
    mutating func freeFirst() {
        guard count > 0 else { return }
        start = (start + 1) % buffer.count
        count -= 1
    }

    mutating func reset() {
        start = 0
        count = 0
    }

    /// Whether the messages in flight end at increasing indexes, all below `bound` (checked in debug builds).
    func isOrdered(below bound: LogIndex) -> Bool {
        var previous = LogIndex.zero
        for k in 0..<count {
            let last = buffer[(start + k) % buffer.count]
            guard last >= previous, last < bound else { return false }
            previous = last
        }
        return true
    }
}
