import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import SocketIO
import SocketIOHummingbird
import SwitchboardCore
import SwitchboardSocketIO

/// One Socket.IO socket (an Engine.IO session's membership of one namespace) as the Hub
/// sees it: a `Connection` of the namespace's `socketio` wire format, on the session's
/// event loop, with the same gate as every transport.
typealias SocketIOSubscriber = Connection<SocketIOSink>

/// Frames go to the Engine.IO session as the messages the frame holds — decoded once per
/// frame per loop, so every socket shares them. The session has its own bounded queue.
struct SocketIOSink: ConnectionSink {
    let socket: SocketIOSocket
    /// Set when the socket asked for connection state recovery: its events carry offsets.
    let recovery: SocketIORecovery?
    private let frames: SocketIOFrameCache

    init(socket: SocketIOSocket, recovery: SocketIORecovery? = nil) {
        self.socket = socket
        self.recovery = recovery
        self.frames = SocketIOFrameCache.of(socket.eventLoop)
    }

    var isWritable: Bool { true }

    func write(_ frame: Frame, position: Cursor?, delivery: EventLoopDelivery) {
        let (messages, webSocketFrames) = frames.decoded(frame)
        if let recovery, let position, case .text(let packet)? = messages.first,
            let withOffset = SocketIORecovery.appending(recovery.offset(at: position), to: packet)
        {
            // This socket's own copy: the offset is its cursor.
            var own = messages
            own[0] = .text(withOffset)
            _ = socket.sendEncoded(own, webSocketFrames: EngineIOSessionHandle.webSocketFrames(own))
            return
        }
        _ = socket.sendEncoded(messages, webSocketFrames: webSocketFrames)
    }

    /// Every write reaches the session at once (a WebSocket write is flushed per batch of
    /// the session's own actions).
    func flush() {}

    /// Closes the whole Engine.IO session (the client reconnects, elsewhere when the node
    /// drains).
    func end(_ reason: CloseReason) { socket.closeSession() }
}

extension Connection where Sink == SocketIOSink {
    convenience init(
        socket: SocketIOSocket, nickname: Nickname, maxQueuedFrames: Int, metrics: Metrics?, recovery: SocketIORecovery? = nil
    ) {
        self.init(
            nickname: nickname, format: SocketIOWireFormat.format(namespace: socket.namespace), eventLoop: socket.eventLoop,
            sink: SocketIOSink(socket: socket, recovery: recovery), maxQueuedFrames: maxQueuedFrames, metrics: metrics)
    }

    var socket: SocketIOSocket { sink.socket }

    /// A recovered socket's opening: `initial` (presence…), then the events it missed
    /// (`backlog`, after `cursor`), then live frames.
    func open(initial: [Frame], backlog: [Frame], cursor: Cursor) {
        eventLoop.execute { self.openNow(welcome: nil, backlog: initial + backlog, cursor: cursor) }
    }

    /// Writes the opening events (on the loop), then lets live frames through.
    func open(initial: [Frame]) {
        eventLoop.execute {
            guard let first = initial.first else { return self.openNow(welcome: nil, backlog: [], cursor: Cursor()) }
            self.openNow(welcome: first, backlog: Array(initial.dropFirst()), cursor: Cursor())
        }
    }
}

/// The Engine.IO messages and WebSocket frames of the frame being delivered on one event
/// loop: built from the frame's bytes once, shared (copy-on-write strings and buffers)
/// by every socket of the loop — polling sessions queue the messages, WebSocket sessions
/// get the very same buffers written.
final class SocketIOFrameCache: Sendable {
    private let cache: NIOLoopBoundBox<Entry>

    struct Entry {
        var frame: Frame?
        var messages: [EngineIOMessage] = []
        var webSocketFrames: [WebSocketFrame] = []
    }

    private init(eventLoop: any EventLoop) {
        self.cache = NIOLoopBoundBox.makeBoxSendingValue(Entry(), eventLoop: eventLoop)
    }

    /// On the loop.
    func decoded(_ frame: Frame) -> (messages: [EngineIOMessage], webSocketFrames: [WebSocketFrame]) {
        if cache.value.frame !== frame {
            let messages = SocketIOWireFormat.messages(frame.bytes)
            cache.value.frame = frame
            cache.value.messages = messages
            cache.value.webSocketFrames = EngineIOSessionHandle.webSocketFrames(messages)
        }
        return (cache.value.messages, cache.value.webSocketFrames)
    }

    private static let caches = PerEventLoop(SocketIOFrameCache.init)

    /// The one cache of `eventLoop`.
    static func of(_ eventLoop: any EventLoop) -> SocketIOFrameCache { caches.of(eventLoop) }
}
