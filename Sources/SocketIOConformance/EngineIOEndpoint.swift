import Hummingbird
import HummingbirdWebSocket
import Logging
import SocketIO
import Synchronization

/// What runs on top of an ``EngineIOEndpoint``: it gets the sessions' `.opened`,
/// `.received` and `.closed` events, in order per session, and answers through the
/// endpoint's `send` and `close`.
protocol EngineIOApplication: Sendable {
    func handle(_ events: [EngineIOAction], endpoint: EngineIOEndpoint) async
    /// Called by the ticker with the current instant (for the application's own timers).
    func tick(now: EngineIOInstant, endpoint: EngineIOEndpoint) async
    /// When the application's timers next need a ``tick(now:endpoint:)``.
    var nextDeadline: EngineIOInstant? { get }
}

/// Carries out an ``EngineIOServer``'s actions over Hummingbird: polling requests are
/// answered (or held until `.answerPoll`), WebSocket frames go to a per-socket writer.
/// The state machine and the waiting requests and writers live under one lock; the
/// transport actions are carried out under it too (resuming a continuation and
/// yielding to a stream never block), so their order is the state machine's order.
/// Application events are handed over outside the lock.
final class EngineIOEndpoint: Sendable {
    /// A command for one socket's writer task.
    enum SocketCommand: Sendable {
        case write([EngineIOFrame])
        case close(EngineIOServerError?)
        /// Resumed once every command before it is carried out.
        case barrier(CheckedContinuation<Void, Never>)
    }

    struct State: ~Copyable {
        var server: EngineIOServer
        var polls: [String: CheckedContinuation<EngineIOReply.Response, Never>] = [:]
        var sockets: [EngineIOWebSocketID: AsyncStream<SocketCommand>.Continuation] = [:]
    }

    let configuration: EngineIOConfiguration
    let application: any EngineIOApplication
    let logger: Logger
    private let state: Mutex<State>

    init(configuration: EngineIOConfiguration, application: any EngineIOApplication, logger: Logger) {
        self.configuration = configuration
        self.application = application
        self.logger = logger
        self.state = Mutex(State(server: EngineIOServer(configuration: configuration)))
    }

    // MARK: - Application side

    /// Sends messages to a session.
    func send(_ messages: [EngineIOMessage], to sid: String) async {
        await run { $0.send(messages, to: sid, now: .now) }
    }

    /// Closes a session from the server side.
    func close(sid: String) async {
        await run { $0.close(sid: sid, now: .now) }
    }

    /// Applies expired timers (pings, timeouts); called by the ticker.
    func tick() async {
        let now = ContinuousClock.now
        await run { $0.tick(now: now) }
        await application.tick(now: now, endpoint: self)
    }

    /// When ``tick()`` next has something to do.
    var nextDeadline: EngineIOInstant? {
        let engine = state.withLock { $0.server.nextDeadline }
        return [engine, application.nextDeadline].compactMap { $0 }.min()
    }

    /// Closes every session (graceful shutdown).
    func closeAll() async {
        await run { $0.closeAll(now: .now) }
    }

    // MARK: - Carrying out actions

    /// Runs `body` on the server under the lock, carries out its transport actions and
    /// hands its application events over.
    func run(_ body: (inout EngineIOServer) -> [EngineIOAction]) async {
        let events = state.withLock { state in
            Self.perform(body(&state.server), in: &state)
        }
        await deliver(events)
    }

    /// Like ``run(_:)`` for a request: returns the reply's response.
    func request(_ body: (inout EngineIOServer) -> EngineIOReply) async -> EngineIOReply.Response {
        let (response, events) = state.withLock { state in
            let reply = body(&state.server)
            return (reply.response, Self.perform(reply.actions, in: &state))
        }
        await deliver(events)
        return response
    }

    /// Checks a request against the protocol and the sessions.
    func route(_ request: EngineIORequest) -> EngineIORoute {
        state.withLock { $0.server.route(request) }
    }

    /// A `GET` poll: answered at once, or when the server says so.
    func poll(sid: String) async -> EngineIOReply.Response {
        var events: [EngineIOAction] = []
        let response = await withCheckedContinuation { (continuation: CheckedContinuation<EngineIOReply.Response, Never>) in
            events = state.withLock { state in
                let reply = state.server.poll(sid: sid, now: .now)
                if reply.response == .pending {
                    state.polls[sid] = continuation
                } else {
                    continuation.resume(returning: reply.response)
                }
                return Self.perform(reply.actions, in: &state)
            }
        }
        await deliver(events)
        return response
    }

    /// Registers a new socket and opens or upgrades a session on it; `nil` when refused.
    func openWebSocket(
        upgrading sid: String?, continuation: AsyncStream<SocketCommand>.Continuation
    ) async -> EngineIOWebSocketID? {
        let (socket, events) = state.withLock { state in
            let (socket, actions) = state.server.openWebSocket(upgrading: sid, newSID: Self.makeSID(), now: .now)
            if let socket { state.sockets[socket] = continuation }
            return (socket, Self.perform(actions, in: &state))
        }
        await deliver(events)
        return socket
    }

    /// Forgets a socket whose connection ended, and tells the server.
    func webSocketEnded(_ socket: EngineIOWebSocketID, reason: EngineIOCloseReason) async {
        await run { server in server.webSocketClosed(socket, reason: reason, now: .now) }
        state.withLock { state in state.sockets.removeValue(forKey: socket)?.finish() }
    }

    private func deliver(_ events: [EngineIOAction]) async {
        guard !events.isEmpty else { return }
        await application.handle(events, endpoint: self)
    }

    /// Carries out the transport actions; returns the application events.
    private static func perform(_ actions: [EngineIOAction], in state: inout State) -> [EngineIOAction] {
        var events: [EngineIOAction] = []
        for action in actions {
            switch action {
            case .answerPoll(let sid, let body):
                state.polls.removeValue(forKey: sid)?.resume(returning: .body(body))
            case .rejectPoll(let sid, let error):
                state.polls.removeValue(forKey: sid)?.resume(returning: .failure(error))
            case .writeWebSocket(let socket, let frames):
                state.sockets[socket]?.yield(.write(frames))
            case .closeWebSocket(let socket):
                if let writer = state.sockets.removeValue(forKey: socket) {
                    writer.yield(.close(nil))
                    writer.finish()
                }
            case .opened, .received, .closed:
                events.append(action)
            }
        }
        return events
    }

    /// A session ID like the reference server's: 20 URL-safe base64 characters.
    static func makeSID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet[Int(generator.next(upperBound: UInt8(64)))] })
    }
}
