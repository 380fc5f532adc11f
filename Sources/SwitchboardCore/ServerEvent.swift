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
    /// An event already in its native encoding (without id), as it arrives from the
    /// broker: relayed without parsing; `with(id:)` splices the id in.
    case encoded(type: String, json: [UInt8])
    case welcome(nickname: Nickname, avatar: String, node: String, transport: String, cursor: String)
    case message(id: MessageID?, room: RoomName, from: Sender, text: String, ts: Int64)
    case privateMessage(id: MessageID?, from: Sender, to: Nickname, text: String, ts: Int64)
    case presence(room: RoomName, count: Int)
    /// A page of the room's member list (`count` = `page.total`): the answer to a
    /// `members` request (with its `ref`), or a snapshot after a join and after changes
    /// in rooms under the join/leave limit.
    case members(ref: JSONValue?, room: RoomName, page: PresencePage)
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
        case .members: "members"
        case .joined: "joined"
        case .left: "left"
        case .ack: "ack"
        case .error: "error"
        case .pong: "pong"
        case .reset: "reset"
        case .application(_, _, let fields): fields["type"]?.stringValue ?? "event"
        case .encoded(let type, _): type
        }
    }

    /// Equal when the native encodings are equal (the encoder is deterministic), so an
    /// `.encoded` event equals the structured event it was encoded from.
    public static func == (lhs: ServerEvent, rhs: ServerEvent) -> Bool {
        lhs.jsonBytes == rhs.jsonBytes
    }

    /// The same event carrying the id its stream assigned.
    public func with(id: MessageID) -> ServerEvent {
        switch self {
        case .message(_, let room, let from, let text, let ts): .message(id: id, room: room, from: from, text: text, ts: ts)
        case .privateMessage(_, let from, let to, let text, let ts):
            .privateMessage(id: id, from: from, to: to, text: text, ts: ts)
        case .application(_, let target, let fields): .application(id: id, target: target, fields: fields)
        case .encoded(let type, let json): .encoded(type: type, json: ServerEvent.splice(id: id, into: json, type: type))
        default: self
        }
    }

    /// `{"type":"T",…}` → `{"type":"T","id":"…",…}`: the native encoder writes `type`
    /// first, so the id goes right after it.
    static func splice(id: MessageID, into json: [UInt8], type: String) -> [UInt8] {
        let head = 9 + type.utf8.count + 1  // {"type":"  T  "
        guard json.count > head else { return json }
        var out: [UInt8] = []
        out.reserveCapacity(json.count + 32)
        out.append(contentsOf: json[..<head])
        out.append(contentsOf: #","id":""#.utf8)
        out.append(contentsOf: id.description.utf8)
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: json[head...])
        return out
    }

    /// The structured form (parses an `.encoded` event).
    public var decoded: ServerEvent? {
        guard case .encoded(_, let json) = self else { return self }
        return ServerEvent.parse(json)
    }

    public static func error(_ error: EventError) -> ServerEvent {
        .error(ref: error.ref, code: error.code, message: error.message)
    }
}
