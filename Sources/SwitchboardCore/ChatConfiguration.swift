/// Plain configuration data for the chat semantics; only the executable reads the
/// environment and argv.
public struct ChatConfiguration: Sendable {
    /// This node's id (`NODE_ID`), shown in `welcome` and used in presence entries.
    public var nodeID: String
    public var eventLimits = ClientEventLimits()
    /// Open connections (sessions) per node.
    public var maxConnections = 100_000
    /// Open connections per client address.
    public var maxConnectionsPerAddress = 1_000
    /// Rooms one connection may be in at once.
    public var maxRoomsPerConnection = 64
    /// `joined`/`left` events are sent only while a room has fewer online nicknames than
    /// this (cluster-wide, as last counted): in a big room they would cost every member
    /// one frame per arrival — O(n²) frames when n people join — for a line nobody reads.
    /// `presence` counts are always sent (coalesced). 0 = never send them.
    public var joinLeaveLimit = 200
    /// Members per page of a room's member list when a request names no `limit`, and
    /// the size of the snapshots sent after a join and after changes (rooms under
    /// `joinLeaveLimit`).
    public var membersPageSize = 100
    /// Avatar: at most this many bytes.
    public var maxAvatarBytes = 256
    /// Events replayed at most per stream on resume.
    public var replayLimit = 1000
    /// A nickname claim lives this long without a refresh (outlives a short reconnect).
    public var nicknameClaimSeconds = 20
    /// Presence entries expire after this long without a refresh…
    public var presenceTTLMilliseconds: Int64 = 10_000
    /// …and nodes refresh theirs (and recount every local room) this often.
    public var presenceRefresh: Duration = .seconds(3)
    /// Presence changes are coalesced over this window.
    public var presenceCoalesce: Duration = .milliseconds(100)
    /// Token lifetime in seconds.
    public var tokenLifetimeSeconds: Int64 = 24 * 3600
    /// Per-connection token bucket: sustained events per second and burst.
    public var ratePerSecond: Double = 20
    public var rateBurst: Double = 40

    public init(nodeID: String) {
        self.nodeID = nodeID
    }
}
