/// Who is online in a room, cluster-wide: pages of the member list from the broker's
/// presence entries (the data the `presence` counts come from).
extension ChatService {
    /// One page of `room`'s members: after the cursor `after`, at most `limit` (the
    /// configured page size when nil, never more than ``ClientEvent/maxMembersPage``).
    /// For `members` requests and `GET /api/rooms/{room}/members`; rooms are open, so
    /// anyone logged in may ask, like anyone may join.
    public func members(of room: RoomName, after: Nickname?, limit: Int?) async throws(EventError) -> PresencePage {
        let size = min(max(1, limit ?? configuration.membersPageSize), ClientEvent.maxMembersPage)
        do {
            return try await presence.requestedMembers(of: room, after: after, limit: size)
        } catch {
            throw EventError(.unavailable, "the cluster backend is unavailable")
        }
    }

    /// The answer to a `members` request: the page as a `members` event carrying `ref`.
    func membersReply(_ room: RoomName, after: Nickname?, limit: Int?, ref: JSONValue?) async throws(EventError) -> ServerEvent {
        .members(ref: ref, room: room, page: try await members(of: room, after: after, limit: limit))
    }

    /// The member list snapshot a joining connection gets after the room's `presence`:
    /// the first page, for rooms under the join/leave limit (`count` being the room's
    /// count); none for bigger rooms (a client asks with `members`) or when the broker
    /// fails (the count already told the client something; the next change sends one).
    func membersSnapshot(_ room: RoomName, count: Int) async -> [ServerEvent] {
        guard PresenceTracker.listsMembers(count: count, configuration: configuration),
            let page = try? await members(of: room, after: nil, limit: nil),
            // The count handed in may be the node's last one, older than the list.
            PresenceTracker.listsMembers(count: page.total, configuration: configuration)
        else { return [] }
        if PresenceTracker.pushesMembers(count: page.total, configuration: configuration) { presence.handedOut(room, page: page) }
        return [.members(ref: nil, room: room, page: page)]
    }
}
