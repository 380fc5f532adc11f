import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import SocketIO
import SocketIOHummingbird
import SwitchboardCore

/// `/socket.io/` (Engine.IO v4, Socket.IO v5): polling (`GET`/`POST`) on the HTTP
/// router, WebSocket (new sessions and upgrades) on the upgrade router, both on one
/// `EngineIOEndpoint` whose sessions run the chat (`SocketIOChatHandler`).
///
/// A session lives on the node that opened it; its ID names that node, and a poll, POST
/// or upgrade that the balancer sent elsewhere is forwarded there through the broker
/// (`SocketIOPeers`): no sticky sessions. A session of a dead node, or none at all, gets
/// the protocol's `400 {"code":1,…}`.
struct SocketIOTransport: Sendable {
    let endpoint: EngineIOEndpoint
    let configuration: ServerConfiguration
    let peers: SocketIOPeers

    init(chat: ChatService, configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        let engine = EngineIOConfiguration(
            pingInterval: configuration.socketIOPingInterval, pingTimeout: configuration.socketIOPingTimeout,
            maxPayload: configuration.maxMessageBytes)
        let socketIO = SocketIOConfiguration(namespaces: Set(configuration.socketIONamespaces))
        let handler = SocketIOChatHandler(
            chat: chat, maxQueuedFrames: configuration.maxQueuedFrames, logger: logger, loginOpen: configuration.login == .open,
            recoveryWindow: configuration.socketIORecoveryWindow)
        self.peers = SocketIOPeers(chat: chat, logger: logger)
        self.endpoint = EngineIOEndpoint(
            configuration: engine, application: SocketIOApplication(configuration: socketIO, handler: handler),
            logger: logger, cors: false, maxBacklog: configuration.maxQueuedFrames, peers: peers)
    }

    /// Polling on the HTTP router (CORS is the router's middleware's).
    func register(on router: Router<SwitchboardRequestContext>) {
        for method in [HTTPRequest.Method.get, .post, .options] {
            router.on("/socket.io", method: method) { request, context in
                await endpoint.respond(
                    to: request, eventLoop: context.channel.eventLoop, remoteAddress: context.channel.remoteAddress?.ipAddress)
            }
        }
    }

    /// Decides a `/socket.io/` WebSocket upgrade (the UpgradeGate has answered bad
    /// requests already; this is the same check) and returns its handler.
    func upgrade(_ request: Request, channel: any Channel) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard refusal(EndpointRequest(request)) == nil else { return .dontUpgrade }
        _ = channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
        let query = EngineIOEndpoint.query(request.uri.query)
        let endpoint = self.endpoint
        return .upgrade([:]) { inbound, outbound, _ in
            await endpoint.serveWebSocket(query: query, inbound: inbound, outbound: outbound, channel: channel)
        }
    }

    /// What the UpgradeGate and the upgrade route look at.
    struct EndpointRequest {
        var query: String?
        var origin: String?
        var host: String?

        init(_ request: Request) {
            self.query = request.uri.query
            self.origin = request.headers[.origin]
            self.host = request.head.authority
        }

        init(_ head: HTTPRequestHead) {
            self.query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init)
            self.origin = head.headers["Origin"].first
            self.host = head.headers["Host"].first
        }
    }

    /// Why a WebSocket request to `/socket.io/` must be refused (origin, or the
    /// Engine.IO rules: transport, `EIO`, sid), nil to let it through.
    func refusal(_ request: EndpointRequest) -> APIError? {
        guard OriginPolicy(allowed: configuration.allowedOrigins).isAllowed(origin: request.origin, host: request.host) else {
            return APIError(.forbidden, "origin_not_allowed", "origin not allowed")
        }
        let engineRequest = EngineIORequest(method: "GET", query: EngineIOEndpoint.query(request.query), isWebSocketUpgrade: true)
        guard case .failure(let error) = endpoint.route(engineRequest) else { return nil }
        return APIError(error)
    }
}

extension APIError {
    /// An Engine.IO refusal, with a code named after the protocol's error.
    init(_ error: EngineIOServerError) {
        let code =
            switch error.code {
            case 0: "unknown_transport"
            case 1: "unknown_sid"
            case 2: "bad_handshake_method"
            case 4: "forbidden"
            case 5: "unsupported_protocol_version"
            default: "bad_request"
            }
        self.init(HTTPResponse.Status(code: error.status), code, error.message)
    }
}
