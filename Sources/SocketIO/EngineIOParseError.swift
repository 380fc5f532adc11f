/// Why bytes are not a valid Engine.IO packet or payload.
///
/// A small struct over a private enum, so that cases can be added without breaking
/// callers; compare with the static members (`error == .invalidBase64`).
public struct EngineIOParseError: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    private enum Reason: Sendable, Equatable, Hashable {
        case emptyPacket, unknownPacketType, invalidBase64, invalidHandshake, unexpectedData
        case emptyPayload, invalidUTF8
    }

    private let reason: Reason
    private init(_ reason: Reason) { self.reason = reason }

    /// A packet with no type character (an empty record or frame).
    public static let emptyPacket = Self(.emptyPacket)
    /// The first character is not a packet type digit (`0`–`6`) nor `b`.
    public static let unknownPacketType = Self(.unknownPacketType)
    /// A `b` packet whose data is not base64.
    public static let invalidBase64 = Self(.invalidBase64)
    /// An `open` packet whose data is not a handshake object.
    public static let invalidHandshake = Self(.invalidHandshake)
    /// `close`, `upgrade` or `noop` followed by data.
    public static let unexpectedData = Self(.unexpectedData)
    /// A polling body with no packet at all.
    public static let emptyPayload = Self(.emptyPayload)
    /// A polling body that is not UTF-8.
    public static let invalidUTF8 = Self(.invalidUTF8)

    public var description: String {
        switch reason {
        case .emptyPacket: "empty packet"
        case .unknownPacketType: "unknown packet type"
        case .invalidBase64: "invalid base64 data"
        case .invalidHandshake: "invalid handshake"
        case .unexpectedData: "unexpected packet data"
        case .emptyPayload: "empty payload"
        case .invalidUTF8: "payload is not UTF-8"
        }
    }
}
