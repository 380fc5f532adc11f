import SwitchboardCore

/// Every Redis key and pub/sub channel Switchboard uses, under one configurable prefix
/// (default `sb:`). ARCHITECTURE.md §3 is the table this mirrors.
public struct RedisKeys: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String = "sb:") {
        self.prefix = prefix
    }

    /// Pub/sub channel of live events: `sb:room:{room}` or `sb:user:{nickname}`.
    public func channel(_ stream: StreamKey) -> String {
        prefix + stream.description
    }

    /// Bounded history stream: `sb:hist:room:{room}` or `sb:hist:user:{nickname}`.
    public func history(_ stream: StreamKey) -> String {
        prefix + "hist:" + stream.description
    }

    /// Sorted set of who is in `room`: score = expiry (Unix ms), member = `node|nickname`.
    public func presence(_ room: RoomName) -> String {
        prefix + "presence:" + room.value
    }

    /// Hash of the avatars of the nicknames in `room`'s presence set: field = nickname,
    /// value = avatar. Expires with the presence set; fields of nicknames gone from the
    /// set are dropped when the room is counted.
    public func presenceAvatars(_ room: RoomName) -> String {
        prefix + "presence-avatars:" + room.value
    }

    /// The presence member of `entry`: `node|nickname` (a nickname never contains `|`).
    public func presenceMember(_ entry: PresenceEntry) -> String {
        entry.node + "|" + entry.nickname.value
    }

    /// String with TTL holding the session that claims `nickname`.
    public func nickname(_ nickname: Nickname) -> String {
        prefix + "nick:" + nickname.value
    }

    /// Sorted set of node heartbeats: score = last heartbeat (Unix ms), member = node id.
    public var nodes: String { prefix + "nodes" }

    /// Pub/sub channel of the messages addressed to node `id` (Socket.IO requests and
    /// WebSocket frames for the sessions it holds): `sb:to-node:{id}`.
    public func nodeChannel(_ id: String) -> String {
        prefix + "to-node:" + id
    }

    /// String with TTL: the connection count a node reported with its last heartbeat.
    public func node(_ id: String) -> String {
        prefix + "node:" + id
    }
}
