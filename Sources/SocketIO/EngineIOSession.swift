/// One Engine.IO session as a state machine (engine.io-protocol: handshake, heartbeat,
/// polling rules, upgrade, close). It never reads a clock or touches a socket: the
/// caller feeds it events with the current instant and carries out the returned
/// ``EngineIOAction``s in order. ``EngineIOServer`` keeps one per `sid`.
public struct EngineIOSession: Sendable {
    /// The session ID.
    public let sid: String
    /// The transport that carries the session now.
    public internal(set) var transport: EngineIOTransport
    /// Whether the session has ended (after a `.closed` action).
    public internal(set) var isClosed = false

    let configuration: EngineIOConfiguration
    /// Packets waiting for a poll (polling), or for the end of an upgrade.
    var outbox: [EngineIOPacket] = []
    var pollPending = false
    var postInFlight = false
    /// The active WebSocket when `transport == .websocket`.
    var webSocket: EngineIOWebSocketID?
    /// A WebSocket being upgraded to, while polling still carries the session.
    var upgrade: Upgrade?
    var nextPing: EngineIOInstant?
    var pongDeadline: EngineIOInstant?
    /// Set when the server closed a polling session and waits for a poll to say so.
    var closeDeadline: EngineIOInstant?

    struct Upgrade: Sendable {
        var socket: EngineIOWebSocketID
        /// When the probe arrived, polls are answered with `noop` from this instant on
        /// (like the reference server's upgrade check every 100 ms), so that an `upgrade`
        /// packet right behind the probe still finds the poll pending.
        var noopAt: EngineIOInstant?
        var deadline: EngineIOInstant
        var probed: Bool { noopAt != nil }
    }

    /// Opens a session. For a WebSocket session pass its socket; the `open` packet is
    /// then written to it, while a polling handshake returns it as ``handshakeBody``.
    public init(
        sid: String, transport: EngineIOTransport, webSocket: EngineIOWebSocketID? = nil,
        configuration: EngineIOConfiguration, now: EngineIOInstant
    ) {
        self.sid = sid
        self.transport = transport
        self.webSocket = transport == .websocket ? webSocket : nil
        self.configuration = configuration
        self.nextPing = now + configuration.pingInterval
    }

    /// The `open` packet's data.
    public var handshake: EngineIOHandshake {
        let canUpgrade = transport == .polling && configuration.transports.contains(.websocket)
        return EngineIOHandshake(
            sid: sid, upgrades: canUpgrade ? [EngineIOTransport.websocket.rawValue] : [],
            pingInterval: EngineIOConfiguration.milliseconds(configuration.pingInterval),
            pingTimeout: EngineIOConfiguration.milliseconds(configuration.pingTimeout),
            maxPayload: configuration.maxPayload)
    }

    /// The body of the handshake response of a polling session.
    public var handshakeBody: String { EngineIOPacket.open(handshake).text }

    /// The actions that start a session: the `open` frame for a WebSocket session, then
    /// `.opened`.
    public var openingActions: [EngineIOAction] {
        var actions: [EngineIOAction] = []
        if let webSocket { actions.append(.writeWebSocket(webSocket, [EngineIOPacket.open(handshake).frame])) }
        actions.append(.opened(sid: sid))
        return actions
    }

    /// Packets waiting for a poll (or for the end of an upgrade): what a client that
    /// does not poll makes the server hold.
    public var queuedPackets: Int { outbox.count }

    /// The earliest instant at which ``tick(now:)`` has something to do.
    public var nextDeadline: EngineIOInstant? {
        let noop = pollPending ? upgrade?.noopAt : nil
        return [nextPing, pongDeadline, closeDeadline, upgrade?.deadline, noop].compactMap { $0 }.min()
    }

    // MARK: - Application

    /// Queues messages for the client: written at once on a WebSocket, or answered to
    /// the pending poll, or kept for the next one.
    public mutating func send(_ messages: [EngineIOMessage], now: EngineIOInstant) -> [EngineIOAction] {
        guard !isClosed, closeDeadline == nil else { return [] }
        outbox.append(contentsOf: messages.map { .message($0) })
        return flush()
    }

    /// Closes the session from the server side. A polling session sends `close` to the
    /// pending poll, or to the next one (within `closeTimeout`).
    public mutating func close(now: EngineIOInstant) -> [EngineIOAction] {
        guard !isClosed, closeDeadline == nil else { return [] }
        if transport == .websocket { return terminate(.forcedClose) }
        var actions: [EngineIOAction] = []
        if let probe = upgrade?.socket { actions.append(.closeWebSocket(probe)) }
        upgrade = nil
        outbox.append(.close)
        closeDeadline = now + configuration.closeTimeout
        nextPing = nil
        pongDeadline = nil
        return actions + flush()
    }

    /// Applies the timers that have expired at `now`: a ping is due, a pong is late, an
    /// upgrade took too long, a closing session was never polled.
    public mutating func tick(now: EngineIOInstant) -> [EngineIOAction] {
        guard !isClosed else { return [] }
        if let closeDeadline, now >= closeDeadline { return terminate(.forcedClose) }
        // A ping that was due long ago also timed out, though no tick sent it.
        let due = nextPing.map { $0 + configuration.pingTimeout }
        if let deadline = pongDeadline ?? due, now >= deadline { return terminate(.pingTimeout) }
        var actions: [EngineIOAction] = []
        if let upgrade, now >= upgrade.deadline {
            actions.append(.closeWebSocket(upgrade.socket))
            self.upgrade = nil
        }
        if pollPending, let noopAt = upgrade?.noopAt, now >= noopAt {
            pollPending = false
            actions.append(.answerPoll(sid: sid, body: EngineIOPacket.noop.text))
        }
        if let due = nextPing, now >= due {
            nextPing = nil
            pongDeadline = due + configuration.pingTimeout
            outbox.append(.ping())
            actions += flush()
        }
        return actions
    }

    // MARK: - Inbound packets (both transports)

    /// Handles a packet from the active transport.
    mutating func handle(_ packet: EngineIOPacket, now: EngineIOInstant) -> [EngineIOAction] {
        switch packet {
        case .pong:
            pongDeadline = nil
            nextPing = now + configuration.pingInterval
            return []
        case .message(let message):
            return [.received(sid: sid, message)]
        case .close:
            return terminate(.clientClose)
        case .noop:
            return []
        case .open, .ping, .upgrade:
            // The server pings in v4; `open` and `upgrade` are the server's or the probe's.
            return terminate(.parseError)
        }
    }

    /// Writes what can be written now: the outbox to the WebSocket, or a batch to the
    /// pending poll (unless an upgrade has been probed: then the outbox waits for it).
    mutating func flush() -> [EngineIOAction] {
        guard !outbox.isEmpty else { return [] }
        if transport == .websocket {
            guard let webSocket else { return [] }
            let frames = outbox.map(\.frame)
            outbox.removeAll()
            var actions: [EngineIOAction] = [.writeWebSocket(webSocket, frames)]
            if closeDeadline != nil { actions += terminate(.forcedClose) }
            return actions
        }
        guard pollPending, upgrade?.probed != true else { return [] }
        return answerPoll()
    }

    /// Answers the pending (or current) poll with as much of the outbox as `maxPayload`
    /// and `maxPacketsPerPoll` allow; a session whose `close` packet went out ends.
    mutating func answerPoll() -> [EngineIOAction] {
        pollPending = false
        let (body, count) = EngineIOPayload.encode(
            outbox, maxPayload: configuration.maxPayload, maxPackets: configuration.maxPacketsPerPoll)
        let sentClose = outbox.prefix(count).contains(.close)
        outbox.removeFirst(count)
        var actions: [EngineIOAction] = [.answerPoll(sid: sid, body: body)]
        if sentClose {
            isClosed = true
            actions.append(.closed(sid: sid, .forcedClose))
        }
        return actions
    }

    /// Ends the session at once. A pending poll is answered with `close` (with `noop`
    /// when the client closed, as the reference server does); sockets are closed.
    mutating func terminate(_ reason: EngineIOCloseReason) -> [EngineIOAction] {
        guard !isClosed else { return [] }
        var actions: [EngineIOAction] = []
        if pollPending {
            let packet: EngineIOPacket = reason == .clientClose ? .noop : .close
            actions.append(.answerPoll(sid: sid, body: packet.text))
            pollPending = false
        }
        if let webSocket, reason != .transportClose { actions.append(.closeWebSocket(webSocket)) }
        if let probe = upgrade?.socket { actions.append(.closeWebSocket(probe)) }
        isClosed = true
        upgrade = nil
        outbox.removeAll()
        nextPing = nil
        pongDeadline = nil
        closeDeadline = nil
        actions.append(.closed(sid: sid, reason))
        return actions
    }
}
