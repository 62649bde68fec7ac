import NIOConcurrencyHelpers
import RaftCore
import RaftStorage

/// A file system in memory that models the page cache, for power-cut tests of the write-ahead log.
///
/// Every file has durable content and a list of changes not yet synced; every directory has durable names and the
/// operations on its names not yet synced:
///
/// - `write` and `preallocate` (which grows a file with zeros) and `truncate` change what reads see at once, but
///   are volatile until `syncData` of that file, which makes all of them (and the file's size) durable.
/// - Creating, renaming and removing a name are volatile until `syncDirectory` of the directory that holds it.
///   A file whose name never became durable is lost with everything in it, synced or not.
/// - `powerCut(using:)` freezes this file system (every later operation fails with EIO) and returns a new one
///   holding what survives: everything durable; for each unsynced write, either nothing, all of it, a prefix of it,
///   or any subset of its 4 KiB pages (so its pages may reach the disk in any order); each unsynced size change or
///   not; and a prefix of the unsynced directory operations, in the order they were made.
/// - `failAtOperation = k` makes the k-th operation (counting every call that can fail) fail with EIO and freeze
///   the file system, so that a cut can land between a write and its sync.
/// - `capacity` models a full disk: a write or preallocation that would grow the files past it, or creating a file
///   when they already fill it, fails with ENOSPC and changes nothing. Raising it (or removing files) frees space.
///
/// Locks (`lockExclusively`) are held per open file, as `flock` does; a power cut releases them all. Renames must
/// stay within one directory (the log never renames across directories).
public final class SimulatedFileSystem: FileSystem {
    /// The size of a page: the unit in which an unsynced write may partly survive.
    public static let pageSize = 4096

    /// An unsynced write, as a power cut sees it.
    public struct UnsyncedWrite: Sendable, Hashable {
        /// The path the file was opened under.
        public var path: String
        public var offset: Int
        public var count: Int
        /// How many pages the write touches: the valid indexes for `WriteSurvival.pages`.
        public var pages: Int {
            count == 0
                ? 0 : (offset + count - 1) / SimulatedFileSystem.pageSize - offset / SimulatedFileSystem.pageSize + 1
        }
    }

    /// What a power cut keeps of one unsynced write.
    public enum WriteSurvival: Sendable, Hashable {
        case nothing
        case whole
        /// Its first bytes.
        case prefix(Int)
        /// The parts of it in these of its pages (0 is the page its first byte is in).
        case pages(Set<Int>)
    }

    struct Inode: Sendable {
        var isDirectory: Bool
        var content: [UInt8] = []
        var durable: [UInt8] = []
        var unsynced: [Change] = []
        var entries: [String: Int] = [:]
        var durableEntries: [String: Int] = [:]
    }

    enum Change: Sendable {
        case write(offset: Int, bytes: [UInt8], path: String)
        case grow(to: Int)
        case truncate(to: Int)
    }

    struct DirectoryOperation: Sendable {
        var directory: Int
        /// A name linked to an inode (creation, or a rename's new name), or unlinked (nil).
        var changes: [(name: String, inode: Int?)]
    }

    struct OpenEntry: Sendable {
        var inode: Int
        var path: String
        var writable: Bool
    }

    struct State: Sendable {
        var inodes: [Int: Inode] = [0: Inode(isDirectory: true)]
        var nextInode = 1
        var pendingDirectoryOperations: [DirectoryOperation] = []
        var open: [Int32: OpenEntry] = [:]
        var nextDescriptor: Int32 = 3
        var locks: [Int: Int32] = [:]
        var operations = 0
        var failAtOperation: Int?
        var frozen = false
        var capacity: Int?
    }

    private let state: NIOLockedValueBox<State>

    /// An empty file system (just `/`).
    public init() {
        state = NIOLockedValueBox(State())
    }

    private init(state: State) {
        self.state = NIOLockedValueBox(state)
    }

    // MARK: - Knobs and inspection

    /// How many operations that can fail were made so far.
    public var operationCount: Int { state.withLockedValue { $0.operations } }

    /// The number of the operation that fails and freezes the file system (nil: none).
    public var failAtOperation: Int? {
        get { state.withLockedValue { $0.failAtOperation } }
        set { state.withLockedValue { $0.failAtOperation = newValue } }
    }

    /// How many writes to files opened under `prefix` are in the page cache, not yet synced.
    public func unsyncedWrites(toFilesUnder prefix: String = "/") -> Int {
        state.withLockedValue { s in
            s.inodes.values.reduce(0) { total, inode in
                total
                    + inode.unsynced.filter {
                        if case .write(_, _, let path) = $0 { path.hasPrefix(prefix) } else { false }
                    }.count
            }
        }
    }

    /// Whether a power cut (or `failAtOperation`) froze this file system.
    public var isFrozen: Bool { state.withLockedValue { $0.frozen } }

    /// The most bytes all files together may hold (nil: unlimited).
    public var capacity: Int? {
        get { state.withLockedValue { $0.capacity } }
        set { state.withLockedValue { $0.capacity = newValue } }
    }

    /// The bytes all files reachable by name, or still open, hold now.
    public var usedBytes: Int { state.withLockedValue { Self.used($0) } }

    /// A file's content as reads see it now (nil if there is no such file).
    public func contents(of path: String) -> [UInt8]? {
        state.withLockedValue { s in
            guard let id = Self.resolve(path, in: s), let inode = s.inodes[id], !inode.isDirectory else { return nil }
            return inode.content
        }
    }

    /// Replaces a file's content, durably, as if the disk had changed under it (for damage tests). The file must
    /// exist.
    public func setContents(of path: String, to bytes: [UInt8]) {
        state.withLockedValue { s in
            guard let id = Self.resolve(path, in: s), s.inodes[id]?.isDirectory == false else { return }
            s.inodes[id]?.content = bytes
            s.inodes[id]?.durable = bytes
            s.inodes[id]?.unsynced = []
        }
    }

    /// Every file reachable by name, with its full path, sorted.
    public func allFiles() -> [String] {
        state.withLockedValue { s in
            var out: [String] = []
            func walk(_ id: Int, _ prefix: String) {
                guard let inode = s.inodes[id] else { return }
                for (name, child) in inode.entries {
                    guard let c = s.inodes[child] else { continue }
                    if c.isDirectory { walk(child, prefix + "/" + name) } else { out.append(prefix + "/" + name) }
                }
            }
            walk(0, "")
            return out.sorted()
        }
    }

    // MARK: - Power cuts

    /// Cuts the power: this file system freezes, and the returned one holds what survives, chosen with `rng`.
    public func powerCut(using rng: inout some RandomNumberGenerator) -> SimulatedFileSystem {
        var survival: [WriteSurvival] = []
        var sizeChanges: [Bool] = []
        let (writes, sizes, directoryOperations) = state.withLockedValue { s -> ([UnsyncedWrite], Int, Int) in
            s.frozen = true
            var writes: [UnsyncedWrite] = []
            var sizes = 0
            for id in s.inodes.keys.sorted() {
                for change in s.inodes[id]?.unsynced ?? [] {
                    switch change {
                    case .write(let offset, let bytes, let path):
                        writes.append(UnsyncedWrite(path: path, offset: offset, count: bytes.count))
                    case .grow, .truncate: sizes += 1
                    }
                }
            }
            return (writes, sizes, s.pendingDirectoryOperations.count)
        }
        for write in writes {
            switch rng.next() % 4 {
            case 0: survival.append(.nothing)
            case 1: survival.append(.whole)
            case 2: survival.append(.prefix(write.count == 0 ? 0 : Int(rng.next() % UInt64(write.count))))
            default:
                survival.append(.pages(Set((0..<write.pages).filter { _ in rng.next() % 2 == 0 })))
            }
        }
        for _ in 0..<sizes { sizeChanges.append(rng.next() % 2 == 0) }
        let kept = Int(rng.next() % UInt64(directoryOperations + 1))
        var w = 0
        var z = 0
        return cut(
            writes: { _ in
                defer { w += 1 }
                return w < survival.count ? survival[w] : .nothing
            },
            sizeChanges: {
                defer { z += 1 }
                return z < sizeChanges.count ? sizeChanges[z] : false
            },
            directoryOperationsKept: kept)
    }

    /// Cuts the power, keeping of each unsynced write what `writes` says, every unsynced size change if
    /// `keepSizeChanges`, and the first `directoryOperationsKept` unsynced directory operations.
    public func powerCut(
        writes: (UnsyncedWrite) -> WriteSurvival, keepSizeChanges: Bool = true, directoryOperationsKept: Int = .max
    ) -> SimulatedFileSystem {
        state.withLockedValue { $0.frozen = true }
        return cut(writes: writes, sizeChanges: { keepSizeChanges }, directoryOperationsKept: directoryOperationsKept)
    }

    private func cut(
        writes: (UnsyncedWrite) -> WriteSurvival, sizeChanges: () -> Bool, directoryOperationsKept: Int
    ) -> SimulatedFileSystem {
        let old = state.withLockedValue { $0 }
        var next = State()
        next.capacity = old.capacity
        next.nextInode = old.nextInode
        var inodes: [Int: Inode] = [:]
        for id in old.inodes.keys.sorted() {
            guard let inode = old.inodes[id] else { continue }
            var survivor = Inode(isDirectory: inode.isDirectory)
            if inode.isDirectory {
                survivor.entries = inode.durableEntries
            } else {
                var bytes = inode.durable
                for change in inode.unsynced {
                    switch change {
                    case .write(let offset, let data, let path):
                        let write = UnsyncedWrite(path: path, offset: offset, count: data.count)
                        switch writes(write) {
                        case .nothing: break
                        case .whole: Self.put(data[...], at: offset, into: &bytes)
                        case .prefix(let n): Self.put(data.prefix(max(0, min(n, data.count))), at: offset, into: &bytes)
                        case .pages(let pages):
                            let firstPage = offset / Self.pageSize
                            for page in pages.sorted() where page >= 0 && page < write.pages {
                                let start = max(offset, (firstPage + page) * Self.pageSize)
                                let end = min(offset + data.count, (firstPage + page + 1) * Self.pageSize)
                                guard start < end else { continue }
                                Self.put(data[(start - offset)..<(end - offset)], at: start, into: &bytes)
                            }
                        }
                    case .grow(let length):
                        if sizeChanges(), length > bytes.count {
                            bytes.append(contentsOf: [UInt8](repeating: 0, count: length - bytes.count))
                        }
                    case .truncate(let length):
                        if sizeChanges() { Self.resize(&bytes, to: length) }
                    }
                }
                survivor.content = bytes
            }
            inodes[id] = survivor
        }
        for operation in old.pendingDirectoryOperations.prefix(max(0, directoryOperationsKept)) {
            for (name, inode) in operation.changes { inodes[operation.directory]?.entries[name] = inode }
        }
        // Only what can be reached by name survives.
        var reachable: Set<Int> = []
        var stack = [0]
        while let id = stack.popLast() {
            guard reachable.insert(id).inserted, let inode = inodes[id] else { continue }
            stack.append(contentsOf: inode.entries.values)
        }
        for id in reachable {
            guard var inode = inodes[id] else { continue }
            inode.entries = inode.entries.filter { inodes[$0.value] != nil }
            inode.durableEntries = inode.entries
            inode.durable = inode.content
            next.inodes[id] = inode
        }
        return SimulatedFileSystem(state: next)
    }

    private static func put(_ data: ArraySlice<UInt8>, at offset: Int, into bytes: inout [UInt8]) {
        guard !data.isEmpty else { return }
        if bytes.count < offset + data.count {
            bytes.append(contentsOf: [UInt8](repeating: 0, count: offset + data.count - bytes.count))
        }
        bytes.replaceSubrange(offset..<(offset + data.count), with: data)
    }

    private static func resize(_ bytes: inout [UInt8], to length: Int) {
        if bytes.count > length {
            bytes.removeLast(bytes.count - length)
        } else if bytes.count < length {
            bytes.append(contentsOf: [UInt8](repeating: 0, count: length - bytes.count))
        }
    }

    // MARK: - Paths

    private static func components(_ path: String) -> [String] {
        path.split(separator: "/").map(String.init).filter { $0 != "." }
    }

    private static func resolve(_ path: String, in s: State) -> Int? {
        var id = 0
        for name in components(path) {
            guard let inode = s.inodes[id], inode.isDirectory, let child = inode.entries[name] else { return nil }
            id = child
        }
        return id
    }

    /// The directory holding `path`, and the last component.
    private static func parent(_ path: String, in s: State) throws(StorageFailure) -> (Int, String) {
        var parts = components(path)
        guard let name = parts.popLast() else { throw failure("resolving", path, "Invalid argument") }
        guard let id = resolve(parts.joined(separator: "/"), in: s), s.inodes[id]?.isDirectory == true else {
            throw failure("resolving", path, "No such file or directory")
        }
        return (id, name)
    }

    private static func used(_ s: State) -> Int {
        var live: Set<Int> = Set(s.open.values.map(\.inode))
        var seen: Set<Int> = []
        var stack = [0]
        while let id = stack.popLast() {
            guard seen.insert(id).inserted, let inode = s.inodes[id] else { continue }
            stack.append(contentsOf: inode.entries.values)
        }
        live.formUnion(seen)
        return live.reduce(0) { $0 + (s.inodes[$1].map { $0.isDirectory ? 0 : $0.content.count } ?? 0) }
    }

    private static func failure(_ what: String, _ path: String, _ reason: String) -> StorageFailure {
        StorageFailure(.io, "\(what) failed: \(reason)", file: path)
    }

    private static func noSpace(_ what: String, _ path: String) -> StorageFailure {
        StorageFailure(.noSpace, "\(what) failed: no space left on device", file: path)
    }

    /// Counts an operation; fails it if the file system is frozen or this is the operation chosen to fail.
    private static func begin(_ what: String, _ path: String, _ s: inout State) throws(StorageFailure) {
        guard !s.frozen else { throw failure(what, path, "Input/output error (the power was cut)") }
        s.operations += 1
        if s.failAtOperation == s.operations {
            s.frozen = true
            throw failure(what, path, "Input/output error (the power is being cut)")
        }
    }

    private func withState<T>(
        _ what: String, _ path: String, _ body: (inout State) throws(StorageFailure) -> T
    ) throws(StorageFailure) -> T {
        let result: Result<T, StorageFailure> = state.withLockedValue { s in
            do throws(StorageFailure) {
                try Self.begin(what, path, &s)
                return .success(try body(&s))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func link(_ name: String, to inode: Int, in directory: Int, _ s: inout State) {
        s.inodes[directory]?.entries[name] = inode
        s.pendingDirectoryOperations.append(DirectoryOperation(directory: directory, changes: [(name, inode)]))
    }

    private static func createFile(_ path: String, _ s: inout State) throws(StorageFailure) -> Int {
        let (directory, name) = try parent(path, in: s)
        if let capacity = s.capacity, used(s) >= capacity { throw noSpace("creating", path) }
        let id = s.nextInode
        s.nextInode += 1
        s.inodes[id] = Inode(isDirectory: false)
        link(name, to: id, in: directory, &s)
        return id
    }

    private static func openDescriptor(_ inode: Int, _ path: String, writable: Bool, _ s: inout State) -> OpenFile {
        let fd = s.nextDescriptor
        s.nextDescriptor += 1
        s.open[fd] = OpenEntry(inode: inode, path: path, writable: writable)
        return OpenFile(descriptor: fd)
    }

    private static func entry(_ file: OpenFile, _ path: String, _ s: State) throws(StorageFailure) -> OpenEntry {
        guard let entry = s.open[file.descriptor] else { throw failure("using", path, "Bad file descriptor") }
        return entry
    }

    // MARK: - FileSystem

    public func makeDirectory(_ path: String) throws(StorageFailure) -> Bool {
        try withState("creating the directory", path) { (s: inout State) throws(StorageFailure) -> Bool in
            let (directory, name) = try Self.parent(path, in: s)
            if s.inodes[directory]?.entries[name] != nil { return false }
            if let capacity = s.capacity, Self.used(s) >= capacity {
                throw Self.noSpace("creating the directory", path)
            }
            let id = s.nextInode
            s.nextInode += 1
            s.inodes[id] = Inode(isDirectory: true)
            Self.link(name, to: id, in: directory, &s)
            return true
        }
    }

    public func open(_ path: String, _ mode: OpenMode) throws(StorageFailure) -> OpenFile {
        try withState("opening", path) { (s: inout State) throws(StorageFailure) -> OpenFile in
            let existing = Self.resolve(path, in: s)
            if let existing, s.inodes[existing]?.isDirectory == true {
                throw Self.failure("opening", path, "Is a directory")
            }
            switch mode {
            case .read, .write:
                guard let existing else { throw Self.failure("opening", path, "No such file or directory") }
                return Self.openDescriptor(existing, path, writable: mode == .write, &s)
            case .createNew:
                guard existing == nil else { throw Self.failure("opening", path, "File exists") }
                return Self.openDescriptor(try Self.createFile(path, &s), path, writable: true, &s)
            case .createOrTruncate:
                if let existing {
                    s.inodes[existing]?.content = []
                    s.inodes[existing]?.unsynced.append(.truncate(to: 0))
                    return Self.openDescriptor(existing, path, writable: true, &s)
                }
                return Self.openDescriptor(try Self.createFile(path, &s), path, writable: true, &s)
            }
        }
    }

    public func close(_ file: OpenFile) {
        state.withLockedValue { s in
            guard let entry = s.open.removeValue(forKey: file.descriptor) else { return }
            if s.locks[entry.inode] == file.descriptor { s.locks[entry.inode] = nil }
        }
    }

    public func write(_ bytes: [UInt8], to file: OpenFile, at offset: Int, path: String) throws(StorageFailure) {
        try withState("writing", path) { (s: inout State) throws(StorageFailure) in
            let entry = try Self.entry(file, path, s)
            guard entry.writable, offset >= 0 else { throw Self.failure("writing", path, "Bad file descriptor") }
            guard let size = s.inodes[entry.inode]?.content.count else {
                throw Self.failure("writing", path, "Stale file")
            }
            let growth = max(0, offset + bytes.count - size)
            if let capacity = s.capacity, growth > 0, Self.used(s) + growth > capacity {
                throw Self.noSpace("writing", path)
            }
            guard !bytes.isEmpty else { return }
            Self.put(bytes[...], at: offset, into: &s.inodes[entry.inode, default: Inode(isDirectory: false)].content)
            s.inodes[entry.inode]?.unsynced.append(.write(offset: offset, bytes: bytes, path: entry.path))
        }
    }

    public func read(_ path: String, upTo limit: Int) throws(StorageFailure) -> [UInt8] {
        try withState("reading", path) { (s: inout State) throws(StorageFailure) -> [UInt8] in
            guard let id = Self.resolve(path, in: s), let inode = s.inodes[id] else {
                throw Self.failure("opening", path, "No such file or directory")
            }
            guard !inode.isDirectory else { throw Self.failure("reading", path, "Is a directory") }
            return Array(inode.content.prefix(max(0, limit)))
        }
    }

    public func read(_ file: OpenFile, at offset: Int, count: Int, path: String) throws(StorageFailure) -> [UInt8] {
        try withState("reading", path) { (s: inout State) throws(StorageFailure) -> [UInt8] in
            let entry = try Self.entry(file, path, s)
            guard offset >= 0, count >= 0 else { throw Self.failure("reading", path, "Invalid argument") }
            guard let content = s.inodes[entry.inode]?.content else {
                throw Self.failure("reading", path, "Stale file")
            }
            guard offset < content.count else { return [] }
            return Array(content[offset..<min(content.count, offset + min(count, content.count - offset))])
        }
    }

    public func size(of file: OpenFile, path: String) throws(StorageFailure) -> Int {
        try withState("reading the size of", path) { (s: inout State) throws(StorageFailure) -> Int in
            let entry = try Self.entry(file, path, s)
            guard let content = s.inodes[entry.inode]?.content else {
                throw Self.failure("reading the size of", path, "Stale file")
            }
            return content.count
        }
    }

    public func syncData(_ file: OpenFile, path: String) throws(StorageFailure) {
        try withState("syncing", path) { (s: inout State) throws(StorageFailure) in
            let entry = try Self.entry(file, path, s)
            guard var inode = s.inodes[entry.inode] else { return }
            s.inodes[entry.inode] = nil  // so that `inode` is the only reference to its buffers
            // The changes are applied to the durable copy (rather than copying the content), so that a sync costs
            // what was written, not the size of the file.
            for change in inode.unsynced {
                switch change {
                case .write(let offset, let bytes, _): Self.put(bytes[...], at: offset, into: &inode.durable)
                case .grow(let length):
                    if length > inode.durable.count {
                        inode.durable.append(contentsOf: [UInt8](repeating: 0, count: length - inode.durable.count))
                    }
                case .truncate(let length): Self.resize(&inode.durable, to: length)
                }
            }
            inode.unsynced = []
            s.inodes[entry.inode] = inode
        }
    }

    public func syncDirectory(_ path: String) throws(StorageFailure) {
        try withState("syncing the directory", path) { (s: inout State) throws(StorageFailure) in
            guard let id = Self.resolve(path, in: s), s.inodes[id]?.isDirectory == true else {
                throw Self.failure("opening", path, "No such file or directory")
            }
            var remaining: [DirectoryOperation] = []
            for operation in s.pendingDirectoryOperations {
                if operation.directory == id {
                    for (name, inode) in operation.changes { s.inodes[id]?.durableEntries[name] = inode }
                } else {
                    remaining.append(operation)
                }
            }
            s.pendingDirectoryOperations = remaining
        }
    }

    public func rename(_ path: String, to newPath: String) throws(StorageFailure) {
        try withState("renaming into place", newPath) { (s: inout State) throws(StorageFailure) in
            let (from, oldName) = try Self.parent(path, in: s)
            let (to, newName) = try Self.parent(newPath, in: s)
            guard from == to else { throw Self.failure("renaming into place", newPath, "Invalid cross-device link") }
            guard let inode = s.inodes[from]?.entries[oldName] else {
                throw Self.failure("renaming into place", newPath, "No such file or directory")
            }
            guard oldName != newName else { return }
            s.inodes[from]?.entries[oldName] = nil
            s.inodes[from]?.entries[newName] = inode
            s.pendingDirectoryOperations.append(
                DirectoryOperation(directory: from, changes: [(newName, inode), (oldName, nil)]))
        }
    }

    public func remove(_ path: String) throws(StorageFailure) {
        try withState("deleting", path) { (s: inout State) throws(StorageFailure) in
            guard let found = try? Self.parent(path, in: s), let id = s.inodes[found.0]?.entries[found.1] else {
                return
            }
            let (directory, name) = found
            guard s.inodes[id]?.isDirectory == false else { throw Self.failure("deleting", path, "Is a directory") }
            s.inodes[directory]?.entries[name] = nil
            s.pendingDirectoryOperations.append(DirectoryOperation(directory: directory, changes: [(name, nil)]))
        }
    }

    public func list(_ directory: String) throws(StorageFailure) -> [String] {
        try withState("listing", directory) { (s: inout State) throws(StorageFailure) -> [String] in
            guard let id = Self.resolve(directory, in: s), let inode = s.inodes[id], inode.isDirectory else {
                throw Self.failure("listing", directory, "No such file or directory")
            }
            return inode.entries.keys.sorted()
        }
    }

    public func exists(_ path: String) -> Bool {
        state.withLockedValue { !$0.frozen && Self.resolve(path, in: $0) != nil }
    }

    public func preallocate(_ file: OpenFile, length: Int, path: String) throws(StorageFailure) {
        try withState("preallocating", path) { (s: inout State) throws(StorageFailure) in
            let entry = try Self.entry(file, path, s)
            guard let size = s.inodes[entry.inode]?.content.count, length > size else { return }
            if let capacity = s.capacity, Self.used(s) + length - size > capacity {
                throw Self.noSpace("preallocating", path)
            }
            s.inodes[entry.inode]?.content.append(contentsOf: [UInt8](repeating: 0, count: length - size))
            s.inodes[entry.inode]?.unsynced.append(.grow(to: length))
        }
    }

    public func truncate(_ file: OpenFile, to length: Int, path: String) throws(StorageFailure) {
        try withState("truncating", path) { (s: inout State) throws(StorageFailure) in
            let entry = try Self.entry(file, path, s)
            guard entry.writable, length >= 0 else { throw Self.failure("truncating", path, "Invalid argument") }
            guard let size = s.inodes[entry.inode]?.content.count else { return }
            if let capacity = s.capacity, length > size, Self.used(s) + length - size > capacity {
                throw Self.noSpace("truncating", path)
            }
            Self.resize(&s.inodes[entry.inode, default: Inode(isDirectory: false)].content, to: length)
            s.inodes[entry.inode]?.unsynced.append(.truncate(to: length))
        }
    }

    public func lockExclusively(_ path: String) throws(StorageFailure) -> OpenFile {
        try withState("locking", path) { (s: inout State) throws(StorageFailure) -> OpenFile in
            let id: Int
            if let existing = Self.resolve(path, in: s) { id = existing } else { id = try Self.createFile(path, &s) }
            guard s.inodes[id]?.isDirectory == false else { throw Self.failure("locking", path, "Is a directory") }
            if s.locks[id] != nil { throw StorageFailure(.locked, "the lock is held by another process", file: path) }
            let file = Self.openDescriptor(id, path, writable: true, &s)
            s.locks[id] = file.descriptor
            return file
        }
    }
}
