import NIOCore
import SwitchboardCore

/// What differs between transports once a connection is open: how a frame goes on the
/// wire, and how the connection ends. Everything else — the opening sequence, the gate,
/// backpressure, the slow-consumer close, metrics — is `Connection`'s. Every method is
/// called on the connection's event loop.
protocol ConnectionSink: Sendable {
    /// False while the peer is not reading (the channel is over its write-buffer mark).
    var isWritable: Bool { get }
    /// Writes one frame. `position` is the connection's cursor after it, for frames that
    /// carry one (SSE's `id:` line); nil for frames without an id.
    func write(_ frame: Frame, position: Cursor?, delivery: EventLoopDelivery)
    /// Flushes what `write` queued (once per delivery pass).
    func flush()
    /// Ends the connection, telling the client why. Called once.
    func end(_ reason: CloseReason)
}

/// The state every transport's outbound side shares, as a value with no I/O: the gate
/// (opening sequence, duplicates, exclusions), backpressure and the slow-consumer
/// verdict, and whether the connection is closed. `Connection` runs it on the loop;
/// its tests run it on plain values.
struct OutboundState {
    private(set) var gate: OutboundGate
    private(set) var isClosed = false
    /// Frames written in a row while the peer was not reading.
    private(set) var backlogged = 0
    /// Something was written since the last flush.
    private(set) var isDirty = false
    /// How many frames may be written to a peer that does not read before it is cut off
    /// (and, ×4, how many live frames may wait for the opening).
    let maxQueuedFrames: Int

    init(nickname: Nickname, connection: ConnectionID, maxQueuedFrames: Int) {
        self.gate = OutboundGate(nickname: nickname, connection: connection, maxPending: maxQueuedFrames * 4)
        self.maxQueuedFrames = maxQueuedFrames
    }

    enum Verdict: Equatable {
        case write
        /// Not for this connection (an exclusion), held for the opening, or closed.
        case skip
        /// Not newer than the last frame written on its stream.
        case duplicate
        /// The peer does not keep up: close it (it resumes from its cursor).
        case slowConsumer
    }

    /// A live frame from the Hub.
    mutating func live(_ frame: Frame, writable: Bool) -> Verdict {
        guard !isClosed else { return .skip }
        switch gate.admit(frame) {
        case .write: return written(writable: writable)
        case .hold, .drop: return .skip
        case .stale: return .duplicate
        case .overflow: return .slowConsumer
        }
    }

    /// Any frame about to be written: whether the peer keeps up.
    mutating func written(writable: Bool) -> Verdict {
        guard !isClosed else { return .skip }
        if writable {
            backlogged = 0
        } else {
            backlogged += 1
            if backlogged > maxQueuedFrames { return .slowConsumer }
        }
        isDirty = true
        return .write
    }

    /// Opening, step 1: positions from the welcome cursor (so every position — and SSE's
    /// `id:` line — covers every stream from the first frame on).
    mutating func seed(_ cursor: Cursor) { gate.seed(cursor) }

    /// Opening, step 2, and live frames: false when `frame` is not newer than its stream's
    /// position (a duplicate).
    mutating func advance(_ frame: Frame) -> Bool { gate.advance(frame) }

    /// Opening, step 3: live from now on; the frames held meanwhile, in arrival order
    /// (each still to pass `advance`).
    mutating func goLive() -> [Frame] { gate.goLive() }

    /// The connection's position: the last id written on each stream.
    var position: Cursor { gate.cursor }

    /// Whether a flush is due; resets it.
    mutating func takeDirty() -> Bool {
        defer { isDirty = false }
        return isDirty
    }

    /// Marks the connection closed; true the first time.
    mutating func close() -> Bool {
        guard !isClosed else { return false }
        isClosed = true
        return true
    }
}

/// One open connection as the Hub sees it, for every streaming transport (native
/// WebSocket, SSE, iframe, Socket.IO): the shared rules of `OutboundState` run on the
/// connection's event loop, and a `ConnectionSink` puts frames on the wire. No task and
/// no allocation per frame; frames arrive pre-encoded from the loop's `EventLoopDelivery`.
final class Connection<Sink: ConnectionSink>: Subscriber {
    let connectionID: ConnectionID
    let nickname: Nickname
    let format: WireFormat
    let sink: Sink
    let delivery: EventLoopDelivery
    private let state: NIOLoopBoundBox<OutboundState>
    private let metrics: Metrics?

    var loop: any DeliveryLoop { delivery }
    var eventLoop: any EventLoop { delivery.eventLoop }

    init(
        nickname: Nickname, format: WireFormat = .native, eventLoop: any EventLoop, sink: Sink, maxQueuedFrames: Int,
        metrics: Metrics?, connectionID: ConnectionID = .random()
    ) {
        self.connectionID = connectionID
        self.nickname = nickname
        self.format = format
        self.sink = sink
        self.delivery = EventLoopDelivery.of(eventLoop)
        self.metrics = metrics
        self.state = NIOLoopBoundBox.makeBoxSendingValue(
            OutboundState(nickname: nickname, connection: connectionID, maxQueuedFrames: maxQueuedFrames),
            eventLoop: eventLoop)
    }

    /// On the loop (the Hub's delivery).
    func receive(_ frame: Frame) {
        switch state.value.live(frame, writable: sink.isWritable) {
        case .write: put(frame)
        case .skip: break
        case .duplicate: metrics?.count("gate_drops", "not_newer")
        case .slowConsumer: slowConsumer()
        }
    }

    /// On the loop, once after a batch of `receive`s.
    func flush() {
        if state.value.takeDirty() { sink.flush() }
    }

    /// Writes the opening sequence — `welcome` (its position is `cursor`), the backlog
    /// the client has not seen, the live frames that arrived meanwhile — then lets live
    /// frames through. From any thread.
    func open(welcome: Frame?, backlog: [Frame], cursor: Cursor) {
        eventLoop.execute { self.openNow(welcome: welcome, backlog: backlog, cursor: cursor) }
    }

    /// `open`, on the loop.
    func openNow(welcome: Frame?, backlog: [Frame], cursor: Cursor) {
        guard !state.value.isClosed else { return }
        state.value.seed(cursor)
        if let welcome, !emit(welcome, position: cursor) { return }
        for frame in backlog where state.value.advance(frame) {
            guard emit(frame, position: frame.id == nil ? nil : state.value.position) else { return }
        }
        for frame in state.value.goLive() where state.value.advance(frame) {
            guard emit(frame, position: frame.id == nil ? nil : state.value.position) else { return }
        }
        flush()
    }

    /// Writes one frame of the opening (it counts for backpressure like any other).
    /// False once the connection is closed.
    private func emit(_ frame: Frame, position: Cursor?) -> Bool {
        switch state.value.written(writable: sink.isWritable) {
        case .write:
            sink.write(frame, position: position, delivery: delivery)
            return true
        case .slowConsumer:
            slowConsumer()
            return false
        case .skip, .duplicate:
            return false
        }
    }

    private func put(_ frame: Frame) {
        sink.write(frame, position: frame.id == nil ? nil : state.value.position, delivery: delivery)
    }

    private func slowConsumer() {
        metrics?.count("disconnects", "slow_consumer")
        end(.slowConsumer)
    }

    /// Ends the connection from any thread, telling the client why.
    func close(reason: CloseReason) {
        eventLoop.execute { self.end(reason) }
    }

    /// On the loop: ends the connection once, through the sink.
    func end(_ reason: CloseReason) {
        guard state.value.close() else { return }
        sink.end(reason)
    }

    /// On the loop: ends the connection once, the transport's own way (a WebSocket close
    /// code the shared reasons do not cover). False if it was closed already.
    @discardableResult
    func end(_ body: (Sink) -> Void) -> Bool {
        guard state.value.close() else { return false }
        body(sink)
        return true
    }

    /// On the loop: the channel is gone; nothing more is written.
    func markClosed() { _ = state.value.close() }

    /// On the loop.
    var isClosed: Bool { state.value.isClosed }

    /// On the loop: the position after the last frame written.
    var position: Cursor { state.value.position }
}
