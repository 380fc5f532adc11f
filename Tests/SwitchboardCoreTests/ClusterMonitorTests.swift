import Logging
import Testing
@testable import SwitchboardCore

/// The dashboard's cluster events come from changes between heartbeat samples; its
/// history and events are bounded.
@Suite struct ClusterMonitorTests {
    func monitor() -> ClusterMonitor {
        let chat = ChatService(
            configuration: ChatConfiguration(nodeID: "a"), broker: MemoryBroker(), hub: Hub(),
            signer: TokenSigner(secrets: ["secret"]), logger: Logger(label: "test"))
        return ClusterMonitor(chat: chat)
    }

    func node(
        _ id: String, seen: Int64, connections: Int = 1, ready: Bool = true, disconnects: Int = 0, reconnects: Int = 0,
        slow: Int = 0, draining: Bool = false, rooms: [(String, Int)] = []
    ) -> NodeStatus {
        NodeStatus(
            id: id, lastSeen: seen, connections: ["websocket": connections],
            report: .object([
                "in": .double(1), "out": .double(2), "draining": .bool(draining), "slowConsumers": .int(Int64(slow)),
                "redis": .object([
                    "ready": .bool(ready), "disconnects": .int(Int64(disconnects)), "reconnects": .int(Int64(reconnects)),
                ]),
                "rooms": .array(rooms.map { .object(["room": .string($0.0), "count": .int(Int64($0.1)), "nicknames": .array([])]) }),
            ]))
    }

    func kinds(_ monitor: ClusterMonitor, node: String) -> [String] {
        let snapshot = monitor.snapshot(since: nil, nodes: [], now: 0)
        guard case .array(let events)? = snapshot["events"] else { return [] }
        return events.compactMap { event in event["node"]?.stringValue == node ? event["kind"]?.stringValue : nil }
    }

    @Test("joined, stale, fresh, Redis lost and recovered, slow consumers, draining, gone")
    func events() {
        let monitor = monitor()
        monitor.record([node("a", seen: 1_000), node("b", seen: 1_000)], now: 1_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b").isEmpty, "nodes present at the first sample did not join")
        monitor.record([node("a", seen: 2_000), node("b", seen: 2_000), node("c", seen: 2_000)], now: 2_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "c") == ["joined"])
        monitor.record([node("a", seen: 7_000), node("b", seen: 2_000), node("c", seen: 7_000)], now: 7_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b") == ["stale"])
        monitor.record(
            [node("a", seen: 8_000), node("b", seen: 8_000, disconnects: 1, reconnects: 1, slow: 2), node("c", seen: 8_000, draining: true)],
            now: 8_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b") == ["stale", "fresh", "redis_lost", "redis_recovered", "slow_consumers"])
        // The broker is unreachable from here: the others are unknown, not gone.
        monitor.record([node("a", seen: 9_000, ready: false)], now: 9_000, ownID: "a", ownReady: false, sawCluster: false)
        #expect(kinds(monitor, node: "a") == ["started", "redis_down"])
        #expect(kinds(monitor, node: "c") == ["joined", "draining"])
        monitor.record([node("a", seen: 30_000), node("b", seen: 29_000)], now: 30_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "a") == ["started", "redis_down", "redis_up"])
        #expect(kinds(monitor, node: "c") == ["joined", "draining", "left"])
    }

    @Test("a Redis restarted without its data: absent nodes are not gone before the heartbeat TTL; back, they lost and recovered Redis")
    func redisWipe() {
        let monitor = monitor()
        monitor.record([node("a", seen: 1_000), node("b", seen: 1_000)], now: 1_000, ownID: "a", ownReady: true, sawCluster: true)
        monitor.record([node("a", seen: 2_000, ready: false)], now: 2_000, ownID: "a", ownReady: false, sawCluster: false)
        // Redis is back, empty: b has not written its heartbeat again yet.
        monitor.record([node("a", seen: 3_000, disconnects: 1, reconnects: 1)], now: 3_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b").isEmpty, "b was seen 2 s ago: not gone")
        monitor.record(
            [node("a", seen: 4_000, disconnects: 1, reconnects: 1), node("b", seen: 4_000, disconnects: 1, reconnects: 1)],
            now: 4_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b") == ["redis_lost", "redis_recovered"])
        // A node that never comes back is gone once the TTL has passed since its last heartbeat.
        monitor.record([node("a", seen: 15_999)], now: 15_999, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b") == ["redis_lost", "redis_recovered"])
        monitor.record([node("a", seen: 19_000)], now: 19_000, ownID: "a", ownReady: true, sawCluster: true)
        #expect(kinds(monitor, node: "b") == ["redis_lost", "redis_recovered", "left"])
    }

    @Test("rooms merge across nodes (largest count), busiest first; history and events are capped")
    func snapshotAndBounds() {
        let monitor = monitor()
        let nodes = [node("a", seen: 1, rooms: [("lobby", 3), ("x", 1)]), node("b", seen: 1, rooms: [("lobby", 4), ("y", 9)])]
        let snapshot = monitor.snapshot(since: nil, nodes: nodes, now: 1)
        guard case .array(let rooms)? = snapshot["rooms"] else { Issue.record("no rooms"); return }
        #expect(rooms.compactMap { $0["room"]?.stringValue } == ["y", "lobby", "x"])
        #expect(rooms[1]["count"] == .int(4))
        for second in 0..<(ClusterMonitor.historySamples + 50) {
            let now = Int64(second) * 1000
            // A node that turns stale and fresh again every other sample: an event each time.
            let flap = node("flap", seen: second % 2 == 0 ? now : now - 5_000)
            monitor.record([node("a", seen: now), flap], now: now, ownID: "a", ownReady: true, sawCluster: true)
        }
        let all = monitor.snapshot(since: nil, nodes: [], now: 0)
        guard case .array(let history)? = all["history"], case .array(let events)? = all["events"] else {
            Issue.record("no history or events")
            return
        }
        #expect(history.count == ClusterMonitor.historySamples)
        #expect(events.count == ClusterMonitor.maxEvents)
        guard case .array(let recent)? = monitor.snapshot(since: Int64(ClusterMonitor.historySamples + 45) * 1000, nodes: [], now: 0)["history"]
        else { return }
        #expect(recent.count == 4, "since= returns only newer samples")
    }
}
