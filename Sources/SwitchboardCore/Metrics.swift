import Synchronization

/// Counters of one node, exposed by `GET /metrics` in Prometheus text format. Lock-free
/// atomics; hot paths add once per batch, not per recipient.
public final class Metrics: Sendable {
    public let clientEvents = Atomic<Int>(0)
    public let published = Atomic<Int>(0)
    public let brokerMessages = Atomic<Int>(0)
    public let deliveries = Atomic<Int>(0)
    public let brokerDisconnects = Atomic<Int>(0)
    public let brokerReconnects = Atomic<Int>(0)
    public let historyResets = Atomic<Int>(0)
    /// Last broker round trip (heartbeat), in microseconds; -1 when it failed.
    public let brokerRoundTripMicros = Atomic<Int>(-1)
    private let labelled = Mutex<[String: [String: Int]]>([:])

    public init() {}

    /// Adds to a counter with one label (`errors` by code, `disconnects` by reason).
    public func count(_ name: String, _ label: String, by amount: Int = 1) {
        labelled.withLock { $0[name, default: [:]][label, default: 0] += amount }
    }

    public func labelledCounters() -> [String: [String: Int]] { labelled.withLock { $0 } }

    /// The Prometheus text exposition (version 0.0.4).
    public func render(connections: [String: Int], ready: Bool, node: String) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(value)\n" }
        }
        func label(_ key: String, _ value: String) -> String {
            let escaped = value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
            return "{\(key)=\"\(escaped)\"}"
        }
        let transports = Transport.allCases.map(\.rawValue)
        var all = Set(transports)
        all.formUnion(connections.keys)
        metric(
            "switchboard_connections", "gauge", "Open connections by transport.",
            all.sorted().map { (label("transport", $0), connections[$0] ?? 0) })
        metric("switchboard_client_events_total", "counter", "Client events received (messages in).", [("", clientEvents.load(ordering: .relaxed))])
        metric("switchboard_published_total", "counter", "Messages accepted and published (say, whisper, publish).", [("", published.load(ordering: .relaxed))])
        metric("switchboard_broker_messages_total", "counter", "Messages received from the broker.", [("", brokerMessages.load(ordering: .relaxed))])
        metric("switchboard_deliveries_total", "counter", "Events handed to local connections (messages out).", [("", deliveries.load(ordering: .relaxed))])
        metric("switchboard_broker_ready", "gauge", "1 while the broker (Redis) is reachable.", [("", ready ? 1 : 0)])
        metric("switchboard_broker_disconnects_total", "counter", "Broker connection losses.", [("", brokerDisconnects.load(ordering: .relaxed))])
        metric("switchboard_broker_reconnects_total", "counter", "Broker reconnections.", [("", brokerReconnects.load(ordering: .relaxed))])
        let rtt = brokerRoundTripMicros.load(ordering: .relaxed)
        out += "# HELP switchboard_broker_roundtrip_seconds Last broker round trip (heartbeat).\n# TYPE switchboard_broker_roundtrip_seconds gauge\n"
        out += "switchboard_broker_roundtrip_seconds \(rtt < 0 ? "NaN" : String(Double(rtt) / 1_000_000))\n"
        metric("switchboard_history_resets_total", "counter", "Resumes whose cursor was older than the history window (history misses).", [("", historyResets.load(ordering: .relaxed))])
        let counters = labelledCounters()
        metric(
            "switchboard_errors_total", "counter", "Error events sent to clients, by code.",
            (counters["errors"] ?? [:]).sorted { $0.key < $1.key }.map { (label("code", $0.key), $0.value) })
        metric(
            "switchboard_gate_drops_total", "counter",
            "Live events a connection dropped as not newer than the last one it wrote on their stream (duplicates; never expected in normal operation).",
            (counters["gate_drops"] ?? [:]).sorted { $0.key < $1.key }.map { (label("reason", $0.key), $0.value) })
        metric(
            "switchboard_disconnects_total", "counter", "Connections ended by the server, by reason.",
            (counters["disconnects"] ?? [:]).sorted { $0.key < $1.key }.map { (label("reason", $0.key), $0.value) })
        metric("switchboard_node_info", "gauge", "This node.", [(label("node", node), 1)])
        return out
    }
}
