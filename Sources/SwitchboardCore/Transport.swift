/// The ways a client connects, as `welcome`, `/metrics` and `/cluster` name them.
public enum Transport: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case websocket
    case sse
    case iframe
    case longPoll = "long-poll"
    case shortPoll = "short-poll"
    case jsonp
    case socketIO = "socket.io"

    /// A client that polls: no socket stays open between its requests.
    public var isPolling: Bool {
        switch self {
        case .longPoll, .shortPoll, .jsonp: true
        default: false
        }
    }

    public var description: String { rawValue }
}
