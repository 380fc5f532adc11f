import Synchronization

/// Cluster-wide online counts per room, coalesced: a change marks the room dirty, and
/// one recount per window sends `presence` to local members if the count changed.
/// Nodes refresh their own entries; a crashed node's entries expire by themselves, and
/// the periodic recount lets the survivors notice. In rooms under the join/leave limit
/// the recount reads the first page of the member list instead (its total is the count)
/// and sends `members` when the page changed.
final class PresenceTracker: Sendable {
    private let configuration: ChatConfiguration
    private let broker: any Broker
    private let hub: Hub
    private let clock: @Sendable () -> Int64
    private let state = Mutex(State())
    private let memberLists = MemberListCache()

    struct State {
        var dirty: Set<RoomName> = []
        var lastSent: [RoomName: Int] = [:]
        /// Rooms whose local members may hold different counts: a count handed out to an
        /// opening differed from the record (two openings and a recount raced). The next
        /// recount announces to everyone whatever the record says. Until then no handed-out
        /// count is recorded: recording one would make that recount silent, leaving the
        /// members told before with a stale count until the room's count next changed.
        var unsettled: Set<RoomName> = []
        var lastCounted: [RoomName: ContinuousClock.Instant] = [:]
        /// The last member list page announced per room (rooms under the limit).
        var lastPage: [RoomName: PresencePage] = [:]
        /// The same as `unsettled`, for member list pages.
        var unsettledPages: Set<RoomName> = []
        /// Avatars of the nicknames this node has in rooms, for refreshes (an entry
        /// refreshed after a Redis restart must bring its avatar back).
        var avatars: [Nickname: String] = [:]
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
    /// openings raced), the room is unsettled and recounted, and that recount announces
    /// to everyone.
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

    /// A member-list snapshot handed to a joining connection: recorded like a count
    /// handed out, so the next recount does not push the very same page again (it woke
    /// waiting polls for nothing); a page that differs from the recorded one unsettles
    /// the room, so the next recount pushes its page to everyone.
    func handedOut(_ room: RoomName, page: PresencePage) {
        state.withLock { state in
            guard !state.unsettledPages.contains(room) else { return }
            switch state.lastPage[room] {
            case nil: state.lastPage[room] = page
            case page?: break
            case _?:
                state.unsettledPages.insert(room)
                state.dirty.insert(room)
            }
        }
    }

    private func handedOut(_ room: RoomName, count: Int) {
        state.withLock { state in
            guard !state.unsettled.contains(room) else { return }
            switch state.lastSent[room] {
            case nil: state.lastSent[room] = count
            case count?: break
            case _?:
                state.unsettled.insert(room)
                state.dirty.insert(room)
            }
        }
    }

    /// Whether member lists are pushed in a room of `count` nicknames: the rule of
    /// `joined`/`left` (under the join/leave limit).
    static func listsMembers(count: Int, configuration: ChatConfiguration) -> Bool {
        count <= configuration.joinLeaveLimit && configuration.joinLeaveLimit > 0
    }

    /// Rooms of up to this many nicknames get their member list pushed when it changes:
    /// a push is a page to every member, so it costs O(n²) bytes per change. Bigger rooms
    /// under the join/leave limit get the snapshot after a join and `joined`/`left`, and
    /// ask for the list when their count and their list disagree (a crashed node's users).
    static let pushedMembersLimit = 32

    static func pushesMembers(count: Int, configuration: ChatConfiguration) -> Bool {
        listsMembers(count: count, configuration: configuration) && count <= pushedMembersLimit
    }

    /// One page of `room`'s member list, cluster-wide, now.
    func members(of room: RoomName, after: Nickname?, limit: Int) async throws -> PresencePage {
        try await broker.presenceMembers(of: room, now: clock(), after: after, limit: limit)
    }

    /// One page of `room`'s member list for a request: in a big room, from the node's
    /// copy of the whole list, read at most once a second (`MemberListCache`).
    func requestedMembers(of room: RoomName, after: Nickname?, limit: Int) async throws -> PresencePage {
        try await memberLists.page(of: room, after: after, limit: limit) { after, limit in
            try await self.members(of: room, after: after, limit: limit)
        }
    }

    /// Records `entry` in the broker with its avatar (a local arrival), remembering the
    /// avatar for refreshes.
    func add(_ entry: PresenceEntry) async throws {
        if let avatar = entry.avatar { state.withLock { $0.avatars[entry.nickname] = avatar } }
        try await broker.setPresence([entry], expiresAt: clock() + configuration.presenceTTLMilliseconds)
    }

    /// Announces `room`'s count (and page) to every local member at the next recount,
    /// whatever the record says: a value handed to one member may have been written after
    /// a newer one (a `join`'s reply, read before a recount that was delivered first).
    func unsettle(_ room: RoomName) {
        state.withLock { state in
            state.unsettled.insert(room)
            state.unsettledPages.insert(room)
            state.dirty.insert(room)
        }
    }

    /// A reply carrying `count` (and `page`, when the room's list is pushed) for `room` was
    /// written to a connection. If the record says otherwise, a recount may have delivered
    /// the record's value first and the reply overrode it: `unsettle`. If it agrees, the
    /// connection holds what everyone holds, and nothing more is sent.
    func replied(_ room: RoomName, count: Int, page: PresencePage?) {
        let stale = state.withLock { state -> Bool in
            if state.lastSent[room] != count { return true }
            guard let page, Self.pushesMembers(count: page.total, configuration: configuration) else { return false }
            return state.lastPage[room] != page
        }
        if stale { unsettle(room) }
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
        let avatars = state.withLock { state in
            let here = Set(memberships.map(\.1))
            state.avatars = state.avatars.filter { here.contains($0.key) }
            return state.avatars
        }
        let entries = memberships.map {
            PresenceEntry(room: $0.0, nickname: $0.1, node: configuration.nodeID, avatar: avatars[$0.1])
        }
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
                    state.lastPage.removeValue(forKey: room)
                    state.unsettled.remove(room)
                    state.unsettledPages.remove(room)
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
            guard let recounted = await recount(room) else {
                state.withLock { _ = $0.dirty.insert(room) }
                continue
            }
            let (count, page) = recounted
            let (countChanged, pageChanged) = state.withLock { state -> (Bool, Bool) in
                let countChanged = state.unsettled.remove(room) != nil || state.lastSent[room] != count
                state.lastSent[room] = count
                let pageUnsettled = state.unsettledPages.remove(room) != nil
                let pageChanged = page != nil && (pageUnsettled || state.lastPage[room] != page)
                state.lastPage[room] = page
                return (countChanged, pageChanged)
            }
            if countChanged { hub.deliver(.presence(room: room, count: count), stream: .room(room), id: nil, envelope: nil) }
            if pageChanged, let page {
                hub.deliver(.members(ref: nil, room: room, page: page), stream: .room(room), id: nil, envelope: nil)
            }
        }
    }

    /// The room's count, with the first page of its member list when the room's list is
    /// pushed (`pushesMembers`, as last counted): one broker call, two when a room comes
    /// back under that size.
    private func recount(_ room: RoomName) async -> (Int, PresencePage?)? {
        let last = state.withLock { $0.lastSent[room] } ?? 0
        if !Self.pushesMembers(count: last, configuration: configuration) {
            guard let count = try? await broker.presenceCount(of: room, now: clock()) else { return nil }
            // Still big; else small again: the list too, now.
            guard Self.pushesMembers(count: count, configuration: configuration) else { return (count, nil) }
        }
        guard let page = try? await members(of: room, after: nil, limit: configuration.membersPageSize) else { return nil }
        return (page.total, Self.pushesMembers(count: page.total, configuration: configuration) ? page : nil)
    }
}
