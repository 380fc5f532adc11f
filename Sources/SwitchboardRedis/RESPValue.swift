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

/// One command: its arguments stored back to back, sent with `redisAppendCommandArgv`.
struct RedisCommand: Sendable, CustomStringConvertible {
    private var storage: [UInt8] = []
    private var ends: [Int] = []

    init(_ arguments: [String]) {
        for argument in arguments { append(argument) }
    }

    mutating func append(_ argument: String) {
        storage.append(contentsOf: argument.utf8)
        ends.append(storage.count)
    }

    mutating func append(bytes: some Sequence<UInt8>) {
        storage.append(contentsOf: bytes)
        ends.append(storage.count)
    }

    var count: Int { ends.count }

    /// The command name, for logs.
    var name: String {
        guard let end = ends.first else { return "" }
        return String(decoding: storage[..<end], as: UTF8.self)
    }

    var description: String { name }

    /// Appends the command to the output buffer of `context`; false on allocation failure.
    func append(to context: UnsafeMutablePointer<redisContext>) -> Bool {
        guard !ends.isEmpty else { return false }
        func appendArguments(_ base: UnsafeRawPointer) -> Bool {
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: ends.count) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: ends.count) { lengths in
                    var start = 0
                    for (index, end) in ends.enumerated() {
                        argv[index] = (base + start).assumingMemoryBound(to: CChar.self)
                        lengths[index] = end - start
                        start = end
                    }
                    return redisAppendCommandArgv(context, Int32(ends.count), argv.baseAddress, lengths.baseAddress) == REDIS_OK
                }
            }
        }
        // Every argument empty: any valid address will do, nothing is read from it.
        if storage.isEmpty {
            return [UInt8(0)].withUnsafeBufferPointer { appendArguments(UnsafeRawPointer($0.baseAddress!)) }
        }
        return storage.withUnsafeBufferPointer { appendArguments(UnsafeRawPointer($0.baseAddress!)) }
    }
}
