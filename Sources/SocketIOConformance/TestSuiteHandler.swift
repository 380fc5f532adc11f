import SocketIO
import SocketIOHummingbird
import SwitchboardCore

/// The handlers of the Socket.IO test-suite server: every namespace is accepted and
/// gets `auth` with the CONNECT payload; on `/`, `message` is answered with
/// `message-back` and `message-with-ack` is acknowledged with its arguments.
struct TestSuiteHandler: SocketIOHandler {
    func connection(_ client: SocketIOClient) -> any SocketIOConnectionHandler {
        TestSuiteConnection()
    }
}

final class TestSuiteConnection: SocketIOConnectionHandler {
    func authorize(_ socket: SocketIOSocket, auth: JSONValue?) {
        socket.accept(socketID: EngineIOEndpoint.makeSID())
        socket.emit("auth", [SocketIOValue(auth ?? .object([:]))])
    }

    func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?) {
        guard socket.namespace == SocketIOPacket.mainNamespace else { return }
        switch name {
        case "message":
            socket.emit("message-back", arguments)
        case "message-with-ack":
            if let ackID { socket.ack(ackID, arguments) }
        default:
            break
        }
    }

    func disconnected(_ socket: SocketIOSocket, reason: SocketIODisconnectReason) {}

    func closed() {}
}
