import SwitchboardCore

/// Rooms and nicknames hashed into a fixed number of partitions, each with a hash tag
/// whose slot lies in its own equal share of the slot range — so partitions spread evenly
/// over the masters whatever their count (naive `{0}…{N}` tags pile onto few slots:
/// CRC16 of short decimal strings is far from uniform over a small set).
///
/// A stream's channel and history, a room's presence keys and a nickname's claim all sit
/// under their partition's tag (`sb:{tag}:…`, named by a per-partition `RedisKeys`), so
/// every script touches one slot. Every node must use the same partition count: it is
/// part of the key layout.
public struct RedisClusterPartitions: Sendable {
    /// The hash tag of each partition (the text inside the braces).
    public let tags: [String]
    /// The slot each partition's keys are in.
    public let slots: [Int]
    let keys: [RedisKeys]
    /// Keys of node heartbeats, all in one slot (`{nodes}`).
    let nodeKeys: RedisKeys
    /// `sb:to-node:` — a node's channel is this with its id as hash tag.
    let nodeChannelPrefix: String

    /// - Parameters:
    ///   - count: partitions, 1…`maxCount`.
    ///   - prefix: the key prefix; it must not contain `{` or `}`.
    public init(count: Int, prefix: String) {
        let count = min(max(1, count), Self.maxCount)
        var tags: [String] = []
        var slots: [Int] = []
        for partition in 0..<count {
            // The first decimal tag whose slot falls in this partition's share; the
            // search resumes where the previous one stopped, so tags are distinct.
            let low = partition * RedisClusterSlots.count / count
            let high = (partition + 1) * RedisClusterSlots.count / count
            var tag = 0
            while true {
                let slot = RedisClusterSlots.slot(of: Array(String(tag).utf8))
                if slot >= low, slot < high, !tags.contains(String(tag)) { break }
                tag += 1
            }
            tags.append(String(tag))
            slots.append(RedisClusterSlots.slot(of: Array(String(tag).utf8)))
        }
        self.tags = tags
        self.slots = slots
        self.keys = tags.map { RedisKeys(prefix: prefix + "{" + $0 + "}:") }
        self.nodeKeys = RedisKeys(prefix: prefix + "{nodes}:")
        self.nodeChannelPrefix = prefix + "to-node:"
    }

    public var count: Int { tags.count }

    /// At most this many partitions: 16 slots each at least, so finding the tags stays
    /// cheap (a few hundred CRC16s per tag).
    public static let maxCount = 1024

    /// The partition of a stream: FNV-1a of its name (`room:…`/`user:…`) modulo the count.
    public func partition(of stream: StreamKey) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in stream.description.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return Int(hash % UInt64(tags.count))
    }

    /// The keys of the partition `stream` is in.
    func keys(for stream: StreamKey) -> RedisKeys { keys[partition(of: stream)] }

    /// A room's presence keys share its room stream's partition.
    func keys(for room: RoomName) -> RedisKeys { keys(for: .room(room)) }

    /// A nickname's claim shares its private stream's partition.
    func keys(for nickname: Nickname) -> RedisKeys { keys(for: .user(nickname)) }

    func slot(of stream: StreamKey) -> Int { slots[partition(of: stream)] }

    /// The sharded channel of the messages addressed to node `id` (Socket.IO forwarding):
    /// `sb:to-node:{id}`, the node id its own hash tag, so node channels spread over the
    /// masters like partitions do.
    public func nodeChannel(_ id: String) -> String { nodeChannelPrefix + "{" + id + "}" }
}
