import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

/// The outbound side of one native WebSocket connection. Frames from the Hub are written
/// straight to the NIO channel on its event loop, pre-encoded, below NIO's frame encoder;
/// `NativeWebSocketHandler` owns the inbound side, ping/pong and the close handshake.
final class WebSocketConnection: Subscriber {
    let connectionID = ConnectionID.random()
    let nickname: Nickname
    let format = WireFormat.native
    let channel: any Channel
    private let delivery: EventLoopDelivery
    private let state: NIOLoopBoundBox<State>
    private let maxQueuedFrames: Int
    private let metrics: Metrics?

    struct State {
        var gate: OutboundGate
        var closed = false
        /// Frames written while the socket was not writable.
        var backlogged = 0
        var dirty = false
        /// The context of NIO's WebSocket frame encoder: frames the loop already encoded
        /// are written below it, as bytes, straight to the socket's write queue.
        var rawOutput: ChannelHandlerContext?
        var lookedUp = false
    }

    var loop: any DeliveryLoop { delivery }

    init(nickname: Nickname, channel: any Channel, maxQueuedFrames: Int, metrics: Metrics? = nil) {
        self.nickname = nickname
        self.channel = channel
        self.delivery = EventLoopDelivery.of(channel.eventLoop)
        self.maxQueuedFrames = maxQueuedFrames
        self.metrics = metrics
        self.state = NIOLoopBoundBox.makeBoxSendingValue(
            State(gate: OutboundGate(nickname: nickname, connection: connectionID, maxPending: maxQueuedFrames * 4)),
            eventLoop: channel.eventLoop)
    }

    func receive(_ frame: Frame) {
        guard !state.value.closed else { return }
        switch state.value.gate.admit(frame) {
        case .write: write(frame)
        case .hold, .drop: break
        case .stale: metrics?.count("gate_drops", "not_newer")
        case .overflow:
            metrics?.count("disconnects", "slow_consumer")
            close(code: .policyViolation, reason: CloseReason.slowConsumer.message)
        }
    }

    func flush() {
        guard state.value.dirty else { return }
        state.value.dirty = false
        if let output = rawOutput() { output.flush() } else { channel.flush() }
    }

    /// The encoder's context, looked up once (nil if the pipeline has no such encoder).
    private func rawOutput() -> ChannelHandlerContext? {
        if !state.value.lookedUp {
            state.value.lookedUp = true
            state.value.rawOutput = try? channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        }
        return state.value.rawOutput
    }

    /// Writes the opening sequence, then lets live frames through.
    func open(welcome: Frame, backlog: [Frame], cursor: Cursor) {
        delivery.eventLoop.execute {
            guard !self.state.value.closed else { return }
            self.write(welcome)
            self.state.value.gate.seed(cursor)
            for frame in backlog where self.state.value.gate.advance(frame) { self.write(frame) }
            for frame in self.state.value.gate.goLive(from: cursor) { self.write(frame) }
            self.flush()
        }
    }

    private func write(_ frame: Frame) {
        if channel.isWritable {
            state.value.backlogged = 0
        } else {
            state.value.backlogged += 1
            if state.value.backlogged > maxQueuedFrames {
                metrics?.count("disconnects", "slow_consumer")
                close(code: .policyViolation, reason: CloseReason.slowConsumer.message)
                return
            }
        }
        if let output = rawOutput() {
            output.write(NIOAny(delivery.webSocketBuffer(for: frame)), promise: nil)
        } else {
            channel.write(WebSocketFrame(fin: true, opcode: .text, data: delivery.buffer(for: frame)), promise: nil)
        }
        state.value.dirty = true
    }

    /// Sends a close frame with `code` and closes the channel. Call on the event loop.
    func close(code: WebSocketErrorCode, reason: String) {
        guard !state.value.closed else { return }
        state.value.closed = true
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)).whenComplete { _ in
            self.channel.close(promise: nil)
        }
        // A client that does not read never completes that write: close anyway.
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    func close(reason: CloseReason) {
        let code: WebSocketErrorCode =
            switch reason {
            case .serviceRestart: .unknown(1012)
            case .slowConsumer, .policy: .policyViolation
            }
        closeSoon(code: code, reason: reason.message)
    }

    /// Closes from any thread.
    func closeSoon(code: WebSocketErrorCode, reason: String) {
        delivery.eventLoop.execute { self.close(code: code, reason: reason) }
    }
}
