import NIOCore
import RaftCore

/// The streams a node feeds; they outlive the runtime (they may be subscribed before `start()`). Touched only on the
/// node's loop.
final class Observers {
    private(set) var leadership: [UInt64: AsyncStream<LeadershipChange>.Continuation] = [:]
    private(set) var entries: [UInt64: AsyncStream<CommittedEntry>.Continuation] = [:]
    private(set) var health: [UInt64: AsyncStream<MemberHealthChange>.Continuation] = [:]
    private(set) var finished = false
    private var next: UInt64 = 0

    func add(leadership continuation: AsyncStream<LeadershipChange>.Continuation) -> UInt64 {
        next += 1
        leadership[next] = continuation
        return next
    }

    func add(entries continuation: AsyncStream<CommittedEntry>.Continuation) -> UInt64 {
        next += 1
        entries[next] = continuation
        return next
    }

    func add(health continuation: AsyncStream<MemberHealthChange>.Continuation) -> UInt64 {
        next += 1
        health[next] = continuation
        return next
    }

    func remove(_ key: UInt64) {
        leadership[key] = nil
        entries[key] = nil
        health[key] = nil
    }

    /// Hands a change of a member's health to every health stream.
    func publish(_ change: MemberHealthChange) {
        for continuation in health.values { continuation.yield(change) }
    }

    /// Hands a change of leadership to every leadership stream.
    func publish(_ change: LeadershipChange) {
        for continuation in leadership.values { continuation.yield(change) }
    }

    /// Hands an applied entry to every stream of committed entries.
    func publish(_ entry: CommittedEntry) {
        for continuation in entries.values { continuation.yield(entry) }
    }

    func finish() {
        finished = true
        for continuation in leadership.values { continuation.finish() }
        for continuation in entries.values { continuation.finish() }
        for continuation in health.values { continuation.finish() }
        leadership.removeAll()
        entries.removeAll()
        health.removeAll()
    }
}

/// Subscribes streams to a node's `Observers` from any thread: the subscription happens on the node's loop, and a
/// stream its reader drops is unsubscribed there too.
struct NodeStreams: Sendable {
    let eventLoop: any EventLoop
    let observers: NIOLoopBoundBox<Observers>

    /// A stream of leadership changes; `current` (called on the loop) gives its first element, if the node runs.
    func leadershipChanges(current: @escaping @Sendable () -> LeadershipChange?) -> AsyncStream<LeadershipChange> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: LeadershipChange.self, bufferingPolicy: .bufferingNewest(64))
        eventLoop.execute {
            let observers = self.observers.value
            guard !observers.finished else { return continuation.finish() }
            let key = observers.add(leadership: continuation)
            if let now = current() { continuation.yield(now) }
            continuation.onTermination = unsubscribe(key)
        }
        return stream
    }

    /// A stream of committed entries that keeps the newest `buffer` unread ones.
    func committedEntries(buffer: Int) -> AsyncStream<CommittedEntry> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: CommittedEntry.self, bufferingPolicy: .bufferingNewest(max(1, buffer)))
        eventLoop.execute {
            let observers = self.observers.value
            guard !observers.finished else { return continuation.finish() }
            let key = observers.add(entries: continuation)
            continuation.onTermination = unsubscribe(key)
        }
        return stream
    }

    /// A stream of changes in the members' health.
    func healthChanges() -> AsyncStream<MemberHealthChange> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: MemberHealthChange.self, bufferingPolicy: .bufferingNewest(256))
        eventLoop.execute {
            let observers = self.observers.value
            guard !observers.finished else { return continuation.finish() }
            let key = observers.add(health: continuation)
            continuation.onTermination = unsubscribe(key)
        }
        return stream
    }

    /// What a stream does when it ends: leave the observers, on the loop, unless the node is gone.
    private func unsubscribe<Element>(_ key: UInt64)
        -> @Sendable (AsyncStream<Element>.Continuation.Termination) -> Void
    {
        { [weak observers, eventLoop] _ in
            guard let observers else { return }
            eventLoop.execute { observers.value.remove(key) }
        }
    }
}
