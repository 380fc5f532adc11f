import NIOCore
import NIOWebSocket
import SocketIO
import SwitchboardCore

/// What a Socket.IO application does with its clients: the handlers of the reference
/// server's `io.on("connection", …)`, one object per Engine.IO session.
public protocol SocketIOHandler: Sendable {
    /// An Engine.IO session opened: returns the object that handles its sockets. On the
    /// session's loop.
    func connection(_ client: SocketIOClient) -> any SocketIOConnectionHandler
}

/// The sockets of one Engine.IO session. Every call is made on the session's event loop,
/// in order; an implementation that does asynchronous work must keep that order itself.
public protocol SocketIOConnectionHandler: AnyObject {
    /// A client asks to join an allowed namespace: answer with `socket.accept` or
    /// `socket.reject` (now or later).
    func authorize(_ socket: SocketIOSocket, auth: JSONValue?)
    /// An event from a joined socket; answer with `socket.ack` when `ackID` is set.
    func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?)
    /// A socket left its namespace.
    func disconnected(_ socket: SocketIOSocket, reason: SocketIODisconnectReason)
    /// The Engine.IO session ended (after the `disconnected` of every socket).
    func closed()
}

/// An Engine.IO session as a Socket.IO handler sees it.
public struct SocketIOClient: Sendable {
    let driver: NIOLoopBound<SocketIOSessionDriver>
    /// The Engine.IO session.
    public let session: EngineIOSessionHandle

    /// The socket of `namespace` on this session.
    public func socket(_ namespace: String) -> SocketIOSocket {
        SocketIOSocket(namespace: namespace, client: self)
    }
}

/// `/socket.io/`: a ``SocketIOConnection`` state machine per Engine.IO session, whose
/// sockets are handed to a ``SocketIOHandler``.
public struct SocketIOApplication: EngineIOApplication {
    let configuration: SocketIOConfiguration
    let handler: any SocketIOHandler

    public init(configuration: SocketIOConfiguration, handler: any SocketIOHandler) {
        self.configuration = configuration
        self.handler = handler
    }

    public func open(_ session: EngineIOSessionHandle) -> any EngineIOSessionDelegate {
        let driver = SocketIOSessionDriver(session: session, configuration: configuration)
        driver.handler = handler.connection(SocketIOClient(driver: NIOLoopBound(driver, eventLoop: session.eventLoop), session: session))
        return driver
    }
}

/// Connects one Engine.IO session to its ``SocketIOConnection``: messages in, actions
/// out. Loop-confined.
final class SocketIOSessionDriver: EngineIOSessionDelegate {
    private var connection: SocketIOConnection
    let session: EngineIOSessionHandle
    var handler: (any SocketIOConnectionHandler)?

    init(session: EngineIOSessionHandle, configuration: SocketIOConfiguration) {
        self.session = session
        self.connection = SocketIOConnection(sid: session.sid, configuration: configuration, now: .now)
    }

    private var client: SocketIOClient {
        SocketIOClient(driver: NIOLoopBound(self, eventLoop: session.eventLoop), session: session)
    }

    func received(_ message: EngineIOMessage) {
        run(connection.receive(message, now: .now))
    }

    func closed(_ reason: EngineIOCloseReason) {
        run(connection.transportClosed(reason))
        handler?.closed()
        handler = nil
    }

    var nextDeadline: EngineIOInstant? { connection.nextDeadline }

    func tick(now: EngineIOInstant) {
        run(connection.tick(now: now))
    }

    // MARK: - From the application (on the loop)

    func accept(namespace: String, socketID: String, pid: String? = nil) -> Bool {
        run(connection.accept(namespace: namespace, socketID: socketID, pid: pid))
        session.deadlinesChanged()
        return connection.socketID(in: namespace) == socketID
    }

    func reject(namespace: String, payload: JSONValue) {
        run(connection.reject(namespace: namespace, payload: payload))
    }

    func emit(_ name: String, _ arguments: [SocketIOValue], namespace: String) {
        if let (_, actions) = try? connection.emit(name, arguments, namespace: namespace) { run(actions) }
    }

    func ack(_ ackID: Int, _ arguments: [SocketIOValue], namespace: String) {
        run(connection.ack(ackID, arguments, namespace: namespace))
    }

    func disconnect(namespace: String) {
        run(connection.disconnect(namespace: namespace))
    }

    /// Messages already encoded for `namespace` (see ``SocketIOSocket/sendEncoded(_:webSocketFrames:)``).
    func sendEncoded(_ messages: [EngineIOMessage], webSocketFrames: [WebSocketFrame], namespace: String) -> Bool {
        guard !connection.isClosing, connection.socketID(in: namespace) != nil else { return false }
        session.send(messages, webSocketFrames: webSocketFrames)
        return true
    }

    private func run(_ actions: [SocketIOAction]) {
        for action in actions {
            switch action {
            case .send(_, let messages):
                session.send(messages)
            case .close:
                session.close()
            case .authorize(_, let namespace, let auth):
                handler?.authorize(client.socket(namespace), auth: auth)
            case .event(_, let namespace, let name, let arguments, let ackID):
                handler?.event(client.socket(namespace), name: name, arguments: arguments, ackID: ackID)
            case .ackReceived:
                break
            case .disconnected(_, let namespace, let reason):
                handler?.disconnected(client.socket(namespace), reason: reason)
            }
        }
    }
}
