/// What the server needs to know about an HTTP request to an Engine.IO path.
public struct EngineIORequest: Sendable, Equatable {
    /// The HTTP method, upper case (`GET`, `POST`…).
    public var method: String
    /// The query parameters (`EIO`, `transport`, `sid`…); the first value of each.
    public var query: [String: String]
    /// Whether the request asks for a WebSocket upgrade.
    public var isWebSocketUpgrade: Bool

    public init(method: String, query: [String: String], isWebSocketUpgrade: Bool = false) {
        self.method = method
        self.query = query
        self.isWebSocketUpgrade = isWebSocketUpgrade
    }
}

/// What a request is, once checked against the protocol and the open sessions.
public enum EngineIORoute: Sendable, Equatable {
    /// Open a new session on this transport (call `handshake` or `openWebSocket`).
    case handshake(EngineIOTransport)
    /// A `GET` poll on a polling session.
    case poll(sid: String)
    /// A `POST` of packets to a polling session.
    case post(sid: String)
    /// A WebSocket that wants to take over a polling session.
    case upgrade(sid: String)
    /// Refuse the request (an HTTP error, or a refused WebSocket upgrade).
    case failure(EngineIOServerError)
}
