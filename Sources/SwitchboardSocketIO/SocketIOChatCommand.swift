import SocketIO
import SwitchboardCore

/// What a Socket.IO client's event means for the chat (PROTOCOL.md, "Socket.IO
/// compatibility"):
///
/// * `join "room"` / `leave "room"` (or `{"room": "…"}`): the native join and leave;
/// * `members "room"` (or `{"room", "after", "limit"}`): a page of the room's member
///   list, answered by the ack (or a `members` event when no ack was asked for);
/// * an event whose first argument is an object with a `to` field: a private event to
///   that nickname, delivered under the same name;
/// * any other event: a broadcast of the same name and arguments to the sender's rooms
///   (only to the room named by a `room` field of an object payload, when it has one),
///   others only — unless the first argument is an object with `"echo": true`.
public enum SocketIOChatCommand: Sendable, Equatable {
    case join(RoomName)
    case leave(RoomName)
    case members(room: RoomName, after: Nickname?, limit: Int?)
    case emit(CustomEvent)

    /// Maps one event; the error is what the client is told (ack or `error` event).
    public static func parse(name: String, arguments: [SocketIOValue]) -> Result<SocketIOChatCommand, EventError> {
        switch name {
        case "join", "leave":
            guard let raw = room(arguments.first) else {
                return .failure(EventError(.invalidRoom, "\(name) takes a room name"))
            }
            guard let room = RoomName(raw) else {
                return .failure(EventError(.invalidRoom, "a room is 1–64 of letters, digits, _ - . :"))
            }
            return .success(name == "join" ? .join(room) : .leave(room))
        case "members":
            // The native event's rules, from a room name or an object of its fields.
            var fields: [String: JSONValue] = ["type": .string("members")]
            switch arguments.first {
            case .string(let room)?: fields["room"] = .string(room)
            case .object(let given)?:
                for key in ["room", "after", "limit"] { fields[key] = given[key].map(StoredBinary.json) }
            default: return .failure(EventError(.invalidRoom, "members takes a room name or {room, after, limit}"))
            }
            return ClientEvent.parse(.object(fields)).flatMap { event in
                guard case .members(let room, let after, let limit) = event.kind else {
                    return .failure(EventError(.invalidMessage, "members takes a room name or {room, after, limit}"))
                }
                return .success(.members(room: room, after: after, limit: limit))
            }
        default:
            var target = CustomEvent.Target.rooms
            var echo = false
            if case .object(let fields)? = arguments.first {
                if let to = fields["to"] {
                    guard let raw = to.stringValue, let nickname = Nickname(raw) else {
                        return .failure(EventError(.invalidNickname, "to must be a valid nickname"))
                    }
                    target = .user(nickname)
                } else if let room = fields["room"] {
                    guard let raw = room.stringValue, let name = RoomName(raw) else {
                        return .failure(EventError(.invalidRoom, "room must be a room name"))
                    }
                    target = .room(name)
                }
                echo = fields["echo"] == .bool(true)
            }
            let event = CustomEvent(name: name, arguments: arguments.map(StoredBinary.json), target: target, echo: echo)
            return .success(.emit(event))
        }
    }

    private static func room(_ argument: SocketIOValue?) -> String? {
        switch argument {
        case .string(let room)?: room
        case .object(let fields)?: fields["room"]?.stringValue
        default: nil
        }
    }
}

/// The `auth` object of a Socket.IO CONNECT: `{token}` (from `POST /api/login`) or
/// `{nickname, avatar}` (log in on the fly). A token wins when both are given.
public enum SocketIOAuth: Sendable, Equatable {
    case token(String)
    case login(nickname: String, avatar: String?)

    /// Nil when the payload has neither a string `token` nor a string `nickname`.
    public init?(_ auth: JSONValue?) {
        guard case .object(let fields)? = auth else { return nil }
        if let token = fields["token"]?.stringValue {
            self = .token(token)
        } else if let nickname = fields["nickname"]?.stringValue {
            self = .login(nickname: nickname, avatar: fields["avatar"]?.stringValue)
        } else {
            return nil
        }
    }
}

/// The payloads the server answers with.
public enum SocketIOChatReply {
    /// The ack of an accepted event: `{"id": …}` (no `id` when there is none); when
    /// it was stored in several rooms, also `ids`, one per room in room-name order.
    public static func accepted(id: MessageID?, ids: [MessageID] = []) -> [SocketIOValue] {
        var fields: [String: SocketIOValue] = [:]
        if let id { fields["id"] = .string(id.description) }
        if ids.count > 1 { fields["ids"] = .array(ids.map { .string($0.description) }) }
        return [.object(fields)]
    }

    /// The ack of a `members` request: the native `members` event's object without
    /// `type` — `{"room", "count", "members": [{"nickname", "avatar"}], "next"}`.
    public static func members(_ room: RoomName, page: PresencePage) -> [SocketIOValue] {
        guard case .object(var fields)? = JSONValue.parse(ServerEvent.members(ref: nil, room: room, page: page).jsonBytes) else {
            return [.object([:])]
        }
        fields["type"] = nil
        return [SocketIOValue(JSONValue.object(fields))]
    }

    /// The ack of a refused event: `{"error": code, "message": …}`.
    public static func refused(_ error: EventError) -> [SocketIOValue] {
        [.object(["error": .string(error.code.rawValue), "message": .string(error.message)])]
    }

    /// The payload of `error` events (a refused event that asked for no ack):
    /// `{"code": …, "message": …, "event": name}`.
    public static func errorEvent(_ error: EventError, event name: String) -> [SocketIOValue] {
        [.object(["code": .string(error.code.rawValue), "message": .string(error.message), "event": .string(name)])]
    }

    /// The CONNECT_ERROR payload: `{"message": code, "data": {"code": …, "message": …}}`
    /// (clients show `message`; `data` is `err.data` in socket.io-client).
    /// `reason`: why a token was refused (`token_expired`, …), in `data.reason`.
    public static func connectError(_ error: EventError, reason: String? = nil) -> JSONValue {
        var data: [String: JSONValue] = ["code": .string(error.code.rawValue), "message": .string(error.message)]
        if let reason { data["reason"] = .string(reason) }
        return .object(["message": .string(error.code.rawValue), "data": .object(data)])
    }
}
