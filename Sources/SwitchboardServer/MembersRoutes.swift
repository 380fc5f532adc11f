import Hummingbird
import SwitchboardCore

/// `GET /api/rooms/{room}/members[?after=…][&limit=…]` with
/// `Authorization: Bearer <API key>`: a page of the room's member list, cluster-wide, for
/// application back ends. Answers the `members` event's JSON (`count`, `members`,
/// `next`); the same validation as the client event.
struct MembersRoutes {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.get("/api/rooms/:room/members") { request, context in
            guard let key = configuration.apiKey, let header = request.headers[.authorization], header == "Bearer \(key)" else {
                throw APIError.unauthorized
            }
            var fields: [String: JSONValue] = ["type": .string("members")]
            fields["room"] = context.parameters.get("room").map(JSONValue.string)
            if let after = request.formParameter("after") { fields["after"] = .string(after) }
            if let raw = request.formParameter("limit") {
                guard raw.utf8.count <= 10, let limit = Int64(raw) else {
                    throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "limit must be an integer")
                }
                fields["limit"] = .int(limit)
            }
            let event = try ClientEvent.parse(.object(fields)).mapError { APIError($0) }.get()
            guard case .members(let room, let after, let limit) = event.kind else {
                throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "not a members request")
            }
            do throws(EventError) {
                let page = try await chat.members(of: room, after: after, limit: limit)
                return Response.json(ServerEvent.members(ref: nil, room: room, page: page).jsonBytes)
            } catch {
                throw APIError(error)
            }
        }
    }
}
