import Foundation
import RaftCore
import RaftSimulation
import Testing
import RaftTesting

/// The scripted scenarios in `Scripts/*.txt`: each file is run and its output compared with what is written in it.
///
/// When a change of behaviour is intended, run with `RAFT_SCRIPTS_REWRITE=1` to write the new outputs into the
/// files, then read the diff of the files before committing: the outputs are the expected behaviour.
@Suite struct ScenarioScriptTests {
    /// The scripts' directory, next to this file in the source tree (so the rewrite mode can write to it).
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

    static var scriptNames: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".txt") }.sorted()
    }

    static var rewriting: Bool { ProcessInfo.processInfo.environment["RAFT_SCRIPTS_REWRITE"] == "1" }

    @Test func theScriptsAreThere() {
        let names = Self.scriptNames
        for expected in [
            "checkquorum.txt", "fast-failover.txt", "figure8.txt", "joint-consensus.txt", "leader-transfer.txt",
            "learners.txt", "log-repair.txt", "prevote.txt", "single-server-errata.txt", "snapshot-install.txt",
        ] {
            #expect(names.contains(expected), "Scripts/\(expected) is missing (found \(names))")
        }
    }

    @Test(arguments: scriptNames)
    func script(_ name: String) throws {
        let url = Self.directory.appendingPathComponent(name)
        let text = try String(contentsOf: url, encoding: .utf8)
        let script = try ScenarioScript(parsing: text)
        let (actual, diff) = try script.check(name: name)
        guard let diff else { return }
        if Self.rewriting {
            try actual.text.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        Issue.record(
            """
            Scripts/\(name) does not match its expected output. If the change is intended, run the tests with \
            RAFT_SCRIPTS_REWRITE=1 and review the rewritten file.
            \(diff)
            """)
    }

    // MARK: - The runner itself

    static let small = """
        # A three-node election.
        cluster n=3
        ----
        1: follower term=0 vote=none leader=none commit=0 applied=0 last=0@t0 terms=[]
        2: follower term=0 vote=none leader=none commit=0 applied=0 last=0@t0 terms=[]
        3: follower term=0 vote=none leader=none commit=0 applied=0 last=0@t0 terms=[]

        campaign 1
        ----
        1: pre-candidate term=0 leader=none commit=0 last=0@t0

        stabilize
        ----
        1->2 preVote t1 last=0@t0
        1->3 preVote t1 last=0@t0
        2->1 preVoteResponse t1 granted
          1: candidate term=1 leader=none commit=0 last=0@t0
        3->1 preVoteResponse t1 granted
        1->2 requestVote t1 last=0@t0
          2: follower term=1 leader=none commit=0 last=0@t0
        1->3 requestVote t1 last=0@t0
          3: follower term=1 leader=none commit=0 last=0@t0
        2->1 requestVoteResponse t1 granted
          1: leader term=1 leader=1 commit=0 last=1@t1
        3->1 requestVoteResponse t1 granted
        1->2 appendEntries t1 prev=0@t0 commit=0 entries=[1@t1 noop]
          2: follower term=1 leader=1 commit=0 last=1@t1
        1->3 appendEntries t1 prev=0@t0 commit=0 entries=[1@t1 noop]
          3: follower term=1 leader=1 commit=0 last=1@t1
        2->1 appendEntriesResponse t1 ok index=1
          1: leader term=1 leader=1 commit=1 last=1@t1
        3->1 appendEntriesResponse t1 ok index=1
        1->2 commitNotice t1 commit=1
          2: follower term=1 leader=1 commit=1 last=1@t1
        1->3 commitNotice t1 commit=1
          3: follower term=1 leader=1 commit=1 last=1@t1

        propose 2 hello
        ----
        forwarded to 1

        status 2
        ----
        2: follower term=1 vote=1 leader=1 commit=1 applied=1 last=1@t1 terms=[1]
        """

    @Test func aScriptReadsAndPrintsBackTheSameText() throws {
        let script = try ScenarioScript(parsing: Self.small)
        #expect(
            script.blocks.map(\.command) == ["cluster n=3", "campaign 1", "stabilize", "propose 2 hello", "status 2"])
        #expect(script.blocks.first?.preamble == ["# A three-node election."])
        #expect(script.blocks.map(\.line) == [2, 8, 12, 38, 42])
        #expect(script.text == Self.small + "\n")
    }

    @Test func theSmallScriptMatches() throws {
        let (_, diff) = try ScenarioScript(parsing: Self.small).check()
        #expect(diff == nil, "\(diff ?? "")")
    }

    @Test func aWrongExpectedOutputFailsWithADiffThatShowsBothLines() throws {
        // Claim that node 2 learned the commit index 2 instead of 1, and lose a message line.
        let broken = Self.small
            .replacingOccurrences(
                of: "2: follower term=1 vote=1 leader=1 commit=1 applied=1",
                with: "2: follower term=1 vote=1 leader=1 commit=2 applied=1"
            )
            .replacingOccurrences(of: "3->1 preVoteResponse t1 granted\n", with: "")
        #expect(broken != Self.small)
        let (actual, diff) = try ScenarioScript(parsing: broken).check(name: "broken.txt")
        let text = try #require(diff)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.first == "--- expected (broken.txt)")
        // Each line: the marker, its number in the expected text, its number in the actual text, the line.
        #expect(lines.contains("- 43    | 2: follower term=1 vote=1 leader=1 commit=2 applied=1 last=1@t1 terms=[1]"))
        #expect(lines.contains("+    44 | 2: follower term=1 vote=1 leader=1 commit=1 applied=1 last=1@t1 terms=[1]"))
        #expect(lines.contains("+    18 | 3->1 preVoteResponse t1 granted"))
        // Unchanged lines around each difference are shown too, with both numbers.
        #expect(lines.contains("  17 17 |   1: candidate term=1 leader=none commit=0 last=0@t0"))
        #expect(lines.contains("  42 43 | ----"))
        #expect(lines.filter { $0.hasPrefix("@@ ") }.count == 2, "two hunks:\n\(text)")
        // What the runner produced is the original script.
        #expect(actual.text == Self.small + "\n")
    }

    @Test func mistakesInAScriptAreErrorsNotOutput() throws {
        #expect(throws: ScenarioScriptError.self) { try ScenarioScript(parsing: "campaign 1\nno separator\n") }
        for text in [
            "campaign 1\n----\nok\n", "cluster n=3\n----\nok\n\nfrobnicate\n----\nok\n",
            "cluster n=3\n----\nok\n\ncampaign 7\n----\nok\n",
        ] {
            let script = try ScenarioScript(parsing: text)
            #expect(throws: ScenarioScriptError.self) { try script.run() }
        }
    }
}
