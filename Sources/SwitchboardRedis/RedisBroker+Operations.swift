import Logging
import SwitchboardCore
import Synchronization

extension RedisBroker {
    public func publish(_ envelope: Envelope, to streams: [StreamKey]) async throws -> [MessageID] {
        guard !streams.isEmpty else {
            try checkRunning()
            return []
        }
        let arguments = [bytes(String(configuration.historyLimit)), envelope.encoded] + streams.map { bytes(keys.channel($0)) }
        let (reply, connection) = try await evaluateTagged(.publish, keys: streams.map(keys.history), arguments: arguments)
        guard let items = reply.array, items.count == streams.count else { throw malformed("publish", reply) }
        let ids = try items.map { item in
            guard let text = item.text, let id = MessageID(text) else { throw malformed("publish", reply) }
            return id
        }
        // Acked only once replicated (`--redis-min-replicas`): a refusal here is an error
        // for the client, never a false ack.
        try await replication?.confirm(writtenOn: connection)
        return ids
    }

    public func broadcast(_ envelope: Envelope, to stream: StreamKey) async throws {
        var command = RedisCommand(["PUBLISH", keys.channel(stream)])
        command.append(bytes: [0x0A] + envelope.encoded)
        _ = try await run(command)
    }

    public func subscribe(_ stream: StreamKey) async throws {
        let reply = try await changeSubscription(stream, subscribe: true)
        if let message = reply?.errorMessage { throw BrokerError.protocolError("redis: \(message)") }
    }

    /// Never fails for a lost connection: a new connection only subscribes what is wanted.
    public func unsubscribe(_ stream: StreamKey) async throws {
        do {
            _ = try await changeSubscription(stream, subscribe: false)
        } catch let error as BrokerError where error.isUnavailable {
            return
        }
    }

    /// Records the wish and queues (UN)SUBSCRIBE under one lock, so the order of the
    /// commands on the wire is the order of the wishes. Nil when nothing had to change
    /// and the subscriber connection is up.
    private func changeSubscription(_ stream: StreamKey, subscribe: Bool) async throws -> RESPValue? {
        let channel = keys.channel(stream)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RESPValue?, any Error>) in
            state.withLock { state in
                guard !state.stopped else {
                    return continuation.resume(throwing: BrokerError.unavailable("broker stopped"))
                }
                let changed =
                    subscribe
                    ? state.channels.updateValue(stream, forKey: channel) == nil
                    : state.channels.removeValue(forKey: channel) != nil
                guard changed else {
                    return subscribe && !subscriber.isConnected
                        ? continuation.resume(throwing: BrokerError.unavailable("redis subscriber is not connected"))
                        : continuation.resume(returning: nil)
                }
                let command = RedisCommand([subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE", channel])
                subscriber.enqueue(
                    RedisRequest(command: command) { result in continuation.resume(with: result.map { Optional($0) }) })
            }
        }
    }

    public func head(of stream: StreamKey) async throws -> MessageID? {
        let reply = try await run(RedisCommand(["XREVRANGE", keys.history(stream), "+", "-", "COUNT", "1"]))
        guard let entries = reply.array else { throw malformed("head", reply) }
        guard let newest = entries.first else { return nil }
        guard let text = newest.array?.first?.text, let id = MessageID(text) else { throw malformed("head", reply) }
        return id
    }

    public func history(of stream: StreamKey, after: MessageID?, limit: Int) async throws -> HistoryPage {
        let reply = try await evaluate(
            .history, keys: [keys.history(stream)],
            arguments: [bytes(after?.description ?? ""), bytes(String(max(0, limit)))])
        guard let parts = reply.array, parts.count == 2, let items = parts[0].array else { throw malformed("history", reply) }
        var entries: [StreamEntry] = []
        entries.reserveCapacity(items.count)
        for item in items {
            guard let pair = item.array, pair.count == 2, let idText = pair[0].text, let id = MessageID(idText),
                let fields = pair[1].array, let envelope = Self.envelope(in: fields)
            else {
                logger.warning(
                    "undecodable history entry skipped",
                    metadata: ["redis.key": "\(keys.history(stream))", "redis.reply": "\(item)"])
                continue
            }
            entries.append(StreamEntry(stream: stream, id: id, envelope: envelope))
        }
        let maxDeleted = parts[1].text.flatMap { MessageID($0) }
        let gap = after.map { after in maxDeleted.map { $0 > after } ?? false } ?? false
        return HistoryPage(entries: entries, gap: gap)
    }

    static func envelope(in fields: [RESPValue]) -> Envelope? {
        var index = 0
        while index + 1 < fields.count {
            if fields[index] == .string([UInt8(ascii: "e")]), case .string(let bytes) = fields[index + 1] {
                return Envelope(encoded: bytes)
            }
            index += 2
        }
        return nil
    }

    public func setPresence(_ entries: [PresenceEntry], expiresAt: Int64) async throws {
        guard !entries.isEmpty else { return try checkRunning() }
        var arguments = [bytes(String(expiresAt)), bytes(String(configuration.presenceKeyMargin))]
        for entry in entries {
            arguments.append(bytes(keys.presenceMember(entry)))
            arguments.append(entry.avatar.map { bytes("=" + $0) } ?? [])
        }
        _ = try await evaluate(.setPresence, keys: presenceKeys(entries), arguments: arguments)
    }

    public func removePresence(_ entries: [PresenceEntry]) async throws {
        guard !entries.isEmpty else { return try checkRunning() }
        _ = try await evaluate(
            .removePresence, keys: presenceKeys(entries), arguments: entries.map { bytes(keys.presenceMember($0)) })
    }

    /// Each entry's presence set and avatar hash, in pairs.
    private func presenceKeys(_ entries: [PresenceEntry]) -> [String] {
        entries.flatMap { [keys.presence($0.room), keys.presenceAvatars($0.room)] }
    }

    public func presenceCount(of room: RoomName, now: Int64) async throws -> Int {
        let reply = try await evaluate(
            .presenceCount, keys: [keys.presence(room), keys.presenceAvatars(room)], arguments: [bytes(String(now))])
        guard let count = reply.integer else { throw malformed("presenceCount", reply) }
        return Int(count)
    }

    public func presenceMembers(of room: RoomName, now: Int64, after: Nickname?, limit: Int) async throws -> PresencePage {
        let reply = try await evaluate(
            .presenceMembers, keys: [keys.presence(room), keys.presenceAvatars(room)], arguments: [bytes(String(now))])
        guard let items = reply.array else { throw malformed("presenceMembers", reply) }
        // Sorted and cut as bytes (the order of `Nickname.byteOrder`); only the page is
        // decoded and validated — a room may hold tens of thousands. A member that is not
        // a valid nickname was not written by a node: left out of the page.
        var raw: [[UInt8]] = []
        raw.reserveCapacity(items.count)
        for item in items { if case .string(let bytes) = item { raw.append(bytes) } }
        raw.sort { $0.lexicographicallyPrecedes($1) }
        var start = 0
        if let after = after.map({ Array($0.value.utf8) }) {
            var high = raw.count
            while start < high {
                let mid = (start + high) / 2
                if after.lexicographicallyPrecedes(raw[mid]) { high = mid } else { start = mid + 1 }
            }
        }
        let slice = raw[start...].prefix(max(0, limit))
        let nicknames = slice.compactMap { Nickname(String(decoding: $0, as: UTF8.self)) }
        let more = start + slice.count < raw.count
        let bare = PresencePage(
            total: raw.count, members: nicknames.map { RoomMember(nickname: $0, avatar: "") }, next: more ? nicknames.last : nil)
        guard !bare.members.isEmpty else { return bare }
        var command = RedisCommand(["HMGET", keys.presenceAvatars(room)])
        for member in bare.members { command.append(member.nickname.value) }
        let avatars = try await run(command)
        guard let values = avatars.array, values.count == bare.members.count else { throw malformed("presenceMembers", avatars) }
        var page = bare
        for index in page.members.indices { page.members[index].avatar = values[index].text ?? "" }
        return page
    }

    public func claimNickname(_ nickname: Nickname, session: String, ttlSeconds: Int) async throws -> Bool {
        let ttl = Int64(min(max(1, ttlSeconds), Int(Int32.max))) * 1000
        let reply = try await evaluate(
            .claimNickname, keys: [keys.nickname(nickname)], arguments: [bytes(session), bytes(String(ttl))])
        guard let claimed = reply.integer else { throw malformed("claimNickname", reply) }
        return claimed == 1
    }

    public func releaseNickname(_ nickname: Nickname, session: String) async throws {
        _ = try await evaluate(.releaseNickname, keys: [keys.nickname(nickname)], arguments: [bytes(session)])
    }

    public func nicknameHolder(_ nickname: Nickname) async throws -> String? {
        let reply = try await run(RedisCommand(["GET", keys.nickname(nickname)]))
        switch reply {
        case .null: return nil
        case .string: return reply.text
        default: throw malformed("nicknameHolder", reply)
        }
    }

    // MARK: plumbing

    /// Sends `command`; an error reply becomes `BrokerError.protocolError`.
    func run(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await commands.send(command)
        if let message = reply.errorMessage {
            noteErrorReply(message)
            throw BrokerError.protocolError("redis \(command.name): \(message)")
        }
        return reply
    }

    /// EVALSHA `script`; when Redis lost it (NOSCRIPT, e.g. after SCRIPT FLUSH or a
    /// restart between connects), EVAL with the source, which caches it again.
    func evaluate(_ script: RedisScript, keys: [String], arguments: [[UInt8]]) async throws -> RESPValue {
        try await evaluateTagged(script, keys: keys, arguments: arguments).reply
    }

    /// `evaluate`, also telling which connection (`RedisConnection.generation`) ran it.
    func evaluateTagged(
        _ script: RedisScript, keys: [String], arguments: [[UInt8]]
    ) async throws -> (reply: RESPValue, connection: UInt64) {
        func command(_ verb: String, _ body: String) -> RedisCommand {
            var command = RedisCommand([verb, body, String(keys.count)])
            for key in keys { command.append(key) }
            for argument in arguments { command.append(bytes: argument) }
            return command
        }
        if let sha = state.withLock({ $0.scripts[script.name] }) {
            let (reply, connection) = try await commands.sendTagged(command("EVALSHA", sha))
            guard let message = reply.errorMessage, message.hasPrefix("NOSCRIPT") else {
                return (try checked(reply, script), connection)
            }
            logger.debug("redis lost a script; sending its source", metadata: ["redis.script": "\(script.name)"])
        }
        let (reply, connection) = try await commands.sendTagged(command("EVAL", script.source))
        return (try checked(reply, script), connection)
    }

    private func checked(_ reply: RESPValue, _ script: RedisScript) throws -> RESPValue {
        if let message = reply.errorMessage {
            noteErrorReply(message)
            throw BrokerError.protocolError("redis script \(script.name): \(message)")
        }
        return reply
    }

    func malformed(_ operation: String, _ reply: RESPValue) -> BrokerError {
        logger.warning("unexpected redis reply", metadata: ["redis.operation": "\(operation)", "redis.reply": "\(reply)"])
        return BrokerError.protocolError("unexpected redis reply to \(operation)")
    }

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
}

extension RedisBroker {
    /// SUBSCRIBE `sb:to-node:{node}` on the subscriber connection (again after every
    /// reconnect). A message published while the subscriber is down is lost: its sender
    /// times out.
    public func listen(asNode node: String, _ handler: @escaping @Sendable ([UInt8]) -> Void) async throws {
        let channel = keys.nodeChannel(node)
        let reply = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RESPValue, any Error>) in
            state.withLock { state in
                guard !state.stopped else { return continuation.resume(throwing: BrokerError.unavailable("broker stopped")) }
                state.nodeChannel = channel
                state.nodeHandler = handler
                subscriber.enqueue(RedisRequest(command: RedisCommand(["SUBSCRIBE", channel])) { continuation.resume(with: $0) })
            }
        }
        if let message = reply.errorMessage { throw BrokerError.protocolError("redis: \(message)") }
    }

    /// PUBLISH on the command connection, queued at once (in call order); the reply is
    /// not waited for.
    public func send(_ message: [UInt8], toNode node: String) {
        var command = RedisCommand(["PUBLISH", keys.nodeChannel(node)])
        command.append(bytes: message)
        commands.enqueue(RedisRequest(command: command) { _ in })
    }
}
