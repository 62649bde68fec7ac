import RaftCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The real file system, through POSIX calls: what a node uses.
public struct PosixFileSystem: FileSystem {
    public init() {}

    static func errorText(_ code: Int32 = errno) -> String {
        String(cString: strerror(code))
    }

    static func failure(_ what: String, _ path: String, code: Int32 = errno) -> StorageFailure {
        if code == ENOSPC || code == EDQUOT {
            return StorageFailure(.noSpace, "\(what) failed: \(errorText(code))", file: path)
        }
        return StorageFailure(.io, "\(what) failed: \(errorText(code))", file: path)
    }

    public func makeDirectory(_ path: String) throws(StorageFailure) -> Bool {
        if mkdir(path, 0o755) == 0 { return true }
        if errno == EEXIST { return false }
        throw Self.failure("creating the directory", path)
    }

    public func open(_ path: String, _ mode: OpenMode) throws(StorageFailure) -> OpenFile {
        let flags: Int32
        switch mode {
        case .read: flags = O_RDONLY
        case .write: flags = O_WRONLY
        case .createNew: flags = O_WRONLY | O_CREAT | O_EXCL
        case .createOrTruncate: flags = O_WRONLY | O_CREAT | O_TRUNC
        }
        return try Self.open(path, flags)
    }

    static func open(_ path: String, _ flags: Int32) throws(StorageFailure) -> OpenFile {
        var fd: Int32
        repeat {
            #if canImport(Glibc)
                fd = Glibc.open(path, flags | O_CLOEXEC, 0o644)
            #else
                fd = Darwin.open(path, flags | O_CLOEXEC, 0o644)
            #endif
        } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw failure("opening", path) }
        return OpenFile(descriptor: fd)
    }

    public func close(_ file: OpenFile) {
        #if canImport(Glibc)
            _ = Glibc.close(file.descriptor)
        #else
            _ = Darwin.close(file.descriptor)
        #endif
    }

    public func write(_ bytes: [UInt8], to file: OpenFile, at offset: Int, path: String) throws(StorageFailure) {
        let failure = bytes.withUnsafeBytes { raw -> StorageFailure? in
            var done = 0
            while done < raw.count {
                let n = pwrite(
                    file.descriptor, raw.baseAddress.map { $0 + done }, raw.count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return Self.failure("writing", path) }
                done += n
            }
            return nil
        }
        if let failure { throw failure }
    }

    public func read(_ path: String, upTo limit: Int) throws(StorageFailure) -> [UInt8] {
        let file = try Self.open(path, O_RDONLY)
        defer { close(file) }
        var stats = stat()
        guard fstat(file.descriptor, &stats) == 0 else { throw Self.failure("reading the size of", path) }
        var bytes = [UInt8](repeating: 0, count: min(Int(stats.st_size), max(0, limit)))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                pread(file.descriptor, raw.baseAddress.map { $0 + done }, raw.count - done, off_t(done))
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Self.failure("reading", path) }
            if n == 0 { break }
            done += n
        }
        if done < bytes.count { bytes.removeLast(bytes.count - done) }
        return bytes
    }

    public func read(_ file: OpenFile, at offset: Int, count: Int, path: String) throws(StorageFailure) -> [UInt8] {
        guard offset >= 0, count >= 0 else {
            throw StorageFailure(.io, "reading \(count) bytes at offset \(offset) failed: invalid range", file: path)
        }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { raw in
                pread(file.descriptor, raw.baseAddress.map { $0 + done }, raw.count - done, off_t(offset + done))
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Self.failure("reading", path) }
            if n == 0 { break }
            done += n
        }
        if done < count { bytes.removeLast(count - done) }
        return bytes
    }

    public func size(of file: OpenFile, path: String) throws(StorageFailure) -> Int {
        var stats = stat()
        guard fstat(file.descriptor, &stats) == 0 else { throw Self.failure("reading the size of", path) }
        return Int(stats.st_size)
    }

    public func syncData(_ file: OpenFile, path: String) throws(StorageFailure) {
        #if canImport(Glibc)
            var result: Int32
            repeat { result = fdatasync(file.descriptor) } while result != 0 && errno == EINTR
        #else
            let result = fcntl(file.descriptor, F_FULLFSYNC)
        #endif
        guard result == 0 else { throw Self.failure("syncing", path) }
    }

    public func syncDirectory(_ path: String) throws(StorageFailure) {
        let file = try Self.open(path, O_RDONLY | O_DIRECTORY)
        defer { close(file) }
        guard fsync(file.descriptor) == 0 else { throw Self.failure("syncing the directory", path) }
    }

    public func rename(_ path: String, to newPath: String) throws(StorageFailure) {
        #if canImport(Glibc)
            let result = Glibc.rename(path, newPath)
        #else
            let result = Darwin.rename(path, newPath)
        #endif
        guard result == 0 else { throw Self.failure("renaming into place", newPath) }
    }

    public func remove(_ path: String) throws(StorageFailure) {
        guard unlink(path) == 0 || errno == ENOENT else { throw Self.failure("deleting", path) }
    }

    public func list(_ directory: String) throws(StorageFailure) -> [String] {
        guard let dir = opendir(directory) else { throw Self.failure("listing", directory) }
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

    public func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public func preallocate(_ file: OpenFile, length: Int, path: String) throws(StorageFailure) {
        #if canImport(Glibc)
            // posix_fallocate returns the error number; it does not set errno.
            let code = posix_fallocate(file.descriptor, 0, off_t(length))
            // A file system that cannot preallocate: the file grows as it is written instead.
            if code == 0 || code == EOPNOTSUPP || code == ENOSYS { return }
            throw Self.failure("preallocating \(length) bytes for", path, code: code)
        #endif
    }

    public func truncate(_ file: OpenFile, to length: Int, path: String) throws(StorageFailure) {
        guard ftruncate(file.descriptor, off_t(length)) == 0 else { throw Self.failure("truncating", path) }
    }

    public func lockExclusively(_ path: String) throws(StorageFailure) -> OpenFile {
        let file = try Self.open(path, O_RDWR | O_CREAT)
        guard flock(file.descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            close(file)
            if code == EWOULDBLOCK { throw StorageFailure(.locked, "the lock is held by another process", file: path) }
            throw Self.failure("locking", path, code: code)
        }
        return file
    }
}
