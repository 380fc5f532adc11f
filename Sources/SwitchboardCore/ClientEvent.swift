/// An event a client sends, already validated. The same JSON on every transport.
public struct ClientEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case join(RoomName)
        case leave(RoomName)
        case say(room: RoomName, text: String, echo: Bool)
        case whisper(to: Nickname, text: String)
        case ping
        /// A page of the room's member list: after the cursor `after` (a `next` of an
        /// earlier page), at most `limit` (nil: the server's page size).
        case members(room: RoomName, after: Nickname?, limit: Int?)
    }

    /// The largest `limit` a `members` request may ask for.
    public static let maxMembersPage = 1000

    public var kind: Kind
    /// Echoed in the `ack` or `error` answer; a string or an integer, at most 64 bytes.
    public var ref: JSONValue?

    public init(_ kind: Kind, ref: JSONValue? = nil) {
        self.kind = kind
        self.ref = ref
    }
}

/// Why a client event was refused. `code` is the stable code the client sees.
public struct EventError: Error, Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    public var ref: JSONValue?

    public init(_ code: ErrorCode, _ message: String, ref: JSONValue? = nil) {
        self.code = code
        self.message = message
        self.ref = ref
    }
}

/// Stable error codes (PROTOCOL.md).
public enum ErrorCode: String, Sendable, Equatable {
    case invalidMessage = "invalid_message"
    case invalidRoom = "invalid_room"
    case invalidNickname = "invalid_nickname"
    case textTooLong = "text_too_long"
    case userOffline = "user_offline"
    case rateLimited = "rate_limited"
    case notJoined = "not_joined"
    case tooManyRooms = "too_many_rooms"
    case nicknameTaken = "nickname_taken"
    case unavailable = "unavailable"
    case unauthorized = "unauthorized"
    case tooManyConnections = "too_many_connections"
    case invalidAvatar = "invalid_avatar"
    /// `--login closed`: only tokens minted by the application are accepted.
    case loginClosed = "login_closed"
}

public struct ClientEventLimits: Sendable {
    /// Maximum text length in Unicode scalars.
    public var maxTextLength: Int
    /// Maximum size of one encoded client event in bytes.
    public var maxEventBytes: Int

    public init(maxTextLength: Int = 4096, maxEventBytes: Int = 64 * 1024) {
        self.maxTextLength = maxTextLength
        self.maxEventBytes = maxEventBytes
    }
}

extension ClientEvent {
    /// Parses one client event from UTF-8 JSON. Every failure is an `EventError` carrying
    /// the event's `ref` when it could be read.
    public static func parse(_ bytes: some Collection<UInt8>, limits: ClientEventLimits = .init()) -> Result<ClientEvent, EventError> {
        guard bytes.count <= limits.maxEventBytes else {
            return .failure(EventError(.invalidMessage, "event larger than \(limits.maxEventBytes) bytes"))
        }
        guard let json = JSONValue.parse(bytes) else {
            return .failure(EventError(.invalidMessage, "not valid JSON"))
        }
        return parse(json, limits: limits)
    }

    public static func parse(_ json: JSONValue, limits: ClientEventLimits = .init()) -> Result<ClientEvent, EventError> {
        guard case .object(let fields) = json else {
            return .failure(EventError(.invalidMessage, "an event is a JSON object"))
        }
        var ref: JSONValue?
        switch fields["ref"] {
        case nil, .null?: ref = nil
        case .string(let text)? where text.utf8.count <= 64: ref = .string(text)
        case .int(let number)?: ref = .int(number)
        default: return .failure(EventError(.invalidMessage, "ref must be a string (≤ 64 bytes) or an integer"))
        }
        func fail(_ code: ErrorCode, _ message: String) -> Result<ClientEvent, EventError> {
            .failure(EventError(code, message, ref: ref))
        }
        guard let type = fields["type"]?.stringValue else { return fail(.invalidMessage, "missing type") }
        func room() -> Result<RoomName, EventError> {
            guard let raw = fields["room"]?.stringValue else {
                return .failure(EventError(.invalidRoom, "missing room", ref: ref))
            }
            guard let room = RoomName(raw) else {
                return .failure(EventError(.invalidRoom, "a room is 1–64 of letters, digits, _ - . :", ref: ref))
            }
            return .success(room)
        }
        func text() -> Result<String, EventError> {
            guard let text = fields["text"]?.stringValue else {
                return .failure(EventError(.invalidMessage, "text must be a string", ref: ref))
            }
            guard text.unicodeScalars.count <= limits.maxTextLength else {
                return .failure(EventError(.textTooLong, "text is longer than \(limits.maxTextLength) characters", ref: ref))
            }
            return .success(text)
        }
        do throws(EventError) {
            switch type {
            case "join": return .success(ClientEvent(.join(try room().get()), ref: ref))
            case "leave": return .success(ClientEvent(.leave(try room().get()), ref: ref))
            case "say":
                let room = try room().get()
                let text = try text().get()
                let echo: Bool
                switch fields["echo"] {
                case nil, .null?: echo = true
                case .bool(let value)?: echo = value
                default: return fail(.invalidMessage, "echo must be a boolean")
                }
                return .success(ClientEvent(.say(room: room, text: text, echo: echo), ref: ref))
            case "whisper":
                guard let raw = fields["to"]?.stringValue, let to = Nickname(raw) else {
                    return fail(.invalidNickname, "to must be a valid nickname")
                }
                return .success(ClientEvent(.whisper(to: to, text: try text().get()), ref: ref))
            case "ping":
                return .success(ClientEvent(.ping, ref: ref))
            case "members":
                let room = try room().get()
                var after: Nickname?
                switch fields["after"] {
                case nil, .null?: after = nil
                case .string(let raw)?:
                    guard let cursor = Nickname(raw) else { return fail(.invalidMessage, "after must be a cursor from next") }
                    after = cursor
                default: return fail(.invalidMessage, "after must be a cursor from next")
                }
                var limit: Int?
                switch fields["limit"] {
                case nil, .null?: limit = nil
                case .int(let value)? where (1...Int64(maxMembersPage)).contains(value): limit = Int(value)
                default: return fail(.invalidMessage, "limit must be an integer from 1 to \(maxMembersPage)")
                }
                return .success(ClientEvent(.members(room: room, after: after, limit: limit), ref: ref))
            default:
                return fail(.invalidMessage, "unknown type")
            }
        } catch {
            return .failure(error)
        }
    }

    /// Encodes the event as the client would send it (for tests and the bench).
    public var jsonBytes: [UInt8] {
        var fields: [String: JSONValue] = [:]
        switch kind {
        case .join(let room): fields = ["type": .string("join"), "room": .string(room.value)]
        case .leave(let room): fields = ["type": .string("leave"), "room": .string(room.value)]
        case .say(let room, let text, let echo):
            fields = ["type": .string("say"), "room": .string(room.value), "text": .string(text), "echo": .bool(echo)]
        case .whisper(let to, let text):
            fields = ["type": .string("whisper"), "to": .string(to.value), "text": .string(text)]
        case .ping: fields = ["type": .string("ping")]
        case .members(let room, let after, let limit):
            fields = ["type": .string("members"), "room": .string(room.value)]
            if let after { fields["after"] = .string(after.value) }
            if let limit { fields["limit"] = .int(Int64(limit)) }
        }
        if let ref { fields["ref"] = ref }
        return JSONValue.object(fields).jsonBytes
    }
}
