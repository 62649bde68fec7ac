import RaftLite
import Testing

/// The public errors of RaftLite: every code distinct, equal only with equal details, and described as before they
/// became structs.
@Suite struct RaftNodeErrorTests {
    static let described: [(RaftNodeError, String)] = [
        (.notLeader(leaderHint: "n1"), "this node is not the leader; the leader is n1"),
        (.notLeader(leaderHint: nil), "no leader is known yet; retry shortly"),
        (.timedOut, "the proposal was not committed in time; it may still commit (outcome unknown)"),
        (
            .stoppedOutcomeUnknown,
            "the node stopped after handing the proposal on; it may still commit (outcome unknown)"
        ),
        (.dropped("lost"), "the proposal will never commit: lost"),
        (.tooLarge(size: 10, limit: 5), "proposal of 10 bytes exceeds the limit of 5 bytes"),
        (.invalidProposal("bad"), "invalid proposal: bad"),
        (.paused, "the node is paused"),
        (.stopped, "the node has stopped"),
        (.notStarted, "the node has not been started"),
        (.alreadyStarted, "the node was already started (a stopped node cannot be restarted; create a new one)"),
        (.storage("disk"), "storage: disk"),
        (.configuration("config"), "config"),
    ]

    @Test func descriptionsAreTheTextsOfBefore() {
        for (error, text) in Self.described { #expect(error.description == text) }
    }

    @Test func everyKindHasItsOwnCode() {
        let codes = Self.described.map(\.0.code)
        #expect(Set(codes).count == 12)
        #expect(Set(codes.map(\.description)).count == 12)
        #expect(RaftNodeError.notLeader(leaderHint: "n1").code == .notLeader)
        #expect(RaftNodeError.tooLarge(size: 1, limit: 0).code == .tooLarge)
    }

    @Test func equalityComparesCodeAndDetails() {
        #expect(RaftNodeError.notLeader(leaderHint: "n1") == .notLeader(leaderHint: "n1"))
        #expect(RaftNodeError.notLeader(leaderHint: "n1") != .notLeader(leaderHint: "n2"))
        #expect(RaftNodeError.notLeader(leaderHint: "n1") != .notLeader(leaderHint: nil))
        #expect(RaftNodeError.tooLarge(size: 10, limit: 5) != .tooLarge(size: 10, limit: 6))
        #expect(RaftNodeError.storage("x") != .configuration("x"))
        #expect(RaftNodeError.dropped("x") != .invalidProposal("x"))
        #expect(RaftNodeError.timedOut != .stoppedOutcomeUnknown)
        for (k, (a, _)) in Self.described.enumerated() {
            for (j, (b, _)) in Self.described.enumerated() { #expect((a == b) == (k == j), "\(a) vs \(b)") }
        }
    }

    @Test func detailsAreReadableByCode() {
        let tooLarge = RaftNodeError.tooLarge(size: 10, limit: 5)
        #expect(tooLarge.size == 10 && tooLarge.limit == 5 && tooLarge.leaderHint == nil && tooLarge.reason == nil)
        #expect(RaftNodeError.notLeader(leaderHint: "n1").leaderHint == "n1")
        #expect(RaftNodeError.storage("disk").reason == "disk")
        #expect(RaftNodeError.timedOut.reason == nil)
    }

    @Test func onlyTimedOutAndStoppedOutcomeUnknownLeaveTheOutcomeOpen() {
        for (error, _) in Self.described {
            #expect(error.outcomeIsUnknown == (error.code == .timedOut || error.code == .stoppedOutcomeUnknown))
        }
        #expect(RaftNodeError.timedOut.outcomeIsUnknown && RaftNodeError.stoppedOutcomeUnknown.outcomeIsUnknown)
    }

    @Test func aSwitchOnTheCodeReadsLikeTheOldOne() {
        func kind(_ error: RaftNodeError) -> String {
            switch error.code {
            case .timedOut, .stoppedOutcomeUnknown: "unknown"
            case .tooLarge: "tooLarge \(error.size ?? -1)"
            case .notLeader: "notLeader \(error.leaderHint ?? "-")"
            default: "definite"
            }
        }
        #expect(kind(.timedOut) == "unknown")
        #expect(kind(.tooLarge(size: 3, limit: 2)) == "tooLarge 3")
        #expect(kind(.notLeader(leaderHint: nil)) == "notLeader -")
        #expect(kind(.paused) == "definite")
    }
}

@Suite struct ClusterConfigurationErrorTests {
    @Test func descriptionsCodesAndEquality() {
        let field = ClusterConfigurationError("n1.port", "is missing")
        #expect(field.description == "cluster configuration: n1.port: is missing")
        #expect(
            ClusterConfigurationError(nil, "the cluster has no members").description
                == "cluster configuration: the cluster has no members")
        #expect(field.code == .invalid)
        #expect(ClusterConfigurationError.Code.invalid != .unreadable)
        #expect(field == ClusterConfigurationError("n1.port", "is missing"))
        #expect(field != ClusterConfigurationError("n2.port", "is missing"))
        #expect(field != ClusterConfigurationError("n1.port", "is wrong"))
        #expect(field != ClusterConfigurationError("n1.port", "is missing", code: .unreadable))
    }

    @Test func anUnreadableFileHasItsOwnCode() {
        let unreadable = #expect(throws: ClusterConfigurationError.self) {
            try ClusterConfiguration(contentsOfFile: "/nonexistent/c.json")
        }
        #expect(unreadable?.code == .unreadable)
        let invalid = #expect(throws: ClusterConfigurationError.self) {
            try ClusterConfiguration(json: Array("[]".utf8))
        }
        #expect(invalid?.code == .invalid)
    }
}
