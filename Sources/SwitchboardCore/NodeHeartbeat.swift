import Synchronization

/// This node in the cluster's node list: a heartbeat with its status and its dashboard
/// report every `ChatService.heartbeatInterval` (which also measures the broker's round
/// trip for `/metrics`), and the list of live nodes.
public struct NodeHeartbeat: Sendable {
    public static let ttlMilliseconds: Int64 = 15_000
    let broker: any Broker
    let metrics: Metrics
    let clock: @Sendable () -> Int64
    /// This node as `/cluster` lists it.
    let status: @Sendable () -> NodeStatus
    /// What a heartbeat carries (the status with the dashboard's report).
    let beat: @Sendable () -> NodeStatus

    /// Live nodes of the cluster (this one included even when the broker is down).
    public func clusterNodes() async -> [NodeStatus] {
        let local = status()
        var nodes = (try? await broker.liveNodes(now: clock(), maxAge: Self.ttlMilliseconds)) ?? []
        if let index = nodes.firstIndex(where: { $0.id == local.id }) {
            nodes[index] = local
        } else {
            nodes.append(local)
        }
        return nodes.sorted { $0.id < $1.id }
    }

    /// Beats until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let start = ContinuousClock.now
            do {
                try await broker.heartbeat(beat(), ttlMilliseconds: Self.ttlMilliseconds)
                let elapsed = ContinuousClock.now - start
                metrics.brokerRoundTripMicros.store(
                    Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000),
                    ordering: .relaxed)
            } catch {
                metrics.brokerRoundTripMicros.store(-1, ordering: .relaxed)
            }
            try? await Task.sleep(for: ChatService.heartbeatInterval)
        }
    }
}

extension ChatService {
    static let heartbeatTTL: Int64 = NodeHeartbeat.ttlMilliseconds
    /// Heartbeats (with the dashboard's report) go out this often; a node two beats
    /// late shows as stale on `/dashboard`.
    public static let heartbeatInterval: Duration = .seconds(1)

    /// Distinct nicknames connected to this node.
    public var localNicknames: Int { claims.count }

    /// Open sessions on this node per transport.
    public var connectionsByTransport: [String: Int] {
        Dictionary(uniqueKeysWithValues: admission.byTransport.map { ($0.key.rawValue, $0.value) })
    }

    /// This node as `/cluster` shows it.
    public var localStatus: NodeStatus {
        NodeStatus(id: nodeID, lastSeen: clock(), connections: connectionsByTransport)
    }
}
