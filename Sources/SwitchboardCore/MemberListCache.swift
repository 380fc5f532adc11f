import Synchronization

/// Member list requests in big rooms, bounded: reading a room's list costs the broker
/// O(room size) (every entry is read to drop the expired ones and count the rest), and
/// any client may ask 20 times a second. For a room of more than `bigRoom` nicknames a
/// node reads the whole sorted list at most once per `maxAge` and serves every page from
/// it, so the broker's work per node is bounded by the number of big rooms asked about,
/// not by the number of askers. Small rooms are read fresh every time (cheap). A big
/// room's pages may thus be up to `maxAge` old — its count comes with `presence`.
final class MemberListCache: Sendable {
    struct Entry {
        var members: [RoomMember]
        var readAt: ContinuousClock.Instant
    }

    private let state = Mutex<[RoomName: Entry]>([:])
    /// Rooms with more nicknames than this are served from the cache.
    let bigRoom: Int
    let maxAge: Duration
    /// Big rooms held at once (each costs about 100 bytes per member).
    let capacity: Int

    init(bigRoom: Int = 1000, maxAge: Duration = .seconds(1), capacity: Int = 8) {
        self.bigRoom = bigRoom
        self.maxAge = maxAge
        self.capacity = capacity
    }

    /// A page of `room`: from a fresh cached list, else from `read` (the broker:
    /// `after`, `limit` → a page); a page revealing a big room has the whole list read
    /// with `read(nil, .max)` and kept.
    func page(
        of room: RoomName, after: Nickname?, limit: Int, read: (Nickname?, Int) async throws -> PresencePage
    ) async throws -> PresencePage {
        let now = ContinuousClock.now
        let cached = state.withLock { $0[room] }
        if let cached, now - cached.readAt < maxAge { return Self.slice(cached.members, after: after, limit: limit) }
        if cached == nil {
            let page = try await read(after, limit)
            guard page.total > bigRoom else { return page }
        }
        let all = try await read(nil, .max)
        guard all.total > bigRoom else {
            state.withLock { _ = $0.removeValue(forKey: room) }
            return Self.slice(all.members, after: after, limit: limit)
        }
        state.withLock { rooms in
            rooms[room] = Entry(members: all.members, readAt: ContinuousClock.now)
            while rooms.count > capacity, let oldest = rooms.min(by: { $0.value.readAt < $1.value.readAt })?.key {
                rooms.removeValue(forKey: oldest)
            }
        }
        return Self.slice(all.members, after: after, limit: limit)
    }

    /// The page after `after` of a list sorted by ``Nickname/byteOrder``.
    static func slice(_ members: [RoomMember], after: Nickname?, limit: Int) -> PresencePage {
        var start = 0
        if let after {
            var high = members.count
            while start < high {
                let mid = (start + high) / 2
                if Nickname.byteOrder(after, members[mid].nickname) { high = mid } else { start = mid + 1 }
            }
        }
        let page = Array(members[start...].prefix(max(0, limit)))
        let more = start + page.count < members.count
        return PresencePage(total: members.count, members: page, next: more ? page.last?.nickname : nil)
    }
}
