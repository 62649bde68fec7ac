import ArgumentParser
import RaftLite
import RaftStorage

/// What an operator runs when a node refuses to start because its log is damaged.
struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what recovery finds in a node's data directory; cut a damaged log at a chosen point.",
        discussion: """
            Without --cut-at: prints every segment (records, entries, hard states), any damage with its file and \
            offset, and whether the log opens (exit status 0 if it does, 1 if not).

            With --cut-at SEGMENT:OFFSET (as the damage report shows it): prints exactly what a cut there would lose \
            (the records from that point on, and every later segment). Only with --yes does it cut: the cut bytes and \
            later segments are kept aside in wal/cut-*, the segment is zeroed from the offset, everything is synced, \
            and a hard state one term above the highest term seen, with no vote, is written, so that the node never \
            votes twice in a term.

            It takes the directory's lock: it refuses while a node runs on the directory.
            """
    )

    @Option(help: "The node's data directory.")
    var dataDir: String

    @Option(help: "Where to cut: SEGMENT:OFFSET, e.g. 00000000000000000002.log:4096.")
    var cutAt: String?

    @Flag(help: "Do the cut (without it, only show what it would lose).")
    var yes = false

    func validate() throws {
        if yes && cutAt == nil { throw ValidationError("--yes needs --cut-at") }
        if let cutAt, Self.parse(cutAt) == nil {
            throw ValidationError("--cut-at must be SEGMENT:OFFSET, got \(cutAt)")
        }
    }

    static func parse(_ text: String) -> (segment: String, offset: Int)? {
        guard let colon = text.lastIndex(of: ":"), let offset = Int(text[text.index(after: colon)...]), offset >= 0,
            colon > text.startIndex
        else { return nil }
        return (String(text[..<colon]), offset)
    }

    func run() throws {
        let repair = try LogRepair(directory: dataDir)
        defer { repair.close() }
        let inspection = try repair.inspect()
        print(inspection)
        guard let cutAt, let (segment, offset) = Self.parse(cutAt) else {
            if !inspection.opens { throw ExitCode(1) }
            return
        }
        print("")
        let plan = try repair.plan(cutAt: segment, offset: offset)
        print(plan)
        guard yes else {
            print("nothing was changed: run again with --yes to cut")
            return
        }
        print(try repair.cut(plan))
    }
}
