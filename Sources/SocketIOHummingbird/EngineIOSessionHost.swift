import Logging
import NIOCore
import NIOWebSocket
import SocketIO
import Synchronization

/// One Engine.IO session bound to one event loop: its ``EngineIOSession`` state machine,
/// its waiting poll, its WebSocket writers, its application delegate and one scheduled
/// task for its next timer. Everything runs on ``eventLoop``, so no lock is needed and
/// the session's events are carried out in the state machine's order; requests that
/// arrive on other loops hop here. Timers are per session (`scheduleTask` on the loop,
/// moved when the deadline moves): nothing ever scans all sessions.
final class EngineIOSessionHost: Sendable {
    let sid: String
    let eventLoop: any EventLoop
    let remoteAddress: String?
    private let endpoint: EngineIOEndpoint
    private let box: NIOLoopBoundBox<Storage>
    /// Mirrors `session.transport`, for routing requests from other threads.
    private let onWebSocket: Atomic<Bool>

    /// The loop-confined state.
    final class Storage {
        var session: EngineIOSession
        var delegate: (any EngineIOSessionDelegate)?
        var poll: EventLoopPromise<EngineIOReply.Response>?
        var sockets: [EngineIOWebSocketID: any EngineIOSocketSink] = [:]
        var timer: Scheduled<Void>?
        var timerDeadline: EngineIOInstant?
        var ended = false

        init(session: EngineIOSession) {
            self.session = session
        }
    }

    init(session: EngineIOSession, eventLoop: any EventLoop, remoteAddress: String?, endpoint: EngineIOEndpoint) {
        self.sid = session.sid
        self.eventLoop = eventLoop
        self.remoteAddress = remoteAddress
        self.endpoint = endpoint
        self.onWebSocket = Atomic(session.transport == .websocket)
        self.box = NIOLoopBoundBox.makeBoxSendingValue(Storage(session: session), eventLoop: eventLoop)
    }

    private var storage: Storage { box.value }

    var currentTransport: EngineIOTransport { onWebSocket.load(ordering: .relaxed) ? .websocket : .polling }

    var handle: EngineIOSessionHandle { EngineIOSessionHandle(host: self) }

    /// Runs `body` on the loop: at once when already there.
    func onLoop(_ body: @escaping @Sendable (EngineIOSessionHost) -> Void) {
        if eventLoop.inEventLoop {
            body(self)
        } else {
            eventLoop.execute { body(self) }
        }
    }

    /// Runs `body` on the loop and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (EngineIOSessionHost) -> T) async -> T? {
        try? await eventLoop.submit { body(self) }.get()
    }

    // MARK: - Events (on the loop)

    /// Carries out the opening actions (the `open` frame of a WebSocket session, then
    /// `.opened`), with `socket` registered first when the session opened on one.
    func start(socket: (EngineIOWebSocketID, any EngineIOSocketSink)?) {
        if let (id, writer) = socket { storage.sockets[id] = writer }
        perform(storage.session.openingActions)
        reschedule()
    }

    /// A `GET` poll: answered through `promise`, now or later.
    func poll(_ promise: EventLoopPromise<EngineIOReply.Response>) {
        let storage = self.storage
        let done: Bool? = update { session, now in
            let reply = session.poll(now: now)
            if reply.response == .pending {
                storage.poll?.succeed(.failure(.badRequest))
                storage.poll = promise
            } else {
                promise.succeed(reply.response)
            }
            return (true, reply.actions)
        }
        if done == nil { promise.succeed(.failure(.unknownSID)) }
    }

    /// The start of a `POST`.
    func beginPost() -> EngineIOReply.Response {
        request { $0.beginPost(now: $1) }
    }

    /// The body of a `POST` (`nil` when larger than `maxPayload`).
    func finishPost(_ body: [UInt8]?) -> EngineIOReply.Response {
        request { $0.finishPost(body: body, now: $1) }
    }

    /// A WebSocket that wants to take the session over; false when refused.
    func beginUpgrade(_ socket: EngineIOWebSocketID, writer: any EngineIOSocketSink) -> Bool {
        let accepted = update { session, now in (session.beginUpgrade(socket, now: now), []) } ?? false
        if accepted { storage.sockets[socket] = writer }
        return accepted
    }

    /// A frame from one of the session's sockets.
    func receive(_ frame: EngineIOFrame, on socket: EngineIOWebSocketID) {
        _ = update { session, now in ((), session.receive(frame, on: socket, now: now)) }
    }

    /// One of the session's sockets closed.
    func webSocketClosed(_ socket: EngineIOWebSocketID, reason: EngineIOCloseReason) {
        _ = update { session, now in ((), session.webSocketClosed(socket, reason: reason, now: now)) }
        storage.sockets[socket] = nil
    }

    /// Sends messages to the client. A polling client that lets more than the
    /// endpoint's `maxBacklog` packets pile up is disconnected (its session closed).
    func send(_ messages: [EngineIOMessage]) {
        _ = update { session, now in ((), session.send(messages, now: now)) }
        let session = storage.session
        if session.transport == .polling, !session.isClosed, session.queuedPackets > endpoint.maxBacklog {
            endpoint.logger.debug("slow polling client", metadata: ["engine.sid": "\(sid)"])
            close()
        }
    }

    /// Sends messages whose WebSocket frames are already built (shared by many
    /// sessions): on an open WebSocket with no timer due, the frames are written as they
    /// are — what the state machine would do, without building them again; otherwise
    /// the messages take the usual way.
    func send(_ messages: [EngineIOMessage], webSocketFrames: [WebSocketFrame]) {
        let storage = self.storage
        let session = storage.session
        guard session.transport == .websocket, !session.isClosed, !storage.ended, storage.sockets.count == 1,
            let writer = storage.sockets.values.first, session.nextDeadline.map({ ContinuousClock.now < $0 }) ?? true
        else {
            send(messages)
            return
        }
        writer.write(frames: webSocketFrames)
    }

    /// Closes the session from the server side.
    func close() {
        _ = update { session, now in ((), session.close(now: now)) }
    }

    // MARK: - Carrying out actions

    /// Applies expired timers, then `body` (unless that closed the session), carries out
    /// every action and moves the timer. `nil` when the session is (or just got) closed.
    private func update<T>(_ body: (inout EngineIOSession, EngineIOInstant) -> (T, [EngineIOAction])) -> T? {
        let storage = self.storage
        guard !storage.ended else { return nil }
        let now = ContinuousClock.now
        var actions = storage.session.tick(now: now)
        var result: T?
        if !storage.session.isClosed {
            let (value, more) = body(&storage.session, now)
            result = value
            actions += more
        }
        perform(actions)
        reschedule()
        return result
    }

    private func request(_ body: (inout EngineIOSession, EngineIOInstant) -> EngineIOReply) -> EngineIOReply.Response {
        update { session, now in
            let reply = body(&session, now)
            return (reply.response, reply.actions)
        } ?? .failure(.unknownSID)
    }

    private func perform(_ actions: [EngineIOAction]) {
        let storage = self.storage
        for action in actions {
            switch action {
            case .answerPoll(_, let body):
                let poll = storage.poll
                storage.poll = nil
                poll?.succeed(.body(body))
            case .rejectPoll(_, let error):
                let poll = storage.poll
                storage.poll = nil
                poll?.succeed(.failure(error))
            case .writeWebSocket(let socket, let frames):
                storage.sockets[socket]?.write(frames)
            case .closeWebSocket(let socket):
                storage.sockets.removeValue(forKey: socket)?.close()
            case .opened:
                storage.delegate = endpoint.application.open(handle)
            case .received(_, let message):
                let delegate = storage.delegate
                delegate?.received(message)
            case .closed(_, let reason):
                let delegate = storage.delegate
                storage.delegate = nil
                storage.ended = true
                storage.sockets.removeAll()
                storage.poll?.succeed(.failure(.badRequest))
                storage.poll = nil
                endpoint.unregister(self)
                delegate?.closed(reason)
            }
        }
        if storage.session.transport == .websocket { onWebSocket.store(true, ordering: .relaxed) }
    }

    // MARK: - Timers

    /// Schedules one task for the earliest deadline of the session and its delegate;
    /// moves it only when that deadline changed.
    func reschedule() {
        let storage = self.storage
        let next = storage.ended ? nil : [storage.session.nextDeadline, storage.delegate?.nextDeadline].compactMap { $0 }.min()
        guard next != storage.timerDeadline || (next != nil && storage.timer == nil) else { return }
        storage.timer?.cancel()
        storage.timer = nil
        storage.timerDeadline = next
        guard let next else { return }
        // A little late rather than early: the two clocks may differ by microseconds.
        let (seconds, attoseconds) = (next - ContinuousClock.now).components
        let nanoseconds = max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000) + 200_000
        storage.timer = eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in fire() }
    }

    private func fire() {
        let storage = self.storage
        storage.timer = nil
        storage.timerDeadline = nil
        guard !storage.ended else { return }
        let now = ContinuousClock.now
        perform(storage.session.tick(now: now))
        if !storage.ended, let delegate = storage.delegate { delegate.tick(now: now) }
        reschedule()
    }
}
