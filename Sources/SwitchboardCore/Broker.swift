/// What a broker tells its node.
public enum BrokerEvent: Sendable {
    /// A message published to a stream this node subscribes to (`id` set when stored).
    case message(stream: StreamKey, id: MessageID?, envelope: Envelope)
    /// The connection to the cluster backend was lost: live delivery has stopped.
    case disconnected
    /// The backend is back and every subscription is active again. Messages published in
    /// between are in history: the node reads them (after subscribing) and de-duplicates.
    case reconnected
}

/// One page of a stream's history.
public struct HistoryPage: Sendable, Equatable {
    /// Entries after the requested id, oldest first.
    public var entries: [StreamEntry]
    /// True when entries after the requested id were trimmed from the bounded history, so
    /// the reader missed some and must be told (`reset`).
    public var gap: Bool

    public init(entries: [StreamEntry], gap: Bool) {
        self.entries = entries
        self.gap = gap
    }
}

/// A presence entry: `nickname` is in `room` through node `node`. `avatar`, when given,
/// is recorded as the nickname's avatar in that room (member lists); nil leaves the
/// recorded one as it is (a refresh).
public struct PresenceEntry: Hashable, Sendable {
    public var room: RoomName
    public var nickname: Nickname
    public var node: String
    public var avatar: String?

    public init(room: RoomName, nickname: Nickname, node: String, avatar: String? = nil) {
        self.room = room
        self.nickname = nickname
        self.node = node
        self.avatar = avatar
    }
}

/// One person in a room's member list: a nickname, once however many connections and
/// nodes it has there, with its avatar ("" when none was recorded).
public struct RoomMember: Sendable, Equatable {
    public var nickname: Nickname
    public var avatar: String

    public init(nickname: Nickname, avatar: String) {
        self.nickname = nickname
        self.avatar = avatar
    }
}

/// One page of a room's member list, cluster-wide, ordered by nickname (UTF-8 bytes).
public struct PresencePage: Sendable, Equatable {
    /// Distinct nicknames online in the room (the `presence` count, from the same data).
    public var total: Int
    /// At most the asked number of members with a nickname after the asked one.
    public var members: [RoomMember]
    /// The last nickname of the page when more follow it: the cursor of the next page.
    public var next: Nickname?

    public init(total: Int, members: [RoomMember], next: Nickname?) {
        self.total = total
        self.members = members
        self.next = next
    }

    /// Builds the page from every distinct live nickname (any order) and an avatar
    /// lookup: the brokers share this so their order and cursors agree.
    public static func page(
        of nicknames: some Collection<Nickname>, after: Nickname?, limit: Int, avatar: (Nickname) -> String
    ) -> PresencePage {
        let sorted = nicknames.sorted(by: Nickname.byteOrder)
        let start = after.map { after in sorted.firstIndex { Nickname.byteOrder(after, $0) } ?? sorted.endIndex } ?? sorted.startIndex
        let slice = sorted[start...].prefix(max(0, limit))
        let more = start + slice.count < sorted.endIndex
        return PresencePage(
            total: sorted.count, members: slice.map { RoomMember(nickname: $0, avatar: avatar($0)) },
            next: more ? slice.last : nil)
    }
}

extension Nickname {
    /// Orders nicknames by their UTF-8 bytes (code point order), the same on every node
    /// whatever its locale.
    public static func byteOrder(_ lhs: Nickname, _ rhs: Nickname) -> Bool {
        lhs.value.utf8.lexicographicallyPrecedes(rhs.value.utf8)
    }
}

/// A node as its heartbeats describe it (`GET /cluster`).
public struct NodeStatus: Sendable, Equatable {
    public var id: String
    /// Unix ms of the last heartbeat.
    public var lastSeen: Int64
    /// Live connections per transport name at the last heartbeat.
    public var connections: [String: Int]
    /// What the node reported about itself for `/dashboard` (`NodeReport`), if anything.
    public var report: JSONValue?

    public init(id: String, lastSeen: Int64, connections: [String: Int], report: JSONValue? = nil) {
        self.id = id
        self.lastSeen = lastSeen
        self.connections = connections
        self.report = report
    }

    /// The heartbeat's value: the connection counts (`encodedConnections`) plus the
    /// report under `~report` — which nodes that only read counts skip (not a number).
    public var encodedHeartbeat: String {
        var fields = connections.mapValues { JSONValue.int(Int64($0)) }
        if let report { fields[Self.reportKey] = report }
        return String(decoding: JSONValue.object(fields).jsonBytes, as: UTF8.self)
    }

    static let reportKey = "~report"

    /// The report in a heartbeat's value (`encodedHeartbeat`).
    public static func decodeReport(_ text: String) -> JSONValue? {
        guard case .object(let fields)? = JSONValue.parse(Array(text.utf8)), let report = fields[reportKey], case .object = report
        else { return nil }
        return report
    }

    /// `{"websocket":3,"sse":1}`: how heartbeats carry the counts.
    public var encodedConnections: String {
        String(decoding: JSONValue.object(connections.mapValues { .int(Int64($0)) }).jsonBytes, as: UTF8.self)
    }

    public static func decodeConnections(_ text: String) -> [String: Int] {
        guard case .object(let fields)? = JSONValue.parse(Array(text.utf8)) else { return [:] }
        return fields.compactMapValues { if case .int(let n) = $0 { Int(n) } else { nil } }
    }
}

/// Failures a broker reports; the server maps `unavailable` to `error` events and 503s.
public struct BrokerError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Kind: Equatable { case unavailable, protocolError }
    private let kind: Kind
    public let detail: String

    public static func unavailable(_ detail: String) -> BrokerError { .init(kind: .unavailable, detail: detail) }
    public static func protocolError(_ detail: String) -> BrokerError { .init(kind: .protocolError, detail: detail) }

    public var isUnavailable: Bool { kind == .unavailable }
    public var description: String { "\(kind): \(detail)" }
}

/// The cluster backend: publish/subscribe, bounded per-stream history with increasing ids,
/// presence and nickname claims. `MemoryBroker` serves one node in process;
/// `RedisBroker` serves a cluster. Both pass `BrokerConformance`.
public protocol Broker: Sendable {
    /// Starts delivering `BrokerEvent`s to `handler` (called from the broker's own
    /// context; it must not block). The ordering rule every broker keeps: the handler is
    /// never called by two threads at once, and the messages of one stream reach it in id
    /// order, whatever the number of concurrent publishers (`BrokerConformance`'s
    /// `concurrentPublishersDeliverInIdOrder`).
    func start(_ handler: @escaping @Sendable (BrokerEvent) -> Void) async throws
    /// Stops the broker; later calls fail with `unavailable`.
    func shutdown() async

    /// True while the backend is reachable.
    var isReady: Bool { get }

    /// Appends `envelope` to the history of every stream in `streams` and publishes it
    /// to their subscribers, atomically, under one id — greater than the last id of
    /// each of the streams — so a whisper has the same id in the recipient's and the
    /// sender's stream. Returns that id once per stream, in order.
    func publish(_ envelope: Envelope, to streams: [StreamKey]) async throws -> [MessageID]
    /// Publishes without storing (presence, joined/left): subscribers get `id == nil`.
    func broadcast(_ envelope: Envelope, to stream: StreamKey) async throws

    /// This node wants live messages of `stream`. Idempotent.
    func subscribe(_ stream: StreamKey) async throws
    /// Idempotent.
    func unsubscribe(_ stream: StreamKey) async throws

    /// The newest id of `stream`, or nil when it is empty.
    func head(of stream: StreamKey) async throws -> MessageID?
    /// Entries with id > `after` (all retained entries when nil), at most `limit`.
    func history(of stream: StreamKey, after: MessageID?, limit: Int) async throws -> HistoryPage

    /// Adds or refreshes entries that expire at `expiresAt` (Unix ms) unless refreshed.
    func setPresence(_ entries: [PresenceEntry], expiresAt: Int64) async throws
    func removePresence(_ entries: [PresenceEntry]) async throws
    /// Distinct nicknames with a live entry in `room`, cluster-wide, at `now` (Unix ms).
    func presenceCount(of room: RoomName, now: Int64) async throws -> Int
    /// A page of the distinct nicknames with a live entry in `room` at `now`, ordered by
    /// nickname (``Nickname/byteOrder``): at most `limit`, after `after` when given.
    /// Reads the same entries as `presenceCount`, so a crashed node's people leave the
    /// list when they leave the count.
    func presenceMembers(of room: RoomName, now: Int64, after: Nickname?, limit: Int) async throws -> PresencePage

    /// Claims `nickname` for `session` for `ttlSeconds`, or refreshes the claim when
    /// `session` already holds it. False when another live session holds it.
    func claimNickname(_ nickname: Nickname, session: String, ttlSeconds: Int) async throws -> Bool
    /// Releases the claim if `session` holds it.
    func releaseNickname(_ nickname: Nickname, session: String) async throws
    /// The session holding `nickname`, if any.
    func nicknameHolder(_ nickname: Nickname) async throws -> String?

    /// Records this node's heartbeat; it counts as live for `ttlMilliseconds`.
    func heartbeat(_ status: NodeStatus, ttlMilliseconds: Int64) async throws
    /// Nodes with a heartbeat newer than `now - maxAge` (Unix ms), by id.
    func liveNodes(now: Int64, maxAge: Int64) async throws -> [NodeStatus]

    /// Starts handing this node's node-addressed messages (``send(_:toNode:)`` naming
    /// `node`) to `handler`, in the order each sender thread sent them (the handler must be
    /// thread-safe). For the
    /// Socket.IO sessions another node holds (docs/protocol.md §8).
    func listen(asNode node: String, _ handler: @escaping @Sendable ([UInt8]) -> Void) async throws
    /// Sends `message` to the node `node`, without storing it; nothing happens when that
    /// node does not listen. Not async, so that the messages one thread sends leave in the
    /// order it sent them; delivery is best effort (the sender times out on replies).
    func send(_ message: [UInt8], toNode node: String)
}

extension Broker {
    /// A broker without node-addressed messages: nobody can reach this node's sessions.
    public func listen(asNode node: String, _ handler: @escaping @Sendable ([UInt8]) -> Void) async throws {
        throw BrokerError.unavailable("node-addressed messages are not supported by this broker")
    }

    public func send(_ message: [UInt8], toNode node: String) {}
}
