import NIOConcurrencyHelpers
import RaftCore
import RaftWire

/// A complete snapshot file in a `SnapshotStore`: what it covers, where it is, and how many bytes it has.
public struct SnapshotInfo: Sendable, Hashable, CustomStringConvertible {
    public var metadata: SnapshotMetadata
    public var path: String
    /// The size of the whole file, in bytes: what a leader streams to a follower.
    public var size: UInt64

    public init(metadata: SnapshotMetadata, path: String, size: UInt64) {
        self.metadata = metadata
        self.path = path
        self.size = size
    }

    public var description: String { "\(metadata) in \(path) (\(size) bytes)" }
}

/// A node's snapshots, in `DIR/snapshots/` beside the log's `DIR/wal/`, through the same `FileSystem` as the log.
///
/// ```
/// DIR/snapshots/snap-<index>-<term>.snap        a complete snapshot (the latest is the one of the highest index)
/// DIR/snapshots/snap-<index>-<term>.tmp         one being written (removed on open: a crash interrupted it)
/// DIR/snapshots/incoming-<index>-<term>.part    one being received from a leader (at most one; removed on open)
/// ```
///
/// A snapshot file (integers little-endian):
///
/// ```
/// magic    "RLSNAP\0\2"                                               8 bytes
/// header   index:u64 term:u64
///          membershipLength:u32 membership:bytes                      `Membership.encoded()`
///          sessionsLength:u32 sessions:bytes                          the proposal sessions, as the node wrote them
///          (version 1, "RLSNAP\0\1", still read: voterCount:u32 voter:u64* learnerCount:u32 learner:u64*
///          in place of the membership)
/// payload  the state machine's bytes (what its snapshot wrote), up to the trailer
/// trailer  payloadLength:u64 crc:u32 magic:"RLSE"                     the last 16 bytes
/// ```
///
/// `crc` is the CRC-32C of every byte before the trailer (magic, header and payload), and the file's size is
/// exactly the header's, `payloadLength` and the trailer's 16 bytes. The checksum covers the whole file, so a
/// snapshot sent to a follower is the file's bytes copied verbatim, and the follower checks the same trailer.
///
/// **Atomicity.** A snapshot is written under a temporary name, synced, renamed into place and the directory
/// synced: a crash at any point leaves no new snapshot or the whole one. An incoming snapshot is a `.part` file,
/// checked whole (trailer, checksum, header, identity, size) before it is renamed into place the same way.
///
/// **Untrusted bytes.** Everything read from a file is checked: a bad magic, a count or length beyond its bound
/// (`maxMembers`, `maxSessionsBytes`) or beyond the file, a size that does not match the trailer, a failing checksum
/// are a `StorageFailure` of kind `.corrupt` naming the file, never a crash.
///
/// **Damage.** `latest()` checks the newest snapshot's header and trailer and throws if they are damaged (or the
/// file is cut short) rather than fall back to an older one: the log may have been compacted past the older one,
/// and a node restored from it would miss entries. `open` checks the checksum as the payload is read.
///
/// **A crash during a transfer** loses the partial file (opening the store removes it): the transfer starts again
/// from the beginning. Its unsynced bytes could be torn anywhere, so resuming from them would be a gamble the
/// checksum would only catch at the end. Within one process a transfer resumes where it stopped (`incoming`).
///
/// The store keeps no mutable state of its own: its methods may be called from any thread. The writers, readers
/// and incoming files it hands out are each for one thread at a time (they may be handed from one to another).
public final class SnapshotStore: Sendable {
    /// The data directory.
    public let directory: String
    /// `directory/snapshots`.
    public let snapshotDirectory: String
    public let fileSystem: any FileSystem

    /// The most voters, and the most learners, a snapshot's header may list.
    public static let maxMembers = 1 << 20
    /// Snapshot files being written or received are synced every this many bytes, not only at their end, so that
    /// the disk never has a whole snapshot to flush at once (which would stall the write-ahead log's syncs).
    public static let syncEveryBytes = 16 << 20
    /// The most bytes of sessions a snapshot's header may hold.
    public static let maxSessionsBytes = 1 << 30

    /// Version 2 holds the whole membership (`Membership.encoded()`); version 1, still read, held voters and learners.
    static let magic: [UInt8] = Array("RLSNAP".utf8) + [0, 2]
    static let magicVersion1: [UInt8] = Array("RLSNAP".utf8) + [0, 1]
    /// The most bytes a snapshot's encoded membership may take.
    static let maxMembershipBytes = 64 << 20
    static let trailerMagic: [UInt8] = Array("RLSE".utf8)
    static let trailerSize = 16
    /// Magic, index, term, the three counts: the smallest header.
    static let minimumHeaderSize = 8 + 8 + 8 + 4 + 4 + 4
    /// The smallest snapshot file: a header with no members and no sessions, no payload, a trailer.
    public static let minimumSize = UInt64(minimumHeaderSize + trailerSize)

    /// Opens (creating if needed) `directory/snapshots`, and removes what a crash left of a snapshot being written
    /// or received.
    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) throws(StorageFailure) {
        self.directory = directory
        self.snapshotDirectory = directory + "/snapshots"
        self.fileSystem = fileSystem
        if try fileSystem.makeDirectory(directory) {
            try fileSystem.syncDirectory(DataDirectory.parent(of: directory))
        }
        if try fileSystem.makeDirectory(snapshotDirectory) {
            try fileSystem.syncDirectory(directory)
        }
        var removed = false
        for name in try fileSystem.list(snapshotDirectory) where name.hasSuffix(".tmp") || name.hasSuffix(".part") {
            try fileSystem.remove(path(name))
            removed = true
        }
        if removed { try fileSystem.syncDirectory(snapshotDirectory) }
    }

    // MARK: - Names

    func path(_ name: String) -> String { snapshotDirectory + "/" + name }

    static func name(_ prefix: String, _ index: LogIndex, _ term: Term, _ suffix: String) -> String {
        "\(prefix)\(index.rawValue)-\(term.rawValue)\(suffix)"
    }

    /// The index and term in a name `prefix<index>-<term>suffix` (decimal, as `name` writes them), or nil.
    static func parse(_ name: String, prefix: String, suffix: String) -> (index: LogIndex, term: Term)? {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else {
            return nil
        }
        let middle = name.dropFirst(prefix.count).dropLast(suffix.count)
        let parts = middle.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = UInt64(parts[0]), let term = UInt64(parts[1]),
            String(index) == parts[0], String(term) == parts[1]
        else { return nil }
        return (LogIndex(index), Term(term))
    }

    /// The complete snapshots in the directory (by their names), newest first.
    private func completeSnapshots() throws(StorageFailure) -> [(index: LogIndex, term: Term, name: String)] {
        try fileSystem.list(snapshotDirectory).compactMap { name in
            Self.parse(name, prefix: "snap-", suffix: ".snap").map { ($0.index, $0.term, name) }
        }.sorted { ($0.index, $0.term) > ($1.index, $1.term) }
    }

    // MARK: - Creating

    /// Starts writing a snapshot: the returned writer takes the state machine's bytes (wrap it in a
    /// `SnapshotWriter`), and `finish` puts the snapshot in place.
    /// - Throws: `.refused` for metadata or sessions beyond the format's bounds; `.io`, `.noSpace`.
    public func beginSnapshot(_ metadata: SnapshotMetadata, sessions: [UInt8]) throws(StorageFailure)
        -> SnapshotFileWriter
    {
        let header = try Self.encodeHeader(metadata, sessions: sessions)
        let final = path(Self.name("snap-", metadata.index, metadata.term, ".snap"))
        return try SnapshotFileWriter(
            fileSystem: fileSystem, metadata: metadata, header: header,
            temporaryPath: path(Self.name("snap-", metadata.index, metadata.term, ".tmp")), finalPath: final,
            directory: snapshotDirectory)
    }

    static func encodeHeader(_ metadata: SnapshotMetadata, sessions: [UInt8]) throws(StorageFailure) -> [UInt8] {
        let membership = metadata.membership.encoded()
        guard metadata.voters.count <= maxMembers, metadata.learners.count <= maxMembers,
            membership.count <= maxMembershipBytes
        else {
            throw StorageFailure(
                .refused,
                "a snapshot's membership of \(metadata.voters.count) voters and \(metadata.learners.count) learners "
                    + "(\(membership.count) bytes) exceeds the format's bound of \(maxMembers) each "
                    + "(\(maxMembershipBytes) bytes)")
        }
        guard sessions.count <= maxSessionsBytes else {
            throw StorageFailure(
                .refused,
                "a snapshot's sessions of \(sessions.count) bytes exceed the format's bound of \(maxSessionsBytes)")
        }
        var out = magic
        out.reserveCapacity(minimumHeaderSize + membership.count + sessions.count)
        Records.appendLE(metadata.index.rawValue, to: &out)
        Records.appendLE(metadata.term.rawValue, to: &out)
        Records.appendLE(UInt32(membership.count), to: &out)
        out.append(contentsOf: membership)
        Records.appendLE(UInt32(sessions.count), to: &out)
        out.append(contentsOf: sessions)
        return out
    }

    // MARK: - Finding and reading

    /// The newest complete snapshot (of the highest index), its header and trailer checked (not its checksum,
    /// which `open` checks as it reads); nil if there is none.
    /// - Throws: `.corrupt` naming the file if the newest one's header or trailer is damaged or its size does not
    ///   match them (it is not skipped for an older one: see the type's documentation).
    public func latest() throws(StorageFailure) -> SnapshotInfo? {
        guard let newest = try completeSnapshots().first else { return nil }
        let path = path(newest.name)
        let file = try fileSystem.open(path, .read)
        defer { fileSystem.close(file) }
        let layout = try Self.inspect(fileSystem, file, path: path, readSessions: false)
        guard layout.metadata.index == newest.index, layout.metadata.term == newest.term else {
            throw StorageFailure(
                .corrupt,
                "the snapshot's header says it is a \(layout.metadata), not the snapshot at \(newest.index) "
                    + "(\(newest.term)) its name says", file: path)
        }
        return SnapshotInfo(metadata: layout.metadata, path: path, size: UInt64(layout.size))
    }

    /// Opens a snapshot to restore from: its header is read (`metadata`, `sessions`), then the reader is a
    /// `SnapshotSource` of exactly the payload's bytes, whose checksum it checks when the payload has been read to
    /// its end.
    public func open(_ info: SnapshotInfo) throws(StorageFailure) -> SnapshotFileReader {
        try SnapshotFileReader(fileSystem: fileSystem, info: info)
    }

    /// Opens a snapshot's file for sending it as bytes. On POSIX an open file stays readable after its name is
    /// removed (by `prune`, once a newer snapshot exists), so a transfer in progress can finish.
    public func openRaw(_ info: SnapshotInfo) throws(StorageFailure) -> RawSnapshotFile {
        try RawSnapshotFile(fileSystem: fileSystem, info: info)
    }

    /// Up to `count` of a snapshot file's bytes from `offset` (fewer only at its end): `openRaw`, read, close.
    public func readRaw(_ info: SnapshotInfo, at offset: UInt64, count: Int) throws(StorageFailure) -> [UInt8] {
        let raw = try openRaw(info)
        defer { raw.close() }
        return try raw.read(at: offset, count: count)
    }

    // MARK: - Receiving

    /// The partial file of a snapshot being received, `incoming-<index>-<term>.part`, of `totalSize` bytes: new, or
    /// the one with this identity already there (its `received` says how many bytes it holds, so the transfer can
    /// go on from there). A partial file of another identity is deleted: one transfer at a time.
    /// - Throws: `.corrupt` for a `totalSize` smaller than any snapshot file; `.io`, `.noSpace`.
    public func incoming(index: LogIndex, term: Term, totalSize: UInt64) throws(StorageFailure) -> IncomingSnapshot {
        let name = Self.name("incoming-", index, term, ".part")
        let path = path(name)
        guard totalSize >= Self.minimumSize else {
            throw StorageFailure(
                .corrupt,
                "an incoming snapshot of \(totalSize) bytes is smaller than the smallest snapshot file "
                    + "(\(Self.minimumSize) bytes)", file: path)
        }
        for other in try fileSystem.list(snapshotDirectory)
        where other != name && Self.parse(other, prefix: "incoming-", suffix: ".part") != nil {
            try fileSystem.remove(self.path(other))
        }
        return try IncomingSnapshot(
            store: self, index: index, term: term, totalSize: totalSize, path: path,
            finalPath: self.path(Self.name("snap-", index, term, ".snap")))
    }

    // MARK: - Pruning

    /// Deletes every complete snapshot older than `info` (of a lower index, or of its index and another term) and
    /// every partial incoming one at or below its index. Newer ones, and snapshots being written, are left alone.
    public func prune(keeping info: SnapshotInfo) throws(StorageFailure) {
        let keep = (info.metadata.index, info.metadata.term)
        var removed = false
        for name in try fileSystem.list(snapshotDirectory) {
            if let found = Self.parse(name, prefix: "snap-", suffix: ".snap") {
                guard found.index <= keep.0, found != keep else { continue }
            } else if let found = Self.parse(name, prefix: "incoming-", suffix: ".part") {
                guard found.index <= keep.0 else { continue }
            } else {
                continue
            }
            try fileSystem.remove(path(name))
            removed = true
        }
        if removed { try fileSystem.syncDirectory(snapshotDirectory) }
    }

    // MARK: - Checking a file

    /// What a snapshot file's header and trailer say.
    struct Layout {
        var metadata: SnapshotMetadata
        /// Read only if asked.
        var sessions: [UInt8]
        var headerLength: Int
        var payloadLength: Int
        var size: Int
        /// The trailer's checksum.
        var crc: UInt32
        /// The checksum of the header's bytes (only if the sessions were read).
        var headerCRC: UInt32
    }

    /// Reads and checks a snapshot file's trailer and header (not the payload's checksum).
    static func inspect(
        _ fileSystem: any FileSystem, _ file: OpenFile, path: String, readSessions: Bool
    ) throws(StorageFailure) -> Layout {
        func corrupt(_ why: String) -> StorageFailure { StorageFailure(.corrupt, why, file: path) }
        let size = try fileSystem.size(of: file, path: path)
        guard size >= Int(minimumSize) else {
            throw corrupt("the snapshot file has \(size) bytes, fewer than the smallest snapshot (\(minimumSize))")
        }
        let trailer = try fileSystem.read(file, at: size - trailerSize, count: trailerSize, path: path)
        guard trailer.count == trailerSize else { throw corrupt("the snapshot file is shorter than its size says") }
        guard Array(trailer[12..<16]) == trailerMagic else {
            throw corrupt("the snapshot file does not end with a snapshot trailer (cut short, or not a snapshot)")
        }
        let payloadLength = trailer.withUnsafeBytes { Records.loadLE(UInt64.self, $0, 0) }
        let crc = trailer.withUnsafeBytes { Records.loadLE(UInt32.self, $0, 8) }

        var cursor = Cursor(fileSystem: fileSystem, file: file, path: path, limit: size - trailerSize)
        let fileMagic = try cursor.bytes(8, "magic")
        guard fileMagic == magic || fileMagic == magicVersion1 else {
            throw corrupt("not a snapshot file (wrong magic)")
        }
        let index = LogIndex(try cursor.u64("index"))
        let term = Term(try cursor.u64("term"))
        let membership: Membership
        if fileMagic == magicVersion1 {
            let voters = try cursor.members("voters")
            let learners = try cursor.members("learners")
            membership = Membership(voters: Set(voters), learners: Set(learners).subtracting(voters))
        } else {
            let length = Int(try cursor.u32("membership length"))
            guard length <= maxMembershipBytes else {
                throw corrupt(
                    "the snapshot's header gives its membership \(length) bytes (at most \(maxMembershipBytes))")
            }
            guard let decoded = Membership(decoding: try cursor.bytes(length, "membership")) else {
                throw corrupt("the snapshot's membership cannot be read")
            }
            membership = decoded
        }
        let sessionsLength = Int(try cursor.u32("sessions length"))
        guard sessionsLength <= maxSessionsBytes else {
            throw corrupt(
                "the snapshot's header gives its sessions \(sessionsLength) bytes (at most \(maxSessionsBytes))")
        }
        let sessions: [UInt8]
        if readSessions {
            sessions = try cursor.bytes(sessionsLength, "sessions")
        } else {
            try cursor.skip(sessionsLength, "sessions")
            sessions = []
        }
        let headerLength = cursor.offset
        guard UInt64(size - trailerSize - headerLength) == payloadLength else {
            throw corrupt(
                "the snapshot file has \(size) bytes, but its header (\(headerLength) bytes), payload "
                    + "(\(payloadLength) bytes, as its trailer says) and trailer (\(trailerSize)) make "
                    + "\(UInt64(headerLength + trailerSize).addingReportingOverflow(payloadLength).partialValue)")
        }
        return Layout(
            metadata: SnapshotMetadata(index: index, term: term, membership: membership),
            sessions: sessions, headerLength: headerLength, payloadLength: Int(payloadLength), size: size, crc: crc,
            headerCRC: cursor.crc)
    }

    /// Reads a header in order from an open file, never past `limit`, with the checksum of what it read.
    struct Cursor {
        let fileSystem: any FileSystem
        let file: OpenFile
        let path: String
        let limit: Int
        var offset = 0
        var crc: UInt32 = 0

        mutating func bytes(_ count: Int, _ what: String) throws(StorageFailure) -> [UInt8] {
            try check(count, what)
            let bytes = try fileSystem.read(file, at: offset, count: count, path: path)
            guard bytes.count == count else {
                throw StorageFailure(.corrupt, "the snapshot file ends inside its header (\(what))", file: path)
            }
            crc = bytes.withUnsafeBytes { CRC32C.checksum($0, continuing: crc) }
            offset += count
            return bytes
        }

        /// Steps over bytes without reading them (the checksum is then not of the whole header).
        mutating func skip(_ count: Int, _ what: String) throws(StorageFailure) {
            try check(count, what)
            offset += count
        }

        private func check(_ count: Int, _ what: String) throws(StorageFailure) {
            guard count >= 0, count <= limit - offset else {
                throw StorageFailure(
                    .corrupt,
                    "the snapshot's header runs past the end of its file (\(what): \(count) bytes at offset \(offset))",
                    file: path)
            }
        }

        mutating func u64(_ what: String) throws(StorageFailure) -> UInt64 {
            try bytes(8, what).withUnsafeBytes { Records.loadLE(UInt64.self, $0, 0) }
        }

        mutating func u32(_ what: String) throws(StorageFailure) -> UInt32 {
            try bytes(4, what).withUnsafeBytes { Records.loadLE(UInt32.self, $0, 0) }
        }

        mutating func members(_ what: String) throws(StorageFailure) -> [NodeID] {
            let count = Int(try u32("\(what) count"))
            guard count <= SnapshotStore.maxMembers else {
                throw StorageFailure(
                    .corrupt, "the snapshot's header lists \(count) \(what) (at most \(SnapshotStore.maxMembers))",
                    file: path)
            }
            let raw = try bytes(count * 8, what)
            return raw.withUnsafeBytes { bytes in
                (0..<count).map { NodeID(Records.loadLE(UInt64.self, bytes, $0 * 8)) }
            }
        }
    }

    /// Checks a whole snapshot file: its trailer and header, and the checksum of every byte before the trailer.
    static func verify(_ fileSystem: any FileSystem, path: String) throws(StorageFailure) -> Layout {
        let file = try fileSystem.open(path, .read)
        defer { fileSystem.close(file) }
        let layout = try inspect(fileSystem, file, path: path, readSessions: true)
        var crc = layout.headerCRC
        var offset = layout.headerLength
        let end = layout.headerLength + layout.payloadLength
        while offset < end {
            let chunk = try fileSystem.read(file, at: offset, count: min(1 << 20, end - offset), path: path)
            guard !chunk.isEmpty else {
                throw StorageFailure(.corrupt, "the snapshot file is shorter than its trailer says", file: path)
            }
            crc = chunk.withUnsafeBytes { CRC32C.checksum($0, continuing: crc) }
            offset += chunk.count
        }
        guard crc == layout.crc else {
            throw StorageFailure(.corrupt, "the snapshot file fails its checksum", file: path)
        }
        return layout
    }
}

/// A snapshot being written: a `SnapshotSink` for the state machine's bytes (through a `SnapshotWriter`), then
/// `finish` (or `abandon`). The checksum is computed as the bytes pass. For one thread at a time; a writer dropped
/// without `finish` removes its temporary file.
public final class SnapshotFileWriter: SnapshotSink, @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time (handed to a background thread, say), never concurrently.
    public let metadata: SnapshotMetadata
    private let fileSystem: any FileSystem
    private let temporaryPath: String
    private let finalPath: String
    private let directory: String
    private var file: OpenFile?
    private var pending: [UInt8]
    private var offset = 0
    private var crc: UInt32
    private var payloadLength: UInt64 = 0
    private var unsynced = 0
    private static let bufferSize = 1 << 20

    init(
        fileSystem: any FileSystem, metadata: SnapshotMetadata, header: [UInt8], temporaryPath: String,
        finalPath: String, directory: String
    ) throws(StorageFailure) {
        self.fileSystem = fileSystem
        self.metadata = metadata
        self.temporaryPath = temporaryPath
        self.finalPath = finalPath
        self.directory = directory
        pending = header
        crc = CRC32C.checksum(header)
        file = try fileSystem.open(temporaryPath, .createOrTruncate)
    }

    deinit {
        if file != nil { abandon() }
    }

    /// The payload's bytes written so far.
    public var payloadBytes: UInt64 { payloadLength }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try append(bytes)
    }

    /// Payload bytes, as `write(_: UnsafeRawBufferPointer)`.
    public func write(_ bytes: [UInt8]) throws(StorageFailure) {
        try bytes.withUnsafeBytes { raw in Result { () throws(StorageFailure) in try append(raw) } }.get()
    }

    private func append(_ bytes: UnsafeRawBufferPointer) throws(StorageFailure) {
        guard file != nil else {
            throw StorageFailure(.closed, "the snapshot was finished or abandoned", file: temporaryPath)
        }
        crc = CRC32C.checksum(bytes, continuing: crc)
        payloadLength += UInt64(bytes.count)
        pending.append(contentsOf: bytes)
        if pending.count >= Self.bufferSize { try flush() }
    }

    private func flush() throws(StorageFailure) {
        guard !pending.isEmpty, let file else { return }
        try fileSystem.write(pending, to: file, at: offset, path: temporaryPath)
        offset += pending.count
        unsynced += pending.count
        pending.removeAll(keepingCapacity: true)
        // Paced: a large snapshot left to one sync at the end would flush it all at once, and every write-ahead
        // log sharing the disk would wait behind that flush.
        if unsynced >= SnapshotStore.syncEveryBytes {
            try fileSystem.syncData(file, path: temporaryPath)
            unsynced = 0
        }
    }

    /// Writes the trailer, makes the file durable, renames it into place and makes the name durable: from then on
    /// the snapshot is `latest()` (if newest). A failure removes the temporary file and rethrows.
    public func finish() throws(StorageFailure) -> SnapshotInfo {
        guard let file else {
            throw StorageFailure(.closed, "the snapshot was finished or abandoned", file: temporaryPath)
        }
        do throws(StorageFailure) {
            Records.appendLE(payloadLength, to: &pending)
            Records.appendLE(crc, to: &pending)
            pending.append(contentsOf: SnapshotStore.trailerMagic)
            try flush()
            try fileSystem.syncData(file, path: temporaryPath)
            fileSystem.close(file)
            self.file = nil
            try fileSystem.rename(temporaryPath, to: finalPath)
            try fileSystem.syncDirectory(directory)
        } catch {
            abandon()
            throw error
        }
        return SnapshotInfo(metadata: metadata, path: finalPath, size: UInt64(offset))
    }

    /// Gives the snapshot up: its temporary file is removed (best effort; the store's next open removes it too).
    public func abandon() {
        if let file {
            fileSystem.close(file)
            self.file = nil
        }
        pending = []
        try? fileSystem.remove(temporaryPath)
    }
}

/// A snapshot being restored from: its header (`metadata`, `sessions`), then a `SnapshotSource` of exactly its
/// payload's bytes. The checksum of the whole file is checked when the payload's last byte is read (that read
/// throws `.corrupt` instead of returning the bytes), so a state machine that reads its bytes to their end gets it
/// checked; `verify()` reads what is left and checks it.
public final class SnapshotFileReader: SnapshotSource, @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time, never concurrently.
    public let info: SnapshotInfo
    public let metadata: SnapshotMetadata
    /// The proposal sessions the snapshot holds, as the node wrote them.
    public let sessions: [UInt8]
    /// The payload's size, in bytes.
    public let payloadLength: Int
    private let fileSystem: any FileSystem
    private var file: OpenFile?
    private var position: Int
    private let payloadEnd: Int
    private let size: Int
    private let expectedCRC: UInt32
    private var crc: UInt32
    private var verified = false

    init(fileSystem: any FileSystem, info: SnapshotInfo) throws(StorageFailure) {
        self.fileSystem = fileSystem
        self.info = info
        let file = try fileSystem.open(info.path, .read)
        let layout: SnapshotStore.Layout
        do throws(StorageFailure) {
            layout = try SnapshotStore.inspect(fileSystem, file, path: info.path, readSessions: true)
            guard layout.metadata.index == info.metadata.index, layout.metadata.term == info.metadata.term else {
                throw StorageFailure(
                    .corrupt, "the snapshot's header says it is a \(layout.metadata), not a \(info.metadata)",
                    file: info.path)
            }
        } catch {
            fileSystem.close(file)
            throw error
        }
        self.file = file
        metadata = layout.metadata
        sessions = layout.sessions
        payloadLength = layout.payloadLength
        position = layout.headerLength
        payloadEnd = layout.headerLength + layout.payloadLength
        size = layout.size
        expectedCRC = layout.crc
        crc = layout.headerCRC
    }

    deinit { close() }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try readPayload(into: buffer)
    }

    private func readPayload(into buffer: UnsafeMutableRawBufferPointer) throws(StorageFailure) -> Int {
        guard let file else { throw StorageFailure(.closed, "the snapshot reader is closed", file: info.path) }
        if position == payloadEnd {
            try checkEnd()
            return 0
        }
        let count = min(buffer.count, payloadEnd - position)
        guard count > 0, let base = buffer.baseAddress else { return 0 }
        let bytes = try fileSystem.read(file, at: position, count: count, path: info.path)
        guard bytes.count == count else {
            throw StorageFailure(.corrupt, "the snapshot file is shorter than its trailer says", file: info.path)
        }
        bytes.withUnsafeBytes { raw in
            if let from = raw.baseAddress { base.copyMemory(from: from, byteCount: count) }
            crc = CRC32C.checksum(raw, continuing: crc)
        }
        position += count
        if position == payloadEnd { try checkEnd() }
        return count
    }

    /// Reads what is left of the payload (discarding it) and checks the checksum.
    public func verify() throws(StorageFailure) {
        var scratch = [UInt8](repeating: 0, count: 1 << 20)
        while try scratch.withUnsafeMutableBytes({ raw in
            Result { () throws(StorageFailure) in try readPayload(into: raw) }
        }).get() > 0 {}
    }

    private func checkEnd() throws(StorageFailure) {
        guard !verified, let file else { return }
        guard try fileSystem.size(of: file, path: info.path) == size else {
            throw StorageFailure(.corrupt, "the snapshot file changed size while it was read", file: info.path)
        }
        guard crc == expectedCRC else {
            throw StorageFailure(.corrupt, "the snapshot file fails its checksum", file: info.path)
        }
        verified = true
    }

    public func close() {
        if let file {
            fileSystem.close(file)
            self.file = nil
        }
    }
}

/// A snapshot file open for sending its bytes. Safe to use from several threads; closed by `close` (or when
/// dropped).
public final class RawSnapshotFile: @unchecked Sendable {
    // @unchecked Sendable: `file` is only touched with `lock` held.
    public let info: SnapshotInfo
    /// The file's size when it was opened.
    public let size: UInt64
    private let fileSystem: any FileSystem
    private let lock = NIOLock()
    private var file: OpenFile?

    init(fileSystem: any FileSystem, info: SnapshotInfo) throws(StorageFailure) {
        self.fileSystem = fileSystem
        self.info = info
        let file = try fileSystem.open(info.path, .read)
        do throws(StorageFailure) {
            size = UInt64(try fileSystem.size(of: file, path: info.path))
        } catch {
            fileSystem.close(file)
            throw error
        }
        self.file = file
    }

    deinit { close() }

    /// Up to `count` bytes from `offset`: fewer only at the end of the file, none at or past it.
    public func read(at offset: UInt64, count: Int) throws(StorageFailure) -> [UInt8] {
        guard count >= 0, offset <= size else {
            throw StorageFailure(
                .refused, "a read of \(count) bytes at offset \(offset) of a \(size)-byte snapshot", file: info.path)
        }
        let take = Int(min(UInt64(count), size - offset))
        let result: Result<[UInt8], StorageFailure> = lock.withLock {
            guard let file else {
                return .failure(StorageFailure(.closed, "the snapshot file is closed", file: info.path))
            }
            do throws(StorageFailure) {
                return .success(try fileSystem.read(file, at: Int(offset), count: take, path: info.path))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    public func close() {
        lock.withLock {
            if let file {
                fileSystem.close(file)
                self.file = nil
            }
        }
    }
}

/// A snapshot being received from a leader, in `incoming-<index>-<term>.part`: bytes written in order (`write`
/// at `received`), then `complete` checks the whole file and puts it in place. For one thread at a time. Dropped
/// without `complete` or `discard`, its file stays, so that `SnapshotStore.incoming` with the same identity resumes
/// it (until the store is opened again, which removes it).
public final class IncomingSnapshot: @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time, never concurrently.
    public let index: LogIndex
    public let term: Term
    public let totalSize: UInt64
    /// How many of the snapshot's bytes, from its start, the file holds.
    public private(set) var received: UInt64
    public let path: String
    private let finalPath: String
    private let directory: String
    private let fileSystem: any FileSystem
    private var file: OpenFile?
    private var unsynced = 0

    init(
        store: SnapshotStore, index: LogIndex, term: Term, totalSize: UInt64, path: String, finalPath: String
    ) throws(StorageFailure) {
        self.index = index
        self.term = term
        self.totalSize = totalSize
        self.path = path
        self.finalPath = finalPath
        directory = store.snapshotDirectory
        fileSystem = store.fileSystem
        if fileSystem.exists(path) {
            let file = try fileSystem.open(path, .write)
            do throws(StorageFailure) {
                let held = UInt64(try fileSystem.size(of: file, path: path))
                if held > totalSize {
                    // Not this snapshot (another of the same identity, of another size): start again.
                    try fileSystem.truncate(file, to: 0, path: path)
                    received = 0
                } else {
                    received = held
                }
            } catch {
                fileSystem.close(file)
                throw error
            }
            self.file = file
        } else {
            file = try fileSystem.open(path, .createNew)
            received = 0
        }
    }

    deinit {
        if let file { fileSystem.close(file) }
    }

    /// Writes the snapshot's bytes at `offset`, which must be `received` (bytes arrive in order, once).
    /// - Throws: `.refused` for an offset other than `received` or bytes beyond `totalSize`; `.io`, `.noSpace`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws(StorageFailure) {
        guard let file else {
            throw StorageFailure(.closed, "the incoming snapshot was completed or discarded", file: path)
        }
        guard offset == received else {
            throw StorageFailure(
                .refused, "snapshot bytes at offset \(offset), but the file holds \(received) bytes", file: path)
        }
        guard UInt64(bytes.count) <= totalSize - received else {
            throw StorageFailure(
                .refused,
                "\(bytes.count) snapshot bytes at offset \(offset) go past its size of \(totalSize) bytes", file: path)
        }
        try fileSystem.write(bytes, to: file, at: Int(offset), path: path)
        received += UInt64(bytes.count)
        unsynced += bytes.count
        // Paced, as a snapshot being written is: no flush of the whole file at the end.
        if unsynced >= SnapshotStore.syncEveryBytes {
            try fileSystem.syncData(file, path: path)
            unsynced = 0
        }
    }

    /// Makes the file durable, checks it whole (trailer, checksum, header, that its index and term are this
    /// transfer's, its size), renames it into place as `snap-<index>-<term>.snap` and makes the name durable.
    /// - Throws: `.refused` if not all `totalSize` bytes arrived (the file is kept, to go on with); `.corrupt` for
    ///   a file that fails a check, and any I/O failure: the partial file is removed then.
    public func complete() throws(StorageFailure) -> SnapshotInfo {
        guard let file else {
            throw StorageFailure(.closed, "the incoming snapshot was completed or discarded", file: path)
        }
        guard received == totalSize else {
            throw StorageFailure(
                .refused, "only \(received) of the snapshot's \(totalSize) bytes have arrived", file: path)
        }
        do throws(StorageFailure) {
            try fileSystem.syncData(file, path: path)
            fileSystem.close(file)
            self.file = nil
            let layout = try SnapshotStore.verify(fileSystem, path: path)
            guard layout.metadata.index == index, layout.metadata.term == term else {
                throw StorageFailure(
                    .corrupt,
                    "the snapshot received as the one at \(index) (\(term)) is a \(layout.metadata)", file: path)
            }
            guard UInt64(layout.size) == totalSize else {
                throw StorageFailure(
                    .corrupt, "the snapshot file has \(layout.size) bytes, not \(totalSize)", file: path)
            }
            try fileSystem.rename(path, to: finalPath)
            try fileSystem.syncDirectory(directory)
            return SnapshotInfo(metadata: layout.metadata, path: finalPath, size: totalSize)
        } catch {
            discard()
            throw error
        }
    }

    /// Gives the transfer up: the partial file is removed (best effort; the store's next open removes it too).
    public func discard() {
        if let file {
            fileSystem.close(file)
            self.file = nil
        }
        try? fileSystem.remove(path)
    }
}
