#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SocketIO
import SwitchboardCore

/// Binary values inside stored JSON. Events travel through the broker and history as
/// JSON, so a Socket.IO argument's binary leaves are stored as `{"$binary": "<base64>"}`
/// objects (that is what native clients see), and turned back into binary attachments
/// for Socket.IO clients.
public enum StoredBinary {
    /// The key of a stored binary leaf.
    public static let key = "$binary"

    /// The JSON to store: binary leaves become `{"$binary": "<base64>"}`.
    public static func json(_ value: SocketIOValue) -> JSONValue {
        switch value {
        case .null: .null
        case .bool(let value): .bool(value)
        case .int(let value): .int(value)
        case .double(let value): .double(value)
        case .string(let value): .string(value)
        case .binary(let bytes): .object([key: .string(base64(bytes))])
        case .array(let values): .array(values.map(json))
        case .object(let fields): .object(fields.mapValues(json))
        }
    }

    /// The Socket.IO value of stored JSON: `{"$binary": "<base64>"}` objects (that key
    /// only, valid base64) become binary leaves.
    public static func value(_ json: JSONValue) -> SocketIOValue {
        switch json {
        case .array(let values):
            return .array(values.map(value))
        case .object(let fields):
            if fields.count == 1, let text = fields[key]?.stringValue, let bytes = bytes(base64: text) {
                return .binary(bytes)
            }
            return .object(fields.mapValues(value))
        default:
            return SocketIOValue(json)
        }
    }

    /// Standard base64 with padding.
    public static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }

    /// Decodes standard base64; nil when it is not.
    public static func bytes(base64 text: some StringProtocol) -> [UInt8]? {
        Data(base64Encoded: String(text)).map { Array($0) }
    }
}
