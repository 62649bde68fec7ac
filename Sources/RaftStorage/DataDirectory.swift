import Foundation
import RaftCore

#if canImport(Glibc)
    import Glibc
#endif

/// A node's data directory, apart from what its log holds: where its files are, its lock, its FORMAT file and its
/// IDENTITY file. Shared by `WriteAheadLog` (which checks all of them on open) and `LogRepair`.
///
/// ```
/// DIR/FORMAT            "raftlite-data 2": the format version (written last when the directory is set up)
/// DIR/IDENTITY          whose directory it is (`DataDirectoryIdentity`), checked on every open
/// DIR/LOCK              held (flock) while a process has the directory open; holds its pid
/// DIR/wal/00000000000000000001.log, ...   the log's segments (format: `Records`)
/// DIR/snapshots/        the node's snapshots (`SnapshotStore`, which owns that directory)
/// ```
struct DataDirectory {
    let path: String
    let walDirectory: String
    let fileSystem: any FileSystem

    init(_ path: String, fileSystem: any FileSystem) {
        self.path = path
        self.walDirectory = path + "/wal"
        self.fileSystem = fileSystem
    }

    /// The text of the FORMAT file this version writes and reads.
    static let formatLine = "raftlite-data \(WriteAheadLog.formatVersion)"

    // MARK: - Names

    /// The path of segment `sequence`.
    func segmentPath(_ sequence: UInt64) -> String {
        walDirectory + "/" + Self.segmentName(sequence)
    }

    /// A segment's file name: its sequence number in 20 digits, then `.log`.
    static func segmentName(_ sequence: UInt64) -> String {
        let digits = String(sequence)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    /// The sequence number of a segment's file name, or nil if the name is not a segment's.
    static func sequence(ofSegment name: String) -> UInt64? {
        guard name.hasSuffix(".log"), name.count == 24 else { return nil }
        return UInt64(name.prefix(20))
    }

    /// The directory that holds `path`.
    static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        let parent = trimmed[..<slash]
        return parent.isEmpty ? "/" : String(parent)
    }

    // MARK: - The lock

    /// Takes a data directory's lock (`DIR/LOCK`, which holds the pid of the process that has it).
    static func lock(_ directory: String, _ fileSystem: any FileSystem) throws(StorageFailure) -> OpenFile {
        let path = directory + "/LOCK"
        let file: OpenFile
        do {
            file = try fileSystem.lockExclusively(path)
        } catch let failure where failure.kind == .locked {
            let holder = (try? fileSystem.read(path, upTo: 64)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            throw StorageFailure(
                .locked,
                "the data directory is in use by another process (pid \(holder.trimmingCharacters(in: .whitespacesAndNewlines)))",
                file: directory)
        }
        // The pid is for the operator reading the error above; failing to write it changes nothing.
        try? fileSystem.truncate(file, to: 0, path: path)
        try? fileSystem.write(Array("\(getpid())\n".utf8), to: file, at: 0, path: path)
        return file
    }

    // MARK: - FORMAT

    /// Checks the format version; returns whether the directory was initialised before (it has a FORMAT file).
    func checkFormat() throws(StorageFailure) -> Bool {
        let formatPath = path + "/FORMAT"
        guard fileSystem.exists(formatPath) else { return false }
        let found = String(decoding: try fileSystem.read(formatPath, upTo: 4096), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard found == Self.formatLine else {
            if found == "raftlite-data 1" {
                throw StorageFailure(
                    .unsupportedFormat,
                    "this data directory is in RaftLite's data format 1 (\"raftlite-data 1\"), which this version cannot "
                        + "read: it reads only format \(WriteAheadLog.formatVersion), whose records are sealed with a "
                        + "salt per segment so that a torn write is never taken for damage, and there is no migration. "
                        + "Run the version that wrote the directory, or start a new cluster with new, empty data "
                        + "directories",
                    file: formatPath)
            }
            throw StorageFailure(
                .unsupportedFormat,
                "the data directory's format is \"\(found)\"; this version reads only \"\(Self.formatLine)\"",
                file: formatPath)
        }
        return true
    }

    /// Writes the FORMAT file: last, when the directory is set up, since its presence says it was fully set up.
    func writeFormat() throws(StorageFailure) {
        try fileSystem.writeAtomically(Array("\(Self.formatLine)\n".utf8), to: path + "/FORMAT", directory: path)
    }

    /// In a directory without FORMAT: segments left by an initialisation that a crash interrupted (FORMAT is
    /// written last) hold nothing, since nothing is written before initialisation ends; they are removed. A segment
    /// holding anything else is a log whose FORMAT is missing: refused.
    func discardUnfinishedInitialisation() throws(StorageFailure) {
        guard fileSystem.exists(walDirectory) else { return }
        let names = try fileSystem.list(walDirectory)
        let segments = names.filter { Self.sequence(ofSegment: $0) != nil }
        guard !segments.isEmpty else { return }
        for name in segments {
            let bytes = try fileSystem.read(walDirectory + "/" + name)
            let holdsNothing =
                bytes.count <= Records.segmentHeaderSize
                || bytes[Records.segmentHeaderSize...].allSatisfy { $0 == 0 }
            guard holdsNothing else {
                throw StorageFailure(
                    .unsupportedFormat, "the data directory has a log but no FORMAT file",
                    file: path + "/FORMAT")
            }
        }
        for name in segments { try fileSystem.remove(walDirectory + "/" + name) }
        try fileSystem.syncDirectory(walDirectory)
    }

    // MARK: - IDENTITY

    /// Refuses a directory of another node, cluster or member set; writes the identity into a new directory (or one
    /// set up without one). Returns the directory's identity (nil if it has none) and a warning, if claiming a
    /// directory without one failed on a full disk (which is not worth refusing a restart).
    func checkIdentity(
        initialised: Bool, expected expectedIdentity: DataDirectoryIdentity?
    ) throws(StorageFailure) -> (identity: DataDirectoryIdentity?, warning: String?) {
        let identityPath = path + "/IDENTITY"
        if initialised && fileSystem.exists(identityPath) {
            guard let stored = DataDirectoryIdentity.decode(try fileSystem.read(identityPath, upTo: 1 << 20)) else {
                throw StorageFailure(.corrupt, "the data directory's IDENTITY file cannot be read", file: identityPath)
            }
            if let expected = expectedIdentity, let why = stored.refusal(toOpenAs: expected) {
                throw StorageFailure(.identityMismatch, why, file: path)
            }
            return (stored, nil)
        }
        guard let expected = expectedIdentity else { return (nil, nil) }
        do {
            try fileSystem.writeAtomically(expected.encoded(), to: identityPath, directory: path)
            return (expected, nil)
        } catch let failure where initialised && failure.kind == .noSpace {
            try? fileSystem.remove(identityPath + ".tmp")
            return (nil, "the data directory has no IDENTITY and it could not be written: \(failure)")
        }
    }
}

/// Small files that the layers above RaftStorage keep in a node's data directory beside the log (the server keeps
/// the cluster's bootstrap configuration there, `DIR/cluster.json`). Written atomically and durably: a crash leaves
/// the old file or the new one, never a mixture, and a written file survives a power cut.
///
/// Write only while the directory is open (its lock held: after the node's `WriteAheadLog` is opened), so that two
/// processes never write one directory. The names RaftStorage uses itself are refused.
public enum DataDirectoryFile {
    /// The names RaftStorage itself uses in a data directory.
    public static let reservedNames: Set<String> = ["FORMAT", "IDENTITY", "LOCK", "wal", "snapshots"]

    /// The file's bytes, or nil if the directory (or the file) does not exist.
    /// - Throws: `StorageFailure` if the name is not a plain file name, or the file exists but cannot be read.
    public static func read(
        _ name: String, in directory: String, upTo limit: Int = 16 << 20, fileSystem: any FileSystem = PosixFileSystem()
    ) throws(StorageFailure) -> [UInt8]? {
        try check(name, in: directory)
        let path = directory + "/" + name
        guard fileSystem.exists(path) else { return nil }
        return try fileSystem.read(path, upTo: limit)
    }

    /// Replaces the file with `bytes`, atomically and durably (a temporary file, synced, renamed, directory synced).
    /// - Throws: `StorageFailure` if the name is not a plain file name or reserved, or the write fails.
    public static func write(
        _ bytes: [UInt8], to name: String, in directory: String, fileSystem: any FileSystem = PosixFileSystem()
    ) throws(StorageFailure) {
        try check(name, in: directory)
        guard fileSystem.exists(directory) else {
            throw StorageFailure(.io, "the data directory does not exist", file: directory)
        }
        try fileSystem.writeAtomically(bytes, to: directory + "/" + name, directory: directory)
    }

    private static func check(_ name: String, in directory: String) throws(StorageFailure) {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.hasSuffix(".tmp") else {
            throw StorageFailure(.refused, "\"\(name)\" is not a plain file name", file: directory)
        }
        guard !reservedNames.contains(name) else {
            throw StorageFailure(.refused, "\"\(name)\" is a name RaftStorage uses itself", file: directory)
        }
    }
}
