/// Why a message is not a valid Socket.IO packet, or an operation breaks the protocol.
///
/// A small struct over a private enum; compare with the static members.
public struct SocketIOError: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    private enum Reason: Sendable, Equatable, Hashable {
        case emptyPacket, unknownPacketType, invalidAttachments, tooManyAttachments, invalidNamespace
        case invalidAckID, invalidPayload, reservedEventName, unexpectedBinary, unexpectedText
    }

    private let reason: Reason
    private init(_ reason: Reason) { self.reason = reason }

    /// An empty message.
    public static let emptyPacket = Self(.emptyPacket)
    /// The first character is not a packet type digit (`0`–`6`).
    public static let unknownPacketType = Self(.unknownPacketType)
    /// A bad attachment count (`<digits>-`), or a placeholder whose `num` is not an
    /// attachment.
    public static let invalidAttachments = Self(.invalidAttachments)
    /// More attachments announced than the decoder allows.
    public static let tooManyAttachments = Self(.tooManyAttachments)
    /// A namespace that does not start with `/` or contains `,`.
    public static let invalidNamespace = Self(.invalidNamespace)
    /// An ack ID that is not a non-negative integer, missing where required (ACK) or
    /// present where not allowed (CONNECT, DISCONNECT, CONNECT_ERROR).
    public static let invalidAckID = Self(.invalidAckID)
    /// A payload that is not JSON, or not the shape its packet type requires (CONNECT:
    /// object; DISCONNECT: none; EVENT: non-empty array starting with the event name;
    /// ACK: array; CONNECT_ERROR: object or string).
    public static let invalidPayload = Self(.invalidPayload)
    /// An event named `connect`, `connect_error`, `disconnect`, `disconnecting`,
    /// `newListener` or `removeListener`.
    public static let reservedEventName = Self(.reservedEventName)
    /// A binary message while no packet waits for attachments.
    public static let unexpectedBinary = Self(.unexpectedBinary)
    /// A text message while a packet still waits for attachments.
    public static let unexpectedText = Self(.unexpectedText)

    public var description: String {
        switch reason {
        case .emptyPacket: "empty packet"
        case .unknownPacketType: "unknown packet type"
        case .invalidAttachments: "illegal attachments"
        case .tooManyAttachments: "too many attachments"
        case .invalidNamespace: "invalid namespace"
        case .invalidAckID: "invalid ack id"
        case .invalidPayload: "invalid payload"
        case .reservedEventName: "reserved event name"
        case .unexpectedBinary: "got binary data when not reconstructing a packet"
        case .unexpectedText: "got plaintext data when reconstructing a packet"
        }
    }
}
