import Logging
import Synchronization

/// The node's side of the streams: messages from the broker to the local connections
/// (once per id, in order, held while a gap after an outage is filled), the node's
/// subscriptions, and what a connection missed after its cursor.
extension ChatService {
    func brokerEvent(_ event: BrokerEvent) {
        switch event {
        case .message(let stream, let id, let envelope):
            metrics.brokerMessages.add(1, ordering: .relaxed)
            // While the gap after an outage is being filled from history, live messages
            // wait: delivering a newer one first would make every connection drop the
            // older history entries as duplicates.
            if relay.arrived((stream, id, envelope)) { deliver(stream: stream, id: id, envelope: envelope) }
        case .disconnected:
            relay.disconnected()
            cache.dropAll()
            metrics.brokerDisconnects.add(1, ordering: .relaxed)
            logger.warning("broker connection lost")
        case .reconnected:
            metrics.brokerReconnects.add(1, ordering: .relaxed)
            logger.info("broker reconnected; filling the gap from history")
            gapFills.continuation.yield(relay.generation)
        }
    }

    /// Hands one message of `stream` to the local connections, once per id per node.
    func deliver(stream: StreamKey, id: MessageID?, envelope: Envelope) {
        if let id {
            guard relay.isFresh(stream, id) else { return }
            cache.append(StreamEntry(stream: stream, id: id, envelope: envelope))
        }
        switch envelope.event {
        case .joined(let room, _), .left(let room, _): presence.markDirty(room)
        default: break
        }
        hub.deliver(envelope.event, stream: stream, id: id, envelope: envelope)
    }

    /// After a broker outage: deliver what each local stream missed, in order, then the
    /// live messages held meanwhile (duplicates dropped by id); refresh presence and
    /// claims. Abandoned if the broker is lost again meanwhile (the next reconnect
    /// starts over).
    func fillGaps(generation: Int) async {
        let seen = relay.seen
        for stream in hub.streams {
            do {
                cache.prepare(stream)
                var after = seen[stream]
                while true {
                    let page = try await broker.history(of: stream, after: after, limit: configuration.replayLimit)
                    for entry in page.entries { deliver(stream: entry.stream, id: entry.id, envelope: entry.envelope) }
                    guard page.entries.count == configuration.replayLimit, let last = page.entries.last?.id else { break }
                    after = last
                }
                cache.start(stream, base: try await broker.head(of: stream) ?? .zero)
            } catch {
                logger.warning("history after reconnect failed", metadata: ["stream": "\(stream)", "error": "\(error)"])
            }
        }
        // Release what arrived live meanwhile, until nothing is held.
        while let batch = relay.releaseHeld(generation: generation) {
            for (stream, id, envelope) in batch { deliver(stream: stream, id: id, envelope: envelope) }
        }
        await presence.refresh()
        await claims.refreshOnce()
    }

    /// Reads what a client following `rooms` and its own private stream missed after
    /// `cursor`: the entries to send (exclusions applied), `reset`s for streams whose
    /// window it fell behind, and its cursor (streams it had no position for start at
    /// their head; empty streams at `0-0`). Call after subscribing.
    public func catchUp(
        _ identity: Identity, rooms: [RoomName], after cursor: Cursor?, connection: ConnectionID?
    ) async throws -> (backlog: [StreamEntry], resets: [ServerEvent], cursor: Cursor) {
        var position = Cursor()
        var backlog: [StreamEntry] = []
        var resets: [ServerEvent] = []
        let streams: [StreamKey] = [.user(identity.nickname)] + Set(rooms).sorted().map { .room($0) }
        for stream in streams {
            if let after = cursor?[stream] {
                position.advance(stream, to: after)
                let page: HistoryPage
                if let cached = cache.read(stream, after: after, limit: configuration.replayLimit) {
                    page = HistoryPage(entries: cached, gap: false)
                } else {
                    page = try await broker.history(of: stream, after: after, limit: configuration.replayLimit)
                }
                if page.gap {
                    metrics.historyResets.add(1, ordering: .relaxed)
                    var room: RoomName?
                    if case .room(let name) = stream { room = name }
                    resets.append(.reset(room: room, cursor: ""))
                }
                for entry in page.entries
                where entry.envelope.excludeNickname != identity.nickname
                    && (entry.envelope.excludeConnection == nil || entry.envelope.excludeConnection != connection)
                    && entry.envelope.isReplayable(to: identity.session)
                {
                    backlog.append(entry)
                }
            } else {
                // Empty streams start at 0-0, so a resume gets their first message too.
                if let head = cache.head(stream) {
                    position.advance(stream, to: head)
                } else {
                    position.advance(stream, to: try await broker.head(of: stream) ?? .zero)
                }
            }
        }
        return (backlog, resets, position)
    }

    func attach(_ subscriber: any Subscriber, to stream: StreamKey) async throws {
        hub.add(subscriber, to: stream)
        try await subscribe(stream)
    }

    /// Returns once the broker delivers `stream` to this node — at once when it already
    /// does; otherwise after the subscription (and any change of it asked before) is
    /// done. Every member calls it, not only the first: a member that arrives while the
    /// first one's subscription is on its way must not read history before it is active.
    func subscribe(_ stream: StreamKey) async throws {
        try await subscriptions.activate(stream) { try await self.subscribeNow(stream) }
        // Everyone left while the subscription was being made.
        if hub.memberCount(of: stream) == 0 { await unsubscribe(stream) }
    }

    func subscribeNow(_ stream: StreamKey) async throws {
        cache.prepare(stream)
        do {
            try await broker.subscribe(stream)
            let head = try await broker.head(of: stream) ?? .zero
            cache.start(stream, base: head)
            // Nothing older than the head at subscription concerns this node's clients:
            // each one reads history up to at least this head after subscribing.
            relay.subscribed(stream, head: head)
        } catch {
            // The broker keeps the wish and subscribes it when it is back; the stream stays
            // inactive here, so the next member tries again.
            cache.drop(stream)
            throw error
        }
    }

    /// Drops the node's subscription to `stream` unless a member came back meanwhile.
    func unsubscribe(_ stream: StreamKey) async {
        let hub = self.hub
        await subscriptions.deactivate(stream, isUnused: { hub.memberCount(of: stream) == 0 }) {
            self.relay.unsubscribed(stream)
            self.cache.drop(stream)
            try? await self.broker.unsubscribe(stream)
        }
    }
}
