import SwitchboardCore

/// What a node sends on a stream's channel: `<id>\n<envelope>`, with an empty id for a
/// broadcast (not stored). Shared by `RedisBroker` (PUBLISH) and `RedisClusterBroker`
/// (SPUBLISH), so both read each other's format.
enum RedisMessage {
    enum Failure: Error, CustomStringConvertible {
        case noIDLine, malformedID, undecodable

        var description: String {
            switch self {
            case .noIDLine: "redis message without an id line ignored"
            case .malformedID: "redis message with a malformed id ignored"
            case .undecodable: "undecodable redis message ignored"
            }
        }
    }

    /// The id (nil for a broadcast) and envelope of a message's payload.
    static func decode(_ payload: [UInt8]) -> Result<(MessageID?, Envelope), Failure> {
        guard let newline = payload.firstIndex(of: 0x0A) else { return .failure(.noIDLine) }
        var id: MessageID?
        if newline > payload.startIndex {
            id = MessageID(String(decoding: payload[..<newline], as: UTF8.self))
            guard id != nil else { return .failure(.malformedID) }
        }
        guard let envelope = Envelope(encoded: payload[(newline + 1)...]) else { return .failure(.undecodable) }
        return .success((id, envelope))
    }
}
