import NIOCore
import NIOWebSocket
import SocketIO
import SwitchboardCore

/// One socket: an Engine.IO session's membership of one namespace. Sendable: every call
/// runs on the session's loop, at once when made there, otherwise after a hop (calls
/// made from one thread keep their order).
public struct SocketIOSocket: Sendable {
    /// The namespace.
    public let namespace: String
    /// The Engine.IO session the socket travels on.
    public let client: SocketIOClient

    /// The Engine.IO session ID.
    public var sid: String { client.session.sid }
    /// The session's event loop.
    public var eventLoop: any EventLoop { client.session.eventLoop }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (SocketIOSessionDriver) -> T) -> EventLoopFuture<T> {
        let driver = client.driver
        if eventLoop.inEventLoop { return eventLoop.makeSucceededFuture(body(driver.value)) }
        return eventLoop.submit { body(driver.value) }
    }

    /// Accepts the pending CONNECT: the client gets `{"sid": socketID}` (and `pid` when
    /// given). True when the socket joined (false when the session ended meanwhile).
    @discardableResult
    public func accept(socketID: String, pid: String? = nil) -> EventLoopFuture<Bool> {
        let namespace = self.namespace
        return onLoop { $0.accept(namespace: namespace, socketID: socketID, pid: pid) }
    }

    /// Refuses the pending CONNECT with CONNECT_ERROR and `payload`
    /// (`{"message": …}` by convention).
    @discardableResult
    public func reject(_ payload: JSONValue) -> EventLoopFuture<Void> {
        let namespace = self.namespace
        return onLoop { $0.reject(namespace: namespace, payload: payload) }
    }

    /// Sends an event (nothing when the socket is not joined, or the name is reserved).
    @discardableResult
    public func emit(_ name: String, _ arguments: [SocketIOValue]) -> EventLoopFuture<Void> {
        let namespace = self.namespace
        return onLoop { $0.emit(name, arguments, namespace: namespace) }
    }

    /// Answers the client's event `ackID` (once).
    @discardableResult
    public func ack(_ ackID: Int, _ arguments: [SocketIOValue]) -> EventLoopFuture<Void> {
        let namespace = self.namespace
        return onLoop { $0.ack(ackID, arguments, namespace: namespace) }
    }

    /// Makes the socket leave its namespace: the client gets DISCONNECT.
    @discardableResult
    public func disconnect() -> EventLoopFuture<Void> {
        let namespace = self.namespace
        return onLoop { $0.disconnect(namespace: namespace) }
    }

    /// Sends Engine.IO messages that already hold a packet of this namespace (an event
    /// encoded once for many sockets), with their WebSocket frames
    /// (``EngineIOSessionHandle/webSocketFrames(_:)``, built once too). On the loop only.
    /// False when the socket is not joined (nothing is sent).
    public func sendEncoded(_ messages: [EngineIOMessage], webSocketFrames: [WebSocketFrame]) -> Bool {
        client.driver.value.sendEncoded(messages, webSocketFrames: webSocketFrames, namespace: namespace)
    }

    /// Closes the whole Engine.IO session (every namespace), from any thread.
    public func closeSession() {
        client.session.close()
    }
}
