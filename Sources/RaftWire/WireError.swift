/// Bytes from a peer that are not a valid frame or message. The connection they came on is closed.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }

    static func truncated(_ what: String) -> WireError { WireError("truncated \(what)") }
    static func invalid(_ what: String) -> WireError { WireError("invalid \(what)") }
}
