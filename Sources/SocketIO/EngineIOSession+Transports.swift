extension EngineIOSession {
    // MARK: - Polling

    /// A `GET` poll. Answered at once when packets are waiting, otherwise left pending.
    /// Once an upgrade is probed, polls get `noop` (after `upgradeCheckInterval`), or a
    /// 400 if the upgrade completes first. A second poll while one is pending is an
    /// error: the first gets `close`, the second a 400, and the session ends.
    public mutating func poll(now: EngineIOInstant) -> EngineIOReply {
        guard transport == .polling, !isClosed else { return EngineIOReply(.failure(.badRequest)) }
        if pollPending {
            return EngineIOReply(.failure(.badRequest), actions: terminate(.transportError))
        }
        if let noopAt = upgrade?.noopAt {
            guard now >= noopAt else {
                pollPending = true
                return EngineIOReply(.pending)
            }
            return EngineIOReply(.body(EngineIOPacket.noop.text))
        }
        guard !outbox.isEmpty else {
            pollPending = true
            return EngineIOReply(.pending)
        }
        var actions = answerPoll()
        guard case .answerPoll(_, let body) = actions.removeFirst() else { preconditionFailure() }
        return EngineIOReply(.body(body), actions: actions)
    }

    /// The start of a `POST`: only one may be in flight; a second one is an error that
    /// ends the session. On `.pending`, read the body (at most `maxPayload` bytes) and
    /// call ``finishPost(body:now:)``.
    public mutating func beginPost(now: EngineIOInstant) -> EngineIOReply {
        guard !isClosed else { return EngineIOReply(.failure(.badRequest)) }
        if postInFlight {
            return EngineIOReply(.failure(.badRequest), actions: terminate(.transportError))
        }
        postInFlight = true
        return EngineIOReply(.pending)
    }

    /// The body of the `POST` begun with ``beginPost(now:)``; `nil` when it was larger
    /// than `maxPayload`. Answers `ok`; a malformed body is a 400 and ends the session.
    public mutating func finishPost(body: [UInt8]?, now: EngineIOInstant) -> EngineIOReply {
        postInFlight = false
        guard !isClosed else { return EngineIOReply(.failure(.badRequest)) }
        guard let body else {
            return EngineIOReply(.failure(.payloadTooLarge), actions: terminate(.payloadTooLarge))
        }
        let packets: [EngineIOPacket]
        do {
            packets = try EngineIOPayload.decode(body)
        } catch {
            return EngineIOReply(.failure(.badRequest), actions: terminate(.parseError))
        }
        var actions: [EngineIOAction] = []
        for packet in packets where !isClosed {
            actions += handle(packet, now: now)
        }
        if isClosed, actions.last == .closed(sid: sid, .parseError) {
            return EngineIOReply(.failure(.badRequest), actions: actions)
        }
        return EngineIOReply(.body("ok"), actions: actions)
    }

    // MARK: - WebSocket

    /// A WebSocket opened with this session's `sid`: the start of an upgrade. Refused
    /// (the caller closes the socket; the session goes on) when the session already
    /// uses or is upgrading to a WebSocket.
    public mutating func beginUpgrade(_ socket: EngineIOWebSocketID, now: EngineIOInstant) -> Bool {
        guard !isClosed, closeDeadline == nil, transport == .polling, upgrade == nil else { return false }
        upgrade = Upgrade(socket: socket, noopAt: nil, deadline: now + configuration.upgradeTimeout)
        return true
    }

    /// A frame from one of the session's sockets. On the active socket it is a packet
    /// (a malformed one ends the session); on an upgrading socket only `2probe` and `5`
    /// are allowed, anything else closes that socket.
    public mutating func receive(
        _ frame: EngineIOFrame, on socket: EngineIOWebSocketID, now: EngineIOInstant
    ) -> [EngineIOAction] {
        guard !isClosed else { return [] }
        if socket == webSocket {
            guard let packet = try? EngineIOPacket(frame: frame) else { return terminate(.parseError) }
            return handle(packet, now: now)
        }
        guard let probe = upgrade, probe.socket == socket else { return [] }
        switch try? EngineIOPacket(frame: frame) {
        case .ping("probe"):
            let noopAt = probe.noopAt ?? now + configuration.upgradeCheckInterval
            upgrade?.noopAt = noopAt
            return [.writeWebSocket(socket, [EngineIOPacket.probePong.frame])]
        case .upgrade:
            var actions: [EngineIOAction] = []
            if pollPending {
                // The polling transport is gone: a poll still waiting is refused.
                pollPending = false
                actions.append(.rejectPoll(sid: sid, .badRequest))
            }
            upgrade = nil
            transport = .websocket
            webSocket = socket
            return actions + flush()
        default:
            upgrade = nil
            return [.closeWebSocket(socket)]
        }
    }

    /// One of the session's sockets closed (or its message exceeded `maxPayload`, with
    /// `reason` `.payloadTooLarge`). The active one ends the session; an upgrading one
    /// just ends the upgrade.
    public mutating func webSocketClosed(
        _ socket: EngineIOWebSocketID, reason: EngineIOCloseReason = .transportClose, now: EngineIOInstant
    ) -> [EngineIOAction] {
        guard !isClosed else { return [] }
        if socket == webSocket {
            return terminate(reason)
        }
        if upgrade?.socket == socket { upgrade = nil }
        return []
    }
}
