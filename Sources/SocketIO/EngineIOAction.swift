/// One WebSocket connection of a session, as the server numbered it. A session has at
/// most one open WebSocket at a time (the active one or the one being upgraded), but
/// numbers tell a closed or refused socket apart from its successor.
public struct EngineIOWebSocketID: Sendable, Hashable, CustomStringConvertible {
    /// The session the socket belongs to.
    public let sid: String
    /// The socket's number, unique within the server.
    public let number: UInt64

    public init(sid: String, number: UInt64) {
        self.sid = sid
        self.number = number
    }

    public var description: String { "\(sid)#\(number)" }
}

/// Why a session ended (the reasons of the reference server).
public enum EngineIOCloseReason: String, Sendable, Hashable {
    /// The client sent a `close` packet.
    case clientClose = "client close"
    /// The WebSocket carrying the session was closed.
    case transportClose = "transport close"
    /// The client broke a transport rule (duplicate poll, concurrent POST).
    case transportError = "transport error"
    /// The client sent a packet that does not parse, or one it must not send.
    case parseError = "parse error"
    /// No `pong` within `pingTimeout` of a ping.
    case pingTimeout = "ping timeout"
    /// A body or message larger than `maxPayload`.
    case payloadTooLarge = "payload too large"
    /// The server closed the session.
    case forcedClose = "forced close"
}

/// What the caller must do after feeding an event to ``EngineIOServer`` or
/// ``EngineIOSession``, in order.
public enum EngineIOAction: Sendable, Equatable {
    /// Answer the session's pending `GET` with status 200 and this body.
    case answerPoll(sid: String, body: String)
    /// Answer the session's pending `GET` with this error (the session goes on, on
    /// another transport).
    case rejectPoll(sid: String, EngineIOServerError)
    /// Write these frames to the socket, in order.
    case writeWebSocket(EngineIOWebSocketID, [EngineIOFrame])
    /// Close the socket (the session may go on, on another transport).
    case closeWebSocket(EngineIOWebSocketID)
    /// A session opened; the application may now send to it.
    case opened(sid: String)
    /// The client sent a message.
    case received(sid: String, EngineIOMessage)
    /// The session ended; nothing more will be sent or received.
    case closed(sid: String, EngineIOCloseReason)
}

/// How to answer an HTTP request, and what else to do.
public struct EngineIOReply: Sendable, Equatable {
    /// The answer to the request itself.
    public enum Response: Sendable, Equatable {
        /// Status 200, `text/plain; charset=UTF-8`, this body.
        case body(String)
        /// The request goes on. A `GET` waits for `.answerPoll` for its session; after
        /// ``EngineIOServer/beginPost(sid:now:)`` read the body and call `finishPost`.
        case pending
        /// The error's status and JSON body.
        case failure(EngineIOServerError)
    }

    public var response: Response
    public var actions: [EngineIOAction]

    public init(_ response: Response, actions: [EngineIOAction] = []) {
        self.response = response
        self.actions = actions
    }
}
