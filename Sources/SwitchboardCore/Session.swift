import Synchronization

/// One live connection of an identity: its subscriber, rooms and rate limit.
/// Several sessions (tabs) may share one identity.
public final class Session: Sendable {
    public let identity: Identity
    public let subscriber: any Subscriber
    public let transport: Transport
    /// The client's address (connection limits).
    public let remote: String?
    private let state: Mutex<State>

    struct State {
        var rooms: Set<RoomName> = []
        var tokens: Double
        var refilledAt: ContinuousClock.Instant
        var closed = false
    }

    init(identity: Identity, subscriber: any Subscriber, transport: Transport, burst: Double, remote: String? = nil) {
        self.identity = identity
        self.remote = remote
        self.subscriber = subscriber
        self.transport = transport
        self.state = Mutex(State(tokens: burst, refilledAt: .now))
    }

    public var rooms: Set<RoomName> { state.withLock { $0.rooms } }
    public var connectionID: ConnectionID { subscriber.connectionID }

    func insert(_ room: RoomName, limit: Int) -> Bool? {
        state.withLock { state in
            if state.rooms.contains(room) { return false }
            guard state.rooms.count < limit else { return nil }
            state.rooms.insert(room)
            return true
        }
    }

    func remove(_ room: RoomName) -> Bool { state.withLock { $0.rooms.remove(room) != nil } }

    /// Marks the session closed; returns its rooms the first time, nil afterwards.
    func markClosed() -> Set<RoomName>? {
        state.withLock { state in
            if state.closed { return nil }
            state.closed = true
            let rooms = state.rooms
            state.rooms = []
            return rooms
        }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Token bucket: takes one token, false when empty.
    func takeToken(rate: Double, burst: Double) -> Bool {
        state.withLock { state in
            let now = ContinuousClock.now
            let elapsed = now - state.refilledAt
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            state.tokens = min(burst, state.tokens + seconds * rate)
            state.refilledAt = now
            guard state.tokens >= 1 else { return false }
            state.tokens -= 1
            return true
        }
    }
}
