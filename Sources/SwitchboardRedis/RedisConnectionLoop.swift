import CHiredis
import Logging
import SwitchboardCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The thread side of a `RedisConnection`: owns the hiredis context and the replies
/// awaited, and is only ever touched by its own thread (hence not `Sendable`).
///
/// Each turn: take the queued commands, append them with `redisAppendCommandArgv`, write
/// with `redisBufferWrite`, `poll()` the socket and the wake-up pipe, read with
/// `redisBufferRead` and hand each reply to the oldest waiting command.
final class RedisConnectionLoop {
    private struct Awaiting {
        let completion: RedisCompletion?
        let sentAt: ContinuousClock.Instant
        let isHandshake: Bool
    }

    private let connection: RedisConnection
    private let hooks: RedisConnection.Hooks
    private let configuration: RedisConnection.Configuration
    private let logger: Logger
    private let wakeFD: Int32
    private var context: UnsafeMutablePointer<redisContext>?
    private var awaiting = FIFO<Awaiting>()
    private var handshakeRemaining = 0
    private var isReady = false
    private var needsWrite = false
    private var failures = 0
    private var lastTraffic = ContinuousClock.now

    init(connection: RedisConnection, hooks: RedisConnection.Hooks, wakeFD: Int32) {
        self.connection = connection
        self.hooks = hooks
        self.configuration = connection.configuration
        self.logger = connection.logger
        self.wakeFD = wakeFD
    }

    func run() {
        // A write to a closed socket raises SIGPIPE in the writing thread: keep it pending
        // here (write returns EPIPE) instead of killing the process.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        while !connection.isStopped {
            let reason: String
            if let failure = connect() {
                reason = failure
            } else {
                reason = serve()
            }
            let wasReady = isReady
            close(reason: reason)
            guard !connection.isStopped else { break }
            failures += 1
            if wasReady {
                logger.warning("redis connection lost, reconnecting", metadata: ["redis.error": "\(reason)"])
            } else if failures == 1 {
                logger.warning(
                    "cannot connect to redis, retrying",
                    metadata: ["redis.error": "\(reason)", "redis.url": "\(configuration.url)"])
            } else {
                logger.debug("cannot connect to redis", metadata: ["redis.error": "\(reason)", "redis.attempt": "\(failures)"])
            }
            guard pause(backoff()) else { break }
        }
        close(reason: "broker stopped")
        connection.threadExited()
    }

    /// 100 ms doubling to a 2 s cap, each delay drawn from its upper half (jitter).
    private func backoff() -> Duration {
        let base = min(2000, 100 << min(failures - 1, 5))
        return .milliseconds(Int.random(in: base / 2...base))
    }

    /// Waits `duration` on the wake-up pipe; false when stopped meanwhile.
    private func pause(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            var fd = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&fd, 1, milliseconds(deadline - ContinuousClock.now))
            if fd.revents != 0 { RedisConnection.drain(wakeFD) }
            if connection.isStopped { return false }
        }
        return true
    }

    // MARK: connecting

    /// Connects without blocking past `connectTimeout`, then queues the handshake.
    /// Returns why it failed, or nil.
    private func connect() -> String? {
        var address = RedisURL.Sentinel.Endpoint(host: configuration.url.host, port: configuration.url.port)
        if let resolve = hooks.address {
            switch resolve() {
            case .success(let resolved): address = resolved
            case .failure(let error): return error.detail
            }
            if connection.isStopped { return "broker stopped" }
        }
        connection.connecting(to: address)
        guard let context = redisConnectNonBlock(address.host, Int32(address.port)) else {
            return "cannot allocate a hiredis context"
        }
        self.context = context
        if context.pointee.err != 0 { return Self.errorText(context) }
        let fd = context.pointee.fd
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let deadline = ContinuousClock.now + configuration.connectTimeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return "connect timed out after \(configuration.connectTimeout)" }
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, milliseconds(remaining))
            if fds[1].revents != 0 { RedisConnection.drain(wakeFD) }
            if connection.isStopped { return "broker stopped" }
            if fds[0].revents != 0 { break }
        }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length) == 0, socketError == 0 else {
            return String(cString: strerror(socketError == 0 ? errno : socketError))
        }
        _ = redisEnableKeepAlive(context)
        // Handshaking before asking for the handshake: a subscription added meanwhile is
        // either in the handshake or queued behind it.
        guard connection.setPhase(.handshaking) else { return "broker stopped" }
        var requests: [RedisRequest] = []
        let url = configuration.url
        if let password = url.password {
            let auth = RedisCommand(["AUTH"] + (url.username.map { [$0] } ?? []) + [password])
            requests.append(RedisRequest(command: auth) { _ in })
        }
        if url.database != 0 {
            requests.append(RedisRequest(command: RedisCommand(["SELECT", String(url.database)])) { _ in })
        }
        requests += hooks.handshake()
        let now = ContinuousClock.now
        lastTraffic = now
        for request in requests {
            guard request.command.append(to: context) else { return "out of memory" }
            awaiting.append(Awaiting(completion: request.completion, sentAt: now, isHandshake: true))
        }
        handshakeRemaining = requests.count
        needsWrite = true
        if requests.isEmpty { becomeReady() }
        return nil
    }

    private func becomeReady() {
        failures = 0
        guard connection.setPhase(.ready) else { return }
        isReady = true
        logger.info(
            "redis connected",
            metadata: ["redis.url": "\(configuration.url)", "redis.server": "\(connection.server)"])
        hooks.stateChanged(true)
    }

    // MARK: serving

    /// Runs the connection until it fails or the broker stops; returns why it ended.
    private func serve() -> String {
        guard let context else { return "not connected" }
        let fd = context.pointee.fd
        while true {
            // The drop first: requests taken from the queue are sent (and so answered or
            // failed with the connection); taken and then abandoned for a drop, their
            // callers would wait for ever.
            if let reason = connection.takeDropReason() { return reason }
            guard let requests = connection.takeQueue() else { return "broker stopped" }
            if !requests.isEmpty {
                let now = ContinuousClock.now
                for request in requests {
                    if request.command.append(to: context) {
                        if request.expectsReply {
                            awaiting.append(Awaiting(completion: request.completion, sentAt: now, isHandshake: false))
                        } else {
                            request.completion(.success(.null))
                        }
                        needsWrite = true
                    } else {
                        request.completion(.failure(.unavailable("redis: cannot buffer \(request.command)")))
                    }
                }
            }
            if needsWrite, let failure = flush(context) { return failure }
            var events = Int16(POLLIN)
            if needsWrite { events |= Int16(POLLOUT) }
            var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            if poll(&fds, 2, 250) < 0, errno != EINTR { return "poll failed: \(String(cString: strerror(errno)))" }
            if fds[1].revents != 0 { RedisConnection.drain(wakeFD) }
            if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                guard redisBufferRead(context) == REDIS_OK else { return Self.errorText(context) }
                if let failure = readReplies(context) { return failure }
            }
            if fds[0].revents & Int16(POLLOUT) != 0, let failure = flush(context) { return failure }
            if let failure = checkHealth(context) { return failure }
        }
    }

    private func flush(_ context: UnsafeMutablePointer<redisContext>) -> String? {
        var done: Int32 = 0
        guard redisBufferWrite(context, &done) == REDIS_OK else { return Self.errorText(context) }
        needsWrite = done == 0
        return nil
    }

    private func readReplies(_ context: UnsafeMutablePointer<redisContext>) -> String? {
        guard let reader = context.pointee.reader else { return "hiredis context has no reader" }
        lastTraffic = ContinuousClock.now
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                return "protocol error: " + Self.text(of: reader.pointee.errstr)
            }
            guard let raw else { return nil }
            let value = RESPValue(reply: raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            if let failure = dispatch(value) { return failure }
        }
    }

    /// Replies no command waits for on a subscriber connection: messages, sharded
    /// messages, and `sunsubscribe` (Redis sends it unasked when a slot moves away).
    private static let pushKinds: [[UInt8]] = ["message", "smessage", "sunsubscribe"].map { Array($0.utf8) }

    private func dispatch(_ value: RESPValue) -> String? {
        if configuration.isSubscriber, case .array(let parts) = value, case .string(let kind)? = parts.first,
            Self.pushKinds.contains(kind)
        {
            hooks.push(value)
            return nil
        }
        guard let entry = awaiting.popFirst() else {
            logger.debug("redis reply without a command, ignored", metadata: ["redis.reply": "\(value)"])
            return nil
        }
        entry.completion?(.success(value))
        guard entry.isHandshake else { return nil }
        if case .error(let message) = value {
            // A password in the URL for a server without one is harmless.
            if message.contains("without any password configured") || message.contains("no password is set") {
                logger.warning("redis has no password; ignoring the one in the URL")
            } else {
                return "handshake failed: \(message)"
            }
        }
        handshakeRemaining -= 1
        if handshakeRemaining == 0 { becomeReady() }
        return nil
    }

    /// A reply overdue means a dead peer (no RST); an idle connection is probed with PING.
    private func checkHealth(_ context: UnsafeMutablePointer<redisContext>) -> String? {
        let now = ContinuousClock.now
        if let oldest = awaiting.first, now - oldest.sentAt > configuration.replyTimeout {
            return "no reply within \(configuration.replyTimeout)"
        }
        if isReady, awaiting.isEmpty, now - lastTraffic > configuration.pingInterval {
            lastTraffic = now
            if RedisCommand(["PING"]).append(to: context) {
                awaiting.append(Awaiting(completion: nil, sentAt: now, isHandshake: false))
                needsWrite = true
            }
        }
        return nil
    }

    // MARK: closing

    /// Frees the context and fails everything in flight or queued with `unavailable`.
    private func close(reason: String) {
        let queued = connection.connectionEnded(reason: reason)
        if isReady {
            isReady = false
            hooks.stateChanged(false)
        }
        let error = BrokerError.unavailable("redis \(configuration.label): \(reason)")
        while let entry = awaiting.popFirst() { entry.completion?(.failure(error)) }
        for request in queued { request.completion(.failure(error)) }
        if let context {
            redisFree(context)
            self.context = nil
        }
        handshakeRemaining = 0
        needsWrite = false
    }

    static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        let text = Self.text(of: context.pointee.errstr)
        return text.isEmpty ? "connection error \(context.pointee.err)" : text
    }

    static func text<T>(of tuple: T) -> String {
        withUnsafeBytes(of: tuple) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

private func milliseconds(_ duration: Duration) -> Int32 {
    let (seconds, attoseconds) = duration.components
    let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    return Int32(clamping: max(0, ms + (attoseconds % 1_000_000_000_000_000 > 0 ? 1 : 0)))
}
