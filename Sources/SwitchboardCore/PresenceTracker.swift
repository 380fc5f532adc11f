import Synchronization

/// Cluster-wide online counts per room, coalesced: a change marks the room dirty, and
/// one recount per window sends `presence` to local members if the count changed.
/// Nodes refresh their own entries; a crashed node's entries expire by themselves, and
/// the periodic recount lets the survivors notice.
final class PresenceTracker: Sendable {
    private let configuration: ChatConfiguration
    private let broker: any Broker
    private let hub: Hub
    private let clock: @Sendable () -> Int64
    private let state = Mutex(State())

    struct State {
        var dirty: Set<RoomName> = []
        var lastSent: [RoomName: Int] = [:]
        var lastCounted: [RoomName: ContinuousClock.Instant] = [:]
    }

    /// How often a room with `members` local members is recounted at most: every recount
    /// that changes is a frame to every member, so while a room fills, n arrivals would
    /// cost n × (arrivals per window) frames. The window grows with the room — 2 ms per
    /// member, at least `base` (100 ms: rooms up to 50 members), at most 1 s (from 500) —
    /// which bounds a busy room's presence frames to about 500 per second per node.
    static func window(members: Int, base: Duration) -> Duration {
        min(max(base, .milliseconds(2 * members)), max(base, .seconds(1)))
    }

    init(configuration: ChatConfiguration, broker: any Broker, hub: Hub, clock: @escaping @Sendable () -> Int64) {
        self.configuration = configuration
        self.broker = broker
        self.hub = hub
        self.clock = clock
    }

    /// The last count this node announced for `room`, if it has one.
    func lastCount(_ room: RoomName) -> Int? {
        state.withLock { $0.lastSent[room] }
    }

    /// The cluster-wide count of `room` from the broker, to hand to a client (a join).
    /// It is kept as the last announced one, so the next recount does not send it again
    /// to members that already have it; when it differs from the recorded count (two
    /// openings raced), the record is dropped and the next recount announces to everyone.
    func count(_ room: RoomName) async throws -> Int {
        let count = try await broker.presenceCount(of: room, now: clock())
        handedOut(room, count: count)
        return count
    }

    /// The node's last announced count of `room`, else `count(room)` (an opening, a
    /// poll: counting is O(members) in Redis, asking on every open made n joins O(n²)).
    func current(_ room: RoomName) async throws -> Int {
        if let count = lastCount(room) { return count }
        return try await count(room)
    }

    private func handedOut(_ room: RoomName, count: Int) {
        state.withLock { state in
            switch state.lastSent[room] {
            case nil: state.lastSent[room] = count
            case count?: break
            case _?: state.lastSent[room] = nil
            }
        }
    }

    func markDirty(_ room: RoomName) {
        state.withLock { _ = $0.dirty.insert(room) }
    }

    func run() async {
        var sinceRefresh = Duration.zero
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.presenceCoalesce)
            sinceRefresh += configuration.presenceCoalesce
            if sinceRefresh >= configuration.presenceRefresh {
                sinceRefresh = .zero
                await refresh()
            }
            await flush()
        }
    }

    /// Re-adds every local entry with a new expiry and marks every local room dirty.
    func refresh() async {
        let memberships = hub.roomMemberships
        let entries = memberships.map { PresenceEntry(room: $0.0, nickname: $0.1, node: configuration.nodeID) }
        if !entries.isEmpty {
            try? await broker.setPresence(entries, expiresAt: clock() + configuration.presenceTTLMilliseconds)
        }
        state.withLock { state in
            for (room, _) in memberships { state.dirty.insert(room) }
        }
    }

    /// Recounts dirty rooms and tells local members about changed counts.
    func flush() async {
        let dirty = state.withLock { state -> Set<RoomName> in
            let dirty = state.dirty
            state.dirty = []
            return dirty
        }
        let now = ContinuousClock.now
        for room in dirty {
            let members = hub.memberCount(of: .room(room))
            guard members > 0 else {
                state.withLock { state in
                    state.lastSent.removeValue(forKey: room)
                    state.lastCounted.removeValue(forKey: room)
                }
                continue
            }
            let window = Self.window(members: members, base: configuration.presenceCoalesce)
            let wait = state.withLock { state -> Bool in
                guard window > configuration.presenceCoalesce, let last = state.lastCounted[room], now - last < window else {
                    state.lastCounted[room] = now
                    return false
                }
                state.dirty.insert(room)
                return true
            }
            if wait { continue }
            guard let count = try? await broker.presenceCount(of: room, now: clock()) else {
                state.withLock { _ = $0.dirty.insert(room) }
                continue
            }
            let changed = state.withLock { state -> Bool in
                guard state.lastSent[room] != count else { return false }
                state.lastSent[room] = count
                return true
            }
            if changed { hub.deliver(.presence(room: room, count: count), stream: .room(room), id: nil, envelope: nil) }
        }
    }
}
