import NIOCore
import SwitchboardCore

/// The node-local half of a polling client: a subscriber parked for the client's rooms
/// while it keeps polling (its presence window), which wakes waiting polls when a frame
/// arrives. Polls themselves are stateless — each one reads history after its own
/// cursor — so the parked subscriber keeps only a short window of recent frames.
final class PollSubscriber: Subscriber {
    let connectionID = ConnectionID.random()
    let nickname: Nickname
    let format = WireFormat.native
    private let delivery: EventLoopDelivery
    private let state: NIOLoopBoundBox<State>
    private let window: Int

    struct Waiter {
        let promise: EventLoopPromise<Void>
    }

    struct State {
        /// Recent frames with a sequence number, oldest first.
        var recent: [(sequence: UInt64, frame: Frame)] = []
        var sequence: UInt64 = 0
        /// The sequence number of the newest stored frame (one with an id).
        var lastStored: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiter: UInt64 = 0
        var closed = false
    }

    var loop: any DeliveryLoop { delivery }
    var eventLoop: any EventLoop { delivery.eventLoop }

    init(nickname: Nickname, eventLoop: any EventLoop, window: Int = 256) {
        self.nickname = nickname
        self.delivery = EventLoopDelivery.of(eventLoop)
        self.window = window
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    func receive(_ frame: Frame) {
        guard frame.isVisible(to: nickname, connection: connectionID) else { return }
        state.value.sequence += 1
        if frame.id != nil { state.value.lastStored = state.value.sequence }
        state.value.recent.append((state.value.sequence, frame))
        if state.value.recent.count > window { state.value.recent.removeFirst(state.value.recent.count - window) }
    }

    func flush() {
        let waiters = state.value.waiters
        state.value.waiters = [:]
        for waiter in waiters.values { waiter.promise.succeed() }
    }

    /// The current sequence number (on the loop): frames after it are "new".
    var sequence: UInt64 { state.value.sequence }

    /// Frames newer than `after` (on the loop).
    func frames(after sequence: UInt64) -> [Frame] {
        state.value.recent.filter { $0.sequence > sequence }.map(\.frame)
    }

    /// Whether a stored frame (one with an id) arrived after `sequence` (on the loop).
    func storedSince(_ sequence: UInt64) -> Bool {
        state.value.lastStored > sequence
    }

    /// A future completed at the next batch of frames (on the loop).
    func nextBatch() -> EventLoopFuture<Void> {
        if state.value.closed { return eventLoop.makeSucceededVoidFuture() }
        let promise = eventLoop.makePromise(of: Void.self)
        state.value.nextWaiter += 1
        state.value.waiters[state.value.nextWaiter] = Waiter(promise: promise)
        return promise.futureResult
    }

    /// Answers waiting polls now; the client polls again (elsewhere, when draining).
    func close(reason: CloseReason) {
        eventLoop.execute {
            self.state.value.closed = true
            self.flush()
        }
    }

    /// True once the node closed it (drain): polls answer at once.
    var isClosed: Bool { state.value.closed }

    /// Wakes every waiting poll (timeout, shutdown).
    func wakeAll() {
        eventLoop.execute { self.flush() }
    }
}
