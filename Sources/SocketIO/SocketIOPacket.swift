import SwitchboardJSON

/// The Socket.IO v5 packet types and their wire digits.
public enum SocketIOPacketType: UInt8, Sendable, CaseIterable {
    case connect = 0
    case disconnect = 1
    case event = 2
    case ack = 3
    case connectError = 4
    case binaryEvent = 5
    case binaryAck = 6
}

/// A Socket.IO v5 packet (socket.io-protocol), carried in Engine.IO `message` packets.
///
/// `BINARY_EVENT` and `BINARY_ACK` are how `.event` and `.ack` travel when their
/// arguments hold binary values: the encoder picks the binary type by itself, and the
/// decoder puts the attachments back, so the values compare equal after a round trip.
public enum SocketIOPacket: Sendable, Equatable {
    /// Client: join a namespace, with an optional auth object. Server: accepted, with
    /// `{"sid": …}`.
    case connect(namespace: String, payload: JSONValue?)
    /// Leave a namespace (either side).
    case disconnect(namespace: String)
    /// An event: a name and its arguments; with an ack ID when an answer is wanted.
    case event(namespace: String, name: String, arguments: [SocketIOValue], ackID: Int?)
    /// The answer to the event with this ack ID.
    case ack(namespace: String, arguments: [SocketIOValue], ackID: Int)
    /// Server: joining the namespace was refused, with `{"message": …}` (or a string).
    case connectError(namespace: String, payload: JSONValue)

    /// The main namespace.
    public static let mainNamespace = "/"

    /// Event names a client cannot use: they mean something to the libraries.
    public static let reservedEventNames: Set<String> = [
        "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
    ]

    /// The packet's namespace.
    public var namespace: String {
        switch self {
        case .connect(let namespace, _), .disconnect(let namespace), .event(let namespace, _, _, _),
            .ack(let namespace, _, _), .connectError(let namespace, _):
            namespace
        }
    }

    /// The type written on the wire (binary types when arguments hold binary values).
    public var type: SocketIOPacketType {
        switch self {
        case .connect: .connect
        case .disconnect: .disconnect
        case .event(_, _, let arguments, _): arguments.contains(where: \.hasBinary) ? .binaryEvent : .event
        case .ack(_, let arguments, _): arguments.contains(where: \.hasBinary) ? .binaryAck : .ack
        case .connectError: .connectError
        }
    }

    /// Checks the rules a valid packet follows: the namespace starts with `/` and has no
    /// `,`; event names are not reserved; ack IDs are not negative; CONNECT carries an
    /// object and CONNECT_ERROR an object or a string.
    public func validate() throws(SocketIOError) {
        let namespace = self.namespace
        guard namespace.hasPrefix("/"), !namespace.contains(",") else { throw .invalidNamespace }
        switch self {
        case .connect(_, let payload):
            if let payload, payload.objectValue == nil { throw .invalidPayload }
        case .disconnect:
            break
        case .event(_, let name, _, let ackID):
            if Self.reservedEventNames.contains(name) { throw .reservedEventName }
            if let ackID, ackID < 0 { throw .invalidAckID }
        case .ack(_, _, let ackID):
            if ackID < 0 { throw .invalidAckID }
        case .connectError(_, let payload):
            if payload.objectValue == nil, payload.stringValue == nil { throw .invalidPayload }
        }
    }
}

/// An encoded packet: the text and, for binary types, the attachments, each sent as
/// its own binary message right after the text.
public struct SocketIOEncodedPacket: Sendable, Equatable {
    public var text: String
    public var attachments: [[UInt8]]

    /// The Engine.IO messages to send, in order.
    public var messages: [EngineIOMessage] { [.text(text)] + attachments.map { .binary($0) } }
}

extension SocketIOPacket {
    /// Encodes as `<type>[<#attachments>-][<namespace>,][<ack id>][JSON]`; the namespace
    /// is left out when it is `/`.
    public func encoded() -> SocketIOEncodedPacket {
        let type = self.type
        var payload: JSONValue?
        var attachments: [[UInt8]] = []
        var ackID: Int?
        switch self {
        case .connect(_, let data): payload = data
        case .disconnect: payload = nil
        case .event(_, let name, let arguments, let id):
            (payload, attachments) = SocketIOValue.array([.string(name)] + arguments).deconstructed()
            ackID = id
        case .ack(_, let arguments, let id):
            (payload, attachments) = SocketIOValue.array(arguments).deconstructed()
            ackID = id
        case .connectError(_, let data): payload = data
        }
        var text = String(type.rawValue)
        if type == .binaryEvent || type == .binaryAck { text += "\(attachments.count)-" }
        if namespace != Self.mainNamespace { text += namespace + "," }
        if let ackID { text += String(ackID) }
        if let payload { text += String(decoding: payload.jsonBytes, as: UTF8.self) }
        return SocketIOEncodedPacket(text: text, attachments: attachments)
    }

    /// The Engine.IO messages for the packet, in order.
    public var messages: [EngineIOMessage] { encoded().messages }
}
