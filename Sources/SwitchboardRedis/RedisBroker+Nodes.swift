import SwitchboardCore

/// A node as its heartbeats describe it (`RedisBroker.liveNodes`).
public struct RedisNodeStatus: Sendable, Equatable {
    public var id: String
    /// Unix ms of the last heartbeat.
    public var lastSeen: Int64
    /// Connections reported with the last heartbeat; nil when that report expired.
    public var connections: Int?

    public init(id: String, lastSeen: Int64, connections: Int?) {
        self.id = id
        self.lastSeen = lastSeen
        self.connections = connections
    }
}

extension RedisBroker {
    /// Records that `node` is alive with `connections` clients (`sb:nodes` and
    /// `sb:node:{id}`); call it every few seconds.
    /// - Parameters:
    ///   - ttlMilliseconds: how long the connection count is kept without a new heartbeat.
    ///   - now: Unix ms.
    public func heartbeat(node: String, connections: Int, ttlMilliseconds: Int64 = 30_000, now: Int64 = unixMilliseconds())
        async throws
    {
        _ = try await evaluate(
            .heartbeat, keys: [keys.nodes, keys.node(node)],
            arguments: [bytes(String(now)), bytes(node), bytes(String(connections)), bytes(String(max(1, ttlMilliseconds)))])
    }

    /// Nodes whose last heartbeat is at most `maxAge` ms old, oldest heartbeat first;
    /// older ones are removed from `sb:nodes`.
    public func liveNodes(maxAge: Int64 = 30_000, now: Int64 = unixMilliseconds()) async throws -> [RedisNodeStatus] {
        let reply = try await evaluate(
            .liveNodes, keys: [keys.nodes], arguments: [bytes(String(now - maxAge)), bytes(keys.node(""))])
        guard let flat = reply.array, flat.count % 3 == 0 else { throw malformed("liveNodes", reply) }
        return try stride(from: 0, to: flat.count, by: 3).map { index in
            guard let id = flat[index].text, let score = flat[index + 1].text.flatMap({ Double($0) }) else {
                throw malformed("liveNodes", reply)
            }
            return RedisNodeStatus(id: id, lastSeen: Int64(score), connections: flat[index + 2].text.flatMap { Int($0) })
        }
    }
}

extension RedisBroker {
    public func heartbeat(_ status: NodeStatus, ttlMilliseconds: Int64) async throws {
        _ = try await evaluate(
            .heartbeat, keys: [keys.nodes, keys.node(status.id)],
            arguments: [
                bytes(String(status.lastSeen)), bytes(status.id), bytes(status.encodedHeartbeat),
                bytes(String(max(1, ttlMilliseconds))),
            ])
    }

    public func liveNodes(now: Int64, maxAge: Int64) async throws -> [NodeStatus] {
        let reply = try await evaluate(.liveNodes, keys: [keys.nodes], arguments: [bytes(String(now - maxAge)), bytes(keys.node(""))])
        guard let flat = reply.array, flat.count % 3 == 0 else { throw malformed("liveNodes", reply) }
        return try stride(from: 0, to: flat.count, by: 3).map { index in
            guard let id = flat[index].text, let score = flat[index + 1].text.flatMap({ Double($0) }) else {
                throw malformed("liveNodes", reply)
            }
            let value = flat[index + 2].text ?? ""
            return NodeStatus(
                id: id, lastSeen: Int64(score), connections: NodeStatus.decodeConnections(value), report: NodeStatus.decodeReport(value))
        }.sorted { $0.id < $1.id }
    }
}
