#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A storage problem, with the file (and offset) at fault when there is one.
public struct StorageFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// A record in the middle of the log is damaged: the node must not start (nothing is silently dropped).
        case corrupt
        /// A segment of the log is missing.
        case missingSegment
        /// Another process has the data directory open.
        case locked
        /// The data directory was written by an incompatible version.
        case unsupportedFormat
        /// The operating system refused a read, write or sync.
        case io
        /// The log is closed (or failed earlier and refuses further writes).
        case closed
        /// An append that would leave a hole in the log or rewrite compacted entries.
        case invalidAppend
    }

    public var kind: Kind
    public var message: String
    public var file: String?
    public var offset: Int?

    public init(_ kind: Kind, _ message: String, file: String? = nil, offset: Int? = nil) {
        self.kind = kind
        self.message = message
        self.file = file
        self.offset = offset
    }

    public var description: String {
        var text = message
        if let file { text += " (\(file)" + (offset.map { " at offset \($0)" } ?? "") + ")" }
        return text
    }
}

/// Thin, checked wrappers around the POSIX calls the log needs.
enum Files {
    static func errorText() -> String {
        String(cString: strerror(errno))
    }

    static func io(_ what: String, _ path: String) -> StorageFailure {
        StorageFailure(.io, "\(what) failed: \(errorText())", file: path)
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    static func makeDirectory(_ path: String) throws(StorageFailure) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw io("creating the directory", path) }
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(StorageFailure) -> Int32 {
        var fd: Int32
        repeat { fd = Glibc.open(path, flags | O_CLOEXEC, mode) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw io("opening", path) }
        return fd
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    static func readAll(_ path: String) throws(StorageFailure) -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        var stats = stat()
        guard fstat(fd, &stats) == 0 else { throw io("reading the size of", path) }
        var bytes = [UInt8](repeating: 0, count: Int(stats.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                read(fd, raw.baseAddress.map { $0 + done }, raw.count - done)
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw io("reading", path) }
            if n == 0 { break }
            done += n
        }
        if done < bytes.count { bytes.removeLast(bytes.count - done) }
        return bytes
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(StorageFailure) {
        let failure = bytes.withUnsafeBytes { raw -> StorageFailure? in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress.map { $0 + done }, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return io("writing", path) }
                done += n
            }
            return nil
        }
        if let failure { throw failure }
    }

    /// Writes all of `bytes` at `offset` (pwrite).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws(StorageFailure) {
        let failure = bytes.withUnsafeBytes { raw -> StorageFailure? in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress.map { $0 + done }, raw.count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return io("writing", path) }
                done += n
            }
            return nil
        }
        if let failure { throw failure }
    }

    /// Reserves `length` bytes for a file, so that later writes within them change no metadata (and syncs are
    /// cheaper). Best effort: a filesystem that cannot preallocate just grows the file as it is written.
    static func preallocate(_ fd: Int32, _ length: Int) {
        #if canImport(Glibc)
            _ = posix_fallocate(fd, 0, off_t(length))
        #endif
    }

    /// Makes a file's data durable (`fdatasync`: the data and what is needed to read it back, such as its size).
    static func sync(_ fd: Int32, path: String) throws(StorageFailure) {
        #if canImport(Glibc)
            var result: Int32
            repeat { result = fdatasync(fd) } while result != 0 && errno == EINTR
        #else
            let result = fcntl(fd, F_FULLFSYNC)
        #endif
        guard result == 0 else { throw io("syncing", path) }
    }

    /// Makes the names in a directory durable (after creating, renaming or deleting a file in it).
    static func syncDirectory(_ path: String) throws(StorageFailure) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw io("syncing the directory", path) }
    }

    static func truncate(_ path: String, to length: Int) throws(StorageFailure) {
        let fd = try open(path, O_WRONLY)
        defer { close(fd) }
        guard ftruncate(fd, off_t(length)) == 0 else { throw io("truncating", path) }
        guard fsync(fd) == 0 else { throw io("syncing", path) }
    }

    static func remove(_ path: String) throws(StorageFailure) {
        guard unlink(path) == 0 || errno == ENOENT else { throw io("deleting", path) }
    }

    static func list(_ directory: String) throws(StorageFailure) -> [String] {
        guard let dir = opendir(directory) else { throw io("listing", directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes a small file atomically: a temporary file, synced, then renamed over the target.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws(StorageFailure) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(fd) }
        try writeAll(fd, bytes, path: temporary)
        guard fsync(fd) == 0 else { throw io("syncing", temporary) }
        guard rename(temporary, path) == 0 else { throw io("renaming into place", path) }
        try syncDirectory(directory)
    }
}
