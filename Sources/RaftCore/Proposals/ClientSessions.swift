/// The replicated table of client sessions (Raft thesis §6.3): for each client, the last write it made and what that
/// write gave, so that a client that retries a write whose answer it lost gets the first answer back, and the write
/// is applied once.
///
/// Everything here is decided from the log alone, so every node (and every replay) builds the same table:
///
/// - **Registration.** A session is opened by a committed `SessionOperation.register` entry; its client id is that
///   entry's index. The entry carries the session's timeout and the table's maximum size as the proposing node had
///   them, so nodes with different options still agree.
/// - **Writes.** A `SessionOperation.write` names a client id and a sequence number. For a session the table does
///   not hold (never registered, or expired) the write is not applied (`Decision.expired`); with a sequence above
///   the session's last, it is applied and its result remembered; equal to the last, it is not applied again and the
///   remembered result is the answer (`Decision.cached`); below the last, it is not applied (`Decision.superseded`:
///   the client moved on, so this copy never takes effect). A client has **one write outstanding at a time**: it
///   numbers its writes 1, 2, 3... and sends the next only once the previous one has a definite answer, retrying it
///   with the same number until then (only the last result is kept).
/// - **Time.** Register and write entries carry their proposer's wall clock (milliseconds). The table's clock is the
///   highest of the times it has seen, so it never runs backwards and every node computes the same, whatever its own
///   clock says. A session whose last use is more than its timeout behind the table's clock has expired: it is
///   dropped when a register entry is applied (every expired session) or when a write names it.
/// - **Size.** When a register entry is applied and the table holds more sessions than the entry's maximum, the
///   least recently used go (ties: the lowest client id first).
///
/// The table is part of the replicated state: it is snapshotted and restored with the state machine
/// (`encoded()`, `init(decoding:)`).
public struct ClientSessions: Sendable, Hashable {
    /// The longest result the table keeps; a longer one is not kept (its retry gets no result: see `Decision`).
    public static let maxResultBytes = 64 << 10

    /// What a write of a session gave the first time it was applied.
    public struct StoredResult: Sendable, Hashable {
        /// The entry the write was applied at.
        public var index: LogIndex
        public var term: Term
        /// The state machine's result, as its `encodeSessionOutput` wrote it; nil if it could not be kept.
        public var output: [UInt8]?

        public init(index: LogIndex, term: Term, output: [UInt8]?) {
            self.index = index
            self.term = term
            self.output = output
        }
    }

    struct Session: Sendable, Hashable {
        /// The table's clock when the session was last registered or written to.
        var lastUsedMs: UInt64
        var timeoutMs: UInt64
        /// The sequence of the last write applied (0: none yet).
        var lastSequence: UInt64 = 0
        /// What it gave (nil until the first write).
        var result: StoredResult?

        func expired(at clock: UInt64) -> Bool { clock > lastUsedMs && clock - lastUsedMs > timeoutMs }
    }

    /// What to do with a committed write of a session.
    public enum Decision: Sendable, Hashable {
        /// Apply it, then `record` its result.
        case apply
        /// It was applied before, at `result.index`: do not apply it again; its answer is `result`.
        case cached(StoredResult)
        /// The session is not in the table (never registered, or expired): not applied, and never will be.
        case expired
        /// The session has applied a later write: this one is not applied, and never will be.
        case superseded
    }

    private var sessions: [UInt64: Session] = [:]
    /// The highest time seen in a register or write entry, in milliseconds.
    public private(set) var clockMs: UInt64 = 0

    public init() {}

    /// Sessions held.
    public var count: Int { sessions.count }

    /// Whether the table holds this client's session (it has not expired, as far as the table has seen).
    public func contains(_ clientID: UInt64) -> Bool { sessions[clientID] != nil }

    /// The last sequence applied for a client, if its session is held.
    public func lastSequence(of clientID: UInt64) -> UInt64? { sessions[clientID]?.lastSequence }

    /// Applies a committed register entry at `index` (the new client id): drops expired sessions, opens the new one,
    /// and drops the least recently used beyond `maxSessions` (at least 1: the new session stays).
    public mutating func register(clientID index: LogIndex, timeMs: UInt64, timeoutMs: UInt64, maxSessions: UInt64) {
        clockMs = max(clockMs, timeMs)
        let clock = clockMs
        sessions = sessions.filter { !$0.value.expired(at: clock) }
        sessions[index.rawValue] = Session(lastUsedMs: clock, timeoutMs: timeoutMs)
        let limit = max(1, maxSessions)
        if UInt64(sessions.count) > limit {
            // The least recently used first; ties by client id. The new session is the most recent of all.
            let excess = sessions.count - Int(limit)
            let victims = sessions.sorted { ($0.value.lastUsedMs, $0.key) < ($1.value.lastUsedMs, $1.key) }
                .prefix(excess)
            for (clientID, _) in victims where clientID != index.rawValue { sessions[clientID] = nil }
        }
    }

    /// Decides what a committed write of `clientID` numbered `sequence` does, and moves the clock and the session's
    /// last use. After `.apply`, call `record` with the result.
    public mutating func decide(clientID: UInt64, sequence: UInt64, timeMs: UInt64) -> Decision {
        clockMs = max(clockMs, timeMs)
        guard var session = sessions[clientID] else { return .expired }
        if session.expired(at: clockMs) {
            sessions[clientID] = nil
            return .expired
        }
        session.lastUsedMs = clockMs
        defer { sessions[clientID] = session }
        if sequence > session.lastSequence { return .apply }
        if sequence == session.lastSequence, let result = session.result { return .cached(result) }
        return .superseded
    }

    /// Remembers what the write `sequence` of `clientID` gave, after `decide` said `.apply`. A result longer than
    /// `maxResultBytes` is not kept (`output` nil).
    public mutating func record(clientID: UInt64, sequence: UInt64, result: StoredResult) {
        guard var session = sessions[clientID], sequence > session.lastSequence else { return }
        var result = result
        if let output = result.output, output.count > Self.maxResultBytes { result.output = nil }
        session.lastSequence = sequence
        session.result = result
        sessions[clientID] = session
    }
}

// MARK: - Snapshots

extension ClientSessions {
    /// The version of `encoded()`'s format.
    public static let encodingVersion: UInt8 = 1
    /// The most sessions a table's bytes may hold.
    public static let maxEncodedSessions = 10_000_000

    /// The table as bytes, for a snapshot. Integers are little-endian:
    ///
    /// ```
    /// version:u8 (1)  clockMs:u64  sessionCount:u32  session × sessionCount
    /// session = clientID:u64  lastUsedMs:u64  timeoutMs:u64  lastSequence:u64  hasResult:u8 (0 or 1)
    ///           [index:u64  term:u64  hasOutput:u8 (0 or 1)  [outputLength:u32  output] if hasResult is 1]
    /// ```
    ///
    /// Sessions come in increasing client-id order, so equal tables encode to equal bytes; a session has a result
    /// exactly when its last sequence is above 0; its last use is at most the clock; an output has at most
    /// `maxResultBytes` bytes.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func append(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        func append(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        let ordered = sessions.sorted { $0.key < $1.key }
        out.reserveCapacity(13 + ordered.count * 60)
        out.append(Self.encodingVersion)
        append(clockMs)
        append(UInt32(truncatingIfNeeded: ordered.count))
        for (clientID, session) in ordered {
            append(clientID)
            append(session.lastUsedMs)
            append(session.timeoutMs)
            append(session.lastSequence)
            guard let result = session.result else {
                out.append(0)
                continue
            }
            out.append(1)
            append(result.index.rawValue)
            append(result.term.rawValue)
            if let output = result.output {
                out.append(1)
                append(UInt32(truncatingIfNeeded: output.count))
                out.append(contentsOf: output)
            } else {
                out.append(0)
            }
        }
        return out
    }

    /// Decodes `encoded()`'s bytes, trusting nothing: every count is checked against the bytes that remain before
    /// anything is allocated for it, and the table must be in `encoded()`'s canonical form.
    /// - Throws: `SnapshotFormatError` saying what is wrong.
    public init(decoding bytes: [UInt8]) throws(SnapshotFormatError) {
        var input = LittleEndianInput(bytes, of: "the client sessions")
        let version = try input.byte("the version")
        guard version == Self.encodingVersion else {
            throw SnapshotFormatError(
                "the client sessions are of version \(version); this node reads version \(Self.encodingVersion)")
        }
        let clock = try input.u64("the clock")
        let count = Int(try input.u32("the number of sessions"))
        // The smallest session: four integers and the result flag.
        guard count <= Self.maxEncodedSessions, count <= input.remaining / 33 else {
            throw SnapshotFormatError(
                "the client sessions claim \(count) sessions, more than their \(input.remaining) bytes hold")
        }
        var sessions: [UInt64: Session] = [:]
        sessions.reserveCapacity(count)
        var previous: UInt64?
        for number in 0..<count {
            let what = "client session \(number + 1) of \(count)"
            let clientID = try input.u64("the client id of \(what)")
            if let previous, previous >= clientID {
                throw SnapshotFormatError(
                    "\(what) (client \(clientID)) does not come after client \(previous): sessions must be in "
                        + "increasing order, each once")
            }
            previous = clientID
            var session = Session(
                lastUsedMs: try input.u64("the last use of \(what)"), timeoutMs: try input.u64("the timeout of \(what)")
            )
            guard session.lastUsedMs <= clock else {
                throw SnapshotFormatError(
                    "\(what) was last used at \(session.lastUsedMs) ms, after the table's clock (\(clock) ms)")
            }
            session.lastSequence = try input.u64("the last sequence of \(what)")
            switch try input.byte("whether \(what) has a result") {
            case 0:
                guard session.lastSequence == 0 else {
                    throw SnapshotFormatError(
                        "\(what) applied sequence \(session.lastSequence) but keeps no result for it")
                }
            case 1:
                guard session.lastSequence > 0 else {
                    throw SnapshotFormatError("\(what) keeps a result but has applied no write")
                }
                let index = LogIndex(try input.u64("the index of \(what)'s result"))
                let term = Term(try input.u64("the term of \(what)'s result"))
                var output: [UInt8]?
                switch try input.byte("whether \(what)'s result has an output") {
                case 0: break
                case 1:
                    let length = Int(try input.u32("the output length of \(what)"))
                    guard length <= Self.maxResultBytes else {
                        throw SnapshotFormatError(
                            "\(what) keeps an output of \(length) bytes (at most \(Self.maxResultBytes))")
                    }
                    output = try input.bytes(length, "the output of \(what)")
                case let flag:
                    throw SnapshotFormatError("\(what) has an output flag of \(flag) (0 or 1 expected)")
                }
                session.result = StoredResult(index: index, term: term, output: output)
            case let flag:
                throw SnapshotFormatError("\(what) has a result flag of \(flag) (0 or 1 expected)")
            }
            sessions[clientID] = session
        }
        guard input.remaining == 0 else {
            throw SnapshotFormatError(
                "the client sessions are followed by \(input.remaining) bytes that belong to none")
        }
        self.init()
        self.sessions = sessions
        self.clockMs = clock
    }
}

/// What a snapshot keeps beside the state machine: the proposal-sessions table and the client-sessions table, in the
/// snapshot file's `sessions` field.
///
/// ```
/// version:u8 (2)  proposalLength:u32  proposal sessions (ProposalSessions.encoded())  client sessions (the rest)
/// ```
///
/// Integers are little-endian. Bytes that begin with 1 are a snapshot written before client sessions existed: the
/// proposal-sessions table alone (its own version byte is 1), with no client session.
public struct SnapshotBookkeeping: Sendable, Hashable {
    public static let encodingVersion: UInt8 = 2

    public var proposals: ProposalSessions
    public var clients: ClientSessions

    public init(proposals: ProposalSessions = ProposalSessions(), clients: ClientSessions = ClientSessions()) {
        self.proposals = proposals
        self.clients = clients
    }

    public func encoded() -> [UInt8] {
        let proposalBytes = proposals.encoded()
        var out: [UInt8] = [Self.encodingVersion]
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: proposalBytes.count).littleEndian) {
            out.append(contentsOf: $0)
        }
        out.append(contentsOf: proposalBytes)
        out.append(contentsOf: clients.encoded())
        return out
    }

    /// - Throws: `SnapshotFormatError` for bytes that are neither format, or whose tables do not decode.
    public init(decoding bytes: [UInt8]) throws(SnapshotFormatError) {
        guard let version = bytes.first else {
            throw SnapshotFormatError("the snapshot's bookkeeping is empty")
        }
        if version == ProposalSessions.encodingVersion {
            self.init(proposals: try ProposalSessions(decoding: bytes))
            return
        }
        guard version == Self.encodingVersion else {
            throw SnapshotFormatError(
                "the snapshot's bookkeeping is of version \(version); this node reads versions "
                    + "\(ProposalSessions.encodingVersion) and \(Self.encodingVersion)")
        }
        var input = LittleEndianInput(bytes, of: "the session bookkeeping")
        _ = try input.byte("the version")
        let length = Int(try input.u32("the length of the proposal sessions"))
        let proposalBytes = try input.bytes(length, "the proposal sessions")
        let clientBytes = try input.bytes(input.remaining, "the client sessions")
        self.init(
            proposals: try ProposalSessions(decoding: proposalBytes), clients: try ClientSessions(decoding: clientBytes)
        )
    }
}
