import Logging
import SwitchboardCore
import Synchronization

extension RedisClusterBroker {
    /// Re-reads the slot map every `topologyRefreshInterval`, soon after a refresh was
    /// asked for (redirect, lost master, moved slot), and every half second while a
    /// subscription is missing; re-evaluates `.reconnected` (the partition grace) too.
    func refreshLoop() async {
        var last = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            let (stopped, asked, down) = state.withLock { ($0.stopped, $0.refreshRequested, $0.announcedDown || $0.degraded != nil) }
            if stopped { return }
            let since = ContinuousClock.now - last
            if since >= configuration.topologyRefreshInterval || (asked && since >= .milliseconds(100))
                || (down && since >= .milliseconds(500))
            {
                last = .now
                await refreshTopology()
            }
            reconcile()
            updateAnnouncement()
        }
    }

    /// Asks a master with a working connection, else each seed, for `CLUSTER SLOTS`,
    /// and applies the first answer.
    func refreshTopology() async {
        state.withLock { $0.refreshRequested = false }
        let known = state.withLock { state in
            state.shards.values.filter { state.commandsReady.contains($0.address) }.sorted { $0.address < $1.address }
        }
        for shard in known {
            if let reply = try? await shard.commands.send(RedisCommand(["CLUSTER", "SLOTS"])),
                let map = RedisSlotMap(clusterSlots: reply, fallbackHost: shard.address.host), !map.masters.isEmpty
            {
                return await apply(map)
            }
        }
        for seed in configuration.url.seeds {
            if let map = await askSeed(seed), !map.masters.isEmpty { return await apply(map) }
        }
        logger.debug("redis cluster: no node answered CLUSTER SLOTS")
    }

    /// A short-lived connection to `seed` for one `CLUSTER SLOTS`.
    private func askSeed(_ seed: RedisURL) async -> RedisSlotMap? {
        let connection = RedisConnection(
            configuration: .init(
                url: seed, label: "discovery", connectTimeout: configuration.connectTimeout, replyTimeout: configuration.replyTimeout,
                pingInterval: configuration.pingInterval, isSubscriber: false),
            logger: logger)
        do {
            try connection.start(hooks: .init(handshake: { [] }, push: { _ in }, stateChanged: { _ in }))
        } catch {
            return nil
        }
        let deadline = ContinuousClock.now + configuration.connectTimeout + .milliseconds(200)
        while !connection.isConnected, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let reply = try? await connection.send(RedisCommand(["CLUSTER", "SLOTS"]))
        await connection.stop()
        if let message = reply?.errorMessage {
            logger.warning("redis cluster seed refused CLUSTER SLOTS", metadata: ["redis.seed": "\(seed)", "redis.error": "\(message)"])
        }
        return reply.flatMap { RedisSlotMap(clusterSlots: $0, fallbackHost: seed.host) }
    }

    /// Takes `map`: connects to new masters, drops masters that own no slot any more
    /// (their subscriptions are lost and made again on the slots' new owners).
    func apply(_ map: RedisSlotMap) async {
        let (added, removed) = state.withLock { state -> ([RedisClusterShard], [RedisClusterShard]) in
            guard !state.stopped else { return ([], []) }
            if state.map != map, state.map != nil {
                logger.info("redis cluster: slot map changed", metadata: ["redis.masters": "\(map.masters.sorted())"])
            }
            state.map = map
            let masters = map.masters
            var added: [RedisClusterShard] = []
            for master in masters where state.shards[master] == nil {
                let shard = makeShard(master)
                state.shards[master] = shard
                added.append(shard)
            }
            let removed = state.shards.values.filter { !masters.contains($0.address) }
            for shard in removed {
                state.shards[shard.address] = nil
                state.commandsReady.remove(shard.address)
                state.subscribersReady.remove(shard.address)
            }
            for (name, channel) in state.channels {
                if let master = channel.subscription.master, !masters.contains(master) { state.channels[name]?.subscription = .lost }
            }
            return (added, removed)
        }
        for shard in added { start(shard) }
        for shard in removed { await shard.stop() }
        reconcile()
        updateAnnouncement()
    }

    /// A master not yet known (MOVED/ASK to it, or a new map); the caller records it.
    func makeShard(_ master: RedisNodeAddress) -> RedisClusterShard {
        RedisClusterShard(
            address: master, template: configuration.url.seeds.first ?? RedisURL(host: master.host), configuration: configuration,
            logger: logger)
    }

    /// Starts a shard's connections: scripts loaded on the command connection, every
    /// wanted channel of its slots subscribed on the other, pipelined in one go.
    func start(_ shard: RedisClusterShard) {
        let master = shard.address
        do {
            try shard.commands.start(
                hooks: .init(
                    handshake: { [self] in scriptLoadRequests() }, push: { _ in },
                    stateChanged: { [self] ready in shardChanged(master, commands: ready) }))
            try shard.subscriber.start(
                hooks: .init(
                    handshake: { [self] in resubscribeRequests(master) }, push: { [self] in received($0, from: master) },
                    stateChanged: { [self] ready in shardChanged(master, subscriber: ready) }))
        } catch {
            logger.warning("redis cluster: cannot start connections", metadata: ["redis.master": "\(master)", "redis.error": "\(error)"])
        }
    }

    private func shardChanged(_ master: RedisNodeAddress, commands: Bool? = nil, subscriber: Bool? = nil) {
        state.withLock { state in
            guard state.shards[master] != nil else { return }
            if let commands {
                if commands { state.commandsReady.insert(master) } else { state.commandsReady.remove(master) }
            }
            if let subscriber {
                if subscriber {
                    state.subscribersReady.insert(master)
                } else {
                    state.subscribersReady.remove(master)
                    for (name, channel) in state.channels where channel.subscription.master == master {
                        state.channels[name]?.subscription = .lost
                    }
                }
            }
            if commands == false || subscriber == false { state.refreshRequested = true }
        }
        if subscriber == true { reconcile() }
        updateAnnouncement()
    }

    private func scriptLoadRequests() -> [RedisRequest] {
        (RedisScript.all + RedisScript.cluster).map { script in
            RedisRequest(command: RedisCommand(["SCRIPT", "LOAD", script.source])) { [self] result in
                if case .success(let reply) = result, let sha = reply.text, reply.errorMessage == nil {
                    state.withLock { $0.scripts[script.name] = sha }
                }
            }
        }
    }

    /// On a (re)connect of `master`'s subscriber: SSUBSCRIBE of every wanted channel its
    /// slots hold, one command each (one reply each), all in the handshake's write.
    private func resubscribeRequests(_ master: RedisNodeAddress) -> [RedisRequest] {
        state.withLock { state in
            guard let map = state.map else { return [] }
            var requests: [RedisRequest] = []
            for (name, channel) in state.channels.sorted(by: { $0.key < $1.key }) where map.owners[channel.slot] == master {
                state.channels[name]?.subscription = .subscribing(master)
                requests.append(subscribeRequest(name, on: master, first: nil))
            }
            return requests
        }
    }

    /// SSUBSCRIBE `channel` on `master`; its reply makes the subscription active (or lost,
    /// and the slot map re-read, on MOVED or any error).
    func subscribeRequest(
        _ channel: String, on master: RedisNodeAddress, first: (@Sendable (Result<Void, BrokerError>) -> Void)?
    ) -> RedisRequest {
        RedisRequest(command: RedisCommand(["SSUBSCRIBE", channel])) { [self] result in
            let outcome: Result<Void, BrokerError>
            switch result {
            case .success(let reply):
                if let message = reply.errorMessage {
                    outcome = .failure(.unavailable("redis SSUBSCRIBE \(channel): \(message)"))
                } else {
                    outcome = .success(())
                }
            case .failure(let error): outcome = .failure(error)
            }
            state.withLock { state in
                guard state.channels[channel]?.subscription == .subscribing(master) else { return }
                switch outcome {
                case .success: state.channels[channel]?.subscription = .active(master)
                case .failure:
                    state.channels[channel]?.subscription = .lost
                    state.refreshRequested = true
                }
            }
            first?(outcome)
            if first == nil { updateAnnouncement() }
        }
    }

    /// Moves every subscription that is not where its slot's master is: SUNSUBSCRIBE on
    /// the old master (when still connected), SSUBSCRIBE on the new one (when its
    /// subscriber is ready; else its handshake does it).
    func reconcile() {
        let (work, streamsMoved): ([(RedisClusterShard, RedisRequest)], Bool) = state.withLock { state in
            guard let map = state.map, !state.stopped else { return ([], false) }
            var work: [(RedisClusterShard, RedisRequest)] = []
            var streamsMoved = false
            for (name, channel) in state.channels {
                let owner = map.owners[channel.slot]
                if let current = channel.subscription.master, current == owner { continue }
                if channel.stream != nil { streamsMoved = true }
                if let old = channel.subscription.master, let shard = state.shards[old] {
                    work.append((shard, RedisRequest(command: RedisCommand(["SUNSUBSCRIBE", name]), completion: { _ in }, expectsReply: false)))
                }
                state.channels[name]?.subscription = .lost
                guard let owner, state.subscribersReady.contains(owner), let shard = state.shards[owner] else { continue }
                state.channels[name]?.subscription = .subscribing(owner)
                work.append((shard, subscribeRequest(name, on: owner, first: nil)))
            }
            return (work, streamsMoved)
        }
        guard !work.isEmpty else { return }
        // Messages published on the new master before the SSUBSCRIBE are only in history
        // (a node channel's are lost: their senders time out).
        if streamsMoved { updateAnnouncement(lost: true) }
        for (shard, request) in work { shard.subscriber.enqueue(request) }
    }

    /// A `MOVED` told where `slot` lives now: use it at once and re-read the whole map soon.
    func adopt(slot: Int, master: RedisNodeAddress) -> RedisClusterShard? {
        let (shard, isNew) = state.withLock { state -> (RedisClusterShard?, Bool) in
            guard !state.stopped else { return (nil, false) }
            state.refreshRequested = true
            state.map?.owners[slot] = master
            if let shard = state.shards[master] { return (shard, false) }
            let shard = makeShard(master)
            state.shards[master] = shard
            return (shard, true)
        }
        if let shard, isNew { start(shard) }
        return shard
    }

    /// The shard of a master named by `ASK` (it owns other slots, or will soon).
    func shard(at master: RedisNodeAddress) -> RedisClusterShard? {
        let (shard, isNew) = state.withLock { state -> (RedisClusterShard?, Bool) in
            guard !state.stopped else { return (nil, false) }
            if let shard = state.shards[master] { return (shard, false) }
            let shard = makeShard(master)
            state.shards[master] = shard
            return (shard, true)
        }
        if let shard, isNew { start(shard) }
        return shard
    }
}
