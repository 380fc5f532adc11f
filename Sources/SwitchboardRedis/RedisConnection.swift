import Logging
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Called with a command's reply, or with `unavailable` when the connection is down or
/// lost before the reply came. Runs on the connection's thread: it must not block.
typealias RedisCompletion = @Sendable (Result<RESPValue, BrokerError>) -> Void

/// A command and what to do with its reply.
struct RedisRequest: Sendable {
    let command: RedisCommand
    let completion: RedisCompletion
    /// False for a command answered only by pushes (SUNSUBSCRIBE on a sharded subscriber,
    /// whose confirmation looks like the unsolicited one a slot move sends): nothing waits
    /// for a reply, and the completion runs once the command is buffered.
    var expectsReply = true
}

/// One connection to Redis, driven by a dedicated thread (`RedisConnectionLoop`) that runs
/// hiredis's sync context in non-blocking mode: no hiredis call ever runs on an event loop
/// or on the Swift concurrency pool.
///
/// Any thread may queue commands; the loop pipelines them (many in flight) and matches
/// replies first-in first-out. While the connection is down, commands fail at once with
/// `BrokerError.unavailable` and the loop reconnects with exponential backoff and jitter.
final class RedisConnection: Sendable {
    struct Configuration: Sendable {
        var url: RedisURL
        /// `commands` or `subscriber`, for logs and errors.
        var label: String
        var connectTimeout: Duration
        /// A connection with a reply outstanding for longer is considered dead.
        var replyTimeout: Duration
        /// An idle connection is checked with `PING` this often.
        var pingInterval: Duration
        /// Pub/sub connection: `message` pushes go to `Hooks.push` instead of a command.
        var isSubscriber: Bool
    }

    /// How the owner takes part in the connection's life. All run on the loop thread.
    struct Hooks: Sendable {
        /// Commands sent after AUTH and SELECT on every connect (SCRIPT LOAD, SUBSCRIBE…).
        /// The connection is ready once every one of them replied without an error.
        var handshake: @Sendable () -> [RedisRequest]
        /// A `message` push on a subscriber connection.
        var push: @Sendable (RESPValue) -> Void
        /// True when the connection becomes ready, false when a ready connection is lost.
        var stateChanged: @Sendable (Bool) -> Void
        /// Where to connect, asked before every attempt (Sentinel: the current master);
        /// nil connects to the URL's host and port. May block: it runs on the loop thread.
        var address: (@Sendable () -> Result<RedisURL.Sentinel.Endpoint, BrokerError>)? = nil
    }

    enum Phase: Equatable {
        case idle, connecting, handshaking, ready, stopped
    }

    struct State {
        var phase = Phase.idle
        var queue: [RedisRequest] = []
        /// A wake-up byte is in the pipe and the loop has not taken the queue since.
        var wakePending = false
        var lastError = "not connected yet"
        var wakeRead: Int32 = -1
        var wakeWrite: Int32 = -1
        var threadRunning = false
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        /// Counts ended connections: two replies with the same generation came over the
        /// same connection (WAIT only covers that connection's writes).
        var generation: UInt64 = 0
        /// The server of the current or last connection attempt.
        var address: RedisURL.Sentinel.Endpoint?
        /// Set by `drop`: the loop closes the connection and connects again.
        var dropReason: String?
    }

    let configuration: Configuration
    let logger: Logger
    let state = Mutex(State())

    init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.connection"] = .string(configuration.label)
        self.logger = logger
    }

    /// Starts the loop thread; it connects at once and keeps reconnecting until `stop`.
    func start(hooks: Hooks) throws(BrokerError) {
        var fds: [Int32] = [-1, -1]
        try state.withLock { state throws(BrokerError) in
            guard state.phase == .idle else { throw BrokerError.unavailable("redis \(configuration.label): already started") }
            guard pipe(&fds) == 0 else { throw BrokerError.unavailable("redis \(configuration.label): cannot create a pipe") }
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
            state.wakeRead = fds[0]
            state.wakeWrite = fds[1]
            state.phase = .connecting
            state.threadRunning = true
        }
        let wakeFD = fds[0]
        let name = "redis-" + configuration.label.prefix(9)
        guard spawnThread(name: String(name), { RedisConnectionLoop(connection: self, hooks: hooks, wakeFD: wakeFD).run() })
        else {
            state.withLock { state in
                state.phase = .stopped
                state.threadRunning = false
                close(state.wakeRead)
                close(state.wakeWrite)
            }
            throw BrokerError.unavailable("redis \(configuration.label): cannot start a thread")
        }
    }

    /// True while commands are accepted (connected, possibly still handshaking).
    var isConnected: Bool {
        state.withLock { $0.phase == .ready || $0.phase == .handshaking }
    }

    /// Queues `request`, or fails it at once with `unavailable` when not connected.
    func enqueue(_ request: RedisRequest) {
        enqueue([request])
    }

    /// Queues `requests` back to back (nothing from another thread between them, as
    /// `ASKING` needs), or fails them all at once with `unavailable` when not connected.
    func enqueue(_ requests: [RedisRequest]) {
        let refusal: BrokerError? = state.withLock { state in
            switch state.phase {
            case .handshaking, .ready:
                state.queue.append(contentsOf: requests)
                if !state.wakePending {
                    state.wakePending = true
                    Self.signal(state.wakeWrite)
                }
                return nil
            case .stopped:
                return BrokerError.unavailable("broker stopped")
            case .idle, .connecting:
                return BrokerError.unavailable("redis \(configuration.label) is not connected: \(state.lastError)")
            }
        }
        if let refusal { for request in requests { request.completion(.failure(refusal)) } }
    }

    /// Which connection this is (see `State.generation`); read it in a completion to know
    /// the connection its reply came over.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// Closes the connection and connects again (finding the server anew) unless it is
    /// connected to `address`: the master moved (Sentinel's `+switch-master`).
    func drop(unlessConnectedTo address: RedisURL.Sentinel.Endpoint?, reason: String) {
        state.withLock { state in
            guard state.phase == .ready || state.phase == .handshaking, address == nil || state.address != address else { return }
            state.dropReason = reason
            if !state.wakePending {
                state.wakePending = true
                Self.signal(state.wakeWrite)
            }
        }
    }

    /// Sends `command` and waits for its reply (an error reply is returned, not thrown).
    func send(_ command: RedisCommand) async throws -> RESPValue {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RESPValue, any Error>) in
            enqueue(RedisRequest(command: command) { result in continuation.resume(with: result) })
        }
    }

    /// `send`, also telling which connection (`generation`) the reply came over.
    func sendTagged(_ command: RedisCommand) async throws -> (RESPValue, UInt64) {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(RESPValue, UInt64), any Error>) in
            enqueue(RedisRequest(command: command) { [self] result in continuation.resume(with: result.map { ($0, generation) }) })
        }
    }

    /// Stops the thread, closes the socket and fails every queued or in-flight command.
    func stop() async {
        let (pending, running) = state.withLock { state in
            let pending = state.queue
            state.queue = []
            if state.phase != .stopped, state.threadRunning { Self.signal(state.wakeWrite) }
            state.phase = .stopped
            return (pending, state.threadRunning)
        }
        for request in pending { request.completion(.failure(.unavailable("broker stopped"))) }
        guard running else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let exited = state.withLock { state in
                if state.threadRunning { state.exitWaiters.append(continuation) }
                return !state.threadRunning
            }
            if exited { continuation.resume() }
        }
    }

    // MARK: for the loop thread

    var isStopped: Bool { state.withLock { $0.phase == .stopped } }

    /// Takes the queued commands; nil once stopped.
    func takeQueue() -> [RedisRequest]? {
        state.withLock { state in
            guard state.phase != .stopped else { return nil }
            state.wakePending = false
            guard !state.queue.isEmpty else { return [] }
            let queue = state.queue
            state.queue = []
            return queue
        }
    }

    /// The server of the current or last connection attempt, for logs.
    var server: String { state.withLock { $0.address?.description ?? "" } }

    /// A new attempt to `address`; forgets a drop asked of the previous connection.
    func connecting(to address: RedisURL.Sentinel.Endpoint) {
        state.withLock { state in
            state.address = address
            state.dropReason = nil
        }
    }

    /// Why the connection must be dropped, once (`drop`).
    func takeDropReason() -> String? {
        state.withLock { state in
            defer { state.dropReason = nil }
            return state.dropReason
        }
    }

    /// Moves to `phase` unless stopped; false when stopped.
    @discardableResult
    func setPhase(_ phase: Phase) -> Bool {
        state.withLock { state in
            guard state.phase != .stopped else { return false }
            state.phase = phase
            return true
        }
    }

    /// The connection is gone: refuse new commands and hand back the queued ones.
    func connectionEnded(reason: String) -> [RedisRequest] {
        state.withLock { state in
            if state.phase != .stopped { state.phase = .connecting }
            state.lastError = reason
            state.generation &+= 1
            let queue = state.queue
            state.queue = []
            return queue
        }
    }

    /// The loop thread is about to return.
    func threadExited() {
        let (waiters, pending) = state.withLock { state in
            state.threadRunning = false
            state.phase = .stopped
            close(state.wakeRead)
            close(state.wakeWrite)
            state.wakeRead = -1
            state.wakeWrite = -1
            let waiters = state.exitWaiters
            state.exitWaiters = []
            let pending = state.queue
            state.queue = []
            return (waiters, pending)
        }
        for request in pending { request.completion(.failure(.unavailable("broker stopped"))) }
        for waiter in waiters { waiter.resume() }
    }

    /// Reads every wake-up byte (the pipe is non-blocking).
    static func drain(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(fd, &buffer, buffer.count) > 0 {}
    }

    private static func signal(_ fd: Int32) {
        guard fd >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }
}

/// Runs `body` on a new detached thread (not a concurrency-pool thread).
private func spawnThread(name: String, _ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        let name: String
        init(body: @escaping @Sendable () -> Void, name: String) {
            self.body = body
            self.name = name
        }
    }
    let box = Unmanaged.passRetained(Box(body: body, name: name)).toOpaque()
    #if canImport(Darwin)
    var thread: pthread_t?
    #else
    var thread = pthread_t()
    #endif
    let result = pthread_create(
        &thread, nil,
        { raw in
            let pointer: UnsafeMutableRawPointer? = raw
            let box = Unmanaged<Box>.fromOpaque(pointer!).takeRetainedValue()
            #if canImport(Darwin)
            pthread_setname_np(box.name)
            #endif
            box.body()
            return nil
        }, box)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        return false
    }
    #if canImport(Darwin)
    if let thread { pthread_detach(thread) }
    #else
    pthread_detach(thread)
    #endif
    return true
}
