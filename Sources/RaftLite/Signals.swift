import NIOConcurrencyHelpers

/// Resumes a continuation exactly once, whichever of its resumers comes first (even before it is installed).
final class ResumeOnce<Value: Sendable>: Sendable {
    private let state = NIOLockedValueBox<
        (continuation: CheckedContinuation<Value, Never>?, value: Value?, done: Bool)
    >(
        (nil, nil, false))

    func install(_ continuation: CheckedContinuation<Value, Never>) {
        let ready: Value? = state.withLockedValue { s in
            if let value = s.value, !s.done {
                s.done = true
                return value
            }
            s.continuation = continuation
            return nil
        }
        if let ready { continuation.resume(returning: ready) }
    }

    func resume(_ value: Value) {
        let continuation: CheckedContinuation<Value, Never>? = state.withLockedValue { s in
            guard !s.done else { return nil }
            guard let c = s.continuation else {
                if s.value == nil { s.value = value }
                return nil
            }
            s.done = true
            s.continuation = nil
            return c
        }
        continuation?.resume(returning: value)
    }
}

/// A one-time signal with a value, and the callbacks waiting for it.
final class StopSignal: Sendable {
    private let state = NIOLockedValueBox<
        (signalled: Bool, value: RaftNodeError?, waiting: [@Sendable (RaftNodeError?) -> Void])
    >(
        (false, nil, []))

    func signal(_ value: RaftNodeError?) {
        let waiting = state.withLockedValue { s -> [@Sendable (RaftNodeError?) -> Void] in
            guard !s.signalled else { return [] }
            s.signalled = true
            s.value = value
            defer { s.waiting = [] }
            return s.waiting
        }
        for callback in waiting { callback(value) }
    }

    func whenSignalled(_ callback: @escaping @Sendable (RaftNodeError?) -> Void) {
        let ready = state.withLockedValue { s -> (Bool, RaftNodeError?) in
            if !s.signalled { s.waiting.append(callback) }
            return (s.signalled, s.value)
        }
        if ready.0 { callback(ready.1) }
    }
}
