import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import HTTPTypes
import ServiceLifecycle
import SocketIOHummingbird
import UnixSignals
import SwitchboardCore
import SwitchboardSocketIO

/// One Switchboard node: the HTTP/WebSocket application around a `ChatService`.
public struct SwitchboardServer: Sendable {
    public let configuration: ServerConfiguration
    public let chat: ChatService
    private let logger: Logger
    let pollSessions: PollSessions
    let socketIO: SocketIOTransport
    /// The cluster as `/dashboard` shows it.
    let monitor: ClusterMonitor

    /// `externalTokens`: the application's JWTs (`SwitchboardJWT`), accepted wherever
    /// this node's own tokens are.
    public init(
        configuration: ServerConfiguration, broker: any Broker, logger: Logger, externalTokens: (any ExternalTokenVerifier)? = nil
    ) {
        self.configuration = configuration
        self.logger = logger
        // Every message is encoded once per wire format: native JSON, and one Socket.IO
        // encoding per namespace.
        var encoders: [WireFormat: FrameEncoder] = [.native: WireFormat.nativeEncoder]
        encoders.merge(SocketIOWireFormat.encoders(namespaces: configuration.socketIONamespaces)) { native, _ in native }
        self.chat = ChatService(
            configuration: configuration.chat, broker: broker, hub: Hub(encoders: encoders),
            signer: TokenSigner(secrets: configuration.secrets), logger: logger, externalTokens: externalTokens)
        self.pollSessions = PollSessions(chat: chat, window: configuration.pollPresenceWindow)
        self.socketIO = SocketIOTransport(chat: chat, configuration: configuration, logger: logger)
        self.monitor = ClusterMonitor(chat: chat)
    }

    /// The router with every route of PROTOCOL.md served so far.
    func makeRouter() -> Router<SwitchboardRequestContext> {
        let router = Router(context: SwitchboardRequestContext.self)
        router.add(middleware: CORSPolicyMiddleware(policy: OriginPolicy(allowed: configuration.allowedOrigins)))
        APIRoutes(chat: chat, configuration: configuration).register(on: router)
        OperationsRoutes(chat: chat).register(on: router)
        StaticRoutes().register(on: router)
        DashboardRoutes(monitor: monitor, api: APIRoutes(chat: chat, configuration: configuration)).register(on: router)
        WebSocketTransport(chat: chat, configuration: configuration).register(on: router)
        StreamTransport(chat: chat, configuration: configuration).register(on: router)
        PollTransport(chat: chat, sessions: pollSessions, configuration: configuration).register(on: router)
        SendRoutes(chat: chat, configuration: configuration).register(on: router)
        PublishRoutes(chat: chat, configuration: configuration).register(on: router)
        MembersRoutes(chat: chat, configuration: configuration).register(on: router)
        socketIO.register(on: router)
        return router
    }

    /// Builds the application: the HTTP server plus the chat service's background work.
    /// `onServerRunning` is called with the bound port once the server listens.
    public func makeApplication(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> some ApplicationProtocol {
        try await chat.start()
        await socketIO.peers.listen(socketIO.endpoint)
        let router = makeRouter()
        return Application(
            router: router,
            server: server(router: router),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard"),
            services: [
                ChatRunner(chat: chat), pollSessions, SocketIOCloser(endpoint: socketIO.endpoint), ClusterMonitorRunner(monitor: monitor),
                SocketIOPeersRunner(peers: socketIO.peers, endpoint: socketIO.endpoint),
            ],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }
}

extension SwitchboardServer {
    /// HTTP/1 with WebSocket upgrade, with the `UpgradeGate` answering refused upgrades.
    /// Upgrades of `/ws` and `/socket.io/` are decided by a closure, not a router (see
    /// `WebSocketTransport.upgrade`); plain `GET`s of both paths go to the HTTP router.
    func server(router: Router<SwitchboardRequestContext>) -> HTTPServerBuilder {
        let configuration = self.configuration
        let transport = WebSocketTransport(chat: chat, configuration: configuration)
        let socketIO = self.socketIO
        let (chat, logger) = (self.chat, self.logger)
        let streams = StreamTransport(chat: chat, configuration: configuration)
        let webSocketShared = NativeWebSocketHandler.Shared(chat: chat, configuration: configuration, logger: logger)
        return HTTPServerBuilder { responder in
            HTTPConnectionChannel(GatedWebSocketChannel(
                inner: HTTP1WebSocketUpgradeChannel(
                    responder: responder,
                    configuration: .init(
                        http1: .init(
                            additionalChannelHandlers: [InputClosedHandler()],
                            idleTimeout: nil,
                            httpDecoderConfiguration: .init(
                                maxHeaderFieldSize: configuration.maxHeaderBytes, maxHeaderListSize: configuration.maxHeaderBytes * 2,
                                maxHeaderFieldCount: 100)),
                        ws: .init(
                            maxFrameSize: configuration.maxMessageBytes,
                            autoPing: .enabled(timePeriod: configuration.pingInterval)))
                ) { head, channel, _ in
                    let request = Request(head: head, body: .init(buffer: .init()))
                    switch request.uri.path {
                    case "/socket.io", "/socket.io/": return socketIO.upgrade(request, channel: channel)
                    default: return .dontUpgrade
                    }
                },
                check: { path, head, channel in
                    if path == "/sse" || path == "/iframe" {
                        do {
                            let request = Request(
                                head: try HTTPRequest(head, secure: false, splitCookie: false), body: .init(buffer: .init()))
                            guard let framing = try StreamTransport.framing(of: request) else { return .proceed }
                            let opening = try await streams.open(
                                request, channel: channel, framing: framing, output: head.version == .http1_1 ? .chunked : .plain)
                            // The session ends with the stream, however it ends (also when
                            // the client left before the stream started).
                            opening.connection.sink.finished.futureResult.whenComplete { _ in
                                Task { await chat.close(opening.opened.session) }
                            }
                            return .stream(opening)
                        } catch let error as APIError {
                            return .refuse(error)
                        } catch {
                            return .refuse(APIError(.badRequest, "bad_request", "\(error)"))
                        }
                    }
                    if path == "/socket.io" || path == "/socket.io/" {
                        return socketIO.refusal(SocketIOTransport.EndpointRequest(head)).map { .refuse($0) } ?? .proceed
                    }
                    guard path == "/ws" else { return .proceed }
                    let result = await transport.validate(
                        uri: head.uri, authorization: head.headers["Authorization"].first,
                        origin: head.headers["Origin"].first, host: head.headers["Host"].first,
                        remote: channel.remoteAddress?.ipAddress)
                    switch result {
                    case .failure(let error): return .refuse(error)
                    case .success(let opening): return .native(opening)
                    }
                },
                makeNative: { opening in NativeWebSocketHandler(opening: opening, shared: webSocketShared) },
                startStream: { opening in streams.start(opening) },
                maxFrameSize: configuration.maxMessageBytes))
        }
    }
}

extension SwitchboardServer {
    /// Runs the node until SIGTERM/SIGINT: then drains (WebSocket clients get 1012,
    /// streams a retry hint, waiting polls an answer), stops accepting and exits within
    /// `drainTimeout` plus a bounded server shutdown.
    public func run(application: some ApplicationProtocol, drainTimeout: Duration = .seconds(5)) async throws {
        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: application),
                .init(service: Drainer(chat: chat, timeout: drainTimeout), successTerminationBehavior: .ignore),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger)
        // Whatever still hangs after the drain is cancelled.
        configuration.maximumGracefulShutdownDuration = drainTimeout + .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// Shut down first (services stop in reverse order): drains the node's connections
/// before the HTTP server stops.
struct Drainer: Service {
    let chat: ChatService
    let timeout: Duration

    func run() async throws {
        try? await gracefulShutdown()
        await chat.drain(timeout: timeout)
    }
}

/// On graceful shutdown (after the drain, which already closed every joined socket),
/// closes the Engine.IO sessions left, so no poll is left waiting.
struct SocketIOCloser: Service {
    let endpoint: EngineIOEndpoint
    func run() async throws {
        try? await gracefulShutdown()
        await endpoint.closeAll()
    }
}

/// Runs presence and claim refresh for the life of the server.
struct ChatRunner: Service {
    let chat: ChatService
    func run() async throws {
        await cancelWhenGracefulShutdown { await chat.run() }
    }
}
