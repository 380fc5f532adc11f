import Logging
import SocketIO
import SwitchboardCore
import Synchronization

/// What a Socket.IO application does with its sockets: the handlers of the reference
/// server's `io.on("connection", …)`.
protocol SocketIOHandler: Sendable {
    /// A client joined `namespace` (already accepted) with its auth payload.
    func connected(_ socket: SocketIOSocket, auth: JSONValue?) async
    /// An event from a socket; `ackID` is set when the client wants an answer.
    func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?) async
}

/// One joined socket, with the calls a handler needs.
struct SocketIOSocket: Sendable {
    let sid: String
    let namespace: String
    let application: SocketIOApplication
    let endpoint: EngineIOEndpoint

    func emit(_ name: String, _ arguments: [SocketIOValue]) async {
        await application.perform(endpoint: endpoint) { server in
            (try? server.emit(name, arguments, to: sid, namespace: namespace).actions) ?? []
        }
    }

    func ack(_ ackID: Int, _ arguments: [SocketIOValue]) async {
        await application.perform(endpoint: endpoint) { $0.ack(ackID, arguments, sid: sid, namespace: namespace) }
    }
}

/// `/socket.io/`: a ``SocketIOServer`` on top of the endpoint's Engine.IO sessions,
/// accepting every allowed namespace and passing sockets to a ``SocketIOHandler``.
final class SocketIOApplication: EngineIOApplication {
    private let server: Mutex<SocketIOServer>
    private let handler: any SocketIOHandler
    private let logger: Logger

    init(configuration: SocketIOConfiguration, handler: any SocketIOHandler, logger: Logger) {
        self.server = Mutex(SocketIOServer(configuration: configuration))
        self.handler = handler
        self.logger = logger
    }

    func handle(_ events: [EngineIOAction], endpoint: EngineIOEndpoint) async {
        for event in events {
            await perform(endpoint: endpoint) { $0.handle(event, now: .now) }
        }
    }

    func tick(now: EngineIOInstant, endpoint: EngineIOEndpoint) async {
        await perform(endpoint: endpoint) { $0.tick(now: now) }
    }

    var nextDeadline: EngineIOInstant? { server.withLock { $0.nextDeadline } }

    /// Runs `body` on the state machine and carries out its actions, in order.
    func perform(endpoint: EngineIOEndpoint, _ body: (inout SocketIOServer) -> [SocketIOAction]) async {
        let actions = server.withLock { body(&$0) }
        for action in actions {
            switch action {
            case .send(let sid, let messages):
                await endpoint.send(messages, to: sid)
            case .close(let sid):
                await endpoint.close(sid: sid)
            case .authorize(let sid, let namespace, let auth):
                await perform(endpoint: endpoint) {
                    $0.accept(sid: sid, namespace: namespace, socketID: EngineIOEndpoint.makeSID())
                }
                let socket = SocketIOSocket(sid: sid, namespace: namespace, application: self, endpoint: endpoint)
                await handler.connected(socket, auth: auth)
            case .event(let sid, let namespace, let name, let arguments, let ackID):
                let socket = SocketIOSocket(sid: sid, namespace: namespace, application: self, endpoint: endpoint)
                await handler.event(socket, name: name, arguments: arguments, ackID: ackID)
            case .ackReceived:
                break
            case .disconnected(let sid, let namespace, let reason):
                logger.debug(
                    "socket disconnected",
                    metadata: ["engine.sid": "\(sid)", "namespace": "\(namespace)", "reason": "\(reason.description)"])
            }
        }
    }
}

/// The handlers of the Socket.IO test-suite server.
struct TestSuiteHandler: SocketIOHandler {
    func connected(_ socket: SocketIOSocket, auth: JSONValue?) async {
        await socket.emit("auth", [SocketIOValue(auth ?? .object([:]))])
    }

    func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?) async {
        guard socket.namespace == SocketIOPacket.mainNamespace else { return }
        switch name {
        case "message":
            await socket.emit("message-back", arguments)
        case "message-with-ack":
            if let ackID { await socket.ack(ackID, arguments) }
        default:
            break
        }
    }
}
