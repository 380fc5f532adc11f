import Hummingbird
import SwitchboardCore

/// `POST /api/publish` with `Authorization: Bearer <API key>`: an application back end
/// pushes `{"room": …, "event": {…}}` or `{"to": …, "event": {…}}` to every subscriber,
/// cluster-wide. Answers `{"id": …}`.
struct PublishRoutes {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.post("/api/publish") { request, context in
            let api = APIRoutes(chat: chat, configuration: configuration)
            try api.requireAPIKey(request)
            let json = try await api.readJSON(request, context: context)
            guard case .object(let event)? = json["event"] else {
                throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "event must be a JSON object")
            }
            if let type = event["type"], type.stringValue == nil {
                throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "event.type must be a string")
            }
            guard event.jsonValueSize <= configuration.maxMessageBytes else {
                throw APIError(.contentTooLarge, "body_too_large", "event too large")
            }
            let target: StreamKey
            switch (json["room"], json["to"]) {
            case (.string(let raw)?, nil):
                guard let room = RoomName(raw) else { throw APIError(.badRequest, ErrorCode.invalidRoom.rawValue, "invalid room") }
                target = .room(room)
            case (nil, .string(let raw)?):
                guard let nickname = Nickname(raw) else { throw APIError(.badRequest, ErrorCode.invalidNickname.rawValue, "invalid nickname") }
                target = .user(nickname)
            default:
                throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "give exactly one of room or to")
            }
            do {
                let id = try await chat.publishApplicationEvent(target: target, fields: event)
                return Response.json(JSONValue.object(["id": id.map { .string($0.description) } ?? .null]).jsonBytes)
            } catch {
                throw APIError(.serviceUnavailable, ErrorCode.unavailable.rawValue, "the cluster backend is unavailable")
            }
        }
    }
}

extension [String: JSONValue] {
    var jsonValueSize: Int { JSONValue.object(self).jsonBytes.count }
}
