import Logging
import SwitchboardCore
import Synchronization

extension RedisClusterBroker {
    public func publish(_ envelope: Envelope, to streams: [StreamKey]) async throws -> [MessageID] {
        try checkRunning()
        guard !streams.isEmpty else { return [] }
        // Streams of one slot, in order of first appearance.
        var groups: [(slot: Int, streams: [StreamKey])] = []
        for stream in streams {
            let slot = partitions.slot(of: stream)
            if let index = groups.firstIndex(where: { $0.slot == slot }) {
                groups[index].streams.append(stream)
            } else {
                groups.append((slot, [stream]))
            }
        }
        var ids: [StreamKey: MessageID] = [:]
        if groups.count == 1 {
            for (stream, id) in zip(streams, try await append(envelope, to: streams, token: "", id: nil)) { ids[stream] = id }
        } else {
            ids = try await publishAcrossSlots(envelope, groups: groups)
        }
        return try streams.map { stream in
            guard let id = ids[stream] else { throw BrokerError.protocolError("redis cluster: no id for \(stream)") }
            return id
        }
    }

    /// `clusterPublish` on one slot (then `WAIT` for `minReplicas`): the ids, per stream.
    private func append(_ envelope: Envelope, to streams: [StreamKey], token: String, id: MessageID?) async throws -> [MessageID] {
        let keys = streams.map { partitions.keys(for: $0).history($0) } + streams.map(lockKey)
        let arguments =
            [bytes(String(configuration.historyLimit)), envelope.encoded, bytes(token), bytes(id?.description ?? "")]
            + streams.map { bytes(partitions.keys(for: $0).channel($0)) }
        var wait: [RedisCommand] = []
        if configuration.minReplicas > 0 {
            let milliseconds = max(1, configuration.replicaWaitTimeout.components.seconds * 1000
                + configuration.replicaWaitTimeout.components.attoseconds / 1_000_000_000_000_000)
            wait = [RedisCommand(["WAIT", String(configuration.minReplicas), String(milliseconds)])]
        }
        let (reply, waited) = try await evaluate(.clusterPublish, keys: keys, arguments: arguments, then: wait)
        guard let items = reply.array, items.count == streams.count else { throw malformed("publish", reply) }
        let ids = try items.map { item in
            guard let text = item.text, let id = MessageID(text) else { throw malformed("publish", reply) }
            return id
        }
        if let confirmation = waited.first {
            guard let count = confirmation.integer else { throw malformed("WAIT", confirmation) }
            if count < configuration.minReplicas {
                throw BrokerError.unavailable(
                    "redis cluster: the publish reached \(count) of \(configuration.minReplicas) replicas in \(configuration.replicaWaitTimeout)")
            }
        }
        return ids
    }

    /// One id for streams of several slots: lock every slot's streams (in slot order;
    /// all given back and retried when one is held by another publish), take the largest
    /// of the ids each slot offers, append with it on each slot (which unlocks it).
    private func publishAcrossSlots(_ envelope: Envelope, groups: [(slot: Int, streams: [StreamKey])]) async throws
        -> [StreamKey: MessageID]
    {
        let ordered = groups.sorted { $0.slot < $1.slot }
        let token = "\(UInt64.random(in: 1...UInt64.max))"
        let ttl = String(max(1, configuration.lockTTL.components.seconds * 1000))
        let deadline = ContinuousClock.now + configuration.retryTimeout
        var locked: [[StreamKey]] = []
        var id = MessageID.zero
        do {
            while locked.count < ordered.count {
                let streams = ordered[locked.count].streams
                let keys = streams.map { partitions.keys(for: $0).history($0) } + streams.map(lockKey)
                let reply = try await evaluate(.lockStreams, keys: keys, arguments: [bytes(token), bytes(ttl)])
                guard let text = reply.text else { throw malformed("lockStreams", reply) }
                if text.isEmpty {
                    // Held by another publish: give everything back, so two publishes
                    // locking in turn never wait on each other.
                    await unlock(locked, token: token)
                    locked = []
                    id = .zero
                    guard ContinuousClock.now < deadline else {
                        throw BrokerError.unavailable("redis cluster: streams stayed locked by other publishes")
                    }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 1...10)))
                    continue
                }
                guard let offered = MessageID(text) else { throw malformed("lockStreams", reply) }
                id = max(id, offered)
                locked.append(streams)
            }
        } catch {
            await unlock(locked, token: token)
            throw error
        }
        var ids: [StreamKey: MessageID] = [:]
        for (index, group) in ordered.enumerated() {
            do {
                for (stream, streamID) in zip(group.streams, try await append(envelope, to: group.streams, token: token, id: id)) {
                    ids[stream] = streamID
                }
            } catch {
                await unlock(Array(locked[index...]), token: token)
                if index > 0 {
                    logger.error(
                        "redis cluster: a cross-slot publish failed after its first streams got it",
                        metadata: ["redis.id": "\(id)", "redis.error": "\(error)"])
                }
                throw error
            }
        }
        return ids
    }

    private func unlock(_ groups: [[StreamKey]], token: String) async {
        for streams in groups {
            _ = try? await evaluate(.unlockStreams, keys: streams.map(lockKey), arguments: [bytes(token)])
        }
    }

    /// A stream's lock for cross-slot publishes, in its partition's slot.
    func lockKey(_ stream: StreamKey) -> String {
        partitions.keys(for: stream).prefix + "lock:" + stream.description
    }

    public func broadcast(_ envelope: Envelope, to stream: StreamKey) async throws {
        var command = RedisCommand(["SPUBLISH", partitions.keys(for: stream).channel(stream)])
        command.append(bytes: [0x0A] + envelope.encoded)
        _ = try await run(command, slot: partitions.slot(of: stream))
    }

    /// Records the wish, and SSUBSCRIBEs on the slot's master when its subscriber is up.
    public func subscribe(_ stream: StreamKey) async throws {
        let channel = partitions.keys(for: stream).channel(stream)
        let slot = partitions.slot(of: stream)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let action: (RedisClusterShard, RedisRequest)? = state.withLock { state in
                guard !state.stopped else {
                    continuation.resume(throwing: BrokerError.unavailable("broker stopped"))
                    return nil
                }
                if let existing = state.channels[channel] {
                    if case .lost = existing.subscription {
                        continuation.resume(throwing: BrokerError.unavailable("redis cluster: the master of \(stream) is not reachable"))
                    } else {
                        continuation.resume()
                    }
                    return nil
                }
                state.channels[channel] = Channel(stream: stream, slot: slot, subscription: .lost)
                guard let owner = state.map?.owners[slot], state.subscribersReady.contains(owner), let shard = state.shards[owner] else {
                    state.refreshRequested = true
                    continuation.resume(throwing: BrokerError.unavailable("redis cluster: no reachable master for \(stream)"))
                    return nil
                }
                state.channels[channel]?.subscription = .subscribing(owner)
                let request = subscribeRequest(channel, on: owner) { [self] result in
                    continuation.resume(with: result)
                    updateAnnouncement()
                }
                return (shard, request)
            }
            if let (shard, request) = action { shard.subscriber.enqueue(request) }
        }
    }

    /// Never fails for a lost connection: a new connection only subscribes what is wanted.
    public func unsubscribe(_ stream: StreamKey) async throws {
        let channel = partitions.keys(for: stream).channel(stream)
        let shard: RedisClusterShard? = try state.withLock { state throws(BrokerError) in
            guard !state.stopped else { throw BrokerError.unavailable("broker stopped") }
            guard let removed = state.channels.removeValue(forKey: channel), let master = removed.subscription.master else {
                return nil
            }
            return state.shards[master]
        }
        shard?.subscriber.enqueue(
            RedisRequest(command: RedisCommand(["SUNSUBSCRIBE", channel]), completion: { _ in }, expectsReply: false))
        updateAnnouncement()
    }

    public func head(of stream: StreamKey) async throws -> MessageID? {
        let reply = try await run(
            RedisCommand(["XREVRANGE", partitions.keys(for: stream).history(stream), "+", "-", "COUNT", "1"]),
            slot: partitions.slot(of: stream))
        guard let entries = reply.array else { throw malformed("head", reply) }
        guard let newest = entries.first else { return nil }
        guard let text = newest.array?.first?.text, let id = MessageID(text) else { throw malformed("head", reply) }
        return id
    }

    public func history(of stream: StreamKey, after: MessageID?, limit: Int) async throws -> HistoryPage {
        let key = partitions.keys(for: stream).history(stream)
        let reply = try await evaluate(
            .history, keys: [key], arguments: [bytes(after?.description ?? ""), bytes(String(max(0, limit)))])
        guard let parts = reply.array, parts.count == 2, let items = parts[0].array else { throw malformed("history", reply) }
        var entries: [StreamEntry] = []
        entries.reserveCapacity(items.count)
        for item in items {
            guard let pair = item.array, pair.count == 2, let idText = pair[0].text, let id = MessageID(idText),
                let fields = pair[1].array, let envelope = RedisBroker.envelope(in: fields)
            else {
                logger.warning("undecodable history entry skipped", metadata: ["redis.key": "\(key)", "redis.reply": "\(item)"])
                continue
            }
            entries.append(StreamEntry(stream: stream, id: id, envelope: envelope))
        }
        let maxDeleted = parts[1].text.flatMap { MessageID($0) }
        let gap = after.map { after in maxDeleted.map { $0 > after } ?? false } ?? false
        return HistoryPage(entries: entries, gap: gap)
    }

    /// Entries grouped by their room's slot, one script per slot (a refresh of rooms in
    /// several partitions is several independent steps, as each room's is independent).
    public func setPresence(_ entries: [PresenceEntry], expiresAt: Int64) async throws {
        guard !entries.isEmpty else { return try checkRunning() }
        for group in presenceGroups(entries) {
            var arguments = [bytes(String(expiresAt)), bytes(String(configuration.presenceKeyMargin))]
            for entry in group {
                arguments.append(bytes(partitions.keys(for: entry.room).presenceMember(entry)))
                arguments.append(entry.avatar.map { bytes("=" + $0) } ?? [])
            }
            _ = try await evaluate(.setPresence, keys: presenceKeys(group), arguments: arguments)
        }
    }

    public func removePresence(_ entries: [PresenceEntry]) async throws {
        guard !entries.isEmpty else { return try checkRunning() }
        for group in presenceGroups(entries) {
            _ = try await evaluate(
                .removePresence, keys: presenceKeys(group),
                arguments: group.map { bytes(partitions.keys(for: $0.room).presenceMember($0)) })
        }
    }

    private func presenceGroups(_ entries: [PresenceEntry]) -> [[PresenceEntry]] {
        var groups: [Int: [PresenceEntry]] = [:]
        for entry in entries { groups[partitions.partition(of: .room(entry.room)), default: []].append(entry) }
        return groups.keys.sorted().map { groups[$0]! }
    }

    private func presenceKeys(_ entries: [PresenceEntry]) -> [String] {
        entries.flatMap { [partitions.keys(for: $0.room).presence($0.room), partitions.keys(for: $0.room).presenceAvatars($0.room)] }
    }

    public func presenceCount(of room: RoomName, now: Int64) async throws -> Int {
        let keys = partitions.keys(for: room)
        let reply = try await evaluate(
            .presenceCount, keys: [keys.presence(room), keys.presenceAvatars(room)], arguments: [bytes(String(now))])
        guard let count = reply.integer else { throw malformed("presenceCount", reply) }
        return Int(count)
    }

    public func presenceMembers(of room: RoomName, now: Int64, after: Nickname?, limit: Int) async throws -> PresencePage {
        let keys = partitions.keys(for: room)
        let reply = try await evaluate(
            .presenceMembers, keys: [keys.presence(room), keys.presenceAvatars(room)], arguments: [bytes(String(now))])
        guard let items = reply.array else { throw malformed("presenceMembers", reply) }
        let nicknames = items.compactMap { $0.text.flatMap(Nickname.init) }
        let bare = PresencePage.page(of: nicknames, after: after, limit: limit) { _ in "" }
        guard !bare.members.isEmpty else { return bare }
        var command = RedisCommand(["HMGET", keys.presenceAvatars(room)])
        for member in bare.members { command.append(member.nickname.value) }
        let avatars = try await run(command, slot: partitions.slot(of: .room(room)))
        guard let values = avatars.array, values.count == bare.members.count else { throw malformed("presenceMembers", avatars) }
        var page = bare
        for index in page.members.indices { page.members[index].avatar = values[index].text ?? "" }
        return page
    }

    public func claimNickname(_ nickname: Nickname, session: String, ttlSeconds: Int) async throws -> Bool {
        let ttl = Int64(min(max(1, ttlSeconds), Int(Int32.max))) * 1000
        let reply = try await evaluate(
            .claimNickname, keys: [partitions.keys(for: nickname).nickname(nickname)], arguments: [bytes(session), bytes(String(ttl))])
        guard let claimed = reply.integer else { throw malformed("claimNickname", reply) }
        return claimed == 1
    }

    public func releaseNickname(_ nickname: Nickname, session: String) async throws {
        _ = try await evaluate(.releaseNickname, keys: [partitions.keys(for: nickname).nickname(nickname)], arguments: [bytes(session)])
    }

    public func nicknameHolder(_ nickname: Nickname) async throws -> String? {
        let reply = try await run(
            RedisCommand(["GET", partitions.keys(for: nickname).nickname(nickname)]), slot: partitions.slot(of: .user(nickname)))
        switch reply {
        case .null: return nil
        case .string: return reply.text
        default: throw malformed("nicknameHolder", reply)
        }
    }

    /// Heartbeats live in one slot (`{nodes}`): `sb:{nodes}:nodes` and `sb:{nodes}:node:<id>`.
    public func heartbeat(_ status: NodeStatus, ttlMilliseconds: Int64) async throws {
        let keys = partitions.nodeKeys
        _ = try await evaluate(
            .heartbeat, keys: [keys.nodes, keys.node(status.id)],
            arguments: [
                bytes(String(status.lastSeen)), bytes(status.id), bytes(status.encodedHeartbeat), bytes(String(max(1, ttlMilliseconds))),
            ])
    }

    public func liveNodes(now: Int64, maxAge: Int64) async throws -> [NodeStatus] {
        let keys = partitions.nodeKeys
        let reply = try await evaluate(.liveNodes, keys: [keys.nodes], arguments: [bytes(String(now - maxAge)), bytes(keys.node(""))])
        guard let flat = reply.array, flat.count % 3 == 0 else { throw malformed("liveNodes", reply) }
        return try stride(from: 0, to: flat.count, by: 3).map { index in
            guard let id = flat[index].text, let score = flat[index + 1].text.flatMap({ Double($0) }) else {
                throw malformed("liveNodes", reply)
            }
            let value = flat[index + 2].text ?? ""
            return NodeStatus(
                id: id, lastSeen: Int64(score), connections: NodeStatus.decodeConnections(value), report: NodeStatus.decodeReport(value))
        }.sorted { $0.id < $1.id }
    }

    /// Sends one raw command to the master of `slot` and returns its reply (an error reply
    /// is returned, not thrown). For tools and tests.
    public func command(_ arguments: [String], slot: Int) async throws -> RESPValue {
        try await send([RedisCommand(arguments)], slot: slot)[0]
    }
}

extension RedisClusterBroker {
    /// SSUBSCRIBE `sb:to-node:{node}` (`RedisClusterPartitions.nodeChannel`) on the master
    /// of its slot. The channel is kept like a stream's — subscribed again after a
    /// reconnect, moved with its slot — but it is no stream: its moves and losses emit no
    /// `.disconnected`/`.reconnected` and do not count in `isReady` (see `missing`). When
    /// no master is reachable yet this throws `unavailable`, and the channel is subscribed
    /// once one is.
    /// A message published while the subscription is missing is lost: its sender times out.
    public func listen(asNode node: String, _ handler: @escaping @Sendable ([UInt8]) -> Void) async throws {
        let channel = partitions.nodeChannel(node)
        let slot = RedisClusterSlots.slot(of: channel)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let action: (subscribe: (RedisClusterShard, RedisRequest)?, unsubscribe: (RedisClusterShard, RedisRequest)?) =
                state.withLock { state in
                    guard !state.stopped else {
                        continuation.resume(throwing: BrokerError.unavailable("broker stopped"))
                        return (nil, nil)
                    }
                    state.nodeHandler = handler
                    // Listening as another node: the old channel is no longer wanted.
                    var unsubscribe: (RedisClusterShard, RedisRequest)?
                    if let old = state.nodeChannel, old != channel, let removed = state.channels.removeValue(forKey: old),
                        let master = removed.subscription.master, let shard = state.shards[master]
                    {
                        unsubscribe = (
                            shard, RedisRequest(command: RedisCommand(["SUNSUBSCRIBE", old]), completion: { _ in }, expectsReply: false)
                        )
                    }
                    state.nodeChannel = channel
                    if let existing = state.channels[channel], existing.subscription != .lost {
                        continuation.resume()
                        return (nil, unsubscribe)
                    }
                    state.channels[channel] = Channel(stream: nil, slot: slot, subscription: .lost)
                    guard let owner = state.map?.owners[slot], state.subscribersReady.contains(owner), let shard = state.shards[owner]
                    else {
                        state.refreshRequested = true
                        continuation.resume(throwing: BrokerError.unavailable("redis cluster: no reachable master for \(channel)"))
                        return (nil, unsubscribe)
                    }
                    state.channels[channel]?.subscription = .subscribing(owner)
                    let request = subscribeRequest(channel, on: owner) { [self] result in
                        continuation.resume(with: result)
                        updateAnnouncement()
                    }
                    return ((shard, request), unsubscribe)
                }
            if let (shard, request) = action.unsubscribe { shard.subscriber.enqueue(request) }
            if let (shard, request) = action.subscribe { shard.subscriber.enqueue(request) }
        }
    }

    /// SPUBLISH on the command connection of the channel's master, queued at once (in call
    /// order); the reply is not waited for. Best effort, like the single-server PUBLISH:
    /// with no known master the message is dropped, and a `MOVED` (the slot moved since
    /// the map was read) drops it too and has the map re-read — resending it could pass
    /// messages sent after it. Either way its sender times out.
    public func send(_ message: [UInt8], toNode node: String) {
        let channel = partitions.nodeChannel(node)
        let slot = RedisClusterSlots.slot(of: channel)
        let shard: RedisClusterShard? = state.withLock { state in
            guard !state.stopped else { return nil }
            guard let shard = state.map?.owners[slot].flatMap({ state.shards[$0] }) else {
                state.refreshRequested = true
                return nil
            }
            return shard
        }
        guard let shard else {
            logger.debug("redis cluster: no master for a node channel; message dropped", metadata: ["redis.channel": "\(channel)"])
            return
        }
        var command = RedisCommand(["SPUBLISH", channel])
        command.append(bytes: message)
        shard.commands.enqueue(
            RedisRequest(command: command) { [self] result in
                guard case .success(let reply) = result, let error = reply.errorMessage else { return }
                state.withLock { $0.refreshRequested = true }
                logger.debug("redis cluster: node message refused", metadata: ["redis.channel": "\(channel)", "redis.error": "\(error)"])
            })
    }
}
