import Synchronization

/// Who is connected to this node, to which rooms, under which nickname; and the local
/// half of fan-out. It knows no wire format beyond the encoders it is given and no
/// broker: `ChatService` subscribes the node to a stream when `add` reports a first
/// local member, and unsubscribes when `remove` reports the last one gone.
public final class Hub: Sendable {
    struct Group {
        let loop: any DeliveryLoop
        var members: [ConnectionID: any Subscriber] = [:]
    }

    struct Audience {
        var groups: [ObjectIdentifier: Group] = [:]
        var nicknames: [Nickname: Int] = [:]
        var count = 0
    }

    /// What a membership change meant.
    public struct Change: Sendable, Equatable {
        /// The stream had no local member before (add) / has none now (remove).
        public var streamEdge: Bool
        /// This nickname had no local connection in it before (add) / has none now (remove).
        public var nicknameEdge: Bool
    }

    /// One delivery loop's recipients of a stream in one wire format.
    struct Route {
        let loop: any DeliveryLoop
        let format: WireFormat
        let members: [any Subscriber]
    }

    private struct State {
        var streams: [StreamKey: Audience] = [:]
        /// Each stream's recipients as handed to the loops, built on the first delivery
        /// after a membership change: a delivery does no work per recipient here.
        var routes: [StreamKey: [Route]] = [:]
        var connections = 0
    }

    private let state = Mutex(State())
    private let encoders: [WireFormat: FrameEncoder]

    /// The node's counters (deliveries are counted here, once per loop batch).
    public let metrics: Metrics

    public init(encoders: [WireFormat: FrameEncoder] = [.native: WireFormat.nativeEncoder], metrics: Metrics = Metrics()) {
        self.encoders = encoders
        self.metrics = metrics
    }

    /// Adds `subscriber` to the audience of `stream`.
    @discardableResult
    public func add(_ subscriber: any Subscriber, to stream: StreamKey) -> Change {
        state.withLock { state in
            // Moved out and back so they are uniquely referenced: mutating a copy would copy
            // the whole member table per join (O(n²) for n joins).
            var audience = state.streams.removeValue(forKey: stream) ?? Audience()
            defer { state.streams[stream] = audience }
            let key = ObjectIdentifier(subscriber.loop)
            var group = audience.groups.removeValue(forKey: key) ?? Group(loop: subscriber.loop)
            let added = group.members.updateValue(subscriber, forKey: subscriber.connectionID) == nil
            audience.groups[key] = group
            guard added else { return Change(streamEdge: false, nicknameEdge: false) }
            state.routes[stream] = nil
            let change = Change(streamEdge: audience.count == 0, nicknameEdge: audience.nicknames[subscriber.nickname] == nil)
            audience.count += 1
            audience.nicknames[subscriber.nickname, default: 0] += 1
            return change
        }
    }

    /// Removes `subscriber` from the audience of `stream`; nil when it was not in it.
    @discardableResult
    public func remove(_ subscriber: any Subscriber, from stream: StreamKey) -> Change? {
        state.withLock { state in
            guard var audience = state.streams.removeValue(forKey: stream) else { return nil }
            defer { if audience.count > 0 { state.streams[stream] = audience } }
            let key = ObjectIdentifier(subscriber.loop)
            guard var group = audience.groups.removeValue(forKey: key) else { return nil }
            let removed = group.members.removeValue(forKey: subscriber.connectionID) != nil
            if !group.members.isEmpty { audience.groups[key] = group }
            guard removed else { return nil }
            state.routes[stream] = nil
            audience.count -= 1
            let left = (audience.nicknames[subscriber.nickname] ?? 1) - 1
            audience.nicknames[subscriber.nickname] = left == 0 ? nil : left
            return Change(streamEdge: audience.count == 0, nicknameEdge: left == 0)
        }
    }

    /// Fans an event of `stream` out to every local member: encoded once per wire
    /// format, handed to each delivery loop once with all its recipients. Exclusions
    /// (`echo: false`, a whisper's sending connection) travel in the frame and are
    /// applied by each subscriber.
    public func deliver(_ event: ServerEvent, stream: StreamKey, id: MessageID?, envelope: Envelope?) {
        let routes: [Route] = state.withLock { state in
            if let routes = state.routes[stream] { return routes }
            guard let audience = state.streams[stream] else { return [] }
            var routes: [Route] = []
            for group in audience.groups.values {
                var byFormat: [WireFormat: [any Subscriber]] = [:]
                for member in group.members.values { byFormat[member.format, default: []].append(member) }
                for (format, members) in byFormat { routes.append(Route(loop: group.loop, format: format, members: members)) }
            }
            state.routes[stream] = routes
            return routes
        }
        guard !routes.isEmpty else { return }
        var frames: [WireFormat: Frame] = [:]
        for route in routes {
            let frame: Frame
            if let cached = frames[route.format] {
                frame = cached
            } else {
                frame = encode(event, format: route.format, stream: stream, id: id, envelope: envelope)
                frames[route.format] = frame
            }
            metrics.deliveries.add(route.members.count, ordering: .relaxed)
            route.loop.deliver(frame, to: route.members)
        }
    }

    /// Sends one event to one subscriber (replies, welcome, a newcomer's presence).
    public func send(_ event: ServerEvent, to subscriber: any Subscriber) {
        subscriber.loop.deliver(encode(event, format: subscriber.format, stream: nil, id: nil, envelope: nil), to: [subscriber])
    }

    /// Encodes `event` for `format` (the native format when no encoder is registered).
    public func encode(_ event: ServerEvent, format: WireFormat, stream: StreamKey?, id: MessageID?, envelope: Envelope?) -> Frame {
        (encoders[format] ?? WireFormat.nativeEncoder)(event, stream, id, envelope)
    }

    /// Local member count of `stream`.
    public func memberCount(of stream: StreamKey) -> Int {
        state.withLock { $0.streams[stream]?.count ?? 0 }
    }

    /// Distinct local nicknames in `stream`.
    public func nicknames(in stream: StreamKey) -> [Nickname] {
        state.withLock { Array(($0.streams[stream]?.nicknames ?? [:]).keys) }
    }

    /// Number of distinct local nicknames in `stream`.
    public func nicknameCount(in stream: StreamKey) -> Int {
        state.withLock { $0.streams[stream]?.nicknames.count ?? 0 }
    }

    /// Every local subscriber (each session is in its own user stream).
    public var subscribers: [any Subscriber] {
        state.withLock { state in
            var seen = Set<ConnectionID>()
            var result: [any Subscriber] = []
            for (key, audience) in state.streams {
                guard case .user = key else { continue }
                for group in audience.groups.values {
                    for (id, member) in group.members where seen.insert(id).inserted { result.append(member) }
                }
            }
            return result
        }
    }

    /// Every stream with at least one local member.
    public var streams: [StreamKey] {
        state.withLock { Array($0.streams.keys) }
    }

    /// Every local (room, nickname) pair, for presence refresh.
    public var roomMemberships: [(RoomName, Nickname)] {
        state.withLock { state in
            state.streams.flatMap { key, audience -> [(RoomName, Nickname)] in
                guard case .room(let room) = key else { return [] }
                return audience.nicknames.keys.map { (room, $0) }
            }
        }
    }
}
