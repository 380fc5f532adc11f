/// A wire format: events are encoded once per format per message, then the same bytes
/// go to every local subscriber using it.
public struct WireFormat: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    /// The native JSON events of PROTOCOL.md (WebSocket, SSE, polling, iframe, JSONP).
    public static let native = WireFormat("native")
    public var description: String { name }
}

/// One encoded event, shared by every recipient of its format.
public final class Frame: Sendable {
    /// The encoded event.
    public let bytes: [UInt8]
    /// The event's type name (SSE `event:` line).
    public let type: String
    /// The stream and id, for cursors and de-duplication; nil for ephemeral events.
    public let stream: StreamKey?
    public let id: MessageID?
    /// Who must not receive it.
    public let excludeNickname: Nickname?
    public let excludeConnection: ConnectionID?

    public init(
        bytes: [UInt8], type: String, stream: StreamKey? = nil, id: MessageID? = nil,
        excludeNickname: Nickname? = nil, excludeConnection: ConnectionID? = nil
    ) {
        self.bytes = bytes
        self.type = type
        self.stream = stream
        self.id = id
        self.excludeNickname = excludeNickname
        self.excludeConnection = excludeConnection
    }

    /// Whether a connection of `nickname` with id `connection` may receive this frame.
    @inlinable
    public func isVisible(to nickname: Nickname, connection: ConnectionID) -> Bool {
        excludeNickname != nickname && excludeConnection != connection
    }
}

/// Turns an event into a frame of one wire format.
public typealias FrameEncoder = @Sendable (_ event: ServerEvent, _ stream: StreamKey?, _ id: MessageID?, _ envelope: Envelope?) -> Frame

extension WireFormat {
    /// The native encoder: the event with its id, as PROTOCOL.md JSON.
    public static let nativeEncoder: FrameEncoder = { event, stream, id, envelope in
        let stamped = id.map { event.with(id: $0) } ?? event
        return Frame(
            bytes: stamped.jsonBytes, type: stamped.type, stream: stream, id: id,
            excludeNickname: envelope?.excludeNickname, excludeConnection: envelope?.excludeConnection
        )
    }
}

/// The thread a group of subscribers writes on (a NIO event loop in the server).
/// The Hub hands it each frame once, with every local recipient on that loop; the loop
/// writes to each and flushes each once.
public protocol DeliveryLoop: AnyObject, Sendable {
    func deliver(_ frame: Frame, to subscribers: [any Subscriber])
}

/// A local connection as the Hub sees it. Transports implement it.
public protocol Subscriber: AnyObject, Sendable {
    var connectionID: ConnectionID { get }
    var nickname: Nickname { get }
    var format: WireFormat { get }
    var loop: any DeliveryLoop { get }
    /// Called on `loop` by the loop's `deliver`: queue `frame` for writing.
    func receive(_ frame: Frame)
    /// Called on `loop` once after a batch of `receive`s.
    func flush()
    /// Ends the connection from any thread, telling the client why (WebSocket close code,
    /// a stream's retry hint, an answered poll).
    func close(reason: CloseReason)
}

/// Why the server ends a connection.
public enum CloseReason: Sendable, Equatable {
    /// The node is draining (SIGTERM): reconnect elsewhere. WebSocket 1012.
    case serviceRestart
    /// The client did not read fast enough: resume from your cursor. WebSocket 1008.
    case slowConsumer
    /// A limit was exceeded. WebSocket 1008.
    case policy(String)

    public var message: String {
        switch self {
        case .serviceRestart: "service restart; reconnect"
        case .slowConsumer: "slow consumer; resume from your cursor"
        case .policy(let text): text
        }
    }
}
