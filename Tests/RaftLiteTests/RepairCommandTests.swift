import Foundation
import ProcessTesting
import RaftCore
import RaftStorage
import Testing

/// `raft-lite repair`, the real binary, on a log damaged in the middle.
@Suite(.clusterSlot) struct RepairCommandTests {
    /// Runs `raft-lite ARGUMENTS` to the end; its exit status and output (stdout and stderr).
    static func run(_ arguments: [String]) async throws -> (Int32, String) {
        let child = try ChildProcess(raftLiteExecutable(), arguments, label: "repair")
        child.closeInput()
        let status = await child.waitForExit(seconds: 60)
        try? await Task.sleep(for: .milliseconds(100))  // the last lines
        return (status ?? -1, child.lines.joined(separator: "\n"))
    }

    @Test func anOperatorSeesTheDamageTheLossAndCutsTheLogSoThatTheNodeStartsAgain() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: raftLiteExecutable()), "build raft-lite first")
        let scratch = ScratchDirectory("repair")
        let dir = scratch.path + "/node0"
        do {
            var options = WriteAheadLog.Options()
            options.segmentBytes = 4096
            let log = try WriteAheadLog(directory: dir, options: options)
            for k in UInt64(0)..<40 {
                let entries = (k * 10 + 1...k * 10 + 10).map {
                    Entry(term: Term(k / 10 + 1), index: LogIndex($0), data: [UInt8](repeating: 1, count: 20))
                }
                try log.persist(
                    entries: entries,
                    hardState: HardState(term: Term(k / 10 + 1), votedFor: NodeID(2), commit: LogIndex(k * 10)))
            }
            log.close()
        }
        let segments = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".log") }
            .sorted()
        try #require(segments.count >= 3)
        let damaged = dir + "/wal/" + segments[1]
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: damaged)))
        bytes[32 + 12 + 40] ^= 0x10  // inside the segment's first record
        try Data(bytes).write(to: URL(fileURLWithPath: damaged))
        #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir) }

        let (status, shown) = try await Self.run(["repair", "--data-dir", dir])
        #expect(status == 1, "\(shown)")
        #expect(shown.contains("damage at offset 32") && shown.contains("--cut-at \(segments[1]):32"), "\(shown)")

        let (planned, plan) = try await Self.run(["repair", "--data-dir", dir, "--cut-at", "\(segments[1]):32"])
        #expect(planned == 0, "\(plan)")
        #expect(plan.contains("would lose") && plan.contains("nothing was changed"), "\(plan)")
        #expect(throws: StorageFailure.self) { try WriteAheadLog(directory: dir) }

        let (cutStatus, cut) = try await Self.run([
            "repair", "--data-dir", dir, "--cut-at", "\(segments[1]):32", "--yes",
        ])
        #expect(cutStatus == 0, "\(cut)")
        #expect(cut.contains("cut done"), "\(cut)")
        let log = try WriteAheadLog(directory: dir)
        let state = log.initialState()
        #expect(state.lastIndex > LogIndex(0) && state.hardState.term > Term(4) && state.hardState.votedFor == nil)

        // While a node holds the directory, a repair is refused.
        let (busy, refused) = try await Self.run(["repair", "--data-dir", dir])
        #expect(busy != 0 && refused.contains("in use"), "\(refused)")
        log.close()
    }
}
