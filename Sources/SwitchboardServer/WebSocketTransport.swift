import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

/// `GET /ws?token=…[&rooms=a,b][&cursor=…]`: native events as text frames.
struct WebSocketTransport {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.ws("/ws") { request, context in
            guard let token = request.token, let identity = chat.authenticate(token) else { throw APIError.unauthorized }
            try OriginPolicy(allowed: configuration.allowedOrigins).checkUpgrade(request)
            _ = try request.rooms(limit: configuration.chat.maxRoomsPerConnection)
            _ = try request.cursor()
            do {
                guard try await chat.broker.claimNickname(identity.nickname, session: identity.session, ttlSeconds: configuration.chat.nicknameClaimSeconds)
                else { throw APIError(.conflict, ErrorCode.nicknameTaken.rawValue, "the nickname is held by another session") }
            } catch let error as APIError {
                throw error
            } catch {
                throw APIError(.serviceUnavailable, ErrorCode.unavailable.rawValue, "the cluster backend is unavailable")
            }
            _ = context.channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
            return .upgrade([:])
        } onUpgrade: { inbound, _, wsContext in
            try await serve(inbound: inbound, request: wsContext.request, context: wsContext.requestContext)
        }
    }

    private func serve(inbound: WebSocketInboundStream, request: Request, context: SwitchboardRequestContext) async throws {
        guard let token = request.token, let identity = chat.authenticate(token) else { return }
        let rooms = (try? request.rooms(limit: configuration.chat.maxRoomsPerConnection)) ?? []
        let cursor = try? request.cursor()
        let connection = WebSocketConnection(
            nickname: identity.nickname, channel: context.channel, maxQueuedFrames: configuration.maxQueuedFrames)
        let opened: ChatService.Opened
        do {
            opened = try await chat.open(identity, subscriber: connection, transport: "websocket", rooms: rooms, cursor: cursor)
        } catch {
            let code: WebSocketErrorCode = error.code == .nicknameTaken ? .unknown(4409) : .unknown(4503)
            connection.closeSoon(code: code, reason: error.code.rawValue)
            return
        }
        let hub = chat.hub
        connection.open(
            welcome: hub.encode(opened.welcome, format: .native, stream: nil, id: nil, envelope: nil),
            backlog: opened.resets.map { hub.encode($0, format: .native, stream: nil, id: nil, envelope: nil) }
                + opened.backlog.map { hub.encode($0.envelope.event, format: .native, stream: $0.stream, id: $0.id, envelope: $0.envelope) },
            cursor: opened.cursor)
        let logger = context.logger.with("session.id", "\(connection.connectionID)").with("nickname", "\(identity.nickname)")
        logger.debug("websocket open")
        defer { logger.debug("websocket closed") }
        do {
            for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
                let replies: [ServerEvent]
                switch message {
                case .text(let text):
                    switch ClientEvent.parse(Array(text.utf8), limits: configuration.chat.eventLimits) {
                    case .success(let event): replies = await chat.handle(event, from: opened.session)
                    case .failure(let error): replies = [.error(error)]
                    }
                case .binary:
                    replies = [.error(ref: nil, code: .invalidMessage, message: "send events as text frames")]
                }
                for reply in replies { hub.send(reply, to: connection) }
            }
        } catch {
            logger.debug("websocket inbound ended", metadata: ["error": "\(error)"])
            await chat.close(opened.session)
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
