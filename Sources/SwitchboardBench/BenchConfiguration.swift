/// How subscribers receive messages.
public enum BenchTransport: String, Sendable, CaseIterable {
    /// WebSocket: `GET /ws?token=…&rooms=…` (raw: the URL as given).
    case ws
    /// Server-sent events: `GET /sse?token=…&rooms=…` (raw: the URL as given).
    case sse
    /// Long-polling: `GET /poll?token=…&rooms=…&cursor=…&wait=25` (Switchboard only).
    case poll
}

/// One bench run's settings: plain data, filled in by the command line.
public struct BenchConfiguration: Sendable {
    /// Switchboard nodes (base URLs), or in raw mode subscriber URLs; subscribers are
    /// spread over them round robin.
    public var urls: [BenchURL]
    public var transport: BenchTransport = .ws
    public var subscribers = 100
    /// Messages published per second.
    public var rate = 10.0
    /// Seconds of publishing.
    public var duration = 10.0
    /// Size of each message body in bytes (at least the header of the bench payload).
    public var payloadBytes = 64
    /// Server processes whose VmRSS is sampled.
    public var pids: [Int32] = []
    /// Key for `POST /api/publish` (Switchboard mode).
    public var apiKey: String?
    /// The room (Switchboard mode).
    public var room = "bench"
    /// Rooms (channels) the subscribers are spread over, round robin; message `n` goes to
    /// room `n % rooms`. With more than one, Switchboard rooms are named `<room>-<k>` and
    /// raw URLs have `{room}` replaced by `k`.
    public var rooms = 1
    /// Raw mode: plain subscriber URLs and `publishURL`, no login, no Switchboard events.
    public var raw = false
    /// Where messages are published: raw mode's HTTP publish URL; in Switchboard mode a
    /// node's base URL (default: the first `urls` entry).
    public var publishURL: BenchURL?
    /// Keep-alive HTTP connections used by the publisher.
    public var publishConnections = 1
    /// Requests in flight per HTTP connection (pipelining).
    public var pipelineDepth = 32
    /// Connections opened at once.
    public var connectConcurrency = 200
    /// Longest wait for the servers to go quiet after connecting, in seconds.
    public var settleTimeout = 60.0
    /// Longest wait for outstanding deliveries after the last publish, in seconds.
    public var drainTimeout = 10.0
    /// Seconds after the duration the publisher may still send messages an overloaded
    /// server has not taken yet; what is left then is not sent.
    public var publishGrace = 1.0
    /// Event loops (threads) of the bench.
    public var threads = 2
    /// Prints a live progress line on stderr.
    public var progress = true
    /// Prefix of subscriber nicknames (a random suffix keeps runs apart).
    public var nicknamePrefix = "bench"

    public init(urls: [BenchURL]) {
        self.urls = urls
    }

    /// The Switchboard room of room index `k`.
    public func roomName(_ k: Int) -> String { rooms == 1 ? room : "\(room)-\(k)" }

    /// A raw URL target with `{room}` replaced by room index `k`.
    public func rawTarget(_ target: String, room k: Int) -> String {
        target.replacing("{room}", with: String(k))
    }

    /// Problems with this configuration, for the command line to report.
    public func validationErrors() -> [String] {
        var errors: [String] = []
        if urls.isEmpty { errors.append("give at least one --url") }
        if subscribers < 1 { errors.append("--subscribers must be at least 1") }
        if !(rate > 0) { errors.append("--rate must be positive") }
        if !(duration > 0) { errors.append("--duration must be positive") }
        if payloadBytes < 0 || payloadBytes > 1 << 20 { errors.append("--payload must be 0 … 1048576") }
        if threads < 1 { errors.append("--threads must be at least 1") }
        if rooms < 1 || rooms > subscribers { errors.append("--rooms must be 1 … --subscribers") }
        if raw {
            if publishURL == nil { errors.append("--raw needs --publish-url") }
            if transport == .poll { errors.append("--raw supports ws and sse") }
        } else if apiKey == nil {
            errors.append("give --api-key or set SWITCHBOARD_API_KEY")
        }
        return errors
    }
}
