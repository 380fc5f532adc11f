import SwitchboardCore
import SwitchboardRedis
import Synchronization

/// Brokers made by one test, shut down before its server goes away.
final class BrokerPool: Sendable {
    private let brokers = Mutex<[RedisBroker]>([])
    let port: Int

    init(port: Int) {
        self.port = port
    }

    /// A broker on this pool's server, with a key prefix no other test uses.
    func make(historyLimit: Int = 100, configure: (inout RedisBroker.Configuration) -> Void = { _ in }) -> RedisBroker {
        var configuration = RedisBroker.Configuration(
            url: RedisURL(host: "127.0.0.1", port: port), keyPrefix: "t\(UInt64.random(in: 0...UInt64.max)):",
            historyLimit: historyLimit)
        configure(&configuration)
        let broker = RedisBroker(configuration: configuration)
        brokers.withLock { $0.append(broker) }
        return broker
    }

    func shutdownAll() async {
        for broker in brokers.withLock({ $0 }) { await broker.shutdown() }
    }
}

/// Collects broker events.
final class EventLog: Sendable {
    private let events = Mutex<[BrokerEvent]>([])

    func record(_ event: BrokerEvent) { events.withLock { $0.append(event) } }

    var all: [BrokerEvent] { events.withLock { $0 } }

    var messages: [(StreamKey, MessageID?, Envelope)] {
        all.compactMap { if case .message(let s, let i, let e) = $0 { (s, i, e) } else { nil } }
    }

    /// "d" for disconnected, "r" for reconnected, in order.
    var transitions: String {
        all.compactMap {
            switch $0 {
            case .disconnected: "d"
            case .reconnected: "r"
            case .message: nil
            }
        }.joined()
    }

    /// Waits until `condition` holds; false after `timeout`.
    func wait(timeout: Duration = .seconds(5), until condition: (EventLog) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition(self) {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }
}

/// Polls `condition` until it holds; false after `timeout`.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return true
}

let lobby = RoomName("lobby")!
let alice = Nickname("alice")!

func chat(_ text: String) -> Envelope {
    Envelope(.message(id: nil, room: lobby, from: Sender(nickname: alice, avatar: "1.jpg"), text: text, ts: 1))
}
