import NIOCore
import NIOHTTPTypes
import SwitchboardCore

/// One SSE or iframe stream. Like `WebSocketConnection`, frames from the Hub are written
/// straight to the channel on its event loop (as HTTP body parts of the response whose
/// head Hummingbird already sent); the route's body closure waits on `finished`.
final class HTTPStreamConnection: Subscriber {
    let connectionID = ConnectionID.random()
    let nickname: Nickname
    let format = WireFormat.native
    let channel: any Channel
    let framing: StreamFraming
    private let delivery: EventLoopDelivery
    private let state: NIOLoopBoundBox<State>
    private let maxQueuedFrames: Int
    private let metrics: Metrics?
    /// Completed when the stream ends (client gone, server close).
    let finished: EventLoopPromise<Void>

    struct State {
        var gate: OutboundGate
        var closed = false
        var backlogged = 0
        var dirty = false
        var keepAlive: RepeatedTask?
    }

    var loop: any DeliveryLoop { delivery }

    init(nickname: Nickname, channel: any Channel, framing: StreamFraming, maxQueuedFrames: Int, metrics: Metrics? = nil) {
        self.nickname = nickname
        self.channel = channel
        self.framing = framing
        self.delivery = EventLoopDelivery.of(channel.eventLoop)
        self.maxQueuedFrames = maxQueuedFrames
        self.metrics = metrics
        self.finished = channel.eventLoop.makePromise()
        self.state = NIOLoopBoundBox.makeBoxSendingValue(
            State(gate: OutboundGate(nickname: nickname, connection: connectionID, maxPending: maxQueuedFrames * 4)),
            eventLoop: channel.eventLoop)
        channel.closeFuture.whenComplete { _ in self.finish() }
        StreamRegistry.register(self)
    }

    /// The client closed its side (FIN): end the stream and the connection.
    func clientGone() {
        delivery.eventLoop.execute {
            self.finish()
            self.channel.close(promise: nil)
        }
    }

    func receive(_ frame: Frame) {
        guard !state.value.closed else { return }
        switch state.value.gate.admit(frame) {
        case .write: write(frame)
        case .hold, .drop: break
        case .stale: metrics?.count("gate_drops", "not_newer")
        case .overflow:
            metrics?.count("disconnects", "slow_consumer")
            close(reason: "backlog too large; resume from your cursor")
        }
    }

    func flush() {
        guard state.value.dirty else { return }
        state.value.dirty = false
        channel.flush()
    }

    /// Writes the preamble, `welcome`, resets and backlog, then lets live frames through
    /// and starts keep-alives.
    func open(welcome: Frame, backlog: [Frame], cursor: Cursor, keepAlive: TimeAmount, retryMilliseconds: Int) {
        delivery.eventLoop.execute {
            guard !self.state.value.closed else { return }
            self.writeText(self.framing.preamble(retryMilliseconds: retryMilliseconds))
            // The welcome's SSE id is the cursor to resume from.
            self.write(welcome, cursorOverride: cursor.description)
            self.state.value.gate.seed(cursor)
            for frame in backlog where self.state.value.gate.advance(frame) { self.write(frame) }
            for frame in self.state.value.gate.goLive(from: cursor) { self.write(frame) }
            self.flush()
            let text = self.framing.keepAlive
            self.state.value.keepAlive = self.channel.eventLoop.scheduleRepeatedTask(initialDelay: keepAlive, delay: keepAlive) { _ in
                guard !self.state.value.closed else { return }
                self.writeText(text)
                self.flush()
            }
        }
    }

    private func write(_ frame: Frame, cursorOverride: String? = nil) {
        if channel.isWritable {
            state.value.backlogged = 0
        } else {
            state.value.backlogged += 1
            if state.value.backlogged > maxQueuedFrames {
                metrics?.count("disconnects", "slow_consumer")
                close(reason: "slow consumer; resume from your cursor")
                return
            }
        }
        var cursor: String?
        if case .sse = framing {
            cursor = cursorOverride ?? (frame.id != nil ? state.value.gate.cursor.description : nil)
        }
        writeText(framing.prefix(type: frame.type, cursor: cursor))
        channel.write(HTTPResponsePart.body(delivery.buffer(for: frame)), promise: nil)
        writeText(framing.suffix)
    }

    private func writeText(_ text: String) {
        channel.write(HTTPResponsePart.body(channel.allocator.buffer(string: text)), promise: nil)
        state.value.dirty = true
    }

    /// Ends the stream with a farewell (SSE: a retry hint). Call on the event loop.
    func close(reason: String) {
        guard !state.value.closed else { return }
        writeText(framing.farewell(reason: reason, retryMilliseconds: 1000))
        flush()
        finish()
        // End the connection itself: a drain must not wait for the response to finish,
        // and a slow consumer may never read what is queued.
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .milliseconds(100)) { channel.close(promise: nil) }
    }

    func close(reason: CloseReason) {
        closeSoon(reason: reason.message)
    }

    /// Closes from any thread.
    func closeSoon(reason: String) {
        delivery.eventLoop.execute { self.close(reason: reason) }
    }

    private func finish() {
        guard !state.value.closed else { return }
        state.value.closed = true
        state.value.keepAlive?.cancel()
        state.value.keepAlive = nil
        StreamRegistry.unregister(self)
        finished.succeed()
    }
}
