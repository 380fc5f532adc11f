/// Who sent a message, as the server stamped it from the sender's token.
public struct Sender: Sendable, Equatable {
    public var nickname: Nickname
    public var avatar: String

    public init(nickname: Nickname, avatar: String) {
        self.nickname = nickname
        self.avatar = avatar
    }
}

/// An event the server sends. Encoded by hand (`ServerEvent+JSON.swift`), once per message.
public enum ServerEvent: Sendable, Equatable {
    case welcome(nickname: Nickname, avatar: String, node: String, transport: String, cursor: String)
    case message(id: MessageID?, room: RoomName, from: Sender, text: String, ts: Int64)
    case privateMessage(id: MessageID?, from: Sender, to: Nickname, text: String, ts: Int64)
    case presence(room: RoomName, count: Int)
    case joined(room: RoomName, nickname: Nickname)
    case left(room: RoomName, nickname: Nickname)
    case ack(ref: JSONValue?, id: MessageID?)
    case error(ref: JSONValue?, code: ErrorCode, message: String)
    case pong
    /// The client's cursor points before the history window of `stream`: events were
    /// lost for it and it should reload its state.
    case reset(room: RoomName?, cursor: String)
    /// An application event pushed through `POST /api/publish`: its own fields unchanged,
    /// plus `id` and `room` or `to`, and `type: "event"` when it had no type.
    case application(id: MessageID?, target: StreamKey, fields: [String: JSONValue])

    /// The event's type name on the wire.
    public var type: String {
        switch self {
        case .welcome: "welcome"
        case .message: "message"
        case .privateMessage: "private"
        case .presence: "presence"
        case .joined: "joined"
        case .left: "left"
        case .ack: "ack"
        case .error: "error"
        case .pong: "pong"
        case .reset: "reset"
        case .application(_, _, let fields): fields["type"]?.stringValue ?? "event"
        }
    }

    /// The same event carrying the id its stream assigned.
    public func with(id: MessageID) -> ServerEvent {
        switch self {
        case .message(_, let room, let from, let text, let ts): .message(id: id, room: room, from: from, text: text, ts: ts)
        case .privateMessage(_, let from, let to, let text, let ts):
            .privateMessage(id: id, from: from, to: to, text: text, ts: ts)
        case .application(_, let target, let fields): .application(id: id, target: target, fields: fields)
        default: self
        }
    }

    public static func error(_ error: EventError) -> ServerEvent {
        .error(ref: error.ref, code: error.code, message: error.message)
    }
}
