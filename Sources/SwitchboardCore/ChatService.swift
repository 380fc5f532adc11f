import Logging
import Synchronization

/// The chat semantics — login, join, say, whisper, presence — on top of Hub + Broker,
/// identical for every transport. Transports call `open`, `handle` and `close`.
public final class ChatService: Sendable {
    public let configuration: ChatConfiguration
    public let broker: any Broker
    public let hub: Hub
    private let signer: TokenSigner
    private let verifier: TokenVerifier
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    let presence: PresenceTracker
    let cache: StreamCache
    /// What this node's heartbeats report for `/dashboard`.
    public let reporter: NodeReporter
    /// Counters for `/metrics` (the hub's).
    public var metrics: Metrics { hub.metrics }
    private let statelessLimiter: SessionRateLimiter
    private let state = Mutex(State())
    private let subscriptions = StreamSubscriptions()
    /// Broker generations whose gap is to be filled, consumed by `run` (the gap fill's owner).
    private let gapFills = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))

    struct State {
        /// Live local connections per nickname, with the session id holding the claim.
        var identities: [Nickname: (session: String, connections: Int)] = [:]
        /// The newest id this node saw per stream (to fill gaps after a reconnect).
        var seen: [StreamKey: MessageID] = [:]
        /// Between a broker loss and the end of the gap fill: live messages are held.
        var recovering = false
        var held: [(StreamKey, MessageID?, Envelope)] = []
        /// Counts broker losses, so a stale gap fill does not release held messages.
        var generation = 0
        /// Open sessions per transport name.
        var transports: [Transport: Int] = [:]
        /// Every open session of this node.
        var sessions: [ConnectionID: Session] = [:]
        /// Open sessions per client address (admitted in `admit`).
        var perRemote: [String: Int] = [:]
    }

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
            group.addTask { await self.refreshClaims() }
            group.addTask { await self.heartbeats() }
            group.addTask {
                for await generation in self.gapFills.stream { await self.fillGaps(generation: generation) }
            }
        }
    }

    private func brokerEvent(_ event: BrokerEvent) {
        switch event {
        case .message(let stream, let id, let envelope):
            metrics.brokerMessages.add(1, ordering: .relaxed)
            // While the gap after an outage is being filled from history, live messages
            // wait: delivering a newer one first would make every connection drop the
            // older history entries as duplicates.
            let held = state.withLock { state -> Bool in
                guard state.recovering else { return false }
                state.held.append((stream, id, envelope))
                return true
            }
            if !held { deliver(stream: stream, id: id, envelope: envelope) }
        case .disconnected:
            state.withLock { state in
                state.recovering = true
                state.generation += 1
            }
            cache.dropAll()
            metrics.brokerDisconnects.add(1, ordering: .relaxed)
            logger.warning("broker connection lost")
        case .reconnected:
            metrics.brokerReconnects.add(1, ordering: .relaxed)
            logger.info("broker reconnected; filling the gap from history")
            let generation = state.withLock { $0.generation }
            gapFills.continuation.yield(generation)
        }
    }

    /// Hands one message of `stream` to the local connections, once per id per node.
    private func deliver(stream: StreamKey, id: MessageID?, envelope: Envelope) {
        if let id {
            let fresh = state.withLock { state -> Bool in
                if let seen = state.seen[stream], seen >= id { return false }
                state.seen[stream] = id
                return true
            }
            guard fresh else { return }
            cache.append(StreamEntry(stream: stream, id: id, envelope: envelope))
        }
        switch envelope.event {
        case .joined(let room, _), .left(let room, _): presence.markDirty(room)
        default: break
        }
        hub.deliver(envelope.event, stream: stream, id: id, envelope: envelope)
    }

    /// After a broker outage: deliver what each local stream missed, in order, then the
    /// live messages held meanwhile (duplicates dropped by id); refresh presence and
    /// claims. Abandoned if the broker is lost again meanwhile (the next reconnect
    /// starts over).
    func fillGaps(generation: Int) async {
        let seen = state.withLock { $0.seen }
        for stream in hub.streams {
            do {
                cache.prepare(stream)
                var after = seen[stream]
                while true {
                    let page = try await broker.history(of: stream, after: after, limit: configuration.replayLimit)
                    for entry in page.entries { deliver(stream: entry.stream, id: entry.id, envelope: entry.envelope) }
                    guard page.entries.count == configuration.replayLimit, let last = page.entries.last?.id else { break }
                    after = last
                }
                cache.start(stream, base: try await broker.head(of: stream) ?? .zero)
            } catch {
                logger.warning("history after reconnect failed", metadata: ["stream": "\(stream)", "error": "\(error)"])
            }
        }
        // Release what arrived live meanwhile, until nothing is held.
        while true {
            let batch = state.withLock { state -> [(StreamKey, MessageID?, Envelope)]? in
                guard state.generation == generation else { return nil }
                if state.held.isEmpty {
                    state.recovering = false
                    return nil
                }
                defer { state.held = [] }
                return state.held
            }
            guard let batch else { break }
            for (stream, id, envelope) in batch { deliver(stream: stream, id: id, envelope: envelope) }
        }
        await presence.refresh()
        await refreshClaimsOnce()
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
        while ContinuousClock.now < deadline, !state.withLock({ $0.transports.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(50))
            // Parked sessions (polling clients) have no socket to close: end them here.
            let parked = state.withLock { $0.sessions.values.filter { $0.transport.isPolling } }
            for session in parked { await close(session) }
        }
        // Whatever is left: leave its rooms now so presence is right on the other nodes.
        for session in state.withLock({ Array($0.sessions.values) }) { await close(session) }
    }

    // MARK: Login and tokens

    public struct Login: Sendable {
        public var token: String
        public var identity: Identity
    }

    /// `POST /api/login`: validates, claims the nickname cluster-wide, signs a token.
    public func login(nickname rawNickname: String?, avatar rawAvatar: String?) async -> Result<Login, EventError> {
        guard let rawNickname, let nickname = Nickname(rawNickname) else {
            return .failure(EventError(.invalidNickname, "a nickname is 1–32 characters, no control characters, no leading or trailing spaces, no |"))
        }
        let avatar = rawAvatar ?? ""
        guard Avatar.isValid(avatar, maxBytes: configuration.maxAvatarBytes) else {
            return .failure(Avatar.refusal(maxBytes: configuration.maxAvatarBytes))
        }
        let session = hex64(UInt64.random(in: .min ... .max)) + hex64(UInt64.random(in: .min ... .max))
        do {
            guard try await broker.claimNickname(nickname, session: session, ttlSeconds: configuration.nicknameClaimSeconds) else {
                return .failure(EventError(.nicknameTaken, "the nickname \(nickname) is in use"))
            }
        } catch {
            return .failure(EventError(.unavailable, "the cluster backend is unavailable; try again"))
        }
        let now = clock() / 1000
        let identity = Identity(
            nickname: nickname, avatar: avatar, session: session, issuedAt: now,
            expiresAt: now + configuration.tokenLifetimeSeconds)
        return .success(Login(token: signer.sign(identity), identity: identity))
    }

    /// `POST /api/token`: a token for a user the application has authenticated itself.
    /// No nickname claim here (the application vouches for the person); the session id
    /// is derived from the nickname, so every token minted for one nickname shares one
    /// claim — several tabs or devices of one user are one session.
    public func mint(nickname rawNickname: String?, avatar rawAvatar: String?, ttlSeconds: Int64) -> Result<Login, EventError> {
        guard let rawNickname, let nickname = Nickname(rawNickname) else {
            return .failure(EventError(.invalidNickname, "a nickname is 1–32 characters, no control characters, no leading or trailing spaces, no |"))
        }
        let avatar = rawAvatar ?? ""
        guard Avatar.isValid(avatar, maxBytes: configuration.maxAvatarBytes) else {
            return .failure(Avatar.refusal(maxBytes: configuration.maxAvatarBytes))
        }
        let now = clock() / 1000
        let identity = Identity(
            nickname: nickname, avatar: avatar, session: Identity.applicationSession(for: nickname), issuedAt: now,
            expiresAt: now + ttlSeconds)
        return .success(Login(token: signer.sign(identity), identity: identity))
    }

    /// The identity in `token` (ours or the application's JWT), or nil.
    public func authenticate(_ token: String) -> Identity? {
        try? verifier.verify(token, now: clock() / 1000).get()
    }

    /// The identity in `token`, or why it is refused — what every transport checks.
    public func verify(_ token: String) -> Result<Identity, TokenRefusal> {
        verifier.verify(token, now: clock() / 1000)
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
        if let refusal = admit(remote: remote) { throw refusal }
        do {
            let held = claimed
                ? true
                : try await broker.claimNickname(identity.nickname, session: identity.session, ttlSeconds: configuration.nicknameClaimSeconds)
            guard held else { throw EventError(.nicknameTaken, "the nickname \(identity.nickname) is held by another session") }
        } catch let error as EventError {
            throw error
        } catch {
            throw EventError(.unavailable, "the cluster backend is unavailable")
        }
        let session = Session(
            identity: identity, subscriber: subscriber, transport: transport, burst: configuration.rateBurst, remote: remote)
        state.withLock { state in
            var entry = state.identities[identity.nickname] ?? (identity.session, 0)
            entry.session = identity.session
            entry.connections += 1
            state.identities[identity.nickname] = entry
            state.transports[transport, default: 0] += 1
            state.sessions[session.connectionID] = session
        }
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
                resets.append(.presence(room: room, count: try await presence.current(room)))
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

    /// Connection limits: per node and per client address. Counts the connection when it
    /// is admitted; `close` releases it.
    private func admit(remote: String?) -> EventError? {
        state.withLock { state in
            guard state.sessions.count < configuration.maxConnections else {
                return EventError(.tooManyConnections, "this node is full; try another")
            }
            if let remote {
                guard (state.perRemote[remote] ?? 0) < configuration.maxConnectionsPerAddress else {
                    return EventError(.tooManyConnections, "too many connections from your address")
                }
                state.perRemote[remote, default: 0] += 1
            }
            return nil
        }
    }

    /// Whether a new connection from `remote` would be admitted now (for refusing
    /// WebSocket upgrades before they happen).
    public func wouldAdmit(remote: String?) -> Bool {
        state.withLock { state in
            state.sessions.count < configuration.maxConnections
                && (remote.map { (state.perRemote[$0] ?? 0) < configuration.maxConnectionsPerAddress } ?? true)
        }
    }

    /// Reads what a client following `rooms` and its own private stream missed after
    /// `cursor`: the entries to send (exclusions applied), `reset`s for streams whose
    /// window it fell behind, and its cursor (streams it had no position for start at
    /// their head; empty streams at `0-0`). Call after subscribing.
    public func catchUp(
        _ identity: Identity, rooms: [RoomName], after cursor: Cursor?, connection: ConnectionID?
    ) async throws -> (backlog: [StreamEntry], resets: [ServerEvent], cursor: Cursor) {
        var position = Cursor()
        var backlog: [StreamEntry] = []
        var resets: [ServerEvent] = []
        let streams: [StreamKey] = [.user(identity.nickname)] + Set(rooms).sorted().map { .room($0) }
        for stream in streams {
            if let after = cursor?[stream] {
                position.advance(stream, to: after)
                let page: HistoryPage
                if let cached = cache.read(stream, after: after, limit: configuration.replayLimit) {
                    page = HistoryPage(entries: cached, gap: false)
                } else {
                    page = try await broker.history(of: stream, after: after, limit: configuration.replayLimit)
                }
                if page.gap {
                    metrics.historyResets.add(1, ordering: .relaxed)
                    var room: RoomName?
                    if case .room(let name) = stream { room = name }
                    resets.append(.reset(room: room, cursor: ""))
                }
                for entry in page.entries
                where entry.envelope.excludeNickname != identity.nickname
                    && (entry.envelope.excludeConnection == nil || entry.envelope.excludeConnection != connection)
                    && entry.envelope.isReplayable(to: identity.session)
                {
                    backlog.append(entry)
                }
            } else {
                // Empty streams start at 0-0, so a resume gets their first message too.
                if let head = cache.head(stream) {
                    position.advance(stream, to: head)
                } else {
                    position.advance(stream, to: try await broker.head(of: stream) ?? .zero)
                }
            }
        }
        return (backlog, resets, position)
    }

    /// Ends a session: leaves its rooms, drops its subscriptions when it was the last
    /// local member. Idempotent.
    public func close(_ session: Session) async {
        guard let rooms = session.markClosed() else { return }
        for room in rooms { await detach(session, from: room) }
        let nickname = session.identity.nickname
        state.withLock { state in
            if state.sessions.removeValue(forKey: session.connectionID) != nil, let remote = session.remote {
                let left = (state.perRemote[remote] ?? 1) - 1
                state.perRemote[remote] = left <= 0 ? nil : left
            }
            let open = (state.transports[session.transport] ?? 1) - 1
            state.transports[session.transport] = open <= 0 ? nil : open
            guard var entry = state.identities[nickname] else { return }
            entry.connections -= 1
            state.identities[nickname] = entry.connections <= 0 ? nil : entry
        }
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

    private func handleAll(_ event: ClientEvent, from session: Session) async -> [ServerEvent] {
        guard !session.isClosed else { return [] }
        guard session.takeToken(rate: configuration.ratePerSecond, burst: configuration.rateBurst) else {
            return [.error(ref: event.ref, code: .rateLimited, message: "too many events; slow down")]
        }
        do {
            switch event.kind {
            case .join(let room):
                let head = try await join(room, session: session)
                return [.ack(ref: event.ref, id: head), .presence(room: room, count: try await presence.count(room))]
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
        case .join, .leave:
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
            let entry = PresenceEntry(room: room, nickname: nickname, node: nodeID)
            try await broker.setPresence([entry], expiresAt: clock() + configuration.presenceTTLMilliseconds)
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

    private func attach(_ subscriber: any Subscriber, to stream: StreamKey) async throws {
        hub.add(subscriber, to: stream)
        try await subscribe(stream)
    }

    /// Returns once the broker delivers `stream` to this node — at once when it already
    /// does; otherwise after the subscription (and any change of it asked before) is
    /// done. Every member calls it, not only the first: a member that arrives while the
    /// first one's subscription is on its way must not read history before it is active.
    private func subscribe(_ stream: StreamKey) async throws {
        try await subscriptions.activate(stream) { try await self.subscribeNow(stream) }
        // Everyone left while the subscription was being made.
        if hub.memberCount(of: stream) == 0 { await unsubscribe(stream) }
    }

    private func subscribeNow(_ stream: StreamKey) async throws {
        cache.prepare(stream)
        do {
            try await broker.subscribe(stream)
            let head = try await broker.head(of: stream) ?? .zero
            cache.start(stream, base: head)
            // Nothing older than the head at subscription concerns this node's clients:
            // each one reads history up to at least this head after subscribing.
            state.withLock { state in
                if (state.seen[stream] ?? .zero) < head { state.seen[stream] = head }
            }
        } catch {
            // The broker keeps the wish and subscribes it when it is back; the stream stays
            // inactive here, so the next member tries again.
            cache.drop(stream)
            throw error
        }
    }

    /// Drops the node's subscription to `stream` unless a member came back meanwhile.
    private func unsubscribe(_ stream: StreamKey) async {
        let hub = self.hub
        await subscriptions.deactivate(stream, isUnused: { hub.memberCount(of: stream) == 0 }) {
            self.state.withLock { _ = $0.seen.removeValue(forKey: stream) }
            self.cache.drop(stream)
            try? await self.broker.unsubscribe(stream)
        }
    }

    // MARK: Claims

    private func refreshClaims() async {
        let period = Duration.seconds(max(1, configuration.nicknameClaimSeconds / 3))
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            await refreshClaimsOnce()
        }
    }

    private func refreshClaimsOnce() async {
        let claims = state.withLock { $0.identities.map { ($0.key, $0.value.session) } }
        for (nickname, session) in claims {
            do {
                _ = try await broker.claimNickname(nickname, session: session, ttlSeconds: configuration.nicknameClaimSeconds)
            } catch {
                logger.debug("claim refresh failed", metadata: ["nickname": "\(nickname)"])
            }
        }
    }

    /// Distinct nicknames connected to this node.
    public var localNicknames: Int { state.withLock { $0.identities.count } }

    /// Open sessions on this node per transport.
    public var connectionsByTransport: [String: Int] {
        state.withLock { Dictionary(uniqueKeysWithValues: $0.transports.map { ($0.key.rawValue, $0.value) }) }
    }

    /// This node as `/cluster` shows it.
    public var localStatus: NodeStatus {
        NodeStatus(id: nodeID, lastSeen: clock(), connections: connectionsByTransport)
    }

    /// Live nodes of the cluster (this one included even when the broker is down).
    public func clusterNodes() async -> [NodeStatus] {
        let now = clock()
        var nodes = (try? await broker.liveNodes(now: now, maxAge: Self.heartbeatTTL)) ?? []
        if let index = nodes.firstIndex(where: { $0.id == nodeID }) {
            nodes[index] = localStatus
        } else {
            nodes.append(localStatus)
        }
        return nodes.sorted { $0.id < $1.id }
    }

    static let heartbeatTTL: Int64 = 15_000
    /// Heartbeats (with the dashboard's report) go out this often; a node two beats
    /// late shows as stale on `/dashboard`.
    public static let heartbeatInterval: Duration = .seconds(1)

    private func heartbeats() async {
        while !Task.isCancelled {
            let start = ContinuousClock.now
            do {
                var status = localStatus
                status.report = heartbeatReport(now: clock())
                try await broker.heartbeat(status, ttlMilliseconds: Self.heartbeatTTL)
                let elapsed = ContinuousClock.now - start
                metrics.brokerRoundTripMicros.store(
                    Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000),
                    ordering: .relaxed)
            } catch {
                metrics.brokerRoundTripMicros.store(-1, ordering: .relaxed)
            }
            try? await Task.sleep(for: Self.heartbeatInterval)
        }
    }
}
