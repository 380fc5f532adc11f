import Logging
import SwitchboardCore
import Synchronization

/// The cluster `Broker` over Redis (≥ 7.0) through libhiredis.
///
/// Two connections per node, each on its own thread (`RedisConnection`): one pipelines
/// commands and Lua scripts, the other holds this node's subscriptions — one per stream,
/// whatever the number of local clients. Keys and channels are named by `RedisKeys`.
///
/// Redis going away is normal: every command in flight or issued while down fails at once
/// with `BrokerError.unavailable`, the handler gets `.disconnected`, and both connections
/// reconnect with backoff; once commands work and every subscription is active again the
/// handler gets `.reconnected`.
///
/// With a `redis+sentinel://` URL both connections find the master through the sentinels
/// on every connect and move when it moves (`RedisSentinel`); with `minReplicas` a publish
/// is acked only once replicated (`ReplicationConfirmer`).
public final class RedisBroker: Broker {
    /// Plain settings; only the executable reads flags and the environment.
    public struct Configuration: Sendable {
        public var url: RedisURL
        /// Prefix of every key and channel (`RedisKeys`).
        public var keyPrefix: String
        /// Entries kept per history stream (exact trimming).
        public var historyLimit: Int
        /// How long one connection attempt may take.
        public var connectTimeout: Duration = .seconds(1)
        /// How long `start` waits for Redis before returning not ready.
        public var startTimeout: Duration = .seconds(2)
        /// A connection with a reply outstanding for longer is dropped and reconnected.
        public var replyTimeout: Duration = .seconds(10)
        /// Idle connections are checked with PING this often.
        public var pingInterval: Duration = .seconds(5)
        /// A presence key expires this long (ms) after its newest entry.
        public var presenceKeyMargin: Int64 = 60_000
        /// A publish is acked only once this many replicas have it (`WAIT`); 0 acks what
        /// the master wrote. Fewer replicas within `replicaWaitTimeout` fail the publish.
        public var minReplicas: Int = 0
        /// How long a publish waits for `minReplicas` replicas.
        public var replicaWaitTimeout: Duration = .seconds(1)

        public init(url: RedisURL, keyPrefix: String = "sb:", historyLimit: Int = 1000) {
            self.url = url
            self.keyPrefix = keyPrefix
            self.historyLimit = historyLimit
        }
    }

    struct State {
        var handler: (@Sendable (BrokerEvent) -> Void)?
        var started = false
        var stopped = false
        var commandsReady = false
        var subscriberReady = false
        /// `.disconnected` was emitted and `.reconnected` is owed.
        var announcedDown = false
        /// Channels this node wants, and the stream each one carries.
        var channels: [String: StreamKey] = [:]
        /// The channel of this node's node-addressed messages, once it listens, and their handler.
        var nodeChannel: String?
        var nodeHandler: (@Sendable ([UInt8]) -> Void)?
        /// Script name → SHA1, from SCRIPT LOAD.
        var scripts: [String: String] = [:]
    }

    public let configuration: Configuration
    public let keys: RedisKeys
    let logger: Logger
    let state = Mutex(State())
    /// Held while computing and emitting `.disconnected`/`.reconnected`, so they alternate.
    private let transitions = Mutex(())
    let commands: RedisConnection
    let subscriber: RedisConnection
    /// Finds and follows the master in Sentinel mode (`redis+sentinel://`).
    let sentinel: RedisSentinel?
    /// Confirms publishes with `WAIT` when `minReplicas` > 0.
    let replication: ReplicationConfirmer?

    public init(configuration: Configuration, logger: Logger = Logger(label: "switchboard.redis")) {
        var configuration = configuration
        configuration.historyLimit = max(1, configuration.historyLimit)
        self.configuration = configuration
        self.keys = RedisKeys(prefix: configuration.keyPrefix)
        self.logger = logger
        func connection(_ label: String, subscriber: Bool) -> RedisConnection {
            RedisConnection(
                configuration: .init(
                    url: configuration.url, label: label, connectTimeout: configuration.connectTimeout,
                    replyTimeout: configuration.replyTimeout, pingInterval: configuration.pingInterval, isSubscriber: subscriber),
                logger: logger)
        }
        let commands = connection("commands", subscriber: false)
        self.commands = commands
        self.subscriber = connection("subscriber", subscriber: true)
        self.sentinel = configuration.url.sentinel.map {
            RedisSentinel(url: configuration.url, group: $0, configuration: commands.configuration, logger: logger)
        }
        self.replication =
            configuration.minReplicas > 0
            ? ReplicationConfirmer(
                connection: commands, replicas: configuration.minReplicas, timeout: configuration.replicaWaitTimeout,
                logger: logger)
            : nil
    }

    /// - Parameters:
    ///   - url: the Redis server.
    ///   - keyPrefix: prefix of every key and channel.
    ///   - historyLimit: entries kept per stream.
    public convenience init(
        url: RedisURL, keyPrefix: String = "sb:", historyLimit: Int = 1000, logger: Logger = Logger(label: "switchboard.redis")
    ) {
        self.init(configuration: Configuration(url: url, keyPrefix: keyPrefix, historyLimit: historyLimit), logger: logger)
    }

    /// Starts both connections and waits up to `startTimeout` for them. When Redis is not
    /// reachable by then it returns anyway (not ready, `.disconnected` emitted) and keeps
    /// reconnecting in the background.
    public func start(_ handler: @escaping @Sendable (BrokerEvent) -> Void) async throws {
        let first = try state.withLock { state throws(BrokerError) in
            guard !state.stopped else { throw BrokerError.unavailable("broker stopped") }
            state.handler = handler
            let first = !state.started
            state.started = true
            return first
        }
        guard first else { return }
        var address: (@Sendable () -> Result<RedisURL.Sentinel.Endpoint, BrokerError>)?
        if let sentinel {
            address = { @Sendable in sentinel.resolveMaster() }
        }
        try commands.start(
            hooks: .init(
                handshake: { [self] in scriptLoadRequests() }, push: { _ in },
                stateChanged: { [self] ready in connectionChanged(commands: ready) }, address: address))
        do {
            try subscriber.start(
                hooks: .init(
                    handshake: { [self] in subscribeRequests() }, push: { [self] in deliver($0) },
                    stateChanged: { [self] ready in connectionChanged(subscriber: ready) }, address: address))
            try sentinel?.start { [self] event in sentinelChanged(event) }
        } catch {
            await commands.stop()
            await subscriber.stop()
            await sentinel?.stop()
            throw error
        }
        if await waitUntilReady(timeout: configuration.startTimeout) { return }
        logger.warning("redis is not reachable yet; starting not ready", metadata: ["redis.url": "\(configuration.url)"])
        transitions.withLock { _ in
            let handler: (@Sendable (BrokerEvent) -> Void)? = state.withLock { state in
                guard !state.stopped, !(state.commandsReady && state.subscriberReady), !state.announcedDown else { return nil }
                state.announcedDown = true
                return state.handler
            }
            handler?(.disconnected)
        }
    }

    /// Stops both threads, closes the sockets and fails every pending command.
    public func shutdown() async {
        state.withLock { state in
            state.stopped = true
            state.handler = nil
        }
        await commands.stop()
        await subscriber.stop()
        await sentinel?.stop()
    }

    /// True while both connections are up and every subscription is active.
    public var isReady: Bool {
        state.withLock { !$0.stopped && $0.commandsReady && $0.subscriberReady }
    }

    /// Waits until `isReady` or `timeout`; returns `isReady`.
    public func waitUntilReady(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isReady {
            guard ContinuousClock.now < deadline, !state.withLock({ $0.stopped }) else { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Sends one raw command on the command connection and returns its reply (an error
    /// reply is returned as `.error`, not thrown). For tools and tests.
    public func command(_ arguments: [String]) async throws -> RESPValue {
        try checkRunning()
        return try await commands.send(RedisCommand(arguments))
    }

    // MARK: connection life

    private func connectionChanged(commands: Bool? = nil, subscriber: Bool? = nil) {
        transitions.withLock { _ in
            let (event, handler): (BrokerEvent?, (@Sendable (BrokerEvent) -> Void)?) = state.withLock { state in
                let wasReady = state.commandsReady && state.subscriberReady
                if let commands { state.commandsReady = commands }
                if let subscriber { state.subscriberReady = subscriber }
                let ready = state.commandsReady && state.subscriberReady
                guard !state.stopped else { return (nil, nil) }
                if wasReady, !ready, !state.announcedDown {
                    state.announcedDown = true
                    return (.disconnected, state.handler)
                }
                if !wasReady, ready, state.announcedDown {
                    state.announcedDown = false
                    return (.reconnected, state.handler)
                }
                return (nil, nil)
            }
            if let event {
                if case .disconnected = event {
                    logger.warning("redis broker disconnected: live delivery stopped")
                } else {
                    logger.info("redis broker reconnected: every subscription is active again")
                }
                handler?(event)
            }
        }
    }

    /// SCRIPT LOAD of every script, remembering each SHA1.
    private func scriptLoadRequests() -> [RedisRequest] {
        RedisScript.all.map { script in
            RedisRequest(command: RedisCommand(["SCRIPT", "LOAD", script.source])) { [self] result in
                if case .success(let reply) = result, let sha = reply.text, reply.errorMessage == nil {
                    state.withLock { $0.scripts[script.name] = sha }
                }
            }
        }
    }

    /// SUBSCRIBE of every wanted channel, one command each (one reply each).
    private func subscribeRequests() -> [RedisRequest] {
        state.withLock { state in
            (state.channels.keys.sorted() + (state.nodeChannel.map { [$0] } ?? [])).map {
                RedisRequest(command: RedisCommand(["SUBSCRIBE", $0])) { _ in }
            }
        }
    }

    /// A `message <channel> <id>\n<envelope>` push; an empty id marks a broadcast.
    private func deliver(_ push: RESPValue) {
        guard case .array(let parts) = push, parts.count == 3, case .string(let channelBytes) = parts[1],
            case .string(let payload) = parts[2]
        else {
            logger.warning("malformed redis push ignored", metadata: ["redis.reply": "\(push)"])
            return
        }
        let channel = String(decoding: channelBytes, as: UTF8.self)
        let nodeHandler = state.withLock { $0.nodeChannel == channel ? $0.nodeHandler : nil }
        if let nodeHandler { return nodeHandler(payload) }
        let target: (StreamKey, @Sendable (BrokerEvent) -> Void)? = state.withLock { state in
            guard let stream = state.channels[channel], let handler = state.handler else { return nil }
            return (stream, handler)
        }
        guard let (stream, handler) = target else { return }
        switch RedisMessage.decode(payload) {
        case .success(let (id, envelope)): handler(.message(stream: stream, id: id, envelope: envelope))
        case .failure(let failure): logger.warning("\(failure)", metadata: ["redis.channel": "\(channel)"])
        }
    }

    func checkRunning() throws(BrokerError) {
        if state.withLock({ $0.stopped }) { throw BrokerError.unavailable("broker stopped") }
    }
}
