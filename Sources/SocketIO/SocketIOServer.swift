import SwitchboardJSON

/// The Socket.IO connections of one endpoint, keyed by Engine.IO session ID: a pure
/// state machine that sits on top of ``EngineIOServer``. Feed it the engine's
/// `.opened`, `.received` and `.closed` actions (``handle(_:now:)``) and the
/// application's decisions; carry out the returned ``SocketIOAction``s (`.send` and
/// `.close` go back to the ``EngineIOServer``).
public struct SocketIOServer: Sendable {
    /// The settings of every connection.
    public let configuration: SocketIOConfiguration
    private var connections: [String: SocketIOConnection] = [:]

    public init(configuration: SocketIOConfiguration) {
        self.configuration = configuration
    }

    /// The number of open connections.
    public var connectionCount: Int { connections.count }

    /// A connection's state, `nil` when there is none.
    public func connection(_ sid: String) -> SocketIOConnection? { connections[sid] }

    /// When ``tick(now:)`` has something to do.
    public var nextDeadline: EngineIOInstant? { connections.values.compactMap(\.nextDeadline).min() }

    /// Takes one action of the ``EngineIOServer``: a session opened, sent a message or
    /// ended. Other actions are the transport's business and are ignored.
    public mutating func handle(_ action: EngineIOAction, now: EngineIOInstant) -> [SocketIOAction] {
        switch action {
        case .opened(let sid):
            connections[sid] = SocketIOConnection(sid: sid, configuration: configuration, now: now)
            return []
        case .received(let sid, let message):
            return update(sid) { $0.receive(message, now: now) }
        case .closed(let sid, let reason):
            return connections.removeValue(forKey: sid).map { connection in
                var connection = connection
                return connection.transportClosed(reason)
            } ?? []
        case .answerPoll, .rejectPoll, .writeWebSocket, .closeWebSocket:
            return []
        }
    }

    /// Closes connections that joined no namespace within `connectTimeout`.
    public mutating func tick(now: EngineIOInstant) -> [SocketIOAction] {
        let due = connections.compactMap { sid, connection in
            connection.nextDeadline.map { now >= $0 } == true ? sid : nil
        }
        return due.sorted().flatMap { sid in update(sid) { $0.tick(now: now) } }
    }

    /// See ``SocketIOConnection/accept(namespace:socketID:)``.
    public mutating func accept(sid: String, namespace: String, socketID: String) -> [SocketIOAction] {
        update(sid) { $0.accept(namespace: namespace, socketID: socketID) }
    }

    /// See ``SocketIOConnection/reject(namespace:payload:)``.
    public mutating func reject(sid: String, namespace: String, payload: JSONValue) -> [SocketIOAction] {
        update(sid) { $0.reject(namespace: namespace, payload: payload) }
    }

    /// See ``SocketIOConnection/emit(_:_:namespace:expectingAck:)``.
    public mutating func emit(
        _ name: String, _ arguments: [SocketIOValue], to sid: String, namespace: String, expectingAck: Bool = false
    ) throws(SocketIOError) -> (ackID: Int?, actions: [SocketIOAction]) {
        guard var connection = connections[sid] else { return (nil, []) }
        let result = try connection.emit(name, arguments, namespace: namespace, expectingAck: expectingAck)
        connections[sid] = connection
        return result
    }

    /// See ``SocketIOConnection/ack(_:_:namespace:)``.
    public mutating func ack(_ ackID: Int, _ arguments: [SocketIOValue], sid: String, namespace: String) -> [SocketIOAction] {
        update(sid) { $0.ack(ackID, arguments, namespace: namespace) }
    }

    /// See ``SocketIOConnection/disconnect(namespace:)``.
    public mutating func disconnect(sid: String, namespace: String) -> [SocketIOAction] {
        update(sid) { $0.disconnect(namespace: namespace) }
    }

    private mutating func update(_ sid: String, _ body: (inout SocketIOConnection) -> [SocketIOAction]) -> [SocketIOAction] {
        guard var connection = connections[sid] else { return [] }
        let actions = body(&connection)
        connections[sid] = connection
        return actions
    }
}
