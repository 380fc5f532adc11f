import Synchronization

/// What a node tells the cluster about itself with each heartbeat (`NodeStatus.report`),
/// for `/dashboard`: when it started, its message rates since the previous heartbeat,
/// its Redis state and round trip, whether it is draining, a few counters from which
/// the dashboard derives events, and its busiest rooms. Bounded: at most
/// `maxRooms` rooms with `maxNicknames` nicknames each.
public final class NodeReporter: Sendable {
    public static let maxRooms = 10
    public static let maxNicknames = 5

    /// Unix ms at which the node started.
    public let startedAt: Int64
    private let state = Mutex(State())

    struct State {
        var last: Sample?
        var rates = Rates()
        var draining = false
        /// The busiest rooms as of the last sample (listing rooms walks the hub's
        /// streams: once per heartbeat, not per dashboard request).
        var rooms: [(room: String, count: Int, nicknames: [String])] = []
    }

    struct Sample {
        var at: Int64
        var received: Int
        var delivered: Int
        var published: Int
    }

    struct Rates {
        var received = 0.0
        var delivered = 0.0
        var published = 0.0
    }

    public init(startedAt: Int64) {
        self.startedAt = startedAt
    }

    /// The node is draining (SIGTERM); reported until it exits.
    public func markDraining() {
        state.withLock { $0.draining = true }
    }

    public var isDraining: Bool { state.withLock { $0.draining } }

    /// Takes a sample of the counters at `now` (Unix ms) and updates the per-second rates
    /// (over the time since the previous sample).
    func sample(_ metrics: Metrics, now: Int64, rooms: [(room: String, count: Int, nicknames: [String])]) {
        let sample = Sample(
            at: now, received: metrics.clientEvents.load(ordering: .relaxed),
            delivered: metrics.deliveries.load(ordering: .relaxed), published: metrics.published.load(ordering: .relaxed))
        state.withLock { state in
            if let last = state.last, sample.at > last.at {
                let seconds = Double(sample.at - last.at) / 1000
                state.rates = Rates(
                    received: Double(max(0, sample.received - last.received)) / seconds,
                    delivered: Double(max(0, sample.delivered - last.delivered)) / seconds,
                    published: Double(max(0, sample.published - last.published)) / seconds)
            }
            state.last = sample
            state.rooms = rooms
        }
    }

    /// The report: rates and rooms from the last `sample`, counters read now.
    func report(metrics: Metrics, ready: Bool) -> JSONValue {
        let (rates, draining, rooms) = state.withLock { ($0.rates, $0.draining, $0.rooms) }
        let rtt = metrics.brokerRoundTripMicros.load(ordering: .relaxed)
        let counters = metrics.labelledCounters()
        func rounded(_ value: Double) -> JSONValue { .double((value * 10).rounded() / 10) }
        return .object([
            "startedAt": .int(startedAt),
            "in": rounded(rates.received),
            "out": rounded(rates.delivered),
            "published": rounded(rates.published),
            "redis": .object([
                "ready": .bool(ready),
                "rttMs": rtt < 0 ? .null : .double(Double(rtt / 10) / 100),
                "disconnects": .int(Int64(metrics.brokerDisconnects.load(ordering: .relaxed))),
                "reconnects": .int(Int64(metrics.brokerReconnects.load(ordering: .relaxed))),
            ]),
            "draining": .bool(draining),
            "slowConsumers": .int(Int64(counters["disconnects"]?["slow_consumer"] ?? 0)),
            "rooms": .array(
                rooms.prefix(Self.maxRooms).map { room in
                    .object([
                        "room": .string(room.room), "count": .int(Int64(room.count)),
                        "nicknames": .array(room.nicknames.prefix(Self.maxNicknames).map { .string($0) }),
                    ])
                }),
        ])
    }
}

extension ChatService {
    /// This node's busiest rooms: cluster-wide counts as last announced (local member
    /// count until one was), with a few local nicknames each.
    func busiestRooms() -> [(room: String, count: Int, nicknames: [String])] {
        var rooms: [(RoomName, Int)] = []
        for case .room(let room) in hub.streams {
            rooms.append((room, presence.lastCount(room) ?? hub.nicknameCount(in: .room(room))))
        }
        rooms.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0.value < $1.0.value }
        return rooms.prefix(NodeReporter.maxRooms).map { room, count in
            (room.value, count, hub.nicknames(in: .room(room)).map(\.value).sorted().prefix(NodeReporter.maxNicknames).map { $0 })
        }
    }

    /// The report as of now, with the rates and rooms of the last heartbeat.
    public func currentReport() -> JSONValue {
        reporter.report(metrics: metrics, ready: broker.isReady)
    }

    /// The report of the next heartbeat (samples the rates and rooms first).
    func heartbeatReport(now: Int64) -> JSONValue {
        reporter.sample(metrics, now: now, rooms: busiestRooms())
        return reporter.report(metrics: metrics, ready: broker.isReady)
    }
}
