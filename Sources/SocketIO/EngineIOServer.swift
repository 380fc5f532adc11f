/// All Engine.IO sessions of one endpoint (`/engine.io/`, `/socket.io/`) as one pure
/// state machine: it checks requests, opens sessions with the IDs the caller makes,
/// routes polls, POSTs and WebSocket frames to them, and forgets them when they end.
///
/// The caller keeps it behind a lock, passes `now` to every call, answers HTTP requests
/// with the ``EngineIOReply/Response`` and carries out the actions in order. Expired
/// timers of a session are applied before any event for it, so a late pong is noticed
/// even between two ``tick(now:)`` calls.
public struct EngineIOServer: Sendable {
    /// The settings every session gets.
    public let configuration: EngineIOConfiguration
    private var sessions: [String: EngineIOSession] = [:]
    private var socketCount: UInt64 = 0

    public init(configuration: EngineIOConfiguration) {
        self.configuration = configuration
    }

    /// The number of open sessions.
    public var sessionCount: Int { sessions.count }

    /// The transport of a session, `nil` when there is no such session.
    public func transport(of sid: String) -> EngineIOTransport? { sessions[sid]?.transport }

    /// The earliest instant at which ``tick(now:)`` has something to do.
    public var nextDeadline: EngineIOInstant? { sessions.values.compactMap(\.nextDeadline).min() }

    // MARK: - Requests

    /// Checks a request (engine.io-protocol "Transports" and the reference server's
    /// errors): the transport, `EIO=4`, the session, the method.
    public func route(_ request: EngineIORequest) -> EngineIORoute {
        Self.route(request, configuration: configuration) { sessions[$0]?.transport }
    }

    /// ``route(_:)`` for servers that keep their sessions elsewhere: `transport` gives
    /// the transport of an open session, `nil` when there is no such session.
    public static func route(
        _ request: EngineIORequest, configuration: EngineIOConfiguration,
        transport sessionTransport: (String) -> EngineIOTransport?
    ) -> EngineIORoute {
        guard let name = request.query["transport"], let transport = EngineIOTransport(rawValue: name),
            configuration.transports.contains(transport)
        else { return .failure(.unknownTransport) }
        guard request.query["EIO"] == "4" else { return .failure(.unsupportedProtocolVersion) }
        if transport == .websocket, !request.isWebSocketUpgrade { return .failure(.badRequest) }
        if transport == .polling, request.isWebSocketUpgrade { return .failure(.badRequest) }
        guard let sid = request.query["sid"] else {
            guard request.method == "GET" else { return .failure(.badHandshakeMethod) }
            return .handshake(transport)
        }
        guard let current = sessionTransport(sid) else { return .failure(.unknownSID) }
        switch transport {
        case .websocket:
            return current == .polling ? .upgrade(sid: sid) : .failure(.badRequest)
        case .polling:
            guard current == .polling else { return .failure(.badRequest) }
            switch request.method {
            case "GET": return .poll(sid: sid)
            case "POST": return .post(sid: sid)
            default: return .failure(.badRequest)
            }
        }
    }

    /// Opens a polling session; the reply's body is the `open` packet.
    public mutating func handshake(sid: String, now: EngineIOInstant) -> EngineIOReply {
        guard sessions[sid] == nil else { return EngineIOReply(.failure(.badRequest)) }
        let session = EngineIOSession(sid: sid, transport: .polling, configuration: configuration, now: now)
        sessions[sid] = session
        return EngineIOReply(.body(session.handshakeBody), actions: session.openingActions)
    }

    /// A WebSocket was accepted. Without `upgrading`, it opens a new session `newSID`
    /// (its `open` packet is written to the socket); with it, it starts an upgrade of that
    /// session. Returns the socket's ID, or `nil` when the caller must close it.
    public mutating func openWebSocket(
        upgrading sid: String?, newSID: String, now: EngineIOInstant
    ) -> (socket: EngineIOWebSocketID?, actions: [EngineIOAction]) {
        socketCount += 1
        guard let sid else {
            guard sessions[newSID] == nil else { return (nil, []) }
            let socket = EngineIOWebSocketID(sid: newSID, number: socketCount)
            let session = EngineIOSession(
                sid: newSID, transport: .websocket, webSocket: socket, configuration: configuration, now: now)
            sessions[newSID] = session
            return (socket, session.openingActions)
        }
        let socket = EngineIOWebSocketID(sid: sid, number: socketCount)
        var accepted = false
        let actions = update(sid, now: now) { session in
            accepted = session.beginUpgrade(socket, now: now)
            return []
        }
        return (accepted ? socket : nil, actions ?? [])
    }

    /// A `GET` poll (see ``EngineIOSession/poll(now:)``).
    public mutating func poll(sid: String, now: EngineIOInstant) -> EngineIOReply {
        request(sid, now: now) { $0.poll(now: now) }
    }

    /// The start of a `POST` (see ``EngineIOSession/beginPost(now:)``).
    public mutating func beginPost(sid: String, now: EngineIOInstant) -> EngineIOReply {
        request(sid, now: now) { $0.beginPost(now: now) }
    }

    /// The body of a `POST`, `nil` when larger than `maxPayload`.
    public mutating func finishPost(sid: String, body: [UInt8]?, now: EngineIOInstant) -> EngineIOReply {
        request(sid, now: now) { $0.finishPost(body: body, now: now) }
    }

    // MARK: - WebSocket events

    /// A frame from a socket.
    public mutating func receive(
        _ frame: EngineIOFrame, on socket: EngineIOWebSocketID, now: EngineIOInstant
    ) -> [EngineIOAction] {
        update(socket.sid, now: now) { $0.receive(frame, on: socket, now: now) } ?? []
    }

    /// A socket closed, or sent a message larger than `maxPayload` (`.payloadTooLarge`).
    public mutating func webSocketClosed(
        _ socket: EngineIOWebSocketID, reason: EngineIOCloseReason = .transportClose, now: EngineIOInstant
    ) -> [EngineIOAction] {
        update(socket.sid, now: now) { $0.webSocketClosed(socket, reason: reason, now: now) } ?? []
    }

    // MARK: - Application and timers

    /// Sends messages to a session; nothing when it is gone.
    public mutating func send(_ messages: [EngineIOMessage], to sid: String, now: EngineIOInstant) -> [EngineIOAction] {
        update(sid, now: now) { $0.send(messages, now: now) } ?? []
    }

    /// Closes a session from the server side.
    public mutating func close(sid: String, now: EngineIOInstant) -> [EngineIOAction] {
        update(sid, now: now) { $0.close(now: now) } ?? []
    }

    /// Closes every session (graceful shutdown).
    public mutating func closeAll(now: EngineIOInstant) -> [EngineIOAction] {
        sessions.keys.sorted().flatMap { close(sid: $0, now: now) }
    }

    /// Applies every session's expired timers: pings, ping timeouts, upgrade and close
    /// timeouts.
    public mutating func tick(now: EngineIOInstant) -> [EngineIOAction] {
        var actions: [EngineIOAction] = []
        let due = sessions.compactMap { sid, session in
            session.nextDeadline.map { now >= $0 } == true ? sid : nil
        }
        for sid in due.sorted() {
            actions += update(sid, now: now) { _ in [] } ?? []
        }
        return actions
    }

    // MARK: - Helpers

    /// Runs `body` on a session after its expired timers; removes it once closed.
    /// `nil` when there is no such session (or it ended on its timers).
    private mutating func update(
        _ sid: String, now: EngineIOInstant, _ body: (inout EngineIOSession) -> [EngineIOAction]
    ) -> [EngineIOAction]? {
        guard var session = sessions[sid] else { return nil }
        var actions = session.tick(now: now)
        if !session.isClosed { actions += body(&session) }
        if session.isClosed { sessions[sid] = nil } else { sessions[sid] = session }
        return actions
    }

    /// `update` for an HTTP request: an unknown (or just expired) session is code 1.
    private mutating func request(
        _ sid: String, now: EngineIOInstant, _ body: (inout EngineIOSession) -> EngineIOReply
    ) -> EngineIOReply {
        var reply = EngineIOReply(.failure(.unknownSID))
        let actions = update(sid, now: now) { session in
            reply = body(&session)
            return reply.actions
        }
        reply.actions = actions ?? []
        return reply
    }
}
