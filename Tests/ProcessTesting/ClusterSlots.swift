import Foundation
import Testing

/// Tests that run real clusters — child processes, sockets, election timers — each take one of a few slots, so that
/// a whole `swift test` run on a small machine does not start thirty clusters at the same moment.
///
/// Swift Testing starts every suite at once. On two cores, the first minute of a run used to have dozens of nodes
/// electing leaders side by side, and tests that wait a few seconds for a connection or a leader failed for want of
/// CPU, not for any fault of what they test. A test waits for its slot before it starts, so its own timeouts count
/// only the time it actually runs. Unit tests and the simulator take no slot.
///
/// `RAFT_TEST_CLUSTER_SLOTS` sets the number of slots (default 3; 0 or less: no limit).
public struct ClusterSlotTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    /// One slot per test case: never for a suite as a whole (that would hold a slot through all its tests) and never
    /// twice for one test (the function and its case), which could wait forever for a second slot.
    public func scopeProvider(for test: Test, testCase: Test.Case?) -> ClusterSlotTrait? {
        test.isSuite || testCase == nil ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        await ClusterSlots.shared.acquire()
        do {
            try await function()
        } catch {
            await ClusterSlots.shared.release()
            throw error
        }
        await ClusterSlots.shared.release()
    }
}

extension Trait where Self == ClusterSlotTrait {
    /// The test runs a real cluster: it waits for one of a few slots shared by the whole run (see `ClusterSlotTrait`).
    public static var clusterSlot: ClusterSlotTrait { ClusterSlotTrait() }
}

/// A counting semaphore for the whole test process, first come first served.
actor ClusterSlots {
    static let shared = ClusterSlots(limit: ClusterSlots.configuredLimit())

    private let limit: Int
    private var inUse = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = limit }

    static func configuredLimit() -> Int {
        guard let text = ProcessInfo.processInfo.environment["RAFT_TEST_CLUSTER_SLOTS"] else { return 3 }
        guard let value = Int(text) else { return 3 }
        return value <= 0 ? Int.max : value
    }

    func acquire() async {
        if inUse < limit {
            inUse += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            inUse -= 1
        } else {
            // The slot passes straight to the next test: `inUse` stays the same.
            waiting.removeFirst().resume()
        }
    }
}
