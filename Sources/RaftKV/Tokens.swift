import Crypto
import Foundation
import NIOConcurrencyHelpers

/// What a bearer token may do.
public enum TokenRole: String, Sendable, Hashable, CaseIterable {
    /// Reads only: `GET` of keys, members, cluster, status and metrics.
    case read
    /// Reads and every request that changes something: writes, sessions, membership, transfers, snapshots.
    case readwrite
}

/// A tokens file that could not be read or parsed: which file, which line (0: the file as a whole), and why.
public struct TokenFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    /// 1-based; 0 when the error is not of one line.
    public var line: Int
    public var reason: String

    public init(path: String, line: Int, reason: String) {
        self.path = path
        self.line = line
        self.reason = reason
    }

    public var description: String {
        line > 0 ? "tokens file \(path), line \(line): \(reason)" : "tokens file \(path): \(reason)"
    }
}

/// The bearer tokens a server accepts, as a tokens file lists them. Tokens are never stored: only their SHA-256.
///
/// The file's format, one token a line:
///
/// ```
/// # comments and blank lines are ignored
/// readwrite 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 deploy-bot
/// read      a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3 dashboards
/// ```
///
/// The role (`read` or `readwrite`), the SHA-256 of the token as 64 hexadecimal digits, and an optional name (the
/// rest of the line; it is for people and logs, never for authentication). `raft-lite tokens add` writes such lines.
/// A presented token is hashed and its digest compared with every entry's in constant time (see `role(of:)`).
public struct TokenTable: Sendable, Hashable {
    /// One accepted token.
    public struct Entry: Sendable, Hashable {
        public var role: TokenRole
        /// SHA-256 of the token, 32 bytes.
        public var digest: [UInt8]
        /// The name given on its line ("" if none).
        public var name: String

        public init(role: TokenRole, digest: [UInt8], name: String = "") {
            self.role = role
            self.digest = digest
            self.name = name
        }

        /// The entry's line in a tokens file.
        public var line: String {
            "\(role.rawValue) \(TokenTable.hex(digest))" + (name.isEmpty ? "" : " \(name)")
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// Parses a tokens file's text. Throws naming the first bad line: an unknown role, a digest that is not 64
    /// hexadecimal digits, a token listed twice; and the file as a whole when it lists no token (a server that
    /// requires tokens and accepts none would refuse everyone, which is never what was meant).
    public init(parsing text: String, path: String) throws(TokenFileError) {
        var entries: [Entry] = []
        var seen: [[UInt8]: Int] = [:]
        for (k, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = k + 1
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(maxSplits: 2, whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2 else {
                throw TokenFileError(
                    path: path, line: number,
                    reason: "expected \"ROLE SHA256-HEX [NAME]\" (ROLE read or readwrite), found \(fields.count) field")
            }
            guard let role = TokenRole(rawValue: String(fields[0])) else {
                throw TokenFileError(
                    path: path, line: number,
                    reason: "unknown role \"\(fields[0].prefix(32))\": the role is read or readwrite")
            }
            guard let digest = Self.unhex(fields[1]), digest.count == SHA256.byteCount else {
                throw TokenFileError(
                    path: path, line: number,
                    reason:
                        "the token's SHA-256 must be 64 hexadecimal digits (the file holds hashes, never tokens: "
                        + "`raft-lite tokens add` writes the line), not \(fields[1].count) characters")
            }
            if let first = seen[digest] {
                throw TokenFileError(
                    path: path, line: number, reason: "the same token is listed on line \(first) already")
            }
            seen[digest] = number
            let name = fields.count > 2 ? String(fields[2]).trimmingCharacters(in: .whitespaces) : ""
            entries.append(Entry(role: role, digest: digest, name: name))
        }
        guard !entries.isEmpty else {
            throw TokenFileError(
                path: path, line: 0,
                reason: "lists no token: every request would be refused (add one with `raft-lite tokens add`)")
        }
        self.entries = entries
    }

    /// Reads and parses a tokens file.
    public init(contentsOfFile path: String) throws(TokenFileError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TokenFileError(path: path, line: 0, reason: "cannot be read: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenFileError(path: path, line: 0, reason: "is not UTF-8 text")
        }
        try self.init(parsing: text, path: path)
    }

    /// The entry a presented token matches, or nil. The token is hashed, and its digest is compared with every
    /// entry's without an early exit, so the time taken does not depend on how much of a digest matched nor on
    /// which entry matched.
    public func entry(for token: some Collection<UInt8>) -> Entry? {
        let presented = Array(SHA256.hash(data: Array(token)))
        var found: Entry?
        for entry in entries where Self.constantTimeEqual(entry.digest, presented) {
            found = found ?? entry
        }
        return found
    }

    /// SHA-256 of a token.
    public static func digest(of token: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(token.utf8)))
    }

    /// Whether two byte strings are equal, in time that depends only on their lengths.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for k in 0..<a.count { difference |= a[k] ^ b[k] }
        return difference == 0
    }

    /// A new random token: `rl_` and 32 bytes from the system's secure generator as 43 characters of unpadded
    /// base64url (46 in all). The prefix makes a token easy to recognise (in a leaked file, by a secret scanner) and
    /// keeps it from starting with `-`, which a command line would read as an option.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "rl_"
            + Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Bytes as lowercase hexadecimal digits.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func unhex(_ text: Substring) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var k = 0
        while k < chars.count {
            guard let high = value(chars[k]), let low = value(chars[k + 1]) else { return nil }
            out.append(high << 4 | low)
            k += 2
        }
        return out
    }
}

/// The tokens a running server accepts, replaceable while it runs (`raft-lite serve` reloads its tokens file on
/// SIGHUP). Every request reads the table in effect when it arrives.
public final class TokenStore: Sendable {
    private let table: NIOLockedValueBox<TokenTable>
    /// The file the table was read from, if any (for `reload()`).
    public let path: String?

    public init(_ table: TokenTable, path: String? = nil) {
        self.table = NIOLockedValueBox(table)
        self.path = path
    }

    /// Reads a tokens file; throws, naming the line, if it is bad.
    public convenience init(contentsOfFile path: String) throws(TokenFileError) {
        self.init(try TokenTable(contentsOfFile: path), path: path)
    }

    /// The table in effect.
    public var current: TokenTable { table.withLockedValue { $0 } }

    /// Replaces the table.
    public func replace(with new: TokenTable) { table.withLockedValue { $0 = new } }

    /// Reads the file again and replaces the table with it; a bad file throws and leaves the table in effect.
    /// Returns the number of tokens now accepted.
    @discardableResult
    public func reload() throws(TokenFileError) -> Int {
        guard let path else { return current.entries.count }
        let new = try TokenTable(contentsOfFile: path)
        replace(with: new)
        return new.entries.count
    }
}
