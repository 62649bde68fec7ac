/// Bytes from a peer that are not a valid frame or message. The connection they came on is closed.
///
/// A struct with a `code` rather than an enum, so that later versions can add codes without breaking a `switch`:
/// match on `error.code` (with a `default:`). Two errors are equal when their codes and their details are.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case truncated, invalid, oversized, unsupportedVersion, checksumMismatch, unexpected
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The bytes end before the frame or message does. Details: `subject` (what was cut short).
        public static let truncated = Code(.truncated)
        /// A field has a value no valid frame or message has. Details: `subject` (the field and its value).
        public static let invalid = Code(.invalid)
        /// A frame larger than the receiver accepts. Details: `size`, `limit`.
        public static let oversized = Code(.oversized)
        /// A frame of a version this code does not speak. Details: `version`.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// A frame whose checksum does not match its payload.
        public static let checksumMismatch = Code(.checksumMismatch)
        /// A well-formed frame that the protocol does not allow here (a handshake from the wrong peer, a message
        /// before the handshake). Details: `subject` (what happened, in words).
        public static let unexpected = Code(.unexpected)

        public var description: String { value.rawValue }
    }

    public let code: Code
    /// For `truncated`, `invalid` and `unexpected`: what is wrong, in words.
    public let subject: String?
    /// For `oversized`: the frame's payload size and the limit, in bytes.
    public let size: Int?
    public let limit: Int?
    /// For `unsupportedVersion`: the version the frame claims.
    public let version: UInt8?

    private init(code: Code, subject: String? = nil, size: Int? = nil, limit: Int? = nil, version: UInt8? = nil) {
        self.code = code
        self.subject = subject
        self.size = size
        self.limit = limit
        self.version = version
    }

    public static func truncated(_ what: String) -> WireError { WireError(code: .truncated, subject: what) }
    public static func invalid(_ what: String) -> WireError { WireError(code: .invalid, subject: what) }
    public static func oversized(size: Int, limit: Int) -> WireError {
        WireError(code: .oversized, size: size, limit: limit)
    }
    public static func unsupportedVersion(_ version: UInt8) -> WireError {
        WireError(code: .unsupportedVersion, version: version)
    }
    public static let checksumMismatch = WireError(code: .checksumMismatch)
    public static func unexpected(_ what: String) -> WireError { WireError(code: .unexpected, subject: what) }

    public var description: String {
        let what = subject ?? ""
        switch code {
        case .truncated: return "truncated \(what)"
        case .invalid: return "invalid \(what)"
        case .oversized: return "frame of \(size ?? 0) bytes exceeds the limit of \(limit ?? 0) bytes"
        case .unsupportedVersion: return "unsupported frame version \(version ?? 0)"
        case .checksumMismatch: return "frame checksum mismatch"
        case .unexpected: return what
        default: return "\(code)"
        }
    }
}
