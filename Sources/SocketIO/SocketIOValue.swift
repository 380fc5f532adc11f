import SwitchboardJSON

/// A Socket.IO argument: JSON, plus binary leaves anywhere in it. On the wire each
/// binary leaf becomes a `{"_placeholder":true,"num":N}` object and travels as the N-th
/// attachment (socket.io-protocol, "Packet encoding").
public indirect enum SocketIOValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case binary([UInt8])
    case array([SocketIOValue])
    case object([String: SocketIOValue])

    /// The same JSON, without binary leaves.
    public init(_ json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .int(let value): self = .int(value)
        case .double(let value): self = .double(value)
        case .string(let value): self = .string(value)
        case .array(let values): self = .array(values.map(SocketIOValue.init))
        case .object(let fields): self = .object(fields.mapValues(SocketIOValue.init))
        }
    }

    /// Whether a binary leaf is somewhere in the value.
    public var hasBinary: Bool {
        switch self {
        case .binary: true
        case .array(let values): values.contains(where: \.hasBinary)
        case .object(let fields): fields.values.contains(where: \.hasBinary)
        default: false
        }
    }

    /// The string, when the value is one.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The JSON form with every binary leaf replaced by a placeholder, and the leaves in
    /// placeholder order (depth first; object fields by sorted key, the order in which
    /// they are written).
    public func deconstructed() -> (json: JSONValue, attachments: [[UInt8]]) {
        var attachments: [[UInt8]] = []
        let json = deconstruct(into: &attachments)
        return (json, attachments)
    }

    private func deconstruct(into attachments: inout [[UInt8]]) -> JSONValue {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .int(let value): return .int(value)
        case .double(let value): return .double(value)
        case .string(let value): return .string(value)
        case .binary(let bytes):
            attachments.append(bytes)
            return .object(["_placeholder": .bool(true), "num": .int(Int64(attachments.count - 1))])
        case .array(let values):
            return .array(values.map { $0.deconstruct(into: &attachments) })
        case .object(let fields):
            var result: [String: JSONValue] = [:]
            for key in fields.keys.sorted() { result[key] = fields[key]!.deconstruct(into: &attachments) }
            return .object(result)
        }
    }

    /// Puts the attachments back in place of their placeholders. A placeholder whose
    /// `num` is not an index of `attachments` is an error.
    public static func reconstructed(
        _ json: JSONValue, attachments: [[UInt8]]
    ) throws(SocketIOError) -> SocketIOValue {
        switch json {
        case .array(let values):
            var result: [SocketIOValue] = []
            result.reserveCapacity(values.count)
            for value in values { result.append(try reconstructed(value, attachments: attachments)) }
            return .array(result)
        case .object(let fields):
            if fields["_placeholder"] == .bool(true) {
                guard case .int(let number) = fields["num"], number >= 0, number < attachments.count else {
                    throw .invalidAttachments
                }
                return .binary(attachments[Int(number)])
            }
            var result: [String: SocketIOValue] = [:]
            for (key, value) in fields { result[key] = try reconstructed(value, attachments: attachments) }
            return .object(result)
        default:
            return SocketIOValue(json)
        }
    }
}

extension SocketIOValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: SocketIOValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, SocketIOValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
