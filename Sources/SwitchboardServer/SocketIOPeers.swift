import Logging
import ServiceLifecycle
import SocketIOHummingbird
import SwitchboardCore
import Synchronization

/// The other nodes as the Socket.IO endpoint reaches them: node-addressed broker
/// messages (`sb:to-node:{id}` on Redis) to forward a request for a session another node
/// holds, and the heartbeats of `sb:nodes` to tell a live node from a dead one — a
/// request for a session of a node whose heartbeat is older than ``staleAfter`` is
/// answered `Session ID unknown` at once instead of waiting for a reply that never comes.
final class SocketIOPeers: EngineIOPeers {
    let localNode: String
    private let broker: any Broker
    private let logger: Logger
    /// Nodes with a fresh heartbeat; nil until the first reading (everyone counts as live).
    private let live = Mutex<Set<String>?>(nil)
    /// When the node list was last read (Unix ms).
    private let lastRead = Mutex<Int64>(0)

    /// A node whose last heartbeat (one a second) is older than this counts as dead.
    static let staleAfter: Int64 = 4_000
    /// How often the node list is read (and forwarded requests of dead nodes answered).
    static let checkInterval: Duration = .milliseconds(500)
    /// Reads on demand (a request naming an unknown node) are at most this often (ms).
    static let refreshInterval: Int64 = 100

    init(chat: ChatService, logger: Logger) {
        self.localNode = chat.nodeID
        self.broker = chat.broker
        self.logger = logger
    }

    func isLive(_ node: String) -> Bool {
        live.withLock { $0?.contains(node) ?? true }
    }

    func send(_ message: [UInt8], to node: String) {
        broker.send(message, toNode: node)
    }

    /// Starts receiving the messages other nodes send to `endpoint`, after a first
    /// heartbeat: every session ID this node hands out names a node the others can find.
    func listen(_ endpoint: EngineIOEndpoint) async {
        try? await broker.heartbeat(
            NodeStatus(id: localNode, lastSeen: unixMilliseconds(), connections: [:]), ttlMilliseconds: NodeHeartbeat.ttlMilliseconds)
        do {
            try await broker.listen(asNode: localNode) { endpoint.receiveFromPeer($0) }
        } catch {
            // Redis is down: the subscription is made when it is back.
            logger.warning("socket.io peer channel not subscribed yet", metadata: ["error": "\(error)"])
        }
    }

    /// Reads the live nodes, at most once per ``refreshInterval``.
    func refresh() async {
        let now = unixMilliseconds()
        guard lastRead.withLock({ last in
            guard now - last >= Self.refreshInterval else { return false }
            last = now
            return true
        }) else { return }
        if let nodes = try? await broker.liveNodes(now: now, maxAge: NodeHeartbeat.ttlMilliseconds) {
            let fresh = Set(nodes.filter { $0.lastSeen >= now - Self.staleAfter }.map(\.id))
            live.withLock { $0 = fresh }
        }
    }

    /// Reads the live nodes every ``checkInterval`` until cancelled.
    func run(_ endpoint: EngineIOEndpoint) async {
        while !Task.isCancelled {
            await refresh()
            endpoint.checkPeers()
            try? await Task.sleep(for: Self.checkInterval)
        }
    }
}

/// Runs ``SocketIOPeers/run(_:)`` for the life of the server.
struct SocketIOPeersRunner: Service {
    let peers: SocketIOPeers
    let endpoint: EngineIOEndpoint

    func run() async throws {
        await cancelWhenGracefulShutdown { await peers.run(endpoint) }
    }
}
