import RaftLite

/// A small `Encoder` that writes JSON, for the server's replies.
///
/// It exists so that reply bodies are built from `Encodable` values without bringing Foundation into this target,
/// and so that their bytes are fixed: keys come out in the order the value encodes them (a synthesized
/// `encode(to:)` follows its `CodingKeys`), with no spaces, and strings are escaped as `JSON.string` does. Objects,
/// arrays, strings, booleans, integers, floating-point numbers and null are supported; a non-finite number, or a
/// value that encodes nothing, throws.
enum JSONWriter {
    static func encode(_ value: some Encodable) throws -> [UInt8] {
        Array(try fragment(value).utf8)
    }

    /// The JSON text of one value.
    static func fragment(_ value: some Encodable) throws -> String {
        switch value {
        case let v as String: return JSON.string(v)
        case let v as Bool: return v ? "true" : "false"
        case let v as Int: return String(v)
        case let v as Int8: return String(v)
        case let v as Int16: return String(v)
        case let v as Int32: return String(v)
        case let v as Int64: return String(v)
        case let v as UInt: return String(v)
        case let v as UInt8: return String(v)
        case let v as UInt16: return String(v)
        case let v as UInt32: return String(v)
        case let v as UInt64: return String(v)
        case let v as Double: return try number(v)
        case let v as Float: return try number(Double(v))
        default:
            let encoder = Writer(codingPath: [])
            try value.encode(to: encoder)
            guard let text = encoder.result.text else {
                throw EncodingError.invalidValue(
                    value, .init(codingPath: [], debugDescription: "\(type(of: value)) encoded nothing"))
            }
            return text
        }
    }

    private static func number(_ v: Double) throws -> String {
        guard v.isFinite else {
            throw EncodingError.invalidValue(v, .init(codingPath: [], debugDescription: "JSON has no \(v)"))
        }
        return v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)"
    }

    /// What one encoder has been given: nothing yet, one value, an object's fields, or an array's elements.
    final class Result {
        enum Content {
            case empty
            case single(String)
            case object([(String, Result)])
            case array([Result])
        }

        var content = Content.empty

        var text: String? {
            switch content {
            case .empty: return nil
            case .single(let text): return text
            case .object(let fields):
                var parts: [String] = []
                for (key, value) in fields {
                    guard let text = value.text else { continue }
                    parts.append(JSON.string(key) + ":" + text)
                }
                return "{" + parts.joined(separator: ",") + "}"
            case .array(let elements):
                return "[" + elements.map { $0.text ?? "null" }.joined(separator: ",") + "]"
            }
        }

        /// A new field of this object (making it one if it is still empty).
        func field(_ key: String) -> Result {
            let child = Result()
            if case .object(var fields) = content {
                content = .empty
                fields.append((key, child))
                content = .object(fields)
            } else {
                content = .object([(key, child)])
            }
            return child
        }

        /// A new element of this array (making it one if it is still empty).
        func element() -> Result {
            let child = Result()
            if case .array(var elements) = content {
                content = .empty
                elements.append(child)
                content = .array(elements)
            } else {
                content = .array([child])
            }
            return child
        }

        var count: Int {
            if case .array(let elements) = content { return elements.count }
            return 0
        }

        func set(_ value: some Encodable, codingPath: [any CodingKey]) throws {
            switch value {
            case is String, is Bool, is Int, is Int8, is Int16, is Int32, is Int64, is UInt, is UInt8, is UInt16,
                is UInt32, is UInt64, is Double, is Float:
                content = .single(try JSONWriter.fragment(value))
            default:
                try value.encode(to: Writer(codingPath: codingPath, result: self))
            }
        }
    }

    final class Writer: Encoder {
        let codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        let result: Result

        init(codingPath: [any CodingKey], result: Result = Result()) {
            self.codingPath = codingPath
            self.result = result
        }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if case .empty = result.content { result.content = .object([]) }
            return KeyedEncodingContainer(Keyed<Key>(codingPath: codingPath, result: result))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            if case .empty = result.content { result.content = .array([]) }
            return Unkeyed(codingPath: codingPath, result: result)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            Single(codingPath: codingPath, result: result)
        }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let codingPath: [any CodingKey]
        let result: Result

        mutating func encodeNil(forKey key: Key) throws {
            result.field(key.stringValue).content = .single("null")
        }

        // One generic method stands for every `encode(_:forKey:)` requirement; `set` tells the scalars apart.
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try result.field(key.stringValue).set(value, codingPath: codingPath + [key])
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            Writer(codingPath: codingPath + [key], result: result.field(key.stringValue)).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            Writer(codingPath: codingPath + [key], result: result.field(key.stringValue)).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            Writer(codingPath: codingPath, result: result.field("super"))
        }

        mutating func superEncoder(forKey key: Key) -> any Encoder {
            Writer(codingPath: codingPath + [key], result: result.field(key.stringValue))
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let codingPath: [any CodingKey]
        let result: Result
        var count: Int { result.count }

        mutating func encodeNil() throws {
            result.element().content = .single("null")
        }

        mutating func encode<T: Encodable>(_ value: T) throws {
            try result.element().set(value, codingPath: codingPath)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
            -> KeyedEncodingContainer<NestedKey>
        {
            Writer(codingPath: codingPath, result: result.element()).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            Writer(codingPath: codingPath, result: result.element()).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            Writer(codingPath: codingPath, result: result.element())
        }
    }

    struct Single: SingleValueEncodingContainer {
        let codingPath: [any CodingKey]
        let result: Result

        mutating func encodeNil() throws {
            result.content = .single("null")
        }

        mutating func encode<T: Encodable>(_ value: T) throws {
            try result.set(value, codingPath: codingPath)
        }
    }
}

enum JSON {
    /// A JSON string literal.
    static func string(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// A small strict JSON parser, for request bodies (the membership endpoints): RFC 8259 values into `JSONValue`,
/// without Foundation. It refuses trailing bytes, nesting deeper than `maxDepth`, invalid UTF-8 and lone surrogates,
/// and says where.
enum JSONReader {
    struct Failure: Error, Hashable, CustomStringConvertible {
        var offset: Int
        var problem: String
        var description: String { "\(problem) at byte \(offset)" }
    }

    static let maxDepth = 32

    static func parse(_ bytes: [UInt8]) throws(Failure) -> JSONValue {
        var parser = Parser(bytes: bytes)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.position == bytes.count else { throw parser.failure("unexpected bytes after the value") }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var position = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func failure(_ problem: String) -> Failure { Failure(offset: position, problem: problem) }

        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipSpace() {
            while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { position += 1 }
        }

        mutating func expect(_ literal: String, _ value: JSONValue) throws(Failure) -> JSONValue {
            for byte in literal.utf8 {
                guard peek == byte else { throw failure("expected \(literal)") }
                position += 1
            }
            return value
        }

        mutating func value(depth: Int) throws(Failure) -> JSONValue {
            guard depth < JSONReader.maxDepth else { throw failure("nested deeper than \(JSONReader.maxDepth)") }
            guard let c = peek else { throw failure("unexpected end of the body") }
            switch c {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw failure("unexpected character")
            }
        }

        mutating func object(depth: Int) throws(Failure) -> JSONValue {
            position += 1
            var fields: [String: JSONValue] = [:]
            skipSpace()
            if peek == UInt8(ascii: "}") {
                position += 1
                return .object(fields)
            }
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw failure("expected a field name") }
                let key = try string()
                skipSpace()
                guard peek == UInt8(ascii: ":") else { throw failure("expected ':'") }
                position += 1
                skipSpace()
                guard fields[key] == nil else { throw failure("field \"\(key)\" appears twice") }
                fields[key] = try value(depth: depth + 1)
                skipSpace()
                switch peek {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "}"):
                    position += 1
                    return .object(fields)
                default: throw failure("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws(Failure) -> JSONValue {
            position += 1
            var elements: [JSONValue] = []
            skipSpace()
            if peek == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            }
            while true {
                skipSpace()
                elements.append(try value(depth: depth + 1))
                skipSpace()
                switch peek {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "]"):
                    position += 1
                    return .array(elements)
                default: throw failure("expected ',' or ']'")
                }
            }
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let c = peek else { throw failure("unexpected end in a \\u escape") }
                let digit: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw failure("invalid \\u escape")
                }
                v = v << 4 | digit
                position += 1
            }
            return v
        }

        mutating func string() throws(Failure) -> String {
            position += 1
            var out: [UInt8] = []
            while true {
                guard let c = peek else { throw failure("unterminated string") }
                position += 1
                switch c {
                case UInt8(ascii: "\""):
                    guard let text = String(validating: out, as: UTF8.self) else {
                        throw failure("a string is not valid UTF-8")
                    }
                    return text
                case UInt8(ascii: "\\"):
                    guard let e = peek else { throw failure("unterminated escape") }
                    position += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard peek == UInt8(ascii: "\\") else { throw failure("a lone surrogate") }
                            position += 1
                            guard peek == UInt8(ascii: "u") else { throw failure("a lone surrogate") }
                            position += 1
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw failure("a lone surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw failure("a lone surrogate") }
                        out.append(contentsOf: Array(String(Character(u)).utf8))
                    default: throw failure("invalid escape")
                    }
                case 0x00..<0x20: throw failure("a control character in a string")
                default: out.append(c)
                }
            }
        }

        mutating func number() throws(Failure) -> JSONValue {
            let start = position
            if peek == UInt8(ascii: "-") { position += 1 }
            func digits(_ p: inout Parser) -> Int {
                var n = 0
                while let c = p.peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) {
                    p.position += 1
                    n += 1
                }
                return n
            }
            if peek == UInt8(ascii: "0") {
                position += 1
            } else if digits(&self) == 0 {
                throw failure("invalid number")
            }
            if peek == UInt8(ascii: ".") {
                position += 1
                guard digits(&self) > 0 else { throw failure("invalid number") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                position += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { position += 1 }
                guard digits(&self) > 0 else { throw failure("invalid number") }
            }
            let text = String(decoding: bytes[start..<position], as: UTF8.self)
            guard let v = Double(text), v.isFinite else { throw failure("number out of range") }
            return .number(v)
        }
    }
}
