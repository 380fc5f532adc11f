import Logging
import NIOCore
import SocketIO
import Synchronization

/// One Engine.IO endpoint (`/engine.io/`, `/socket.io/`) over Hummingbird: the
/// ``EngineIOSession`` state machines of the SocketIO module, each bound to an event loop
/// (see `EngineIOSessionHost`), reached through a registry keyed by session ID.
///
/// HTTP requests go to ``respond(to:eventLoop:remoteAddress:)``; upgraded WebSockets to
/// ``serveWebSocket(query:inbound:outbound:channel:)``. Routing follows
/// ``EngineIOServer/route(_:configuration:transport:)``, so every error of the protocol
/// (unknown sid, bad method, duplicate poll, invalid packet…) is answered as the
/// reference server does.
public final class EngineIOEndpoint: Sendable {
    /// The Engine.IO settings of every session.
    public let configuration: EngineIOConfiguration
    let application: any EngineIOApplication
    let logger: Logger
    /// Whether responses carry their own CORS headers (`cors: {origin: "*"}` of the test
    /// suites); off when a middleware owns CORS.
    let cors: Bool
    /// Frames written to a non-writable WebSocket before its client is dropped.
    let maxBacklog: Int
    private let registry = Mutex(Registry())

    struct Registry {
        var hosts: [String: EngineIOSessionHost] = [:]
        var socketCount: UInt64 = 0
    }

    /// - Parameters:
    ///   - configuration: heartbeat, payload and upgrade settings.
    ///   - application: what runs on the sessions.
    ///   - cors: answer with permissive CORS headers (and preflights) by itself.
    ///   - maxBacklog: frames queued to a non-writable WebSocket before it is closed.
    public init(
        configuration: EngineIOConfiguration, application: any EngineIOApplication, logger: Logger, cors: Bool = false,
        maxBacklog: Int = 1024
    ) {
        self.configuration = configuration
        self.application = application
        self.logger = logger
        self.cors = cors
        self.maxBacklog = maxBacklog
    }

    /// The number of open sessions.
    public var sessionCount: Int { registry.withLock { $0.hosts.count } }

    /// Checks a request against the protocol and the open sessions.
    public func route(_ request: EngineIORequest) -> EngineIORoute {
        EngineIOServer.route(request, configuration: configuration) { sid in
            registry.withLock { $0.hosts[sid] }?.currentTransport
        }
    }

    /// Closes every session (graceful shutdown): WebSockets are closed, waiting polls
    /// get the `close` packet.
    public func closeAll() async {
        let hosts = registry.withLock { Array($0.hosts.values) }
        for host in hosts { _ = await host.run { $0.close() } }
    }

    // MARK: - Sessions

    func host(_ sid: String) -> EngineIOSessionHost? {
        registry.withLock { $0.hosts[sid] }
    }

    func unregister(_ host: EngineIOSessionHost) {
        registry.withLock { registry in
            if registry.hosts[host.sid] === host { registry.hosts[host.sid] = nil }
        }
    }

    /// Opens a polling session on `eventLoop`; returns the handshake body.
    func handshake(on eventLoop: any EventLoop, remoteAddress: String?) async -> EngineIOReply.Response {
        let session = EngineIOSession(sid: Self.makeSID(), transport: .polling, configuration: configuration, now: .now)
        let host = EngineIOSessionHost(session: session, eventLoop: eventLoop, remoteAddress: remoteAddress, endpoint: self)
        registry.withLock { $0.hosts[session.sid] = host }
        _ = await host.run { $0.start(socket: nil) }
        return .body(session.handshakeBody)
    }

    /// A WebSocket was accepted: opens a new session on it (`upgrading` nil) or starts the
    /// upgrade of a polling session. Returns the host and the socket's ID, or nil when
    /// the caller must close the socket.
    func openWebSocket(
        upgrading sid: String?, writer: EngineIOSocketWriter, remoteAddress: String?
    ) async -> (EngineIOSessionHost, EngineIOWebSocketID)? {
        let number = registry.withLock { registry -> UInt64 in
            registry.socketCount += 1
            return registry.socketCount
        }
        guard let sid else {
            let newSID = Self.makeSID()
            let socket = EngineIOWebSocketID(sid: newSID, number: number)
            let session = EngineIOSession(
                sid: newSID, transport: .websocket, webSocket: socket, configuration: configuration, now: .now)
            let host = EngineIOSessionHost(
                session: session, eventLoop: writer.channel.eventLoop, remoteAddress: remoteAddress, endpoint: self)
            registry.withLock { $0.hosts[newSID] = host }
            _ = await host.run { $0.start(socket: (socket, writer)) }
            return (host, socket)
        }
        guard let host = host(sid) else { return nil }
        let socket = EngineIOWebSocketID(sid: sid, number: number)
        guard await host.run({ $0.beginUpgrade(socket, writer: writer) }) == true else { return nil }
        return (host, socket)
    }

    /// A session ID like the reference server's: 20 URL-safe base64 characters.
    public static func makeSID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet[Int(generator.next(upperBound: UInt8(64)))] })
    }
}
