import Foundation
import RaftCore

/// One client operation on one key of a register store, as a client saw it.
public struct HistoryOperation: Sendable, Hashable, CustomStringConvertible {
    public enum Call: Sendable, Hashable {
        case read
        case write(String)
        case compareAndSet(expected: String, new: String)
    }

    public enum Outcome: Sendable, Hashable {
        /// A read that returned this value (nil: the key had none).
        case read(String?)
        /// A write, or a compare-and-set that replaced the value.
        case ok
        /// A compare-and-set that found another value.
        case casFailed
        /// The operation certainly did not take effect (refused before being sent, or a definite error).
        case failed
        /// The client does not know: it may have taken effect at any time after its invocation, or never.
        case unknown
    }

    public var client: Int
    public var key: String
    public var call: Call
    public var outcome: Outcome
    /// When the client sent it and when it learned the outcome (nanoseconds, one monotonic clock).
    public var invoked: Int64
    public var completed: Int64
    /// The node the client sent it to (nil if not recorded).
    public var node: String?

    public init(
        client: Int, key: String, call: Call, outcome: Outcome, invoked: Int64, completed: Int64, node: String? = nil
    ) {
        self.client = client
        self.key = key
        self.call = call
        self.outcome = outcome
        self.invoked = invoked
        self.completed = completed
        self.node = node
    }

    public var description: String {
        let c: String
        switch call {
        case .read: c = "read"
        case .write(let v): c = "write \(v)"
        case .compareAndSet(let e, let n): c = "cas \(e)->\(n)"
        }
        let o: String
        switch outcome {
        case .read(let v): o = "-> \(v ?? "nil")"
        case .ok: o = "ok"
        case .casFailed: o = "failed (value differs)"
        case .failed: o = "failed"
        case .unknown: o = "unknown"
        }
        let ms = { (t: Int64) in String(format: "%.3f", Double(t) / 1e6) }
        return
            "client \(client)\(node.map { " at \($0)" } ?? "") [\(ms(invoked)) ms .. \(outcome == .unknown ? "?" : ms(completed)) ms] \(key): \(c) \(o)"
    }
}

/// The verdict on one key's history.
public struct LinearizabilityResult: Sendable {
    public var key: String
    public var linearizable: Bool
    public var operations: Int
    /// When not linearizable: the operations around the point where every attempted order failed.
    public var explanation: [String]
    /// States the search visited (a measure of its work).
    public var statesExplored: Int
}

/// Decides whether a history of reads, writes and compare-and-sets on registers could have come from a single
/// correct register per key: the Wing–Gong–Lowe search with memoization of (set of operations linearized, register
/// value), as Knossos and Porcupine do it. Keys are independent, so each key's history is checked on its own.
///
/// Operations with an unknown outcome complete "at infinity": they may be linearized at any point after their
/// invocation, including after everything else (which, for a write, is the same as never). Unknown reads constrain
/// nothing and are left out; definitely failed operations are left out.
public enum LinearizabilityChecker {
    public static func check(_ history: [HistoryOperation]) -> [LinearizabilityResult] {
        let byKey = Dictionary(grouping: history, by: \.key)
        return byKey.keys.sorted().map { key in checkKey(key, byKey[key] ?? []) }
    }

    /// What an operation does to the register, for the search. Values are numbered (0 is "no value"), so that the
    /// search hashes integers, not strings.
    private enum Step {
        case read(Int)
        case write(Int)
        case casSucceeded(expected: Int, new: Int)
        case casFailed(expected: Int)
        case casUnknown(expected: Int, new: Int)

        /// Whether the operation can take effect on a register holding `state`, and the state after it.
        func apply(_ state: Int) -> (Bool, Int) {
            switch self {
            case .read(let value): return (state == value, state)
            case .write(let value): return (true, value)
            case .casSucceeded(let expected, let new): return state == expected ? (true, new) : (false, state)
            case .casFailed(let expected): return (state != expected, state)
            case .casUnknown(let expected, let new): return state == expected ? (true, new) : (true, state)
            }
        }
    }

    private struct Op {
        var step: Step
        var invoked: Int64
        var completed: Int64  // Int64.max for unknown
        var original: HistoryOperation
    }

    /// A node of the doubly linked list of call and return events.
    private final class Event {
        let op: Int
        let isCall: Bool
        var previous: Event?
        var next: Event?
        /// For a call: its return.
        var match: Event?

        init(op: Int, isCall: Bool) {
            self.op = op
            self.isCall = isCall
        }
    }

    /// The set of operations linearized so far, as a 128-bit Zobrist hash (each operation toggles two random
    /// words in), with the register's value: what the search memoizes. Two different sets collide with probability
    /// 2^-128 per comparison, far below any other source of error.
    private struct CacheKey: Hashable {
        var h1: UInt64
        var h2: UInt64
        var state: Int
    }

    static func checkKey(_ key: String, _ history: [HistoryOperation]) -> LinearizabilityResult {
        var ops: [Op] = []
        var numbers: [String: Int] = [:]
        func number(_ value: String?) -> Int {
            guard let value else { return 0 }
            if let n = numbers[value] { return n }
            let n = numbers.count + 1
            numbers[value] = n
            return n
        }
        for h in history {
            let step: Step
            switch (h.call, h.outcome) {
            case (_, .failed), (.read, .unknown): continue
            case (.read, .read(let value)): step = .read(number(value))
            case (.write(let value), .ok), (.write(let value), .unknown): step = .write(number(value))
            case (.compareAndSet(let e, let n), .ok): step = .casSucceeded(expected: number(e), new: number(n))
            case (.compareAndSet(let e, _), .casFailed): step = .casFailed(expected: number(e))
            case (.compareAndSet(let e, let n), .unknown): step = .casUnknown(expected: number(e), new: number(n))
            default: continue  // an outcome that does not fit its call: not produced by the harness
            }
            ops.append(
                Op(step: step, invoked: h.invoked, completed: h.outcome == .unknown ? .max : h.completed, original: h))
        }
        guard !ops.isEmpty else {
            return LinearizabilityResult(
                key: key, linearizable: true, operations: 0, explanation: [], statesExplored: 0)
        }

        // Events in time order; at equal times, calls before returns (overlapping, the lenient reading).
        var events: [(time: Int64, isCall: Bool, op: Int)] = []
        for (k, op) in ops.enumerated() {
            events.append((op.invoked, true, k))
            events.append((op.completed, false, k))
        }
        events.sort { a, b in a.time != b.time ? a.time < b.time : (a.isCall && !b.isCall) }
        let head = Event(op: -1, isCall: false)
        var tail = head
        var calls: [Int: Event] = [:]
        for e in events {
            let node = Event(op: e.op, isCall: e.isCall)
            node.previous = tail
            tail.next = node
            tail = node
            if e.isCall { calls[e.op] = node } else { calls[e.op]?.match = node }
        }

        func lift(_ call: Event) {
            call.previous?.next = call.next
            call.next?.previous = call.previous
            if let ret = call.match {
                ret.previous?.next = ret.next
                ret.next?.previous = ret.previous
            }
        }
        func unlift(_ call: Event) {
            if let ret = call.match {
                ret.previous?.next = ret
                ret.next?.previous = ret
            }
            call.previous?.next = call
            call.next?.previous = call
        }

        var zobrist = SplitMix64(seed: 0x5EED)
        let z1 = ops.map { _ in zobrist.next() }
        let z2 = ops.map { _ in zobrist.next() }
        var h1: UInt64 = 0
        var h2: UInt64 = 0
        var cache: Set<CacheKey> = [CacheKey(h1: 0, h2: 0, state: 0)]
        cache.reserveCapacity(1 << 16)
        var stack: [(Event, Int)] = []
        var state = 0
        var entry = head.next
        var deepest = 0
        var stuckAt = 0
        var explored = 0
        while let current = entry {
            if current.isCall {
                explored += 1
                let (ok, newState) = ops[current.op].step.apply(state)
                if ok {
                    let n1 = h1 ^ z1[current.op]
                    let n2 = h2 ^ z2[current.op]
                    if cache.insert(CacheKey(h1: n1, h2: n2, state: newState)).inserted {
                        stack.append((current, state))
                        state = newState
                        h1 = n1
                        h2 = n2
                        lift(current)
                        entry = head.next
                        if stack.count > deepest {
                            deepest = stack.count
                        }
                        continue
                    }
                }
                entry = current.next
            } else {
                // A return whose call is not linearized yet: every order tried so far fails here; back up.
                if stack.count >= deepest { stuckAt = current.op }
                guard let (call, previousState) = stack.popLast() else {
                    return LinearizabilityResult(
                        key: key, linearizable: false, operations: ops.count,
                        explanation: explain(ops, stuck: stuckAt), statesExplored: explored)
                }
                state = previousState
                h1 ^= z1[call.op]
                h2 ^= z2[call.op]
                unlift(call)
                entry = call.next
            }
        }
        return LinearizabilityResult(
            key: key, linearizable: true, operations: ops.count, explanation: [], statesExplored: explored)
    }

    /// The operations overlapping the one no linearization could fit, in invocation order.
    private static func explain(_ ops: [Op], stuck: Int) -> [String] {
        let culprit = ops[stuck]
        let window = ops.enumerated().filter { _, op in
            op.invoked <= culprit.completed && op.completed >= culprit.invoked - 50_000_000
        }.sorted { $0.1.invoked < $1.1.invoked }
        var lines = ["no order of the operations explains: \(culprit.original)"]
        lines.append("operations overlapping it (and up to 50 ms before), by invocation:")
        for (_, op) in window.prefix(40) { lines.append("  " + op.original.description) }
        if window.count > 40 { lines.append("  ... \(window.count - 40) more") }
        return lines
    }
}
