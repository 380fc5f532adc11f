/// An event a client emits under a name of its own, with JSON arguments: what a
/// Socket.IO `socket.emit("chat", payload)` becomes. It is stored and delivered like a
/// chat message (one id per stream, history, resume), as an application event whose
/// fields are ``fields(from:)``.
public struct CustomEvent: Sendable, Equatable {
    /// Where it goes.
    public enum Target: Sendable, Equatable {
        /// Every room the sending connection is in (one stored copy per room).
        case rooms
        /// One room the sending connection is in.
        case room(RoomName)
        /// Every connection of this nickname, cluster-wide (and the sender's other
        /// connections, as a whisper).
        case user(Nickname)
    }

    /// The event name, as the client emitted it.
    public var name: String
    /// The arguments (binary values already turned into JSON by the transport).
    public var arguments: [JSONValue]
    public var target: Target
    /// Whether the sending connection receives it too (`io.emit`); otherwise only the
    /// others do (`socket.broadcast.emit`).
    public var echo: Bool

    public init(name: String, arguments: [JSONValue], target: Target, echo: Bool) {
        self.name = name
        self.arguments = arguments
        self.target = target
        self.echo = echo
    }

    /// Event types of the native protocol: a custom event of one of these names is
    /// delivered to native clients with `"type": "event"` instead, so a client never
    /// mistakes it for the server's own event.
    public static let nativeTypes: Set<String> = [
        "welcome", "message", "private", "presence", "joined", "left", "ack", "error", "pong", "reset", "event",
    ]

    /// The `type` native clients see: the name itself when it is 1–64 of letters,
    /// digits, `_ - . :` and not a native type; `event` otherwise.
    public var nativeType: String {
        guard !Self.nativeTypes.contains(name), RoomName(name) != nil else { return "event" }
        return name
    }

    /// The stored event: `type` (``nativeType``), `event` (the name), `from` (stamped by
    /// the server), `data` (the first argument; when it is an object, with `from` set in
    /// it too, replacing whatever the client put there), `extra` (the other arguments,
    /// only when there are some). `id` and `room`/`to` are added on delivery.
    public func fields(from sender: Sender) -> [String: JSONValue] {
        let from = JSONValue.object(["nickname": .string(sender.nickname.value), "avatar": .string(sender.avatar)])
        var fields: [String: JSONValue] = ["type": .string(nativeType), "event": .string(name), "from": from]
        if var data = arguments.first {
            if case .object(var object) = data {
                object["from"] = from
                data = .object(object)
            }
            fields["data"] = data
        }
        if arguments.count > 1 { fields["extra"] = .array(Array(arguments.dropFirst())) }
        return fields
    }
}
