import CHiredis
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

/// Finds and follows the master of a Sentinel group (`redis+sentinel://`).
///
/// Before every connection attempt the broker's connections ask `resolveMaster`: each
/// sentinel in turn is asked `SENTINEL get-master-addr-by-name`, and the address it names
/// is only taken once `ROLE` there says `master` (a sentinel may still name a crashed or
/// demoted master). No answer means no master: the connections stay down, so `/readyz`
/// says 503, and they ask again at every retry.
///
/// One watcher connection per sentinel subscribes to the failover events (only the
/// sentinel leading a failover announces its steps). `+selected-slave` — sent before the
/// chosen replica is promoted — stops writes at once: the broker drops its connections
/// and `resolveMaster` refuses until `+switch-master` (or an abort), because a write the
/// old master took after the promotion could be confirmed by a replica still following
/// it and then vanish when that replica resyncs from the new master. `+switch-master`
/// sends the connections to the new master — the broker's usual `.disconnected` /
/// `.reconnected`, so the node fills the gap from history as after any outage.
final class RedisSentinel: Sendable {
    typealias Endpoint = RedisURL.Sentinel.Endpoint

    /// What a sentinel event means for this group.
    enum Event: Equatable {
        /// A failover chose a replica: the master is about to change.
        case failoverStarted
        /// The failover is over: this is the master now.
        case switched(Endpoint)
        /// The failover was given up: the old master stays.
        case failoverAborted
    }

    /// Events subscribed to on every sentinel.
    static let channels = [
        "+selected-slave", "+switch-master", "-failover-abort-not-elected", "-failover-abort-slave-timeout",
        "-failover-abort-no-good-slave",
    ]
    /// Longest wait for `+switch-master` after `+selected-slave` before asking the sentinels again.
    static let failoverPatience: Duration = .seconds(15)

    let group: RedisURL.Sentinel
    /// The data nodes' credentials (for `ROLE`).
    let url: RedisURL
    let timeout: Duration
    let logger: Logger
    private let watchers: [RedisConnection]
    /// Set while a failover is under way: no master until then.
    private let failoverUntil = Mutex<ContinuousClock.Instant?>(nil)

    init(url: RedisURL, group: RedisURL.Sentinel, configuration: RedisConnection.Configuration, logger: Logger) {
        self.group = group
        self.url = url
        self.timeout = configuration.connectTimeout
        self.logger = logger
        self.watchers = group.sentinels.map { sentinel in
            var watcher = configuration
            // The sentinels are asked without the data nodes' password and database.
            watcher.url = RedisURL(host: sentinel.host, port: sentinel.port)
            watcher.label = "sentinel"
            watcher.isSubscriber = true
            return RedisConnection(configuration: watcher, logger: logger)
        }
    }

    /// Starts the watchers; `changed` gets what the events mean (and, each time a watcher
    /// (re)connects, the current master as `.switched`: a switch may have been missed).
    func start(changed: @escaping @Sendable (Event) -> Void) throws(BrokerError) {
        let hooks = RedisConnection.Hooks(
            handshake: { Self.channels.map { RedisRequest(command: RedisCommand(["SUBSCRIBE", $0])) { _ in } } },
            push: { [self] push in
                guard let event = event(in: push) else { return }
                switch event {
                case .failoverStarted:
                    let first = failoverUntil.withLock { until in
                        defer { until = ContinuousClock.now + Self.failoverPatience }
                        return until == nil
                    }
                    if first { logger.warning("sentinel failover started: writes stop until the new master is known") }
                case .switched(let master):
                    failoverUntil.withLock { $0 = nil }
                    logger.warning("sentinel switched the master", metadata: ["redis.master": "\(master)"])
                case .failoverAborted:
                    failoverUntil.withLock { $0 = nil }
                    logger.warning("sentinel failover aborted")
                }
                changed(event)
            },
            stateChanged: { [self] ready in
                guard ready, case .success(let master) = resolveMaster() else { return }
                changed(.switched(master))
            })
        // On a failure the broker stops every watcher (`stop`), started or not.
        for watcher in watchers { try watcher.start(hooks: hooks) }
    }

    func stop() async {
        for watcher in watchers { await watcher.stop() }
    }

    /// `message <channel> <payload>` for this group: `+switch-master` carries
    /// `<name> <old-ip> <old-port> <new-ip> <new-port>`; the others describe an instance,
    /// `master <name> <ip> <port>` or `slave <ip:port> <ip> <port> @ <master-name> …`.
    func event(in push: RESPValue) -> Event? {
        guard case .array(let parts) = push, parts.count == 3, let channel = parts[1].text, let text = parts[2].text else {
            return nil
        }
        let fields = text.split(separator: " ")
        if channel == "+switch-master" {
            guard fields.count == 5, fields[0] == group.masterName, let port = Int(fields[4]), (1...65535).contains(port) else {
                return nil
            }
            return .switched(Endpoint(host: String(fields[3]), port: port))
        }
        let master: Substring? =
            fields.first == "master"
            ? (fields.count > 1 ? fields[1] : nil)
            : fields.firstIndex(of: "@").flatMap { $0 + 1 < fields.count ? fields[$0 + 1] : nil }
        guard master == Substring(group.masterName) else { return nil }
        return channel == "+selected-slave" ? .failoverStarted : .failoverAborted
    }

    /// The current master, confirmed by `ROLE`; blocks up to `timeout` per server asked,
    /// so it only runs on a connection's own thread.
    func resolveMaster() -> Result<Endpoint, BrokerError> {
        let failing = failoverUntil.withLock { until in
            if let deadline = until, ContinuousClock.now >= deadline { until = nil }
            return until != nil
        }
        if failing { return .failure(.unavailable("a sentinel failover of '\(group.masterName)' is in progress")) }
        var reasons: [String] = []
        var checked: Set<Endpoint> = []
        for sentinel in group.sentinels {
            let reply = Self.query(sentinel, timeout: timeout, [["SENTINEL", "get-master-addr-by-name", group.masterName]])
            let candidate: Endpoint
            switch reply {
            case .failure(let why):
                reasons.append("sentinel \(sentinel): \(why.detail)")
                continue
            case .success(let replies):
                guard let pair = replies.last?.array, pair.count == 2, let host = pair[0].text, let portText = pair[1].text,
                    let port = Int(portText), (1...65535).contains(port), !host.isEmpty
                else {
                    let answer = replies.last?.errorMessage ?? "it does not know the master '\(group.masterName)'"
                    reasons.append("sentinel \(sentinel): \(answer)")
                    continue
                }
                candidate = Endpoint(host: host, port: port)
            }
            guard checked.insert(candidate).inserted else { continue }
            switch role(of: candidate) {
            case .success(let role) where role == "master":
                return .success(candidate)
            case .success(let role):
                reasons.append("\(candidate) named by sentinel \(sentinel) is a \(role), not the master")
            case .failure(let why):
                reasons.append("\(candidate) named by sentinel \(sentinel) is unreachable: \(why.detail)")
            }
        }
        return .failure(.unavailable("no master '\(group.masterName)' found: " + reasons.joined(separator: "; ")))
    }

    /// `ROLE` on `server`, after AUTH when the URL has a password.
    private func role(of server: Endpoint) -> Result<String, BrokerError> {
        var commands: [[String]] = []
        if let password = url.password { commands.append(["AUTH"] + (url.username.map { [$0] } ?? []) + [password]) }
        commands.append(["ROLE"])
        switch Self.query(server, timeout: timeout, commands) {
        case .failure(let why):
            return .failure(why)
        case .success(let replies):
            if let message = replies.first(where: { $0.errorMessage != nil })?.errorMessage {
                return .failure(.unavailable(message))
            }
            guard let role = replies.last?.array?.first?.text else { return .failure(.unavailable("unexpected ROLE reply")) }
            return .success(role)
        }
    }

    /// Connects to `server` with hiredis's blocking API (connect and read timeouts), sends
    /// `commands` pipelined and returns their replies; then closes.
    static func query(_ server: Endpoint, timeout: Duration, _ commands: [[String]]) -> Result<[RESPValue], BrokerError> {
        let (seconds, attoseconds) = timeout.components
        let limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        guard let context = redisConnectWithTimeout(server.host, Int32(server.port), limit) else {
            return .failure(.unavailable("cannot allocate a hiredis context"))
        }
        defer { redisFree(context) }
        guard context.pointee.err == 0 else { return .failure(.unavailable(RedisConnectionLoop.errorText(context))) }
        _ = fcntl(context.pointee.fd, F_SETFD, FD_CLOEXEC)
        guard redisSetTimeout(context, limit) == REDIS_OK else { return .failure(.unavailable(RedisConnectionLoop.errorText(context))) }
        for command in commands {
            guard RedisCommand(command).append(to: context) else { return .failure(.unavailable("out of memory")) }
        }
        var replies: [RESPValue] = []
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
                return .failure(.unavailable(RedisConnectionLoop.errorText(context)))
            }
            replies.append(RESPValue(reply: raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return .success(replies)
    }
}

extension RedisBroker {
    /// A failover started (stop writing: reconnect, and wait for the new master), or the
    /// master moved (connections elsewhere reconnect and find it anew).
    func sentinelChanged(_ event: RedisSentinel.Event) {
        let keep: RedisURL.Sentinel.Endpoint?
        let reason: String
        switch event {
        case .failoverStarted:
            (keep, reason) = (nil, "a sentinel failover started")
        case .switched(let master):
            (keep, reason) = (master, "sentinel switched the master to \(master)")
        case .failoverAborted:
            return
        }
        commands.drop(unlessConnectedTo: keep, reason: reason)
        subscriber.drop(unlessConnectedTo: keep, reason: reason)
    }

    /// A write refused with READONLY means the server was demoted to a replica (a
    /// `+switch-master` missed): in Sentinel mode, reconnect to the current master.
    func noteErrorReply(_ message: String) {
        guard sentinel != nil, message.hasPrefix("READONLY") else { return }
        logger.warning("redis server is a replica now; finding the master again", metadata: ["redis.error": "\(message)"])
        commands.drop(unlessConnectedTo: nil, reason: "the server became a replica")
        subscriber.drop(unlessConnectedTo: nil, reason: "the server became a replica")
    }
}
