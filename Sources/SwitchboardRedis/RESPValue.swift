import CHiredis

/// One Redis reply (RESP2), copied out of hiredis's reply object.
public enum RESPValue: Sendable, Equatable, CustomStringConvertible {
    /// A bulk string (binary-safe).
    case string([UInt8])
    /// A simple string such as `OK` or `PONG`.
    case status(String)
    /// An error reply such as `NOSCRIPT No matching script`.
    case error(String)
    case integer(Int64)
    /// The null bulk string or null array.
    case null
    case array([RESPValue])

    /// Bulk and simple strings as text (UTF-8, repaired if invalid).
    public var text: String? {
        switch self {
        case .string(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { value } else { nil }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { values } else { nil }
    }

    /// The error text when this is an error reply.
    public var errorMessage: String? {
        if case .error(let message) = self { message } else { nil }
    }

    public var description: String {
        switch self {
        case .string(let bytes): "\"\(String(decoding: bytes.prefix(200), as: UTF8.self))\""
        case .status(let text): text
        case .error(let message): "(error) \(message)"
        case .integer(let value): "(integer) \(value)"
        case .null: "(nil)"
        case .array(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

extension RESPValue {
    /// Copies `reply` (which the caller frees). Unknown types become an `.error`, so a
    /// malformed reply fails one command instead of the process.
    init(reply: UnsafePointer<redisReply>, depth: Int = 0) {
        let r = reply.pointee
        func bytes() -> [UInt8] {
            guard let str = r.str, r.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: Int(r.len)))
        }
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .string(bytes())
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_NIL:
            self = .null
        case REDIS_REPLY_ARRAY:
            guard depth < 16 else {
                self = .error("reply nested too deeply")
                return
            }
            var values: [RESPValue] = []
            values.reserveCapacity(r.elements)
            if let elements = r.element {
                for index in 0..<r.elements {
                    if let element = elements[index] {
                        values.append(RESPValue(reply: element, depth: depth + 1))
                    } else {
                        values.append(.null)
                    }
                }
            }
            self = .array(values)
        default:
            self = .error("unknown reply type \(r.type)")
        }
    }
}
