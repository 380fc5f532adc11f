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
        guard let token, let identity = chat.authenticate(token) else { return .failure(.unauthorized) }
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
            guard let token, chat.authenticate(token) != nil else { throw APIError.unauthorized }
            var response = Response.json(Array(#"{"error":"upgrade_required"}"#.utf8), status: .upgradeRequired)
            response.headers[.upgrade] = "websocket"
            return response
        }
    }

    /// Decides a `/ws` upgrade and returns the handler of the upgraded connection. The
    /// `UpgradeGate` has validated the request (token, origin, rooms, cursor, nickname
    /// claim) and left the result in `openings`: it is taken over, not checked again —
    /// one HMAC check and one claim per socket. Built on Hummingbird's closure upgrade
    /// rather than `router.ws`: the router's upgrade path stores the request context
    /// inside its own handler slot, a reference cycle that kept every WebSocket channel
    /// (buffers, pipeline) alive after it closed (about 5 KB each).
    func upgrade(_ request: Request, channel: any Channel) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let opening: Opening
        if let validated = Self.openings.take(for: channel) {
            opening = validated
        } else {
            guard case .success(let checked) = await validate(
                uri: request.uri.description, authorization: request.headers[.authorization],
                origin: request.headers[.origin], host: request.head.authority)
            else { return .dontUpgrade }
            opening = checked
        }
        _ = channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
        return .upgrade([:]) { inbound, _, context in
            try await serve(inbound: inbound, opening: opening, channel: channel, logger: context.logger)
        }
    }

    /// Openings validated by the gate, waiting for their upgrade (by channel).
    static let openings = OpeningHandOver()

    private func serve(inbound: WebSocketInboundStream, opening: Opening, channel: any Channel, logger: Logger) async throws {
        let (identity, rooms, cursor) = (opening.identity, opening.rooms, opening.cursor)
        let connection = WebSocketConnection(
            nickname: identity.nickname, channel: channel, maxQueuedFrames: configuration.maxQueuedFrames,
            metrics: chat.metrics)
        let opened: ChatService.Opened
        do {
            opened = try await chat.open(
                identity, subscriber: connection, transport: "websocket", rooms: rooms, cursor: cursor,
                remote: channel.remoteAddress?.ipAddress, claimed: true)
        } catch {
            let code: WebSocketErrorCode =
                switch error.code {
                case .nicknameTaken: .unknown(4409)
                case .tooManyConnections: .unknown(1013)
                default: .unknown(4503)
                }
            connection.closeSoon(code: code, reason: error.code.rawValue)
            return
        }
        let hub = chat.hub
        connection.open(
            welcome: hub.encode(opened.welcome, format: .native, stream: nil, id: nil, envelope: nil),
            backlog: opened.resets.map { hub.encode($0, format: .native, stream: nil, id: nil, envelope: nil) }
                + opened.backlog.map { hub.encode($0.envelope.event, format: .native, stream: $0.stream, id: $0.id, envelope: $0.envelope) },
            cursor: opened.cursor)
        let logger = logger.with("session.id", "\(connection.connectionID)").with("nickname", "\(identity.nickname)")
        logger.debug("websocket open")
        defer { logger.debug("websocket closed") }
        do {
            for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
                let replies: [ServerEvent]
                switch message {
                case .text(let text):
                    switch ClientEvent.parse(Array(text.utf8), limits: configuration.chat.eventLimits) {
                    case .success(let event): replies = await chat.handle(event, from: opened.session)
                    case .failure(let error):
                        replies = [.error(error)]
                        chat.metrics.clientEvents.add(1, ordering: .relaxed)
                        chat.countErrors(replies)
                    }
                case .binary:
                    replies = [.error(ref: nil, code: .invalidMessage, message: "send events as text frames")]
                    chat.metrics.clientEvents.add(1, ordering: .relaxed)
                    chat.countErrors(replies)
                }
                for reply in replies { hub.send(reply, to: connection) }
            }
        } catch {
            logger.debug("websocket inbound ended", metadata: ["error": "\(error)"])
            await chat.close(opened.session)
            chat.metrics.count("disconnects", "message_too_large")
            connection.closeSoon(code: .messageTooLarge, reason: "message too large")
            return
        }
        await chat.close(opened.session)
    }
}

extension Logger {
    func with(_ key: String, _ value: String) -> Logger {
        var copy = self
        copy[metadataKey: key] = .string(value)
        return copy
    }
}

/// Hands a validated `Opening` from the `UpgradeGate` to the upgrade of the same channel.
/// An entry left behind (the client went away before the upgrade) goes with its channel.
final class OpeningHandOver: Sendable {
    private let openings = Mutex<[ObjectIdentifier: WebSocketTransport.Opening]>([:])

    func store(_ opening: WebSocketTransport.Opening, for channel: any Channel) {
        let key = ObjectIdentifier(channel)
        openings.withLock { $0[key] = opening }
        channel.closeFuture.whenComplete { [self] _ in _ = openings.withLock { $0.removeValue(forKey: key) } }
    }

    func take(for channel: any Channel) -> WebSocketTransport.Opening? {
        openings.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}
