import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import SocketIO
import SocketIOHummingbird
import SwitchboardCore
import SwitchboardSocketIO

/// One Socket.IO socket (an Engine.IO session's membership of one namespace) as the Hub
/// sees it: a `Subscriber` of the namespace's `socketio` wire format, living on the
/// session's event loop. Frames from the Hub pass the same `OutboundGate` as every
/// transport (live frames wait for the opening events, duplicates by id and exclusions
/// are dropped), then go to the Engine.IO session as the messages the frame holds —
/// decoded once per frame per loop, so every socket shares them.
final class SocketIOSubscriber: Subscriber {
    let connectionID = ConnectionID.random()
    let nickname: Nickname
    let format: WireFormat
    let socket: SocketIOSocket
    private let delivery: EventLoopDelivery
    private let frames: SocketIOFrameCache
    private let state: NIOLoopBoundBox<State>
    private let metrics: Metrics?

    struct State {
        var gate: OutboundGate
        var closed = false
    }

    var loop: any DeliveryLoop { delivery }

    init(socket: SocketIOSocket, nickname: Nickname, maxQueuedFrames: Int, metrics: Metrics? = nil) {
        self.socket = socket
        self.nickname = nickname
        self.format = SocketIOWireFormat.format(namespace: socket.namespace)
        self.delivery = EventLoopDelivery.of(socket.eventLoop)
        self.frames = SocketIOFrameCache.of(socket.eventLoop)
        self.metrics = metrics
        self.state = NIOLoopBoundBox.makeBoxSendingValue(
            State(gate: OutboundGate(nickname: nickname, connection: connectionID, maxPending: maxQueuedFrames * 4)),
            eventLoop: socket.eventLoop)
    }

    func receive(_ frame: Frame) {
        guard !state.value.closed else { return }
        switch state.value.gate.admit(frame) {
        case .write: write(frame)
        case .hold, .drop: break
        case .stale: metrics?.count("gate_drops", "not_newer")
        case .overflow:
            metrics?.count("disconnects", "slow_consumer")
            close(reason: .slowConsumer)
        }
    }

    /// Every write reaches the session at once (a WebSocket write is flushed per batch
    /// of the session's own actions).
    func flush() {}

    /// Writes the opening events (on the loop), then lets live frames through.
    func open(initial: [Frame]) {
        delivery.eventLoop.execute {
            guard !self.state.value.closed else { return }
            for frame in initial { self.write(frame) }
            for frame in self.state.value.gate.goLive(from: Cursor()) { self.write(frame) }
        }
    }

    private func write(_ frame: Frame) {
        let (messages, webSocketFrames) = frames.decoded(frame)
        _ = socket.sendEncoded(messages, webSocketFrames: webSocketFrames)
    }

    /// Closes the whole Engine.IO session (the client reconnects, elsewhere when the
    /// node drains).
    func close(reason: CloseReason) {
        delivery.eventLoop.execute {
            guard !self.state.value.closed else { return }
            self.state.value.closed = true
            self.socket.closeSession()
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
