import Synchronization

extension ChatService {
    /// Publishes a ``CustomEvent`` from a session, cluster-wide and stored (so history
    /// and resume see it): to every room of the session (``CustomEvent/Target/rooms``),
    /// to one of them, or to one nickname and the sender's other connections. Returns the stored ids —
    /// one per room, or the id in the sender's own private stream — or the refusal
    /// (`rate_limited`, `invalid_message` when over the size limit, `not_joined` when the
    /// session is in no room, `user_offline`, `unavailable`).
    public func emitCustom(_ event: CustomEvent, from session: Session) async -> Result<[MessageID], EventError> {
        metrics.clientEvents.add(1, ordering: .relaxed)
        let result = await publishCustom(event, from: session)
        if case .failure(let error) = result { countErrors([.error(error)]) }
        return result
    }

    private func publishCustom(_ event: CustomEvent, from session: Session) async -> Result<[MessageID], EventError> {
        guard !session.isClosed else { return .failure(EventError(.unavailable, "the connection is closed")) }
        guard session.takeToken(rate: configuration.ratePerSecond, burst: configuration.rateBurst) else {
            return .failure(EventError(.rateLimited, "too many events; slow down"))
        }
        let limit = configuration.eventLimits.maxEventBytes
        guard JSONValue.array(event.arguments).jsonBytes.count <= limit else {
            return .failure(EventError(.invalidMessage, "event larger than \(limit) bytes"))
        }
        let fields = event.fields(from: session.identity.sender)
        let exclude = event.echo ? nil : session.connectionID
        do {
            switch event.target {
            case .rooms, .room:
                var rooms = session.rooms.sorted()
                if case .room(let room) = event.target {
                    guard rooms.contains(room) else { return .failure(EventError(.notJoined, "join \(room) before emitting to it")) }
                    rooms = [room]
                }
                guard !rooms.isEmpty else { return .failure(EventError(.notJoined, "join a room before emitting")) }
                var ids: [MessageID] = []
                for room in rooms {
                    let envelope = Envelope(.application(id: nil, target: .room(room), fields: fields), excludeConnection: exclude)
                    ids += try await broker.publish(envelope, to: [.room(room)])
                    metrics.published.add(1, ordering: .relaxed)
                }
                return .success(ids)
            case .user(let to):
                guard let holder = try await broker.nicknameHolder(to) else {
                    return .failure(EventError(.userOffline, "\(to) is not online"))
                }
                let me = session.identity.nickname
                let envelope = Envelope(
                    .application(id: nil, target: .user(to), fields: fields), excludeConnection: exclude,
                    sessions: Array(Set([holder, session.identity.session])).sorted())
                let ids = try await broker.publish(envelope, to: to == me ? [.user(me)] : [.user(to), .user(me)])
                metrics.published.add(1, ordering: .relaxed)
                return .success(ids.last.map { [$0] } ?? [])
            }
        } catch let error as EventError {
            return .failure(error)
        } catch {
            return .failure(EventError(.unavailable, "the cluster backend is unavailable; not delivered"))
        }
    }
}
