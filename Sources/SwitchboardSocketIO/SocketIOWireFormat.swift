import SocketIO
import SwitchboardCore

/// The `socketio` wire format: how the Hub encodes an event for the Socket.IO sockets of
/// one namespace, once per message per node — every such socket gets the same bytes.
///
/// The bytes are the event's Engine.IO packets as a polling payload writes them: the
/// text packet `4<socket.io packet>`, then, for binary arguments, one `b<base64>` record
/// per attachment, separated by `\x1e` (JSON never holds a raw `\x1e`).
///
/// * A stored object with a string `event` field (what ``CustomEvent`` stores; an
///   application event may do the same) becomes that event, with `data` and the `extra`
///   array as arguments and `{"$binary": …}` leaves as binary attachments.
/// * Any other event — `message`, `private`, `presence`, `joined`, `left`, application
///   events… — becomes an event named by its `type`, with its native JSON object
///   (including `type` and `id`) as the only argument: `42["message",{…}]`.
public enum SocketIOWireFormat {
    /// The format of the sockets of `namespace`: `socketio` for `/`, `socketio:/chat`…
    public static func format(namespace: String) -> WireFormat {
        WireFormat(namespace == SocketIOPacket.mainNamespace ? "socketio" : "socketio:" + namespace)
    }

    /// One encoder per namespace, for `Hub(encoders:)`.
    public static func encoders(namespaces: some Sequence<String>) -> [WireFormat: FrameEncoder] {
        var encoders: [WireFormat: FrameEncoder] = [:]
        for namespace in namespaces { encoders[format(namespace: namespace)] = encoder(namespace: namespace) }
        return encoders
    }

    /// The encoder of one namespace.
    public static func encoder(namespace: String) -> FrameEncoder {
        { event, stream, id, envelope in
            let (name, bytes) = encode(event, id: id, namespace: namespace)
            return Frame(
                bytes: bytes, type: name, stream: stream, id: id,
                excludeNickname: envelope?.excludeNickname, excludeConnection: envelope?.excludeConnection)
        }
    }

    /// The event name and the bytes for the sockets of `namespace`.
    public static func encode(_ event: ServerEvent, id: MessageID?, namespace: String) -> (name: String, bytes: [UInt8]) {
        let stamped = id.map { event.with(id: $0) } ?? event
        let json = stamped.jsonBytes
        if contains(json, Self.eventKey), case .object(let fields)? = JSONValue.parse(json),
            let name = fields["event"]?.stringValue
        {
            var arguments: [SocketIOValue] = []
            if let data = fields["data"] { arguments.append(StoredBinary.value(data)) }
            if case .array(let extra)? = fields["extra"] { arguments += extra.map(StoredBinary.value) }
            let packet = SocketIOPacket.event(namespace: namespace, name: name, arguments: arguments, ackID: nil)
            if (try? packet.validate()) != nil {
                let encoded = packet.encoded()
                var bytes: [UInt8] = [UInt8(ascii: "4")] + Array(encoded.text.utf8)
                for attachment in encoded.attachments {
                    bytes.append(0x1E)
                    bytes.append(UInt8(ascii: "b"))
                    bytes += Array(StoredBinary.base64(attachment).utf8)
                }
                return (name, bytes)
            }
        }
        let name = SocketIOPacket.reservedEventNames.contains(stamped.type) ? "event" : stamped.type
        var writer = JSONWriter(capacity: json.count + namespace.utf8.count + name.utf8.count + 8)
        writer.raw("42")
        if namespace != SocketIOPacket.mainNamespace { writer.raw(namespace + ",") }
        writer.byte(UInt8(ascii: "["))
        writer.string(name)
        writer.byte(UInt8(ascii: ","))
        writer.bytes(json)
        writer.byte(UInt8(ascii: "]"))
        return (name, writer.bytes)
    }

    /// The Engine.IO messages held in a frame's bytes (see the type's description).
    public static func messages(_ bytes: [UInt8]) -> [EngineIOMessage] {
        var messages: [EngineIOMessage] = []
        for record in bytes.split(separator: 0x1E, omittingEmptySubsequences: true) {
            switch record.first {
            case UInt8(ascii: "4"):
                messages.append(.text(String(decoding: record.dropFirst(), as: UTF8.self)))
            case UInt8(ascii: "b"):
                let text = String(decoding: record.dropFirst(), as: UTF8.self)
                if let bytes = StoredBinary.bytes(base64: text) { messages.append(.binary(bytes)) }
            default:
                continue
            }
        }
        return messages
    }

    private static let eventKey = Array(#""event":""#.utf8)

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count, let first = needle.first else { return false }
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            if haystack[index] == first, haystack[index..<index + needle.count].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
