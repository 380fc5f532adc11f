import SwitchboardJSON

/// Socket.IO server settings: plain data.
public struct SocketIOConfiguration: Sendable, Equatable {
    /// The namespaces clients may join; a CONNECT to any other is answered with
    /// CONNECT_ERROR `{"message":"Invalid namespace"}`.
    public var namespaces: Set<String>
    /// Time a new connection has to join a namespace before it is closed.
    public var connectTimeout: Duration
    /// The most binary attachments one packet may carry.
    public var maxAttachments: Int

    /// The defaults of the reference server: only `/`, a 45 s connect timeout.
    public init(namespaces: Set<String> = ["/"], connectTimeout: Duration = .seconds(45), maxAttachments: Int = 10) {
        self.namespaces = namespaces
        self.connectTimeout = connectTimeout
        self.maxAttachments = maxAttachments
    }
}

/// Why a socket left a namespace (the reasons of the reference server).
public enum SocketIODisconnectReason: Sendable, Hashable {
    /// The client sent DISCONNECT.
    case clientNamespaceDisconnect
    /// The server called `disconnect`.
    case serverNamespaceDisconnect
    /// The client sent something that is not a valid Socket.IO packet; the connection
    /// is closed.
    case parseError
    /// The Engine.IO session ended.
    case transport(EngineIOCloseReason)

    /// The reference server's wording.
    public var description: String {
        switch self {
        case .clientNamespaceDisconnect: "client namespace disconnect"
        case .serverNamespaceDisconnect: "server namespace disconnect"
        case .parseError: "parse error"
        case .transport(let reason): reason.rawValue
        }
    }
}

/// What the caller must do after feeding an event to ``SocketIOConnection`` or
/// ``SocketIOServer``, in order.
public enum SocketIOAction: Sendable, Equatable {
    /// Send these messages on the Engine.IO session, in order.
    case send(sid: String, [EngineIOMessage])
    /// Close the Engine.IO session.
    case close(sid: String)
    /// A client asks to join an allowed namespace: answer with `accept` (giving the
    /// socket an ID) or `reject`.
    case authorize(sid: String, namespace: String, auth: JSONValue?)
    /// An event from a joined socket; answer with `ack` when `ackID` is set.
    case event(sid: String, namespace: String, name: String, arguments: [SocketIOValue], ackID: Int?)
    /// The client answered the server's event with this ack ID.
    case ackReceived(sid: String, namespace: String, ackID: Int, arguments: [SocketIOValue])
    /// A socket left its namespace.
    case disconnected(sid: String, namespace: String, reason: SocketIODisconnectReason)
}
