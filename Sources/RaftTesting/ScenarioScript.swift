import RaftCore

/// Scripted scenarios with their expected output, in the style of etcd raft's datadriven interaction tests
/// (`testdata/*.txt`).
///
/// A script is a sequence of blocks. Each block is a command line, a line `----`, and the command's output up to
/// the next blank line:
///
///     # Comment lines (and blank lines) before a command are kept as they are.
///     campaign 1
///     ----
///     1: pre-candidate term=0 leader=none commit=0 last=0@t0
///
/// The runner executes the commands against a `LockstepCluster` and produces the same text with the outputs it
/// got; a test compares that with the checked-in file. Commands (node ids are plain numbers):
///
/// - `cluster n=3 [prevote=true] [checkquorum=true] [election=10] [heartbeat=1] [max-entries=N] [max-inflight=N]
///   [forward=true] [fastfailover=true]` — a new cluster of voters 1...n (any earlier one is discarded). Prints every node's status.
/// - `campaign ID` — the node starts an election now (a pre-vote poll first, if enabled).
/// - `propose ID DATA` — a client proposes DATA (as UTF-8) on the node. Prints where it went.
/// - `tick ID [N]`, `tick-all [N]` — N ticks of one node, or N rounds of one tick of every live node in id order.
/// - `deliver [N]` — delivers the N oldest messages in flight (1 by default), one line each; `stabilize` delivers
///   until nothing is in flight. A message cut by a partition or a `drop` rule prints as `dropped …`, one to a
///   crashed node as `lost …`.
/// - `partition GROUP...` — each GROUP is a comma-separated list of ids; messages between nodes of different groups
///   are dropped. The nodes not named form one more group. `isolate ID` cuts one node off from all the others.
/// - `drop FROM TO` — also drops every message from FROM to TO (either may be `*`). `heal` removes all cuts.
/// - `crash ID`, `restart ID` — a node loses its volatile state (messages in flight to it are lost) and comes back
///   from its storage (and its latest snapshot).
/// - `snapshot ID [MARGIN]` — the node snapshots what it has applied and compacts its log (in memory and storage)
///   up to MARGIN entries (0 by default) before the snapshot. A leader then sends the snapshot
///   (`installSnapshot`) to a follower that needs entries it no longer holds; in this lockstep cluster the message
///   stands for the whole transfer, bytes included.
/// - `status [ID...]`, `log [ID...]`, `applied [ID...]`, `inflight` — what nodes know, hold and applied (all nodes
///   by default, in id order), and the messages waiting. `progress ID` — a leader's view of each follower (the
///   index known to match, the next to send, and whether it probes or streams).
///
/// Membership (thesis chapter 4; `cluster ... fastfailover=true` turns on `RaftConfiguration.fastFailover`):
///
/// - `add-node ID` — a new node joins the lockstep cluster: an empty log, and the bootstrap configuration (voters
///   1...n, which does not name it). It takes part once a leader adds it. Prints its status.
/// - `conf ID STEP... [auto|explicit|simple]` — node ID proposes a `ConfigChange`; a STEP is `vN` (add voter N or
///   promote learner N), `lN` (add learner N, or demote voter N) or `rN` (remove N); the transition is `auto` by
///   default. `conf ID leave` proposes leaving a joint configuration. Prints `appended at INDEX`, or
///   `refused: CODE` (the `MembershipError` code, and its reason or leader hint if it has one).
/// - `transfer ID [TARGET]` — leader ID hands leadership to TARGET (or to the most up-to-date voter). Prints
///   `transferring to N`, or `refused: CODE`.
/// - `conn-lost ID PEER` — node ID's shell reports its connection to PEER lost (`Raft.connectionLost(to:)`).
///
/// Once a script has used one of these commands, `status` lines end with the node's membership
/// (`Membership.description`: `voters=(1,2,3)`, `voters=(1,2,3,4)&&(1,2,3) autoleave`, ` learners=(4)`, …) and
/// `transferee=N` while a transfer is under way.
///
/// After every command that can change a node (and after each delivered message, indented under it) the runner
/// prints a line for each node whose role, term, leader, commit index or last entry changed:
/// `ID: ROLE term=T leader=L commit=C last=INDEX@tTERM`, followed by `conf: MEMBERSHIP` if the membership in effect
/// on the node changed and `transferee=N` (or `none`) if the leader's transfer began or ended. Entries print as
/// `INDEX@tTERM` followed by `noop`, their data, or `conf` and the change. An empty output prints as `ok`.
public struct ScenarioScript: Sendable, Hashable {
    /// One command with its output.
    public struct Block: Sendable, Hashable {
        /// The comment and blank lines before the command, as written.
        public var preamble: [String]
        public var command: String
        public var output: [String]
        /// The command's line number in the script (from 1).
        public var line: Int
    }

    public var blocks: [Block]
    /// Lines after the last block (comments, usually none).
    public var trailer: [String]

    public static let separator = "----"

    /// Reads a script; its outputs are the expected ones.
    public init(parsing text: String) throws(ScenarioScriptError) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var blocks: [Block] = []
        var pending: [String] = []
        var k = 0
        while k < lines.count {
            let line = lines[k]
            let trimmed = line.trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") {
                pending.append(line)
                k += 1
                continue
            }
            guard k + 1 < lines.count, lines[k + 1].trimmingSpaces == Self.separator else {
                throw .syntax(line: k + 1, "the command `\(trimmed)` is not followed by a line `\(Self.separator)`")
            }
            var output: [String] = []
            var j = k + 2
            while j < lines.count, !lines[j].trimmingSpaces.isEmpty {
                output.append(lines[j])
                j += 1
            }
            blocks.append(Block(preamble: pending, command: trimmed, output: output, line: k + 1))
            pending = []
            // The blank line that ends the output belongs to the block.
            k = j + 1
        }
        // A file ends with a newline, which leaves one empty string at the end of the split.
        while pending.last?.trimmingSpaces.isEmpty == true { pending.removeLast() }
        self.blocks = blocks
        self.trailer = pending
    }

    /// The script as text: every block's preamble, command, separator and output, and a blank line between blocks.
    public var text: String {
        var lines: [String] = []
        for (k, block) in blocks.enumerated() {
            lines.append(contentsOf: block.preamble)
            lines.append(block.command)
            lines.append(Self.separator)
            lines.append(contentsOf: block.output)
            if k < blocks.count - 1 || !trailer.isEmpty { lines.append("") }
        }
        lines.append(contentsOf: trailer)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Runs every command from a fresh start and returns the script with the outputs it produced.
    /// - Throws: `ScenarioScriptError` for a command the runner does not know or cannot parse (a mistake in the
    ///   script, not an outcome of the scenario).
    public func run() throws(ScenarioScriptError) -> ScenarioScript {
        var runner = ScenarioRunner()
        var result = self
        for k in result.blocks.indices {
            let output = try runner.execute(result.blocks[k].command, line: result.blocks[k].line)
            result.blocks[k].output = output.isEmpty ? ["ok"] : output
        }
        return result
    }

    /// Runs the script and compares its output with the expected one.
    /// - Returns: nil if they match, or a line diff of the whole text (expected against actual) if not.
    public func check(name: String = "script") throws(ScenarioScriptError) -> (actual: ScenarioScript, diff: String?) {
        let actual = try run()
        return (actual, LineDiff.unified(expected: text, actual: actual.text, name: name))
    }
}

/// A mistake in a script: a command that cannot be run.
public enum ScenarioScriptError: Error, Hashable, Sendable, CustomStringConvertible {
    case syntax(line: Int, String)

    public var description: String {
        switch self {
        case .syntax(let line, let why): "script line \(line): \(why)"
        }
    }
}

// MARK: - Running commands

/// The state of a running script: the cluster and the cuts in its network.
struct ScenarioRunner {
    private var cluster: LockstepCluster?
    /// The group of each node named in the current partition; nodes not named are in group 0.
    private var groups: [NodeID: Int] = [:]
    /// One-way cuts (nil = any node).
    private var cuts: [(from: NodeID?, to: NodeID?)] = []
    private var line = 0
    /// Whether `status` shows each node's membership (from the first membership command on).
    private var showMembership = false

    private typealias Failure = ScenarioScriptError

    mutating func execute(_ command: String, line: Int) throws(ScenarioScriptError) -> [String] {
        self.line = line
        let words = command.split(separator: " ").map(String.init)
        guard let name = words.first else { return [] }
        let args = Array(words.dropFirst())
        if name == "cluster" { return try makeCluster(args) }
        guard var cluster else { throw fail("`\(name)` needs a `cluster` first") }
        defer { self.cluster = cluster }
        let before = views(cluster)
        var out: [String] = []
        switch name {
        case "campaign":
            let id = try node(args, at: 0, in: cluster, arity: 1)
            cluster.campaign(id)
        case "propose":
            guard args.count >= 2 else { throw fail("usage: propose ID DATA") }
            let id = try node(args, at: 0, in: cluster, arity: args.count)
            let data = Array(args.dropFirst().joined(separator: " ").utf8)
            do {
                switch try cluster.propose(id, data) {
                case .appended(let range, let term)?:
                    out.append("appended at \(range.lowerBound.rawValue) in term \(term.rawValue)")
                case .forwarded(let leader)?:
                    out.append("forwarded to \(leader.rawValue)")
                case nil:
                    out.append("\(id.rawValue) is down")
                }
            } catch {
                out.append("refused: \(error)")
            }
        case "tick":
            let id = try node(args, at: 0, in: cluster, arity: 1...2)
            let times = try count(args, at: 1, default: 1)
            for k in 0..<times {
                let previous = views(cluster)
                cluster.tick(id)
                out += changes(from: previous, to: views(cluster), prefix: times > 1 ? "tick \(k + 1): " : "")
            }
            return out
        case "tick-all":
            guard args.count <= 1 else { throw fail("usage: tick-all [N]") }
            let times = try count(args, at: 0, default: 1)
            for k in 0..<times {
                let previous = views(cluster)
                cluster.tickAll()
                out += changes(from: previous, to: views(cluster), prefix: times > 1 ? "tick \(k + 1): " : "")
            }
            return out
        case "deliver":
            guard args.count <= 1 else { throw fail("usage: deliver [N]") }
            let times = try count(args, at: 0, default: 1)
            var delivered = 0
            while delivered < times, let lines = deliverOne(&cluster) {
                out += lines
                delivered += 1
            }
            if delivered < times { out.append("nothing in flight") }
            return out
        case "stabilize":
            guard args.isEmpty else { throw fail("usage: stabilize") }
            let limit = 10_000
            var delivered = 0
            while delivered < limit, let lines = deliverOne(&cluster) {
                out += lines
                delivered += 1
            }
            if delivered == limit { out.append("stopped after \(limit) messages; \(cluster.inFlight.count) in flight") }
            return out
        case "partition":
            guard !args.isEmpty else { throw fail("usage: partition GROUP... (a group is a list like 1,2)") }
            var assigned: [NodeID: Int] = [:]
            for (k, group) in args.enumerated() {
                for word in group.split(separator: ",") {
                    let id = try parseNode(String(word), in: cluster)
                    if assigned[id] != nil { throw fail("node \(id.rawValue) is in two groups") }
                    assigned[id] = k + 1
                }
            }
            groups = assigned
            installDrop(&cluster)
            return [describeCuts(cluster)]
        case "isolate":
            let id = try node(args, at: 0, in: cluster, arity: 1)
            groups = [id: 1]
            installDrop(&cluster)
            return [describeCuts(cluster)]
        case "drop":
            guard args.count == 2 else { throw fail("usage: drop FROM TO (either may be *)") }
            let from = args[0] == "*" ? nil : try parseNode(args[0], in: cluster)
            let to = args[1] == "*" ? nil : try parseNode(args[1], in: cluster)
            cuts.append((from, to))
            installDrop(&cluster)
            return [describeCuts(cluster)]
        case "heal":
            guard args.isEmpty else { throw fail("usage: heal") }
            groups = [:]
            cuts = []
            installDrop(&cluster)
            return [describeCuts(cluster)]
        case "crash":
            let id = try node(args, at: 0, in: cluster, arity: 1)
            cluster.crash(id)
        case "restart":
            let id = try node(args, at: 0, in: cluster, arity: 1)
            guard cluster[id] == nil else { return ["\(id.rawValue) is running"] }
            do {
                try cluster.restart(id)
            } catch {
                return ["restart failed: \(error)"]
            }
        case "snapshot":
            let id = try node(args, at: 0, in: cluster, arity: 1...2)
            let margin = try count(args, at: 1, default: 0)
            guard cluster[id] != nil else { return ["\(id.rawValue) is down"] }
            guard let (meta, start) = cluster.snapshot(id, margin: UInt64(margin)) else {
                return ["\(id.rawValue): nothing new to snapshot"]
            }
            out.append(
                "\(id.rawValue): snapshot at \(meta.index.rawValue)@t\(meta.term.rawValue); "
                    + "log starts after \(start.rawValue)")
        case "status":
            return try nodes(args, in: cluster).map { status($0, in: cluster) }
        case "log":
            return try nodes(args, in: cluster).map { id in
                guard let log = cluster[id]?.log else { return "\(id.rawValue): down" }
                var entries: [String] = []
                var index = log.firstIndex
                while index <= log.lastIndex, let entry = log.entry(at: index) {
                    entries.append(describe(entry))
                    index = index.next
                }
                return "\(id.rawValue): " + (entries.isEmpty ? "(empty)" : entries.joined(separator: ", "))
            }
        case "applied":
            return try nodes(args, in: cluster).map { id in
                let entries = cluster.applied[id] ?? []
                return "\(id.rawValue): "
                    + (entries.isEmpty ? "(nothing)" : entries.map(describe).joined(separator: ", "))
            }
        case "progress":
            let id = try node(args, at: 0, in: cluster, arity: 1)
            guard let leader = cluster[id], leader.role == .leader else { return ["\(id.rawValue) is not leader"] }
            return cluster.ids.filter { $0 != id }.map { peer in
                guard let p = leader.progress(of: peer) else { return "\(peer.rawValue): unknown" }
                let state = p.state == .snapshot ? "snapshot pending=\(p.pendingSnapshot.rawValue)" : "\(p.state)"
                return "\(peer.rawValue): match=\(p.match.rawValue) next=\(p.next.rawValue) \(state)"
            }
        case "inflight":
            guard args.isEmpty else { throw fail("usage: inflight") }
            return cluster.inFlight.map(describe)
        case "add-node":
            guard args.count == 1, let raw = UInt64(args[0]), raw > 0 else { throw fail("usage: add-node ID") }
            let id = NodeID(raw)
            guard cluster[id] == nil, !cluster.ids.contains(id) else { throw fail("node \(raw) already exists") }
            showMembership = true
            do {
                try cluster.addNode(id)
            } catch {
                throw fail("cannot add node \(raw): \(error)")
            }
            return [status(id, in: cluster)]
        case "conf":
            guard args.count >= 2 else { throw fail("usage: conf ID STEP... [auto|explicit|simple] | conf ID leave") }
            let id = try parseNode(args[0], in: cluster)
            let change = try configChange(Array(args.dropFirst()))
            showMembership = true
            do {
                guard let index = try cluster.proposeConfigChange(id, change) else { return ["\(id.rawValue) is down"] }
                out.append("appended at \(index.rawValue)")
            } catch {
                out.append(refusal(error))
            }
        case "transfer":
            let id = try node(args, at: 0, in: cluster, arity: 1...2)
            let target = args.count == 2 ? try parseNode(args[1], in: cluster) : nil
            showMembership = true
            do {
                guard let chosen = try cluster.transferLeadership(id, to: target) else {
                    return ["\(id.rawValue) is down"]
                }
                out.append("transferring to \(chosen.rawValue)")
            } catch {
                out.append(refusal(error))
            }
        case "conn-lost":
            let id = try node(args, at: 0, in: cluster, arity: 2)
            let peer = try parseNode(args[1], in: cluster)
            showMembership = true
            cluster.connectionLost(id, to: peer)
        default:
            throw fail("unknown command `\(name)`")
        }
        return out + changes(from: before, to: views(cluster), prefix: "")
    }

    /// The `cluster` settings that switch a behaviour on or off, and those that take a number.
    private nonisolated(unsafe) static let flagSettings: [String: WritableKeyPath<RaftConfiguration, Bool>] = [
        "prevote": \.preVote, "checkquorum": \.checkQuorum, "forward": \.forwardProposals,
        "fastfailover": \.fastFailover,
    ]
    private nonisolated(unsafe) static let numberSettings: [String: WritableKeyPath<RaftConfiguration, Int>] = [
        "election": \.electionTick, "heartbeat": \.heartbeatTick, "max-entries": \.maxMessageEntries,
        "max-inflight": \.maxInflightMessages,
    ]

    private mutating func makeCluster(_ args: [String]) throws(ScenarioScriptError) -> [String] {
        var count: Int?
        var settings: [(inout RaftConfiguration) -> Void] = []
        for arg in args {
            let parts = arg.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw fail("expected KEY=VALUE, got `\(arg)`") }
            let (key, value) = (parts[0], parts[1])
            switch key {
            case "n":
                guard let n = Int(value), (1...9).contains(n) else { throw fail("n must be in 1...9") }
                count = n
            case _ where Self.flagSettings[key] != nil:
                let on = try flag(value)
                if let path = Self.flagSettings[key] { settings.append { $0[keyPath: path] = on } }
            case _ where Self.numberSettings[key] != nil:
                let n = try number(value)
                if let path = Self.numberSettings[key] { settings.append { $0[keyPath: path] = n } }
            default:
                throw fail("unknown cluster setting `\(key)`")
            }
        }
        guard let count else { throw fail("usage: cluster n=COUNT [setting=value...]") }
        do {
            let made = try LockstepCluster(count: count) { configuration in
                for setting in settings { setting(&configuration) }
            }
            cluster = made
        } catch {
            throw fail("cannot make the cluster: \(error)")
        }
        groups = [:]
        cuts = []
        showMembership = false
        guard let cluster else { return [] }
        return cluster.ids.map { status($0, in: cluster) }
    }

    // MARK: Delivery

    /// Delivers (or drops) the oldest message in flight; nil if there is none.
    private func deliverOne(_ cluster: inout LockstepCluster) -> [String]? {
        guard let next = cluster.inFlight.first else { return nil }
        let fate: String? =
            cluster.drop(next) ? "dropped " : cluster[next.to] == nil ? "lost " : nil
        let before = views(cluster)
        guard let message = cluster.deliverOne() else { return nil }
        if let fate { return [fate + describe(next)] }
        return [describe(message)] + changes(from: before, to: views(cluster), prefix: "  ")
    }

    private func installDrop(_ cluster: inout LockstepCluster) {
        let groups = self.groups
        let cuts = self.cuts
        cluster.drop = { m in
            if groups[m.from, default: 0] != groups[m.to, default: 0] { return true }
            return cuts.contains { ($0.from ?? m.from) == m.from && ($0.to ?? m.to) == m.to }
        }
    }

    private func describeCuts(_ cluster: LockstepCluster) -> String {
        var parts: [String] = []
        if !groups.isEmpty {
            var byGroup: [Int: [NodeID]] = [:]
            for id in cluster.ids { byGroup[groups[id, default: 0], default: []].append(id) }
            let described = byGroup.keys.sorted().compactMap { key -> String? in
                guard let members = byGroup[key], !members.isEmpty else { return nil }
                return members.map { String($0.rawValue) }.joined(separator: ",")
            }
            parts.append("partition " + described.joined(separator: " | "))
        }
        for cut in cuts {
            parts.append(
                "drop \(cut.from.map { String($0.rawValue) } ?? "*")->\(cut.to.map { String($0.rawValue) } ?? "*")")
        }
        return parts.isEmpty ? "network healed" : parts.joined(separator: "; ")
    }

    // MARK: What nodes look like

    /// What the change lines report about a node.
    private struct View: Equatable {
        var role: Raft.Role
        var term: Term
        var leader: NodeID?
        var commit: LogIndex
        var last: LogIndex
        var lastTerm: Term
        var membership: Membership
        var transferee: NodeID?
    }

    private func views(_ cluster: LockstepCluster) -> [NodeID: View] {
        var views: [NodeID: View] = [:]
        for id in cluster.ids {
            guard let node = cluster[id] else { continue }
            views[id] = View(
                role: node.role, term: node.term, leader: node.leader, commit: node.log.committed,
                last: node.log.lastIndex, lastTerm: node.log.lastTerm, membership: node.membership,
                transferee: node.transferee)
        }
        return views
    }

    private func changes(from before: [NodeID: View], to after: [NodeID: View], prefix: String) -> [String] {
        let ids = Set(before.keys).union(after.keys).sorted()
        return ids.compactMap { id in
            guard before[id] != after[id] else { return nil }
            guard let view = after[id] else { return "\(prefix)\(id.rawValue): down" }
            var line =
                "\(prefix)\(id.rawValue): \(view.role.rawValue) term=\(view.term.rawValue) "
                + "leader=\(name(view.leader)) commit=\(view.commit.rawValue) last=\(view.last.rawValue)@t\(view.lastTerm.rawValue)"
            if let old = before[id], old.membership != view.membership { line += " conf: \(view.membership)" }
            if before[id]?.transferee != view.transferee { line += " transferee=\(name(view.transferee))" }
            return line
        }
    }

    private func status(_ id: NodeID, in cluster: LockstepCluster) -> String {
        guard let node = cluster[id] else { return "\(id.rawValue): down" }
        let applied = cluster.applied[id]?.last?.index.rawValue ?? 0
        let terms = cluster.logTerms(id).map(String.init).joined(separator: " ")
        // Shown only once a log was compacted, so that scripts without snapshots read as before.
        let start = node.log.snapshotIndex > .zero ? "start=\(node.log.snapshotIndex.rawValue) " : ""
        return "\(id.rawValue): \(node.role.rawValue) term=\(node.term.rawValue) vote=\(name(node.votedFor)) "
            + "leader=\(name(node.leader)) commit=\(node.log.committed.rawValue) applied=\(applied) "
            + "\(start)last=\(node.log.lastIndex.rawValue)@t\(node.log.lastTerm.rawValue) terms=[\(terms)]"
            + (showMembership ? " \(node.membership)" : "")
            + (node.transferee.map { " transferee=\($0.rawValue)" } ?? "")
    }

    /// The steps of a `conf` command: `leave`, or `vN`/`lN`/`rN`... and an optional transition.
    private func configChange(_ words: [String]) throws(ScenarioScriptError) -> ConfigChange {
        if words == ["leave"] { return .leaveJoint }
        var steps: [ConfigChange.Step] = []
        var transition = ConfigChange.Transition.auto
        for (k, word) in words.enumerated() {
            switch word {
            case "auto", "explicit", "simple":
                guard k == words.count - 1 else { throw fail("the transition `\(word)` must come last") }
                transition = word == "auto" ? .auto : word == "explicit" ? .explicit : .simple
                continue
            default:
                break
            }
            let action: ConfigChange.Action
            switch word.first {
            case "v": action = .addVoter
            case "l": action = .addLearner
            case "r": action = .remove
            default: throw fail("a step is vN, lN or rN (got `\(word)`)")
            }
            guard let raw = UInt64(word.dropFirst()), raw > 0 else { throw fail("`\(word)` does not name a node") }
            steps.append(ConfigChange.Step(action, NodeID(raw)))
        }
        guard !steps.isEmpty else { throw fail("a change needs at least one step (or `leave`)") }
        return ConfigChange(steps, transition: transition)
    }

    private func refusal(_ error: MembershipError) -> String {
        var text = "refused: \(error.code)"
        if !error.reason.isEmpty { text += " (\(error.reason))" }
        if error.code == .notLeader { text += " (leader \(name(error.leaderHint)))" }
        return text
    }

    // MARK: Arguments

    private func fail(_ why: String) -> ScenarioScriptError { .syntax(line: line, why) }

    private func parseNode(_ word: String, in cluster: LockstepCluster) throws(ScenarioScriptError) -> NodeID {
        guard let raw = UInt64(word), cluster.ids.contains(NodeID(raw)) else {
            throw fail("`\(word)` is not a node of this cluster")
        }
        return NodeID(raw)
    }

    private func node(
        _ args: [String], at k: Int, in cluster: LockstepCluster, arity: Int
    ) throws(ScenarioScriptError) -> NodeID {
        try node(args, at: k, in: cluster, arity: arity...arity)
    }

    private func node(
        _ args: [String], at k: Int, in cluster: LockstepCluster, arity: ClosedRange<Int>
    ) throws(ScenarioScriptError) -> NodeID {
        guard arity.contains(args.count), k < args.count else { throw fail("wrong number of arguments") }
        return try parseNode(args[k], in: cluster)
    }

    private func nodes(_ args: [String], in cluster: LockstepCluster) throws(ScenarioScriptError) -> [NodeID] {
        if args.isEmpty { return cluster.ids }
        var ids: [NodeID] = []
        for word in args { ids.append(try parseNode(word, in: cluster)) }
        return ids
    }

    private func count(_ args: [String], at k: Int, default value: Int) throws(ScenarioScriptError) -> Int {
        guard k < args.count else { return value }
        return try number(args[k])
    }

    private func number(_ word: String) throws(ScenarioScriptError) -> Int {
        guard let n = Int(word), n >= 0 else { throw fail("`\(word)` is not a count") }
        return n
    }

    private func flag(_ word: String) throws(ScenarioScriptError) -> Bool {
        switch word {
        case "true", "on", "yes": return true
        case "false", "off", "no": return false
        default: throw fail("`\(word)` is not true or false")
        }
    }
}

private func name(_ id: NodeID?) -> String { id.map { String($0.rawValue) } ?? "none" }

// MARK: - Printing messages and entries

/// One line per entry: `2@t1 "hello"` or `1@t1 noop`.
private func describe(_ entry: Entry) -> String {
    let body: String
    switch entry.kind {
    case .noop: body = "noop"
    case .normal: body = describe(data: entry.data)
    case .configChange: body = "conf " + (ConfigChange(decoding: entry.data).map(\.description) ?? "malformed")
    }
    return "\(entry.index.rawValue)@t\(entry.term.rawValue) \(body)"
}

/// Data as a quoted string if it is printable ASCII, otherwise as hex.
private func describe(data: [UInt8]) -> String {
    if data.allSatisfy({ (0x20...0x7E).contains($0) && $0 != 0x22 && $0 != 0x5C }) {
        return "\"" + String(decoding: data, as: UTF8.self) + "\""
    }
    let digits = Array("0123456789abcdef")
    return "0x" + String(data.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] })
}

/// One line per message, `FROM->TO KIND tTERM details`.
private func describe(_ m: Message) -> String {
    let head = "\(m.from.rawValue)->\(m.to.rawValue)"
    let term = "t\(m.term.rawValue)"
    switch m.kind {
    case .appendEntries(let r):
        let entries = r.entries.map(describe).joined(separator: ", ")
        return "\(head) appendEntries \(term) prev=\(r.prevIndex.rawValue)@t\(r.prevTerm.rawValue) "
            + "commit=\(r.commit.rawValue) entries=[\(entries)]"
    case .appendEntriesResponse(let r):
        if r.success { return "\(head) appendEntriesResponse \(term) ok index=\(r.index.rawValue)" }
        return "\(head) appendEntriesResponse \(term) reject index=\(r.index.rawValue) "
            + "hint=\(r.rejectHintIndex.rawValue)@t\(r.rejectHintTerm.rawValue)"
    case .requestVote(let r):
        return "\(head) \(r.preVote ? "preVote" : "requestVote") \(term) "
            + "last=\(r.lastLogIndex.rawValue)@t\(r.lastLogTerm.rawValue)" + (r.transfer ? " transfer" : "")
    case .requestVoteResponse(let r):
        return "\(head) \(r.preVote ? "preVoteResponse" : "requestVoteResponse") \(term) "
            + (r.granted ? "granted" : "rejected")
    case .heartbeat(let h):
        return "\(head) heartbeat \(term) commit=\(h.commit.rawValue)" + (h.context == 0 ? "" : " round=\(h.context)")
    case .heartbeatResponse(let r):
        return "\(head) heartbeatResponse \(term)" + (r.context == 0 ? "" : " round=\(r.context)")
    case .commitNotice(let index):
        return "\(head) commitNotice \(term) commit=\(index.rawValue)"
    case .propose(let batch):
        return "\(head) propose \(term) [\(batch.map { describe(data: $0) }.joined(separator: ", "))]"
    case .installSnapshot(let meta):
        return "\(head) installSnapshot \(term) snapshot=\(meta.index.rawValue)@t\(meta.term.rawValue) "
            + "voters=\(meta.voters.map { String($0.rawValue) }.joined(separator: ","))"
    case .snapshotChunk(let c):
        return "\(head) snapshotChunk \(term) snapshot=\(c.index.rawValue)@t\(c.snapshotTerm.rawValue) "
            + "offset=\(c.offset) bytes=\(c.data.count) of \(c.totalSize)"
    case .snapshotChunkAck(let a):
        return "\(head) snapshotChunkAck \(term) snapshot=\(a.index.rawValue)@t\(a.snapshotTerm.rawValue) "
            + "offset=\(a.offset) \(a.status)"
    case .timeoutNow:
        return "\(head) timeoutNow \(term)"
    case .readIndex(let r):
        return "\(head) readIndex \(term) ctx=\(r.context)"
    case .readIndexResponse(let r):
        return "\(head) readIndexResponse \(term) ctx=\(r.context) "
            + (r.granted ? "index=\(r.index.rawValue)" : "refused")
    }
}

// MARK: - Line diff

/// A readable diff of two texts, line by line: the longest common subsequence, shown in hunks with context.
public enum LineDiff {
    /// Nil if the texts are equal (ignoring a missing final newline); otherwise the hunks that differ, each line
    /// marked ` ` (both), `-` (expected only) or `+` (actual only) with its line number in each text.
    public static func unified(expected: String, actual: String, name: String = "script", context: Int = 3) -> String? {
        let a = lines(expected)
        let b = lines(actual)
        if a == b { return nil }
        let ops = diff(a, b)
        // Indexes of ops that change something, grouped into hunks with `context` unchanged lines around them.
        var hunks: [Range<Int>] = []
        for (k, op) in ops.enumerated() where op.kind != .same {
            let lower = max(0, k - context)
            let upper = min(ops.count, k + context + 1)
            if let last = hunks.last, last.upperBound >= lower {
                hunks[hunks.count - 1] = last.lowerBound..<max(last.upperBound, upper)
            } else {
                hunks.append(lower..<upper)
            }
        }
        var out = ["--- expected (\(name))", "+++ actual"]
        let width = String(max(a.count, b.count)).count
        func number(_ n: Int?) -> String {
            let text = n.map { String($0 + 1) } ?? ""
            return String(repeating: " ", count: width - text.count) + text
        }
        for hunk in hunks {
            let slice = ops[hunk]
            let firstA = slice.compactMap(\.a).first.map { $0 + 1 } ?? 0
            let firstB = slice.compactMap(\.b).first.map { $0 + 1 } ?? 0
            let countA = slice.filter { $0.a != nil }.count
            let countB = slice.filter { $0.b != nil }.count
            out.append("@@ -\(firstA),\(countA) +\(firstB),\(countB) @@")
            for op in slice {
                let marker = op.kind == .same ? " " : op.kind == .removed ? "-" : "+"
                let text = op.a.map { a[$0] } ?? op.b.map { b[$0] } ?? ""
                out.append("\(marker) \(number(op.a)) \(number(op.b)) | \(text)")
            }
        }
        return out.joined(separator: "\n")
    }

    private struct Op {
        enum Kind { case same, removed, added }
        var kind: Kind
        var a: Int?
        var b: Int?
    }

    private static func lines(_ text: String) -> [String] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    /// The edit script from `a` to `b` by the longest common subsequence (quadratic: scripts are small).
    private static func diff(_ a: [String], _ b: [String]) -> [Op] {
        let n = a.count
        let m = b.count
        // lcs[i][j]: the length of the longest common subsequence of a[i...] and b[j...].
        var lcs = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
            }
        }
        var ops: [Op] = []
        var i = 0
        var j = 0
        while i < n || j < m {
            if i < n, j < m, a[i] == b[j] {
                ops.append(Op(kind: .same, a: i, b: j))
                i += 1
                j += 1
            } else if j < m, i == n || lcs[i][j + 1] > lcs[i + 1][j] {
                ops.append(Op(kind: .added, a: nil, b: j))
                j += 1
            } else {
                ops.append(Op(kind: .removed, a: i, b: nil))
                i += 1
            }
        }
        return ops
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" || s.first == "\r" { s.removeFirst() }
        while s.last == " " || s.last == "\t" || s.last == "\r" { s.removeLast() }
        return String(s)
    }
}
