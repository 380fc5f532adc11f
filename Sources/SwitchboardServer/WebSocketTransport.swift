import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import Synchronization

/// `GET /ws?token=…[&rooms=a,b][&cursor=…]`: native events as text frames.
struct WebSocketTransport {
    let chat: ChatService
    let configuration: ServerConfiguration

    /// What a valid `/ws` request asks for.
    struct Opening: Sendable {
        let identity: Identity
        let rooms: [RoomName]
        let cursor: Cursor?
    }

    /// Validates a `/ws` request: token, origin, rooms, cursor, and the nickname claim.
    func validate(uri: String, authorization: String?, origin: String?, host: String?, remote: String? = nil) async -> Result<Opening, APIError> {
        guard chat.wouldAdmit(remote: remote) else {
            return .failure(APIError(.serviceUnavailable, ErrorCode.tooManyConnections.rawValue, "too many connections"))
        }
        let parsed = URI(uri)
        let query = parsed.queryParameters
        var token = query["token"].map(String.init)
        if let authorization, authorization.hasPrefix("Bearer ") { token = String(authorization.dropFirst(7)) }
        let identity: Identity
        switch chat.identity(bearer: token) {
        case .success(let verified): identity = verified
        case .failure(let refusal): return .failure(refusal)
        }
        guard OriginPolicy(allowed: configuration.allowedOrigins).isAllowed(origin: origin, host: host) else {
            return .failure(APIError(.forbidden, "origin_not_allowed", "origin not allowed"))
        }
        var rooms: [RoomName] = []
        if let raw = query["rooms"], !raw.isEmpty {
            let parts = raw.split(separator: ",")
            guard parts.count <= configuration.chat.maxRoomsPerConnection else {
                return .failure(APIError(.badRequest, ErrorCode.tooManyRooms.rawValue, "at most \(configuration.chat.maxRoomsPerConnection) rooms"))
            }
            for part in parts {
                guard let room = RoomName(String(part)) else {
                    return .failure(APIError(.badRequest, ErrorCode.invalidRoom.rawValue, "a room is 1–64 of letters, digits, _ - . :"))
                }
                rooms.append(room)
            }
        }
        var cursor: Cursor?
        if let raw = query["cursor"] {
            guard let parsed = Cursor(String(raw)) else { return .failure(APIError(.badRequest, "invalid_cursor", "malformed cursor")) }
            cursor = parsed
        }
        do {
            guard try await chat.broker.claimNickname(identity.nickname, session: identity.session, ttlSeconds: configuration.chat.nicknameClaimSeconds)
            else { return .failure(APIError(.conflict, ErrorCode.nicknameTaken.rawValue, "the nickname is held by another session")) }
        } catch {
            return .failure(APIError(.serviceUnavailable, ErrorCode.unavailable.rawValue, "the cluster backend is unavailable"))
        }
        return .success(Opening(identity: identity, rooms: rooms, cursor: cursor))
    }

    /// A plain `GET /ws` (no upgrade): 401 without a valid token, else 426
    /// `{"error":"upgrade_required"}` with `Upgrade: websocket`.
    func register(on router: Router<SwitchboardRequestContext>) {
        router.get("/ws") { request, _ -> Response in
            var token = request.uri.queryParameters["token"].map(String.init)
            if let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") {
                token = String(authorization.dropFirst(7))
            }
            _ = try chat.identity(token: token)
            var response = Response.json(Array(#"{"error":"upgrade_required"}"#.utf8), status: .upgradeRequired)
            response.headers[.upgrade] = "websocket"
            return response
        }
    }
}

extension Logger {
    func with(_ key: String, _ value: String) -> Logger {
        var copy = self
        copy[metadataKey: key] = .string(value)
        return copy
    }
}
