#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The in-process broker: the embedded default for a single node (no Redis).
/// History, presence and nickname claims live in this process.
public final class MemoryBroker: Broker {
    struct Stream {
        var entries: [StreamEntry] = []
        var last: MessageID?
        /// The newest id trimmed away; readers with an older cursor have a gap.
        var maxDeleted: MessageID?
    }

    struct State {
        var handler: (@Sendable (BrokerEvent) -> Void)?
        var stopped = false
        var streams: [StreamKey: Stream] = [:]
        var subscribed: Set<StreamKey> = []
        /// Entries (without their avatar) and their expiry.
        var presence: [RoomName: [PresenceEntry: Int64]] = [:]
        /// The recorded avatar of each nickname with an entry in the room.
        var avatars: [RoomName: [Nickname: String]] = [:]
        var claims: [Nickname: (session: String, expires: Int64)] = [:]
        var nodes: [String: NodeStatus] = [:]
        /// Handlers of node-addressed messages, by node (one node in process; tests may run more).
        var nodeHandlers: [String: @Sendable ([UInt8]) -> Void] = [:]
        /// Live events not yet handed to the handler, in the order their ids were given.
        var outbox: [BrokerEvent] = []
        /// Someone is handing the outbox to the handler.
        var draining = false
    }

    let state = Mutex(State())
    private let historyLimit: Int
    private let clock: @Sendable () -> Int64

    /// - Parameters:
    ///   - historyLimit: entries kept per stream.
    ///   - clock: Unix milliseconds now (passed in so tests can drive time).
    public init(historyLimit: Int = 1000, clock: @escaping @Sendable () -> Int64 = unixMilliseconds) {
        self.historyLimit = max(1, historyLimit)
        self.clock = clock
    }

    public func start(_ handler: @escaping @Sendable (BrokerEvent) -> Void) async throws {
        state.withLock { $0.handler = handler }
    }

    public func shutdown() async {
        state.withLock {
            $0.stopped = true
            $0.handler = nil
        }
    }

    public var isReady: Bool { state.withLock { !$0.stopped } }

    private func checkRunning(_ state: borrowing State) throws(BrokerError) {
        if state.stopped { throw BrokerError.unavailable("broker stopped") }
    }

    public func publish(_ envelope: Envelope, to streams: [StreamKey]) async throws -> [MessageID] {
        let now = UInt64(max(0, clock()))
        let (ids, drain) = try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            // One id for every stream: greater than each stream's last id.
            var id = MessageID(milliseconds: now, sequence: 0)
            for key in streams {
                if let last = state.streams[key]?.last, last >= id { id = last.successor }
            }
            var ids: [MessageID] = []
            for key in streams {
                // Moved out and back, so the append does not copy the whole history.
                var stream = state.streams.removeValue(forKey: key) ?? Stream()
                stream.entries.append(StreamEntry(stream: key, id: id, envelope: envelope))
                stream.last = id
                if stream.entries.count >= historyLimit + max(1, historyLimit / 4) {
                    // Trimmed in one go once a quarter over (O(1) amortized per append).
                    let drop = stream.entries.count - historyLimit
                    stream.maxDeleted = stream.entries[drop - 1].id
                    stream.entries.removeFirst(drop)
                }
                state.streams[key] = stream
                ids.append(id)
                if state.subscribed.contains(key) {
                    state.outbox.append(.message(stream: key, id: id, envelope: envelope))
                }
            }
            return (ids, Self.claimDrain(&state))
        }
        if drain { drainOutbox() }
        return ids
    }

    public func broadcast(_ envelope: Envelope, to stream: StreamKey) async throws {
        let drain = try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            guard state.subscribed.contains(stream) else { return false }
            state.outbox.append(.message(stream: stream, id: nil, envelope: envelope))
            return Self.claimDrain(&state)
        }
        if drain { drainOutbox() }
    }

    // Ordering: ids are given under the lock and the live event is queued under the same
    // lock, so the outbox is in id order per stream. One caller at a time (whoever found
    // nobody draining) hands the outbox to the handler, outside the lock: the handler sees
    // each stream's events in id order and is never called concurrently, however many
    // publishers race. Handing them over after the lock without this queue let two
    // publishers overtake each other, and the node's de-duplication dropped the older id.

    /// True when the caller must drain the outbox (nobody else is).
    private static func claimDrain(_ state: inout State) -> Bool {
        guard !state.draining, !state.outbox.isEmpty else { return false }
        state.draining = true
        return true
    }

    /// Hands queued events to the handler until the outbox stays empty.
    private func drainOutbox() {
        while true {
            let (events, handler) = state.withLock { state -> ([BrokerEvent], (@Sendable (BrokerEvent) -> Void)?) in
                guard !state.outbox.isEmpty else {
                    state.draining = false
                    return ([], nil)
                }
                defer { state.outbox = [] }
                return (state.outbox, state.handler)
            }
            guard !events.isEmpty else { return }
            for event in events { handler?(event) }
        }
    }

    public func subscribe(_ stream: StreamKey) async throws {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            state.subscribed.insert(stream)
        }
    }

    public func unsubscribe(_ stream: StreamKey) async throws {
        _ = state.withLock { $0.subscribed.remove(stream) }
    }

    public func head(of stream: StreamKey) async throws -> MessageID? {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            return state.streams[stream]?.last
        }
    }

    public func history(of stream: StreamKey, after: MessageID?, limit: Int) async throws -> HistoryPage {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            guard let s = state.streams[stream] else { return HistoryPage(entries: [], gap: false) }
            // The stream keeps up to a quarter more than the limit between trims; only the
            // newest `historyLimit` count.
            let oldest = max(0, s.entries.count - historyLimit)
            let newestDropped = oldest > 0 ? s.entries[oldest - 1].id : s.maxDeleted
            var start = oldest
            if let after {
                var high = s.entries.count
                while start < high {
                    let mid = (start + high) / 2
                    if s.entries[mid].id > after { high = mid } else { start = mid + 1 }
                }
            }
            let entries = Array(s.entries[start...].prefix(max(0, limit)))
            let gap = after.map { after in newestDropped.map { $0 > after } ?? false } ?? false
            return HistoryPage(entries: entries, gap: gap)
        }
    }

    public func setPresence(_ entries: [PresenceEntry], expiresAt: Int64) async throws {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            for entry in entries {
                state.presence[entry.room, default: [:]][entry.withoutAvatar] = expiresAt
                if let avatar = entry.avatar { state.avatars[entry.room, default: [:]][entry.nickname] = avatar }
            }
        }
    }

    public func removePresence(_ entries: [PresenceEntry]) async throws {
        state.withLock { state in
            for entry in entries {
                state.presence[entry.room]?[entry.withoutAvatar] = nil
                if state.presence[entry.room]?.contains(where: { $0.key.nickname == entry.nickname }) != true {
                    state.avatars[entry.room]?[entry.nickname] = nil
                }
                if state.presence[entry.room]?.isEmpty == true {
                    state.presence[entry.room] = nil
                    state.avatars[entry.room] = nil
                }
            }
        }
    }

    public func presenceCount(of room: RoomName, now: Int64) async throws -> Int {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            return Self.liveNicknames(in: room, now: now, state: &state).count
        }
    }

    public func presenceMembers(of room: RoomName, now: Int64, after: Nickname?, limit: Int) async throws -> PresencePage {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            let nicknames = Self.liveNicknames(in: room, now: now, state: &state)
            let avatars = state.avatars[room] ?? [:]
            return PresencePage.page(of: nicknames, after: after, limit: limit) { avatars[$0] ?? "" }
        }
    }

    /// Drops the expired entries of `room` (and the avatars nobody has any more);
    /// returns the distinct nicknames left.
    private static func liveNicknames(in room: RoomName, now: Int64, state: inout State) -> Set<Nickname> {
        guard var members = state.presence[room] else { return [] }
        members = members.filter { $0.value > now }
        state.presence[room] = members.isEmpty ? nil : members
        let nicknames = Set(members.keys.map(\.nickname))
        if let avatars = state.avatars[room], avatars.count > nicknames.count {
            let kept = avatars.filter { nicknames.contains($0.key) }
            state.avatars[room] = kept.isEmpty ? nil : kept
        }
        return nicknames
    }

    public func claimNickname(_ nickname: Nickname, session: String, ttlSeconds: Int) async throws -> Bool {
        let now = clock()
        return try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            if let claim = state.claims[nickname], claim.expires > now, claim.session != session { return false }
            state.claims[nickname] = (session, now + Int64(ttlSeconds) * 1000)
            return true
        }
    }

    public func releaseNickname(_ nickname: Nickname, session: String) async throws {
        state.withLock { state in
            if state.claims[nickname]?.session == session { state.claims[nickname] = nil }
        }
    }

    public func nicknameHolder(_ nickname: Nickname) async throws -> String? {
        let now = clock()
        return try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            guard let claim = state.claims[nickname], claim.expires > now else { return nil }
            return claim.session
        }
    }
}

extension MemoryBroker {
    public func heartbeat(_ status: NodeStatus, ttlMilliseconds: Int64) async throws {
        try state.withLock { state throws(BrokerError) in
            if state.stopped { throw BrokerError.unavailable("broker stopped") }
            state.nodes[status.id] = status
        }
    }

    public func liveNodes(now: Int64, maxAge: Int64) async throws -> [NodeStatus] {
        state.withLock { state in
            state.nodes = state.nodes.filter { $0.value.lastSeen >= now - maxAge }
            return state.nodes.values.sorted { $0.id < $1.id }
        }
    }
}

extension MemoryBroker {
    public func listen(asNode node: String, _ handler: @escaping @Sendable ([UInt8]) -> Void) async throws {
        try state.withLock { state throws(BrokerError) in
            try checkRunning(state)
            state.nodeHandlers[node] = handler
        }
    }

    /// Delivered at once, on the sender's thread (outside the lock), so one sender's
    /// messages arrive in its order.
    public func send(_ message: [UInt8], toNode node: String) {
        let handler = state.withLock { $0.stopped ? nil : $0.nodeHandlers[node] }
        handler?(message)
    }
}

extension PresenceEntry {
    /// The entry as a key: who, where, through which node.
    var withoutAvatar: PresenceEntry { PresenceEntry(room: room, nickname: nickname, node: node) }
}

/// Unix time in milliseconds.
@Sendable public func unixMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
