/// The instants the state machines are driven with. They never read a clock: the
/// caller passes `now` to every call.
public typealias EngineIOInstant = ContinuousClock.Instant

/// The two Engine.IO transports.
public enum EngineIOTransport: String, Sendable, Hashable, CaseIterable {
    case polling
    case websocket
}

/// Engine.IO server settings: plain data, read by the executable from its flags.
public struct EngineIOConfiguration: Sendable, Equatable {
    /// Time between two server pings.
    public var pingInterval: Duration
    /// Time the client has to answer a ping before the session is closed.
    public var pingTimeout: Duration
    /// The largest polling body or WebSocket message accepted, in bytes; also the
    /// bound on the size of one polling response (at least one packet is always sent).
    public var maxPayload: Int
    /// Time a WebSocket has to complete an upgrade (`2probe` … `5`) before it is closed.
    public var upgradeTimeout: Duration
    /// Time after an upgrade probe at which a waiting poll is answered with `noop`.
    public var upgradeCheckInterval: Duration
    /// Time a server-closed polling session waits for a poll to carry the `close` packet.
    public var closeTimeout: Duration
    /// The transports clients may use.
    public var transports: Set<EngineIOTransport>
    /// The most packets one polling response carries; the rest waits for the next poll.
    /// 16 by default: python-engineio's client (python-socketio) refuses a payload of
    /// more than 16 packets and drops the session, so a busy room would disconnect every
    /// Python client on polling. The JavaScript client has no such bound.
    public var maxPacketsPerPoll: Int = 16

    /// The defaults of the reference server: 25 s / 20 s heartbeat, 1 MB payloads.
    public init(
        pingInterval: Duration = .seconds(25), pingTimeout: Duration = .seconds(20), maxPayload: Int = 1_000_000,
        upgradeTimeout: Duration = .seconds(10), upgradeCheckInterval: Duration = .milliseconds(100),
        closeTimeout: Duration = .seconds(30),
        transports: Set<EngineIOTransport> = [.polling, .websocket]
    ) {
        self.pingInterval = pingInterval
        self.pingTimeout = pingTimeout
        self.maxPayload = maxPayload
        self.upgradeTimeout = upgradeTimeout
        self.upgradeCheckInterval = upgradeCheckInterval
        self.closeTimeout = closeTimeout
        self.transports = transports
    }

    /// Whole milliseconds, as the handshake announces them.
    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
