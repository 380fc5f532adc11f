import Synchronization

/// The cluster as `/dashboard` shows it, from the nodes' heartbeats in the broker (each
/// carries the node's `NodeReport`): sampled every second by every node, so any node
/// answers for the whole cluster. Keeps the last `historySamples` samples (charts) and
/// the last `maxEvents` cluster events it derived from changes between samples: nodes
/// joining, turning stale (no heartbeat for `staleAfter`), coming back and leaving
/// (dropped from the broker after `ChatService.heartbeatTTL`), draining, Redis lost and
/// recovered, slow consumers cut off. Memory is bounded by those caps and
/// `maxNodes`.
public final class ClusterMonitor: Sendable {
    public static let historySamples = 300
    public static let maxEvents = 100
    public static let maxNodes = 64
    /// A node whose last heartbeat is older than this shows as stale.
    public static let staleAfter: Int64 = 3_500

    private let chat: ChatService
    private let clock: @Sendable () -> Int64
    private let state = Mutex(State())

    struct State {
        var samples: [Sample] = []
        var events: [Event] = []
        var known: [String: Known] = [:]
        var nextEvent = 1
        var ownReady: Bool?
        var started = false
    }

    struct Sample {
        var at: Int64
        var nodes: [String: Point]
    }

    struct Point {
        var connections: Int
        var out: Double
        var received: Double
    }

    /// What the previous sample knew of a node.
    struct Known {
        /// The node's latest heartbeat (Unix ms).
        var lastSeen: Int64
        var stale: Bool
        var ready: Bool?
        var draining: Bool
        var disconnects: Int
        var reconnects: Int
        var slowConsumers: Int
    }

    struct Event {
        var seq: Int
        var at: Int64
        var node: String
        var kind: String
        var text: String
    }

    public init(chat: ChatService, clock: @escaping @Sendable () -> Int64 = unixMilliseconds) {
        self.chat = chat
        self.clock = clock
    }

    /// Samples the cluster every heartbeat interval until cancelled.
    public func run() async {
        while !Task.isCancelled {
            await sampleOnce()
            try? await Task.sleep(for: ChatService.heartbeatInterval)
        }
    }

    /// One sample: this node as it is now, the others from their heartbeats.
    public func sampleOnce() async {
        let now = clock()
        let ready = chat.broker.isReady
        var nodes: [NodeStatus]? = nil
        if ready { nodes = try? await chat.broker.liveNodes(now: now, maxAge: ChatService.heartbeatTTL) }
        var own = chat.localStatus
        own.report = chat.currentReport()
        var all = (nodes ?? []).filter { $0.id != own.id }.prefix(Self.maxNodes - 1).map { $0 }
        all.append(own)
        record(all, now: now, ownID: own.id, ownReady: ready, sawCluster: nodes != nil)
    }

    /// Records a sample of `nodes` and the events since the previous one. `sawCluster`:
    /// the broker answered (otherwise nodes missing from `nodes` are unknown, not gone).
    func record(_ nodes: [NodeStatus], now: Int64, ownID: String, ownReady: Bool, sawCluster: Bool) {
        state.withLock { state in
            func event(_ node: String, _ kind: String, _ text: String) {
                state.events.append(Event(seq: state.nextEvent, at: now, node: node, kind: kind, text: text))
                state.nextEvent += 1
                if state.events.count > Self.maxEvents { state.events.removeFirst(state.events.count - Self.maxEvents) }
            }
            if !state.started {
                state.started = true
                event(ownID, "started", "dashboard data source started; \(nodes.count) node(s) live")
            }
            if state.ownReady != ownReady {
                if state.ownReady != nil || !ownReady {
                    event(ownID, ownReady ? "redis_up" : "redis_down", ownReady ? "Redis reachable again" : "Redis unreachable")
                }
                state.ownReady = ownReady
            }
            var seen = Set<String>()
            var points: [String: Point] = [:]
            for node in nodes {
                seen.insert(node.id)
                let report = node.report
                let redis = report?["redis"]
                let stale = node.id != ownID && now - node.lastSeen > Self.staleAfter
                let current = Known(
                    lastSeen: node.lastSeen, stale: stale, ready: redis?["ready"].flatMap(Self.bool), draining: report?["draining"].flatMap(Self.bool) ?? false,
                    disconnects: Self.int(redis?["disconnects"]), reconnects: Self.int(redis?["reconnects"]),
                    slowConsumers: Self.int(report?["slowConsumers"]))
                if let before = state.known[node.id] {
                    if stale != before.stale {
                        let text = stale ? "no heartbeat for \((now - node.lastSeen) / 1000) s" : "heartbeats again"
                        event(node.id, stale ? "stale" : "fresh", text)
                    }
                    if node.id != ownID, let ready = current.ready, let was = before.ready, ready != was {
                        event(node.id, ready ? "redis_up" : "redis_down", ready ? "Redis reachable again" : "Redis unreachable")
                    }
                    if current.disconnects > before.disconnects {
                        event(node.id, "redis_lost", "lost its Redis connection (\(current.disconnects - before.disconnects)×)")
                    }
                    if current.reconnects > before.reconnects {
                        event(node.id, "redis_recovered", "reconnected to Redis")
                    }
                    if current.slowConsumers > before.slowConsumers {
                        let n = current.slowConsumers - before.slowConsumers
                        event(node.id, "slow_consumers", "cut off \(n) slow consumer\(n == 1 ? "" : "s")")
                    }
                    if current.draining, !before.draining { event(node.id, "draining", "draining (SIGTERM)") }
                } else if !state.samples.isEmpty {
                    event(node.id, "joined", "joined the cluster")
                    if current.draining { event(node.id, "draining", "draining (SIGTERM)") }
                }
                state.known[node.id] = current
                points[node.id] = Point(
                    connections: node.connections.values.reduce(0, +), out: Self.double(report?["out"]),
                    received: Self.double(report?["in"]))
            }
            if sawCluster {
                // Absent is not yet gone: a Redis restarted without its data has lost every
                // heartbeat, and the nodes write theirs again as they reconnect. A node has
                // left when it drained away or has not been seen for the heartbeat TTL (when
                // the broker drops it anyway); until then it keeps its counters, so coming
                // back reads as "Redis lost and recovered", not as a departure and a join.
                for (id, known) in state.known
                where !seen.contains(id) && (known.draining || now - known.lastSeen >= ChatService.heartbeatTTL) {
                    let text =
                        known.draining ? "left (drained)"
                        : "gone (no heartbeat for \(ChatService.heartbeatTTL / 1000) s)"
                    event(id, "left", text)
                    state.known[id] = nil
                }
            }
            state.samples.append(Sample(at: now, nodes: points))
            if state.samples.count > Self.historySamples { state.samples.removeFirst(state.samples.count - Self.historySamples) }
        }
    }

    /// The dashboard's data: the latest sample's nodes in full, the busiest rooms of the
    /// cluster, the history after `since` (Unix ms; all of it when nil) and the events.
    public func snapshot(since: Int64?, nodes: [NodeStatus], now: Int64) -> JSONValue {
        let ownID = chat.nodeID
        var rooms: [String: (count: Int, nicknames: Set<String>, nodes: [String])] = [:]
        let list: [JSONValue] = nodes.map { node in
            let report = node.report
            for case .object(let room) in Self.array(report?["rooms"]) {
                guard let name = room["room"]?.stringValue else { continue }
                var entry = rooms[name] ?? (0, [], [])
                entry.count = max(entry.count, Self.int(room["count"]))
                for case .string(let nickname) in Self.array(room["nicknames"]) where entry.nicknames.count < NodeReporter.maxNicknames {
                    entry.nicknames.insert(nickname)
                }
                entry.nodes.append(node.id)
                rooms[name] = entry
            }
            let age = max(0, now - node.lastSeen)
            var fields: [String: JSONValue] = [
                "id": .string(node.id),
                "self": .bool(node.id == ownID),
                "lastSeen": .int(node.lastSeen),
                "age": .int(node.id == ownID ? 0 : age),
                "stale": .bool(node.id != ownID && age > Self.staleAfter),
                "connections": .object(node.connections.mapValues { .int(Int64($0)) }),
                "total": .int(Int64(node.connections.values.reduce(0, +))),
            ]
            if case .object(let reported)? = report {
                for key in ["startedAt", "in", "out", "published", "redis", "draining", "slowConsumers"] {
                    if let value = reported[key] { fields[key] = value }
                }
            }
            return .object(fields)
        }
        let busiest = rooms.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key < $1.key }
            .prefix(NodeReporter.maxRooms)
            .map { name, entry -> JSONValue in
                .object([
                    "room": .string(name), "count": .int(Int64(entry.count)),
                    "nicknames": .array(entry.nicknames.sorted().map { .string($0) }),
                    "nodes": .array(entry.nodes.sorted().map { .string($0) }),
                ])
            }
        let (samples, events) = state.withLock { state in
            (since.map { since in state.samples.filter { $0.at > since } } ?? state.samples, state.events)
        }
        return .object([
            "node": .string(ownID),
            "now": .int(now),
            "heartbeatMs": .int(Int64(ChatService.heartbeatInterval.components.seconds * 1000)),
            "staleAfterMs": .int(Self.staleAfter),
            "goneAfterMs": .int(ChatService.heartbeatTTL),
            "nodes": .array(list),
            "rooms": .array(Array(busiest)),
            "history": .array(
                samples.map { sample in
                    .object([
                        "t": .int(sample.at),
                        "nodes": .object(
                            sample.nodes.mapValues { point in
                                .object(["c": .int(Int64(point.connections)), "out": .double(point.out), "in": .double(point.received)])
                            }),
                    ])
                }),
            "events": .array(
                events.map { event in
                    .object([
                        "seq": .int(Int64(event.seq)), "t": .int(event.at), "node": .string(event.node), "kind": .string(event.kind),
                        "text": .string(event.text),
                    ])
                }),
        ])
    }

    /// The snapshot of the cluster as it is now (one broker read).
    public func snapshot(since: Int64?) async -> JSONValue {
        let now = clock()
        var nodes: [NodeStatus] = []
        if chat.broker.isReady, let live = try? await chat.broker.liveNodes(now: now, maxAge: ChatService.heartbeatTTL) {
            nodes = live.filter { $0.id != chat.nodeID }.prefix(Self.maxNodes - 1).map { $0 }
        }
        var own = chat.localStatus
        own.report = chat.currentReport()
        nodes.append(own)
        return snapshot(since: since, nodes: nodes.sorted { $0.id < $1.id }, now: now)
    }

    static func int(_ value: JSONValue?) -> Int {
        switch value {
        case .int(let n)?: Int(clamping: n)
        case .double(let d)? where d.isFinite && abs(d) < 1e15: Int(Int64(d))
        default: 0
        }
    }

    static func double(_ value: JSONValue?) -> Double {
        switch value {
        case .int(let n)?: Double(n)
        case .double(let d)?: d
        default: 0
        }
    }

    static func array(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let items)? = value { return items }
        return []
    }

    static func bool(_ value: JSONValue) -> Bool? {
        if case .bool(let b) = value { return b }
        return nil
    }
}
