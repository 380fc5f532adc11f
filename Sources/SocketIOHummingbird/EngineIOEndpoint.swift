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
    /// Serves requests for the sessions of other nodes; nil on a node alone.
    let forwarder: EngineIOForwarder?
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
    ///   - peers: the other nodes of the cluster: session IDs then name this node, and a
    ///     request for another node's session is forwarded there (``receiveFromPeer(_:)``
    ///     must get what they send, ``checkPeers()`` run every second).
    public init(
        configuration: EngineIOConfiguration, application: any EngineIOApplication, logger: Logger, cors: Bool = false,
        maxBacklog: Int = 1024, peers: (any EngineIOPeers)? = nil
    ) {
        self.configuration = configuration
        self.application = application
        self.logger = logger
        self.cors = cors
        self.maxBacklog = maxBacklog
        self.forwarder = peers.map { EngineIOForwarder(peers: $0, logger: logger) }
    }

    /// A message another node's endpoint sent to this one (``EngineIOPeers/send(_:to:)``).
    public func receiveFromPeer(_ message: [UInt8]) {
        forwarder?.receive(message, endpoint: self)
    }

    /// Answers forwarded requests whose node died or that waited too long
    /// (`Session ID unknown`) and closes the sockets relayed to dead nodes.
    public func checkPeers() {
        forwarder?.expire()
    }

    /// Whether `sid` is a session another node would hold (whether that node is alive is
    /// checked when the request is served).
    func isRemote(_ sid: String) -> Bool {
        host(sid) == nil && forwarder?.namesOtherNode(sid) == true
    }

    /// The number of open sessions.
    public var sessionCount: Int { registry.withLock { $0.hosts.count } }

    /// Checks a request against the protocol and the open sessions.
    public func route(_ request: EngineIORequest) -> EngineIORoute {
        EngineIOServer.route(request, configuration: configuration) { sid in
            // Another node's session: that node checks its transport.
            registry.withLock { $0.hosts[sid] }?.currentTransport ?? (forwarder?.namesOtherNode(sid) == true ? .polling : nil)
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
        let session = EngineIOSession(sid: makeSID(), transport: .polling, configuration: configuration, now: .now)
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
        guard let sid else {
            let newSID = makeSID()
            let socket = makeSocketID(sid: newSID)
            let session = EngineIOSession(
                sid: newSID, transport: .websocket, webSocket: socket, configuration: configuration, now: .now)
            let host = EngineIOSessionHost(
                session: session, eventLoop: writer.channel.eventLoop, remoteAddress: remoteAddress, endpoint: self)
            registry.withLock { $0.hosts[newSID] = host }
            _ = await host.run { $0.start(socket: (socket, writer)) }
            return (host, socket)
        }
        guard let host = host(sid) else { return nil }
        let socket = makeSocketID(sid: sid)
        guard await host.run({ $0.beginUpgrade(socket, writer: writer) }) == true else { return nil }
        return (host, socket)
    }

    /// The ID of a new socket of session `sid`.
    func makeSocketID(sid: String) -> EngineIOWebSocketID {
        let number = registry.withLock { registry -> UInt64 in
            registry.socketCount += 1
            return registry.socketCount
        }
        return EngineIOWebSocketID(sid: sid, number: number)
    }

    /// A new session ID: naming this node when it has peers (``EngineIOSessionID``).
    func makeSID() -> String {
        EngineIOSessionID.make(node: forwarder?.peers.localNode)
    }

    /// A session ID like the reference server's: 20 URL-safe base64 characters.
    public static func makeSID() -> String {
        EngineIOSessionID.make(node: nil)
    }
}
