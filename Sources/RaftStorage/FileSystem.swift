import RaftCore

/// An open file of a `FileSystem`: an opaque number (a file descriptor, for `PosixFileSystem`).
public struct OpenFile: Sendable, Hashable {
    public let descriptor: Int32

    public init(descriptor: Int32) {
        self.descriptor = descriptor
    }
}

/// How `FileSystem.open` opens a file.
public enum OpenMode: Sendable, Hashable {
    /// For reading; the file must exist.
    case read
    /// For writing; the file must exist.
    case write
    /// For writing a new file; fails if it exists (`O_CREAT | O_EXCL`).
    case createNew
    /// For writing, created if absent, emptied if present (`O_CREAT | O_TRUNC`).
    case createOrTruncate
}

/// Exactly the file operations the write-ahead log needs, so that a test can put something else under it (such as a
/// file system that models the page cache and loses power).
///
/// The promises a `WriteAheadLog` relies on are POSIX's: data written to a file is durable once `syncData` returns
/// for it, and a file's size with it; a name created, renamed or removed in a directory is durable once
/// `syncDirectory` returns for that directory. Nothing else is assumed to reach the disk, or in any order.
/// Every failure is a `StorageFailure`, of kind `.io` unless said otherwise; a full disk is `.noSpace`.
public protocol FileSystem: Sendable {
    /// Creates a directory (its parent must exist). Returns false if it existed already.
    func makeDirectory(_ path: String) throws(StorageFailure) -> Bool

    func open(_ path: String, _ mode: OpenMode) throws(StorageFailure) -> OpenFile

    /// Closes a file (and releases a lock taken with `lockExclusively`). Never fails.
    func close(_ file: OpenFile)

    /// Writes all of `bytes` at `offset` (`pwrite`), extending the file if needed.
    func write(_ bytes: [UInt8], to file: OpenFile, at offset: Int, path: String) throws(StorageFailure)

    /// The file's content, or its first `limit` bytes.
    func read(_ path: String, upTo limit: Int) throws(StorageFailure) -> [UInt8]

    /// Up to `count` bytes of an open file from `offset` (`pread`): fewer only where the file ends. An open file
    /// stays readable after its name is removed.
    func read(_ file: OpenFile, at offset: Int, count: Int, path: String) throws(StorageFailure) -> [UInt8]

    /// The size of an open file, in bytes (`fstat`).
    func size(of file: OpenFile, path: String) throws(StorageFailure) -> Int

    /// Makes what was written to the file durable, and its size (`fdatasync`).
    func syncData(_ file: OpenFile, path: String) throws(StorageFailure)

    /// Makes the names created, renamed and removed in a directory durable (`fsync` of the directory).
    func syncDirectory(_ path: String) throws(StorageFailure)

    /// Renames a file within a directory, replacing any file of the new name (atomically, once durable).
    func rename(_ path: String, to newPath: String) throws(StorageFailure)

    /// Removes a file; a file that does not exist is not an error.
    func remove(_ path: String) throws(StorageFailure)

    /// The names in a directory, without `.` and `..`, in no particular order.
    func list(_ directory: String) throws(StorageFailure) -> [String]

    func exists(_ path: String) -> Bool

    /// Reserves space for the first `length` bytes of a file (`posix_fallocate`), growing it with zeros if it is
    /// shorter, so that later writes within them need no new space and change no metadata (cheaper syncs). A file
    /// system that cannot preallocate may do nothing; one without the space throws `.noSpace`.
    func preallocate(_ file: OpenFile, length: Int, path: String) throws(StorageFailure)

    /// Cuts a file to `length` bytes (`ftruncate`).
    func truncate(_ file: OpenFile, to length: Int, path: String) throws(StorageFailure)

    /// Opens (creating if needed) and exclusively locks a lock file, without waiting: throws `.locked` if another
    /// holder has it. The lock lasts until the returned file is closed.
    func lockExclusively(_ path: String) throws(StorageFailure) -> OpenFile
}

extension FileSystem {
    /// The whole content of a file.
    public func read(_ path: String) throws(StorageFailure) -> [UInt8] {
        try read(path, upTo: Int.max)
    }

    /// For a file system written before these were requirements: through the path (so not of a file whose name
    /// was removed), reading the file from its start.
    public func read(_ file: OpenFile, at offset: Int, count: Int, path: String) throws(StorageFailure) -> [UInt8] {
        guard offset >= 0, count >= 0 else {
            throw StorageFailure(.io, "reading \(count) bytes at offset \(offset) failed: invalid range", file: path)
        }
        let (end, overflow) = offset.addingReportingOverflow(count)
        return Array(try read(path, upTo: overflow ? Int.max : end).dropFirst(offset))
    }

    public func size(of file: OpenFile, path: String) throws(StorageFailure) -> Int {
        try read(path).count
    }

    /// The size of the file at `path`, in bytes.
    public func size(_ path: String) throws(StorageFailure) -> Int {
        let file = try open(path, .read)
        defer { close(file) }
        return try size(of: file, path: path)
    }

    /// Writes a small file atomically: a temporary file, synced, then renamed over the target and the directory
    /// synced. A crash leaves either the old file or the new one, never a mixture.
    func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws(StorageFailure) {
        let temporary = path + ".tmp"
        let file = try open(temporary, .createOrTruncate)
        do throws(StorageFailure) {
            try write(bytes, to: file, at: 0, path: temporary)
            try syncData(file, path: temporary)
        } catch {
            close(file)
            throw error
        }
        close(file)
        try rename(temporary, to: path)
        try syncDirectory(directory)
    }
}
