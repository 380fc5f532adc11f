import NIOCore
import NIOWebSocket
import SocketIO

/// What runs on top of an ``EngineIOEndpoint``: it is told about every new session and
/// gets, for each one, an object that receives that session's messages.
///
/// Every call is made on the session's event loop, in the session's order.
public protocol EngineIOApplication: Sendable {
    /// A session opened; returns the object that handles it. On the session's loop.
    func open(_ session: EngineIOSessionHandle) -> any EngineIOSessionDelegate
}

/// The per-session half of an ``EngineIOApplication``. Used only on the session's event
/// loop, so it needs no lock.
public protocol EngineIOSessionDelegate: AnyObject {
    /// The client sent a message.
    func received(_ message: EngineIOMessage)
    /// The session ended; nothing more will be sent or received.
    func closed(_ reason: EngineIOCloseReason)
    /// When the delegate's own timers (a connect timeout…) next need a ``tick(now:)``.
    var nextDeadline: EngineIOInstant? { get }
    /// Applies the delegate's expired timers.
    func tick(now: EngineIOInstant)
}

/// A session as the application sees it. Sendable; the calls marked "on the loop" must
/// be made on ``eventLoop`` (the others hop there by themselves).
public struct EngineIOSessionHandle: Sendable {
    let host: EngineIOSessionHost

    /// The session ID.
    public var sid: String { host.sid }
    /// The loop every event of the session runs on.
    public var eventLoop: any EventLoop { host.eventLoop }
    /// The address of the client that opened the session.
    public var remoteAddress: String? { host.remoteAddress }
    /// The transport that carries the session now (any thread; may lag an upgrade).
    public var transport: EngineIOTransport { host.currentTransport }

    /// Sends messages to the client. On the loop.
    public func send(_ messages: [EngineIOMessage]) {
        host.send(messages)
    }

    /// Sends messages whose WebSocket frames (one per message, as
    /// ``webSocketFrames(_:)`` builds them) are shared with other sessions: on an open
    /// WebSocket they are written as they are. On the loop.
    public func send(_ messages: [EngineIOMessage], webSocketFrames: [WebSocketFrame]) {
        host.send(messages, webSocketFrames: webSocketFrames)
    }

    /// The WebSocket frames of `messages`, to build once and share.
    public static func webSocketFrames(_ messages: [EngineIOMessage]) -> [WebSocketFrame] {
        messages.map { message in
            switch message {
            case .text(let text): EngineIOSocketWriter.webSocketFrame(EngineIOPacket.message(.text(text)).frame)
            case .binary(let bytes): EngineIOSocketWriter.webSocketFrame(.binary(bytes))
            }
        }
    }

    /// Sends messages from any thread.
    public func sendSoon(_ messages: [EngineIOMessage]) {
        host.onLoop { $0.send(messages) }
    }

    /// Closes the session from the server side (any thread).
    public func close() {
        host.onLoop { $0.close() }
    }

    /// Tells the session that the delegate's ``EngineIOSessionDelegate/nextDeadline``
    /// changed outside one of its callbacks. On the loop.
    public func deadlinesChanged() {
        host.reschedule()
    }
}
