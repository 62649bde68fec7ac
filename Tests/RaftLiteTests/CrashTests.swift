import Foundation
import ProcessTesting
import RaftLite
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real `raft-lite node` processes with data directories, killed with SIGKILL again and again while proposals run.
@Suite(.serialized, .clusterSlot) struct CrashTests {
    /// One incarnation's applied entries: "committed #INDEX (term T): VALUE" lines.
    static func committed(_ lines: [String]) -> [(UInt64, String)] {
        lines.compactMap { line in
            guard let range = line.range(of: "] committed #") else { return nil }
            let rest = line[range.upperBound...]
            guard let space = rest.firstIndex(of: " "), let index = UInt64(rest[..<space]),
                let colon = rest.range(of: "): ")
            else { return nil }
            return (index, String(rest[colon.upperBound...]))
        }
    }

    /// "ok #INDEX: VALUE" lines: proposals acknowledged to the client.
    static func acknowledged(_ lines: [String]) -> [(UInt64, String)] {
        lines.compactMap { line in
            guard line.hasPrefix("ok #"), let colon = line.firstIndex(of: ":") else { return nil }
            guard let index = UInt64(line[line.index(line.startIndex, offsetBy: 4)..<colon]) else { return nil }
            return (index, String(line[line.index(colon, offsetBy: 2)...]))
        }
    }

    @Test func killedNodesLoseNoAcknowledgedProposal() async throws {
        let executable = raftLiteExecutable()
        try #require(FileManager.default.isExecutableFile(atPath: executable), "build raft-lite first: \(executable)")
        let scratch = ScratchDirectory("crash")
        let names = ["node0", "node1", "node2"]
        let ports = try FreePorts.reserve(3)
        let config = scratch.path + "/cluster.json"
        let json =
            "{"
            + zip(names, ports).map { "\"\($0)\": {\"ip\": \"127.0.0.1\", \"port\": \($1)}" }.joined(separator: ", ")
            + "}"
        try json.write(toFile: config, atomically: true, encoding: .utf8)
        func start(_ name: String) throws -> ChildProcess {
            try ChildProcess(
                executable,
                [
                    "node", "--config", config, "--id", name, "--data-dir", scratch.path + "/" + name,
                    "--tick-milliseconds", "20",
                ], label: name)
        }
        var nodes = try Dictionary(uniqueKeysWithValues: names.map { ($0, try start($0)) })
        var history: [String: [[String]]] = [:]  // every incarnation's output, per node
        var acks: [(UInt64, String)] = []
        var random = SystemRandomNumberGenerator()
        var kills = 0
        var sent = 0
        let proposer = "node0"

        // Proposals flow into node0 (forwarded to the leader); every 600 ms a random node is killed and restarted,
        // until there were at least 12 kills and 300 acknowledged proposals (or five minutes, on a very busy machine:
        // a CI run with every suite at once made 7 kills in two).
        let deadline = Date().addingTimeInterval(300)
        var nextKill = Date().addingTimeInterval(1.5)
        func acknowledgedSoFar() -> Int { acks.count + Self.acknowledged(nodes[proposer]?.lines ?? []).count }
        while Date() < deadline && (kills < 12 || acknowledgedSoFar() < 300) {
            for _ in 0..<5 {
                if nodes[proposer]?.send("v\(sent)") == true { sent += 1 }
            }
            try await Task.sleep(for: .milliseconds(10))
            if Date() >= nextKill, let victim = names.randomElement(using: &random), let child = nodes[victim] {
                child.kill9()
                kills += 1
                history[victim, default: []].append(child.lines)
                if victim == proposer { acks += Self.acknowledged(child.lines) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 50...400, using: &random)))
                nodes[victim] = try start(victim)
                nextKill = Date().addingTimeInterval(0.6)
            }
        }

        // Faults stop. A final marker must commit everywhere.
        var finalSent = false
        for attempt in 0..<20 where !finalSent {
            finalSent = nodes[proposer]?.send("final-\(attempt)") == true
        }
        let settled = await eventually(.seconds(30)) {
            names.allSatisfy { name in nodes[name]?.lines.contains { $0.contains("): final-") } == true }
        }
        #expect(settled, "the final marker committed on every node")
        for (name, child) in nodes {
            child.closeInput()
            history[name, default: []].append(child.lines)
            if name == proposer {
                _ = await child.waitForExit(seconds: 10)
                acks += Self.acknowledged(child.lines)
            }
        }
        for child in nodes.values { child.kill9() }

        if ProcessInfo.processInfo.environment["CRASH_TEST_DUMP"] != nil {
            for (name, incarnations) in history {
                for (k, lines) in incarnations.enumerated() {
                    try? lines.joined(separator: "\n").write(
                        toFile: "/tmp/crash-\(name)-\(k).log", atomically: true, encoding: .utf8)
                }
            }
        }
        // Every incarnation of every node applied a prefix of one sequence...
        let sequences = history.values.flatMap { $0 }.map(Self.committed)
        let longest = try #require(sequences.max { $0.count < $1.count })
        for sequence in sequences {
            let isPrefix = sequence.count <= longest.count && zip(sequence, longest).allSatisfy { $0 == $1 }
            #expect(isPrefix, "an incarnation applied something else: \(sequence.prefix(3))...")
        }
        // ...and no acknowledged proposal is missing from it, or elsewhere than where it was acknowledged.
        let applied = Dictionary(longest.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for (index, value) in acks {
            #expect(
                applied[index] == value, "acknowledged \(value) at #\(index), applied: \(applied[index] ?? "nothing")")
        }
        #expect(kills >= 12)
        #expect(acks.count >= 300, "enough proposals were acknowledged to make the test meaningful: \(acks.count)")
        print(
            "crash test: \(kills) SIGKILLs, \(sent) proposals sent, \(acks.count) acknowledged, "
                + "\(longest.count) entries applied, none lost")
    }
}
