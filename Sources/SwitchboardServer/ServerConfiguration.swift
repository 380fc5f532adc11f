import SwitchboardCore

/// Plain configuration for one node's HTTP side. Only the executable reads argv and
/// the environment.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var chat: ChatConfiguration
    /// Token secrets: the first signs, every one verifies (rotation).
    public var secrets: [String]
    /// Key for `POST /api/publish`, `POST /api/token` and the dashboard's data; those
    /// are refused when nil.
    public var apiKey: String?
    /// Who may pick a nickname: `open` — anyone, with `POST /api/login` or Socket.IO
    /// `auth: {nickname}`; `closed` — only tokens the application minted
    /// (`POST /api/token`) or signed (JWT).
    public var login: LoginMode = .open
    /// Longest lifetime `POST /api/token` grants, in seconds.
    public var maxMintedTokenSeconds: Int64 = 30 * 24 * 3600
    /// Origins allowed for CORS and WebSocket upgrades; empty = same origin only.
    public var allowedOrigins: [String] = []
    /// Largest accepted WebSocket message and HTTP body, in bytes.
    public var maxMessageBytes = 64 * 1024
    /// Largest HTTP header field (the whole header block may be twice this).
    public var maxHeaderBytes = 16 * 1024
    /// Frames a connection may have queued while its socket is not writable before it
    /// is disconnected as a slow consumer.
    public var maxQueuedFrames = 1024
    /// Keep-alive interval of SSE and iframe streams (≤ 15 s).
    public var streamKeepAlive: Duration = .seconds(15)
    /// A polling client counts as online in its rooms for this long after its last poll.
    public var pollPresenceWindow: Duration = .seconds(15)
    /// WebSocket ping interval.
    public var pingInterval: Duration = .seconds(25)
    /// Socket.IO namespaces clients may join (`/` is always one); others are refused
    /// with CONNECT_ERROR `{"message":"Invalid namespace"}`.
    public var socketIONamespaces: [String] = ["/"]
    /// Engine.IO heartbeat of `/socket.io/` sessions: ping interval and pong timeout.
    public var socketIOPingInterval: Duration = .seconds(25)
    public var socketIOPingTimeout: Duration = .seconds(20)
    /// Socket.IO connection state recovery: how long an offset stays good (0: off).
    public var socketIORecoveryWindow: Duration = .seconds(120)

    public enum LoginMode: String, Sendable, CaseIterable {
        case open, closed
    }

    public init(host: String, port: Int, chat: ChatConfiguration, secrets: [String]) {
        self.host = host
        self.port = port
        self.chat = chat
        self.secrets = secrets
    }
}
