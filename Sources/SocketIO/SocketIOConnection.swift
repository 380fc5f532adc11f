import SwitchboardJSON

/// The Socket.IO side of one Engine.IO session as a state machine: which namespaces it
/// joined, the connect timeout, ack IDs in both directions. Fed with the session's
/// messages, it returns ``SocketIOAction``s; it never touches a socket or a clock.
public struct SocketIOConnection: Sendable {
    /// The Engine.IO session ID.
    public let sid: String
    let configuration: SocketIOConfiguration
    private var decoder: SocketIODecoder
    private var namespaces: [String: Namespace] = [:]
    private var connectDeadline: EngineIOInstant?
    /// Set once the connection asked for its session to be closed.
    public private(set) var isClosing = false

    struct Namespace: Sendable {
        /// `nil` while the application decides.
        var socketID: String?
        var nextAckID = 0
        /// Ack IDs of the server's events still unanswered.
        var awaitedAcks: Set<Int> = []
        /// Ack IDs of the client's events the server has not answered yet.
        var owedAcks: Set<Int> = []
    }

    /// A connection for a session opened at `now`; it must join a namespace within
    /// `connectTimeout`.
    public init(sid: String, configuration: SocketIOConfiguration, now: EngineIOInstant) {
        self.sid = sid
        self.configuration = configuration
        self.decoder = SocketIODecoder(maxAttachments: configuration.maxAttachments)
        self.connectDeadline = now + configuration.connectTimeout
    }

    /// The namespaces joined (accepted) so far.
    public var joinedNamespaces: Set<String> { Set(namespaces.filter { $0.value.socketID != nil }.keys) }

    /// The socket ID given to a joined namespace.
    public func socketID(in namespace: String) -> String? { namespaces[namespace]?.socketID }

    /// When ``tick(now:)`` has something to do.
    public var nextDeadline: EngineIOInstant? { connectDeadline }

    // MARK: - From the client

    /// A message of the Engine.IO session. A packet that does not decode, or a first
    /// packet that is not CONNECT, closes the connection.
    public mutating func receive(_ message: EngineIOMessage, now: EngineIOInstant) -> [SocketIOAction] {
        guard !isClosing else { return [] }
        let packet: SocketIOPacket
        do {
            guard let decoded = try decoder.decode(message) else { return [] }
            packet = decoded
        } catch {
            return fail()
        }
        switch packet {
        case .connect(let namespace, let auth):
            guard configuration.namespaces.contains(namespace) else {
                let refusal = SocketIOPacket.connectError(
                    namespace: namespace, payload: .object(["message": .string("Invalid namespace")]))
                return [.send(sid: sid, refusal.messages)]
            }
            guard namespaces[namespace] == nil else { return [] }
            namespaces[namespace] = Namespace()
            return [.authorize(sid: sid, namespace: namespace, auth: auth)]
        case .disconnect(let namespace):
            guard let state = namespaces.removeValue(forKey: namespace), state.socketID != nil else { return [] }
            return [.disconnected(sid: sid, namespace: namespace, reason: .clientNamespaceDisconnect)]
        case .event(let namespace, let name, let arguments, let ackID):
            guard namespaces[namespace]?.socketID != nil else { return ignoreOrFail() }
            if let ackID { namespaces[namespace]?.owedAcks.insert(ackID) }
            return [.event(sid: sid, namespace: namespace, name: name, arguments: arguments, ackID: ackID)]
        case .ack(let namespace, let arguments, let ackID):
            guard namespaces[namespace]?.awaitedAcks.remove(ackID) != nil else { return ignoreOrFail() }
            return [.ackReceived(sid: sid, namespace: namespace, ackID: ackID, arguments: arguments)]
        case .connectError:
            // Only the server sends CONNECT_ERROR.
            return fail()
        }
    }

    /// The Engine.IO session ended: every joined namespace is left.
    public mutating func transportClosed(_ reason: EngineIOCloseReason) -> [SocketIOAction] {
        let joined = joinedNamespaces.sorted()
        namespaces.removeAll()
        connectDeadline = nil
        isClosing = true
        return joined.map { .disconnected(sid: sid, namespace: $0, reason: .transport(reason)) }
    }

    /// Closes the connection when no namespace was joined within `connectTimeout`.
    public mutating func tick(now: EngineIOInstant) -> [SocketIOAction] {
        guard let connectDeadline, now >= connectDeadline else { return [] }
        self.connectDeadline = nil
        guard joinedNamespaces.isEmpty, !isClosing else { return [] }
        isClosing = true
        namespaces.removeAll()
        return [.close(sid: sid)]
    }

    // MARK: - From the application

    /// Accepts a pending CONNECT: the client gets `{"sid": socketID}`.
    /// With `pid`, the reply carries it too (connection state recovery: a client that
    /// gets back the `pid` it sent knows its session was recovered).
    public mutating func accept(namespace: String, socketID: String, pid: String? = nil) -> [SocketIOAction] {
        guard !isClosing, namespaces[namespace] != nil, namespaces[namespace]?.socketID == nil else { return [] }
        namespaces[namespace]?.socketID = socketID
        connectDeadline = nil
        var payload: [String: JSONValue] = ["sid": .string(socketID)]
        if let pid { payload["pid"] = .string(pid) }
        let reply = SocketIOPacket.connect(namespace: namespace, payload: .object(payload))
        return [.send(sid: sid, reply.messages)]
    }

    /// Refuses a pending CONNECT with CONNECT_ERROR and `payload` (an object such as
    /// `{"message": "Not authorized"}`, or a string).
    public mutating func reject(namespace: String, payload: JSONValue) -> [SocketIOAction] {
        guard !isClosing, namespaces[namespace] != nil, namespaces[namespace]?.socketID == nil else { return [] }
        namespaces[namespace] = nil
        return [.send(sid: sid, SocketIOPacket.connectError(namespace: namespace, payload: payload).messages)]
    }

    /// Sends an event to the socket in `namespace`; with `expectingAck`, the event gets
    /// an ack ID (returned) and the answer comes as `.ackReceived`. Nothing is sent when
    /// the namespace is not joined. Reserved names are refused.
    public mutating func emit(
        _ name: String, _ arguments: [SocketIOValue], namespace: String, expectingAck: Bool = false
    ) throws(SocketIOError) -> (ackID: Int?, actions: [SocketIOAction]) {
        guard !isClosing, var state = namespaces[namespace], state.socketID != nil else { return (nil, []) }
        var ackID: Int?
        if expectingAck {
            ackID = state.nextAckID
            state.nextAckID += 1
            state.awaitedAcks.insert(ackID!)
        }
        let packet = SocketIOPacket.event(namespace: namespace, name: name, arguments: arguments, ackID: ackID)
        try packet.validate()
        namespaces[namespace] = state
        return (ackID, [.send(sid: sid, packet.messages)])
    }

    /// Answers the client's event `ackID` (once; later answers are ignored).
    public mutating func ack(_ ackID: Int, _ arguments: [SocketIOValue], namespace: String) -> [SocketIOAction] {
        guard !isClosing, namespaces[namespace]?.owedAcks.remove(ackID) != nil else { return [] }
        return [.send(sid: sid, SocketIOPacket.ack(namespace: namespace, arguments: arguments, ackID: ackID).messages)]
    }

    /// Makes the socket in `namespace` leave it: the client gets DISCONNECT.
    public mutating func disconnect(namespace: String) -> [SocketIOAction] {
        guard !isClosing, let state = namespaces.removeValue(forKey: namespace), state.socketID != nil else {
            return []
        }
        return [
            .send(sid: sid, SocketIOPacket.disconnect(namespace: namespace).messages),
            .disconnected(sid: sid, namespace: namespace, reason: .serverNamespaceDisconnect),
        ]
    }

    // MARK: - Helpers

    /// Packets for a namespace not joined are ignored, as the reference server does,
    /// except before any CONNECT: then the protocol says to close the connection.
    private mutating func ignoreOrFail() -> [SocketIOAction] {
        namespaces.isEmpty && connectDeadline != nil ? fail() : []
    }

    /// Closes the connection after a protocol error; joined namespaces are left.
    private mutating func fail() -> [SocketIOAction] {
        let joined = joinedNamespaces.sorted()
        namespaces.removeAll()
        connectDeadline = nil
        isClosing = true
        return joined.map { .disconnected(sid: sid, namespace: $0, reason: .parseError) } + [.close(sid: sid)]
    }
}
