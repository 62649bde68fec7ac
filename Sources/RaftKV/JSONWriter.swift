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
