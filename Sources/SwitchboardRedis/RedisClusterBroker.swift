import Logging
import SwitchboardCore
import Synchronization

/// The cluster `Broker` over a Redis Cluster (≥ 7.0) with sharded pub/sub.
///
/// Streams hash into a fixed number of partitions (`RedisClusterPartitions`) whose hash
/// tags spread evenly over the slots; a stream's channel, history and lock share its
/// partition's tag, so a publish is one script in one slot (`SPUBLISH` inside it).
/// Per master: one command connection (pipelined scripts, `WAIT` for replicas) and one
/// subscriber connection holding `SSUBSCRIBE`s of the channels in its slots — one per
/// stream this node serves, whatever the number of local clients.
///
/// The slot map comes from `CLUSTER SLOTS` (seeds first, then any master), re-read every
/// `topologyRefreshInterval` and at once after a redirect, a lost master or a `sunsubscribe`
/// (a slot moved away). Subscriptions follow their slot to its new master. Whenever a
/// subscription is lost the handler gets `.disconnected`, and `.reconnected` once every
/// one is active again, so the node fills the gap from history. A partition whose master
/// stays unreachable for `partitionGrace` stops holding back the others: `.reconnected`
/// comes without it (its publishes keep failing) and a second cycle fills its gap when it
/// is back.
///
/// Node-addressed messages (Socket.IO forwarding) use a sharded channel per node,
/// `sb:to-node:{id}`, its hash tag the node id: SPUBLISH on that slot's master, and the
/// node's own SSUBSCRIBE there, kept like a stream's. Node liveness is the heartbeats in
/// the `{nodes}` slot (`heartbeat`, `liveNodes`).
public final class RedisClusterBroker: Broker {
    /// Plain settings; only the executable reads flags and the environment.
    public struct Configuration: Sendable {
        public var url: RedisClusterURL
        /// Prefix of every key and channel; must not contain `{` or `}`.
        public var keyPrefix: String
        /// Entries kept per history stream (exact trimming).
        public var historyLimit: Int
        /// Partitions rooms and nicknames hash into (`RedisClusterPartitions`); the same
        /// on every node.
        public var partitions: Int = 64
        public var connectTimeout: Duration = .seconds(1)
        /// How long `start` waits for the cluster before returning not ready.
        public var startTimeout: Duration = .seconds(5)
        public var replyTimeout: Duration = .seconds(10)
        public var pingInterval: Duration = .seconds(5)
        /// A presence key expires this long (ms) after its newest entry.
        public var presenceKeyMargin: Int64 = 60_000
        /// Replicas that must confirm a publish (`WAIT` on its master) before it is
        /// acknowledged; fewer within `replicaWaitTimeout` fails the publish.
        public var minReplicas: Int = 0
        public var replicaWaitTimeout: Duration = .seconds(1)
        /// The slot map is re-read this often even when nothing seems wrong.
        public var topologyRefreshInterval: Duration = .seconds(5)
        /// How long live delivery of every partition waits for one whose master is gone.
        public var partitionGrace: Duration = .seconds(5)
        /// How long an operation keeps retrying a missing master, a redirect, `TRYAGAIN`
        /// or a locked stream before it fails with `unavailable`.
        public var retryTimeout: Duration = .seconds(3)
        /// Locks of a cross-slot publish expire after this (a crashed node's free themselves).
        public var lockTTL: Duration = .seconds(3)

        public init(url: RedisClusterURL, keyPrefix: String = "sb:", historyLimit: Int = 1000) {
            self.url = url
            self.keyPrefix = keyPrefix
            self.historyLimit = historyLimit
        }
    }

    /// Where a wanted channel stands.
    enum Subscription: Equatable {
        /// SSUBSCRIBE sent to this master, reply pending.
        case subscribing(RedisNodeAddress)
        case active(RedisNodeAddress)
        /// Not subscribed anywhere: waiting for a master (slot map refresh, reconnect).
        case lost

        var master: RedisNodeAddress? {
            switch self {
            case .subscribing(let master), .active(let master): master
            case .lost: nil
            }
        }
    }

    struct Channel {
        /// The stream the channel carries; nil for this node's node-addressed channel
        /// (`listen(asNode:_:)`), whose messages go to `State.nodeHandler`.
        let stream: StreamKey?
        let slot: Int
        var subscription: Subscription
    }

    struct State {
        var handler: (@Sendable (BrokerEvent) -> Void)?
        var started = false
        var stopped = false
        var map: RedisSlotMap?
        var shards: [RedisNodeAddress: RedisClusterShard] = [:]
        var commandsReady: Set<RedisNodeAddress> = []
        var subscribersReady: Set<RedisNodeAddress> = []
        /// Channels this node wants (its node channel too, once it listens).
        var channels: [String: Channel] = [:]
        /// This node's node-addressed channel, once it listens, and their handler.
        var nodeChannel: String?
        var nodeHandler: (@Sendable ([UInt8]) -> Void)?
        /// Script name → SHA1 (the same on every master).
        var scripts: [String: String] = [:]
        /// `.disconnected` was emitted and `.reconnected` is owed.
        var announcedDown = false
        var downSince: ContinuousClock.Instant?
        /// `.reconnected` was emitted while these channels had no master (`partitionGrace`).
        var degraded: Set<String>?
        var refreshRequested = false
        /// Everything worked once: losses before that are a slow start, not an outage.
        var wasReady = false
    }

    public let configuration: Configuration
    public let partitions: RedisClusterPartitions
    let logger: Logger
    let state = Mutex(State())
    /// Held while calling the handler: the shards' threads deliver one at a time.
    private let emitting = Mutex(())
    private let refresher = Mutex<Task<Void, Never>?>(nil)

    public init(configuration: Configuration, logger: Logger = Logger(label: "switchboard.redis")) {
        var configuration = configuration
        configuration.historyLimit = max(1, configuration.historyLimit)
        self.configuration = configuration
        self.partitions = RedisClusterPartitions(count: configuration.partitions, prefix: configuration.keyPrefix)
        self.logger = logger
    }

    /// Reads the slot map, connects to every master and waits up to `startTimeout` for
    /// them; when the cluster is not reachable by then it returns anyway (not ready,
    /// `.disconnected` emitted) and keeps trying in the background.
    public func start(_ handler: @escaping @Sendable (BrokerEvent) -> Void) async throws {
        let first = try state.withLock { state throws(BrokerError) in
            guard !state.stopped else { throw BrokerError.unavailable("broker stopped") }
            state.handler = handler
            let first = !state.started
            state.started = true
            return first
        }
        guard first else { return }
        await refreshTopology()
        refresher.withLock { $0 = Task { [self] in await refreshLoop() } }
        if await waitUntilReady(timeout: configuration.startTimeout) { return }
        logger.warning("redis cluster is not reachable yet; starting not ready", metadata: ["redis.url": "\(configuration.url)"])
        updateAnnouncement(lost: true)
    }

    /// Stops the refresh task and every connection; pending commands fail.
    public func shutdown() async {
        let shards = state.withLock { state in
            state.stopped = true
            state.handler = nil
            defer { state.shards = [:] }
            return Array(state.shards.values)
        }
        let task = refresher.withLock { task in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
        for shard in shards { await shard.stop() }
    }

    /// True while the slot map is known, every master's connections are up and every
    /// subscription is active — or when only partitions without a master are missing,
    /// after `partitionGrace`.
    public var isReady: Bool {
        state.withLock { state in
            guard !state.stopped, state.started, state.map != nil else { return false }
            return state.degraded != nil || (!state.announcedDown && Self.missing(state).isEmpty)
        }
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

    /// Channels not active on their slot's master, and masters without ready connections,
    /// by name; empty when everything works. The node channel is not counted: it has no
    /// history to fill a gap from, so its subscription neither holds live delivery nor
    /// readiness (as with `RedisBroker`, whose readiness is its connections').
    static func missing(_ state: State) -> Set<String> {
        guard let map = state.map else { return ["slot map"] }
        var missing: Set<String> = []
        for master in map.masters where !state.commandsReady.contains(master) || !state.subscribersReady.contains(master) {
            missing.insert("master \(master)")
        }
        for (name, channel) in state.channels where channel.stream != nil {
            guard let owner = map.owners[channel.slot] else {
                missing.insert(name)
                continue
            }
            switch channel.subscription {
            case .active(let master) where master == owner && state.subscribersReady.contains(master): continue
            default: missing.insert(name)
            }
        }
        return missing
    }

    /// Emits `.disconnected`/`.reconnected` as the subscriptions change (see the type's
    /// comment). `lost`: a subscription was lost, even if it may be back already (moved
    /// to another master) — messages in between are only in history.
    func updateAnnouncement(lost: Bool = false) {
        emitting.withLock { _ in
            let (events, handler): ([BrokerEvent], (@Sendable (BrokerEvent) -> Void)?) = state.withLock { state in
                guard !state.stopped, state.started else { return ([], nil) }
                let missing = Self.missing(state)
                if missing.isEmpty { state.wasReady = true }
                var events: [BrokerEvent] = []
                if let degraded = state.degraded {
                    // Live again without some partitions: lose again when anything else
                    // goes; cycle once more when they are back, to fill their gap.
                    if lost || !missing.isSubset(of: degraded) || missing.isEmpty {
                        state.degraded = nil
                        state.announcedDown = true
                        state.downSince = .now
                        events.append(.disconnected)
                    }
                } else if !state.announcedDown, lost || (!missing.isEmpty && state.wasReady) {
                    state.announcedDown = true
                    state.downSince = .now
                    events.append(.disconnected)
                }
                if state.announcedDown {
                    if missing.isEmpty {
                        state.announcedDown = false
                        state.downSince = nil
                        events.append(.reconnected)
                    } else if let since = state.downSince, ContinuousClock.now - since >= configuration.partitionGrace,
                        Self.onlyMasterless(missing, state)
                    {
                        state.announcedDown = false
                        state.degraded = missing
                        events.append(.reconnected)
                    }
                }
                return (events, state.handler)
            }
            for event in events {
                switch event {
                case .disconnected: logger.warning("redis cluster: a subscription is lost; live delivery held")
                case .reconnected:
                    logger.info("redis cluster: subscriptions active again", metadata: ["redis.missing": "\(missingSummary)"])
                case .message: break
                }
                handler?(event)
            }
        }
    }

    /// True when every missing thing is a partition or master no reachable master serves
    /// (nothing just in flight).
    private static func onlyMasterless(_ missing: Set<String>, _ state: State) -> Bool {
        guard let map = state.map else { return false }
        for (name, channel) in state.channels where missing.contains(name) {
            if case .subscribing = channel.subscription { return false }
            if let owner = map.owners[channel.slot], state.subscribersReady.contains(owner) { return false }
        }
        return true
    }

    private var missingSummary: String {
        state.withLock { state in
            let missing = Self.missing(state)
            return missing.isEmpty ? "none" : "\(missing.count) (partitions without a master)"
        }
    }

    /// A push on the subscriber connection of `master`: `smessage` or `sunsubscribe`.
    func received(_ push: RESPValue, from master: RedisNodeAddress) {
        guard case .array(let parts) = push, parts.count == 3, case .string(let kind) = parts[0],
            case .string(let channelBytes) = parts[1]
        else {
            logger.warning("malformed redis push ignored", metadata: ["redis.reply": "\(push)"])
            return
        }
        let channel = String(decoding: channelBytes, as: UTF8.self)
        if kind == Array("sunsubscribe".utf8) {
            // Ours (the channel is no longer wanted there), or a slot that moved away.
            let moved = state.withLock { state in
                guard let wanted = state.channels[channel], wanted.subscription == .active(master) else { return false }
                state.channels[channel]?.subscription = .lost
                state.refreshRequested = true
                return true
            }
            if moved {
                logger.info("redis cluster: a slot moved; resubscribing", metadata: ["redis.channel": "\(channel)"])
                updateAnnouncement()
            }
            return
        }
        guard case .string(let payload) = parts[2] else { return }
        // Node-addressed messages are not stream events: straight to their handler, in
        // the order this connection received them.
        if let nodeHandler = state.withLock({ $0.nodeChannel == channel ? $0.nodeHandler : nil }) { return nodeHandler(payload) }
        emitting.withLock { _ in
            let target: (StreamKey, @Sendable (BrokerEvent) -> Void)? = state.withLock { state in
                guard let stream = state.channels[channel]?.stream, let handler = state.handler else { return nil }
                return (stream, handler)
            }
            guard let (stream, handler) = target else { return }
            switch RedisMessage.decode(payload) {
            case .success(let (id, envelope)): handler(.message(stream: stream, id: id, envelope: envelope))
            case .failure(let failure): logger.warning("\(failure)", metadata: ["redis.channel": "\(channel)"])
            }
        }
    }

    func checkRunning() throws(BrokerError) {
        if state.withLock({ $0.stopped }) { throw BrokerError.unavailable("broker stopped") }
    }
}
