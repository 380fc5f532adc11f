import Logging
import Synchronization

/// The chat semantics — login, join, say, whisper, presence — on top of Hub + Broker,
/// identical for every transport. Transports call `open`, `handle` and `close`.
public final class ChatService: Sendable {
    public let configuration: ChatConfiguration
    public let broker: any Broker
    public let hub: Hub
    let signer: TokenSigner
    /// Every token check: ours (HMAC) and the application's (JWT).
    let verifier: TokenVerifier
    let logger: Logger
    let clock: @Sendable () -> Int64
    let presence: PresenceTracker
    let cache: StreamCache
    /// What this node's heartbeats report for `/dashboard`.
    public let reporter: NodeReporter
    /// Counters for `/metrics` (the hub's).
    public var metrics: Metrics { hub.metrics }
    private let statelessLimiter: SessionRateLimiter
    /// Open sessions and connection limits.
    public let admission: Admission
    /// Nicknames held by this node's sessions, kept alive in the broker.
    public let claims: NicknameClaims
    /// Once per id, in order, held during a gap fill.
    let relay = StreamRelay()
    let subscriptions = StreamSubscriptions()
    /// This node in `/cluster`.
    public var node: NodeHeartbeat {
        NodeHeartbeat(
            broker: broker, metrics: metrics, clock: clock, status: { [self] in localStatus },
            beat: { [self] in
                var status = localStatus
                status.report = heartbeatReport(now: clock())
                return status
            })
    }
    /// Broker generations whose gap is to be filled, consumed by `run` (the gap fill's owner).
    let gapFills = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(
        configuration: ChatConfiguration, broker: any Broker, hub: Hub, signer: TokenSigner, logger: Logger,
        clock: @escaping @Sendable () -> Int64 = unixMilliseconds, externalTokens: (any ExternalTokenVerifier)? = nil
    ) {
        self.configuration = configuration
        self.broker = broker
        self.hub = hub
        self.signer = signer
        self.verifier = TokenVerifier(signer: signer, external: externalTokens)
        self.logger = logger
        self.clock = clock
        self.cache = StreamCache(capacity: configuration.replayLimit)
        self.reporter = NodeReporter(startedAt: clock())
        self.statelessLimiter = SessionRateLimiter(rate: configuration.ratePerSecond, burst: configuration.rateBurst)
        self.presence = PresenceTracker(configuration: configuration, broker: broker, hub: hub, clock: clock)
        self.admission = Admission(
            maxConnections: configuration.maxConnections, maxPerAddress: configuration.maxConnectionsPerAddress)
        self.claims = NicknameClaims(broker: broker, ttlSeconds: configuration.nicknameClaimSeconds, logger: logger)
    }

    public var nodeID: String { configuration.nodeID }

    // MARK: Lifecycle

    /// Connects the broker to the hub. Call once before serving.
    public func start() async throws {
        try await broker.start { [weak self] event in self?.brokerEvent(event) }
    }

    /// Runs presence coalescing, presence and claim refresh until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.presence.run() }
            group.addTask { await self.claims.run() }
            group.addTask { await self.node.run() }
            group.addTask {
                for await generation in self.gapFills.stream { await self.fillGaps(generation: generation) }
            }
        }
    }

    /// SIGTERM: tells every local connection to reconnect elsewhere, then waits up to
    /// `timeout` for them to go.
    public func drain(timeout: Duration = .seconds(5)) async {
        let subscribers = hub.subscribers
        reporter.markDraining()
        // Tell the cluster at once (the dashboard shows the node draining).
        var status = localStatus
        status.report = currentReport()
        try? await broker.heartbeat(status, ttlMilliseconds: Self.heartbeatTTL)
        logger.info("draining", metadata: ["connections": "\(subscribers.count)"])
        for subscriber in subscribers { subscriber.close(reason: .serviceRestart) }
        metrics.count("disconnects", "drain", by: subscribers.count)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !admission.isEmpty {
            try? await Task.sleep(for: .milliseconds(50))
            // Parked sessions (polling clients) have no socket to close: end them here.
            for session in admission.sessions where session.transport.isPolling { await close(session) }
        }
        // Whatever is left: leave its rooms now so presence is right on the other nodes.
        for session in admission.sessions { await close(session) }
    }

    // MARK: Sessions

    /// What a transport writes first when a session opens: `welcome`, then `resets` (any
    /// `reset`s, then the `presence` of each room), then the backlog after the client's
    /// cursor (already filtered), then live events.
    public struct Opened: Sendable {
        public var session: Session
        public var welcome: ServerEvent
        public var resets: [ServerEvent]
        public var backlog: [StreamEntry]
        public var cursor: Cursor
    }

    /// Opens a session: claims (or keeps) the nickname, subscribes to the user stream
    /// and `rooms`, then reads history after `cursor` — subscribe first, then read, so
    /// nothing falls in between; the connection de-duplicates by id.
    ///
    /// `claimed`: the caller has just claimed the nickname for this session (a WebSocket
    /// upgrade is validated, claim included, before it is accepted): not claimed again.
    public func open(
        _ identity: Identity, subscriber: any Subscriber, transport: Transport, rooms: [RoomName], cursor: Cursor?,
        remote: String? = nil, claimed: Bool = false
    ) async throws(EventError) -> Opened {
        guard rooms.count <= configuration.maxRoomsPerConnection else {
            throw EventError(.tooManyRooms, "at most \(configuration.maxRoomsPerConnection) rooms per connection")
        }
        if let refusal = admission.admit(remote: remote) { throw refusal }
        do {
            let held = claimed ? true : try await claims.claim(identity.nickname, session: identity.session)
            guard held else { throw EventError(.nicknameTaken, "the nickname \(identity.nickname) is held by another session") }
        } catch {
            admission.abandoned(remote: remote)
            if let error = error as? EventError { throw error }
            throw EventError(.unavailable, "the cluster backend is unavailable")
        }
        let session = Session(
            identity: identity, subscriber: subscriber, transport: transport, burst: configuration.rateBurst, remote: remote)
        claims.opened(identity.nickname, session: identity.session)
        admission.opened(session)
        do {
            try await attach(subscriber, to: .user(identity.nickname))
            for room in Set(rooms) { try await join(room, session: session) }
            let (backlog, caughtUpResets, welcomeCursor) = try await catchUp(
                identity, rooms: rooms, after: cursor, connection: subscriber.connectionID)
            var resets = caughtUpResets
            // Every connection learns the online count of the rooms it opened with: the
            // node's last count when it has one (counting is O(members) in Redis — asking
            // on every open made n joins cost O(n²)); its own arrival marked the room for a
            // recount, which follows within the coalescing window if the count changed.
            for room in Set(rooms).sorted() {
                let count = try await presence.current(room)
                resets.append(.presence(room: room, count: count))
                resets += await membersSnapshot(room, count: count)
            }
            let welcome = ServerEvent.welcome(
                nickname: identity.nickname, avatar: identity.avatar, node: nodeID, transport: transport.rawValue,
                cursor: welcomeCursor.description)
            return Opened(session: session, welcome: welcome, resets: resets, backlog: backlog, cursor: welcomeCursor)
        } catch {
            await close(session)
            if let error = error as? EventError { throw error }
            throw EventError(.unavailable, "the cluster backend is unavailable")
        }
    }

    /// The current online count of each room, as `presence` events (the node's last
    /// announced count, else asked from the broker) — for clients that poll.
    public func presenceSnapshot(_ rooms: [RoomName]) async -> [ServerEvent] {
        var events: [ServerEvent] = []
        for room in Set(rooms).sorted() {
            if let count = try? await presence.current(room) { events.append(.presence(room: room, count: count)) }
        }
        return events
    }

    /// Whether a new connection from `remote` would be admitted now (for refusing
    /// WebSocket upgrades before they happen).
    public func wouldAdmit(remote: String?) -> Bool { admission.wouldAdmit(remote: remote) }

    /// Ends a session: leaves its rooms, drops its subscriptions when it was the last
    /// local member. Idempotent.
    public func close(_ session: Session) async {
        guard let rooms = session.markClosed() else { return }
        for room in rooms { await detach(session, from: room) }
        let nickname = session.identity.nickname
        admission.released(session)
        claims.closed(nickname)
        if let change = hub.remove(session.subscriber, from: .user(nickname)), change.streamEdge {
            await unsubscribe(.user(nickname))
        }
    }

    // MARK: Client events

    /// Handles one client event; returns the replies for its connection, in order. An
    /// `ack` is sent only for events that carried a `ref`.
    public func handle(_ event: ClientEvent, from session: Session) async -> [ServerEvent] {
        metrics.clientEvents.add(1, ordering: .relaxed)
        let replies = await handleAll(event, from: session)
        countErrors(replies)
        guard event.ref == nil else { return replies }
        return replies.filter { if case .ack = $0 { false } else { true } }
    }

    /// A transport calls this once it has handed `event`'s `replies` to the hub
    /// (`hub.send`, in order with live frames). A `join`'s replies carry a count and a
    /// member page read before they were written; a recount may have delivered a newer
    /// one to the same connection in between, which the reply then overrode. When the
    /// reply differs from what the node last announced, the room's next recount announces
    /// to everyone, after the reply.
    public func repliesSent(_ replies: [ServerEvent], for event: ClientEvent) {
        guard case .join(let room) = event.kind else { return }
        var count: Int?
        var page: PresencePage?
        for reply in replies {
            switch reply {
            case .presence(room, let told): count = told
            case .members(_, room, let told): page = told
            default: break
            }
        }
        if let count { presence.replied(room, count: count, page: page) }
    }

    private func handleAll(_ event: ClientEvent, from session: Session) async -> [ServerEvent] {
        guard !session.isClosed else { return [] }
        guard session.takeToken(rate: configuration.ratePerSecond, burst: configuration.rateBurst) else {
            return [.error(ref: event.ref, code: .rateLimited, message: "too many events; slow down")]
        }
        do {
            switch event.kind {
            case .join(let room):
                let head = try await join(room, session: session)
                let count = try await presence.count(room)
                return [.ack(ref: event.ref, id: head), .presence(room: room, count: count)] + (await membersSnapshot(room, count: count))
            case .leave(let room):
                guard session.rooms.contains(room) else {
                    return [.error(ref: event.ref, code: .notJoined, message: "not in room \(room)")]
                }
                await leave(room, session: session)
                return [.ack(ref: event.ref, id: nil)]
            case .say(let room, _, _):
                guard session.rooms.contains(room) else {
                    return [.error(ref: event.ref, code: .notJoined, message: "join \(room) before speaking in it")]
                }
                return try await perform(event, identity: session.identity, connection: session.connectionID)
            case .whisper, .ping:
                return try await perform(event, identity: session.identity, connection: session.connectionID)
            case .members(let room, let after, let limit):
                return [try await membersReply(room, after: after, limit: limit, ref: event.ref)]
            }
        } catch var error as EventError {
            if error.ref == nil { error.ref = event.ref }
            return [.error(error)]
        } catch {
            logger.warning("broker call failed", metadata: ["session.id": "\(session.connectionID)", "error": "\(error)"])
            return [.error(ref: event.ref, code: .unavailable, message: "the cluster backend is unavailable; not delivered")]
        }
    }

    /// Handles an event sent without a connection (`/api/send` for polling, SSE and
    /// JSONP clients): `say` is accepted for any room (rooms are open; the `from` is the
    /// token's), `join` answers the room's newest id (the cursor to poll it from), `leave`
    /// is acknowledged. Rate-limited per session.
    public func handleStateless(_ event: ClientEvent, identity: Identity) async -> [ServerEvent] {
        metrics.clientEvents.add(1, ordering: .relaxed)
        let replies = await handleStatelessAll(event, identity: identity)
        countErrors(replies)
        return replies
    }

    /// Counts the error events among `replies` by code.
    public func countErrors(_ replies: [ServerEvent]) {
        for reply in replies {
            if case .error(_, let code, _) = reply { metrics.count("errors", code.rawValue) }
        }
    }

    private func handleStatelessAll(_ event: ClientEvent, identity: Identity) async -> [ServerEvent] {
        guard statelessLimiter.take(identity.session) else {
            return [.error(ref: event.ref, code: .rateLimited, message: "too many events; slow down")]
        }
        do {
            switch event.kind {
            case .join(let room):
                return [.ack(ref: event.ref, id: try await broker.head(of: .room(room)) ?? .zero)]
            case .leave:
                return [.ack(ref: event.ref, id: nil)]
            case .say, .whisper, .ping:
                return try await perform(event, identity: identity, connection: nil)
            case .members(let room, let after, let limit):
                return [try await membersReply(room, after: after, limit: limit, ref: event.ref)]
            }
        } catch var error as EventError {
            if error.ref == nil { error.ref = event.ref }
            return [.error(error)]
        } catch {
            return [.error(ref: event.ref, code: .unavailable, message: "the cluster backend is unavailable; not delivered")]
        }
    }

    /// say, whisper and ping: the parts that need no connection state.
    private func perform(_ event: ClientEvent, identity: Identity, connection: ConnectionID?) async throws -> [ServerEvent] {
        switch event.kind {
        case .ping:
            return event.ref == nil ? [.pong] : [.pong, .ack(ref: event.ref, id: nil)]
        case .say(let room, let text, let echo):
            let message = ServerEvent.message(id: nil, room: room, from: identity.sender, text: text, ts: clock())
            let envelope = Envelope(message, excludeNickname: echo ? nil : identity.nickname)
            let ids = try await broker.publish(envelope, to: [.room(room)])
            metrics.published.add(1, ordering: .relaxed)
            return [.ack(ref: event.ref, id: ids.first)]
        case .whisper(let to, let text):
            guard let holder = try await broker.nicknameHolder(to) else {
                return [.error(ref: event.ref, code: .userOffline, message: "\(to) is not online")]
            }
            let me = identity.nickname
            let message = ServerEvent.privateMessage(id: nil, from: identity.sender, to: to, text: text, ts: clock())
            let envelope = Envelope(message, excludeConnection: connection, sessions: Array(Set([holder, identity.session])).sorted())
            let streams: [StreamKey] = to == me ? [.user(me)] : [.user(to), .user(me)]
            let ids = try await broker.publish(envelope, to: streams)
            metrics.published.add(1, ordering: .relaxed)
            return [.ack(ref: event.ref, id: ids.last)]
        case .join, .leave, .members:
            return []
        }
    }

    /// `POST /api/publish`: an application event to a room or a nickname, stored and
    /// delivered cluster-wide. Returns its id.
    public func publishApplicationEvent(target: StreamKey, fields: [String: JSONValue]) async throws -> MessageID? {
        var fields = fields
        if fields["type"] == nil { fields["type"] = .string("event") }
        // To a nickname: it belongs to the session holding it now (if any), like a whisper.
        var sessions: [String] = []
        if case .user(let nickname) = target, let holder = try await broker.nicknameHolder(nickname) { sessions = [holder] }
        let ids = try await broker.publish(Envelope(.application(id: nil, target: target, fields: fields), sessions: sessions), to: [target])
        metrics.published.add(1, ordering: .relaxed)
        return ids.first
    }

    /// Moves a session to exactly `rooms` (a polling client that changed its `rooms=`).
    public func updateRooms(_ session: Session, to rooms: [RoomName]) async {
        let wanted = Set(rooms.prefix(configuration.maxRoomsPerConnection))
        let current = session.rooms
        for room in current.subtracting(wanted) { await leave(room, session: session) }
        for room in wanted.subtracting(current) { _ = try? await join(room, session: session) }
    }

    /// Joins `room`; returns the room's newest id (the client's cursor for it).
    @discardableResult
    func join(_ room: RoomName, session: Session) async throws -> MessageID? {
        switch session.insert(room, limit: configuration.maxRoomsPerConnection) {
        case nil:
            throw EventError(.tooManyRooms, "at most \(configuration.maxRoomsPerConnection) rooms per connection")
        case false?:
            return try await broker.head(of: .room(room)) ?? .zero
        case true?:
            break
        }
        let nickname = session.identity.nickname
        let change = hub.add(session.subscriber, to: .room(room))
        try await subscribe(.room(room))
        if change.nicknameEdge {
            try await presence.add(PresenceEntry(room: room, nickname: nickname, node: nodeID, avatar: session.identity.avatar))
            if announcesMembership(in: room, joining: true) {
                try await broker.broadcast(
                    Envelope(.joined(room: room, nickname: nickname), excludeConnection: session.connectionID), to: .room(room))
            }
        }
        presence.markDirty(room)
        return try await broker.head(of: .room(room)) ?? .zero
    }

    func leave(_ room: RoomName, session: Session) async {
        guard session.remove(room) else { return }
        await detach(session, from: room)
    }

    private func detach(_ session: Session, from room: RoomName) async {
        let nickname = session.identity.nickname
        guard let change = hub.remove(session.subscriber, from: .room(room)) else { return }
        if change.nicknameEdge {
            do {
                try await broker.removePresence([PresenceEntry(room: room, nickname: nickname, node: nodeID)])
                if announcesMembership(in: room, joining: false) {
                    try await broker.broadcast(Envelope(.left(room: room, nickname: nickname)), to: .room(room))
                }
            } catch {
                logger.debug("presence removal failed; it expires", metadata: ["room": "\(room)", "error": "\(error)"])
            }
        }
        presence.markDirty(room)
        if change.streamEdge { await unsubscribe(.room(room)) }
    }

    /// Whether the arrival (`joining`) or departure of a nickname is announced in `room`:
    /// only while fewer than `joinLeaveLimit` others are online there (the larger of the
    /// last cluster-wide count and the local count, the mover left out; the Hub already
    /// has the newcomer and no longer has the leaver).
    private func announcesMembership(in room: RoomName, joining: Bool) -> Bool {
        let local = hub.nicknameCount(in: .room(room)) - (joining ? 1 : 0)
        let cluster = (presence.lastCount(room) ?? 0) - (joining ? 0 : 1)
        return max(local, cluster) < configuration.joinLeaveLimit
    }

    /// Live nodes of the cluster (this one included even when the broker is down).
    public func clusterNodes() async -> [NodeStatus] { await node.clusterNodes() }
}
