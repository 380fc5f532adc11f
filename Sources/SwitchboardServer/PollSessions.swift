import Logging
import NIOCore
import ServiceLifecycle
import SwitchboardCore
import Synchronization

/// Parked `PollSubscriber`s, one per session polling this node. A polling client is
/// online in the rooms of its latest poll while it polls within the presence window;
/// a poll with another `rooms=` list moves it (leaves the old rooms at once); after the
/// window its subscriber is closed (presence removed, subscriptions dropped). A client
/// that went away while its poll waited (a closed tab; a page that changed its rooms and
/// polls again, maybe on another node) gets `grace` instead of the window.
final class PollSessions: Service {
    struct Entry {
        let subscriber: PollSubscriber
        let session: Session
        var activePolls = 0
        var lastSeen: ContinuousClock.Instant
        /// The last poll ended because its client went away.
        var clientGone = false
        /// Counts the polls begun; a poll's own number is its ticket.
        var generation: UInt64 = 1
    }

    private let chat: ChatService
    private let window: Duration
    private let grace: Duration
    private let entries = Mutex<[String: Entry]>([:])

    /// How long a session whose waiting poll lost its client stays, for a poll that
    /// follows at once on this node (a page changing its rooms).
    static let defaultGrace = Duration.seconds(3)

    init(chat: ChatService, window: Duration, grace: Duration = defaultGrace) {
        self.chat = chat
        self.window = window
        self.grace = min(grace, window)
    }

    static func key(_ identity: Identity, rooms: [RoomName]) -> String {
        identity.session
    }

    /// The parked subscriber for this client, opened on first use; marks a poll active.
    /// Returns the poll's ticket for `release`.
    func acquire(
        _ identity: Identity, rooms: [RoomName], eventLoop: any EventLoop, transport: Transport, remote: String?
    ) async throws(EventError) -> (PollSubscriber, ticket: UInt64) {
        let key = Self.key(identity, rooms: rooms)
        if let existing = entries.withLock({ entries -> Entry? in
            guard var entry = entries[key] else { return nil }
            entry.activePolls += 1
            entry.lastSeen = .now
            entry.clientGone = false
            entry.generation += 1
            entries[key] = entry
            return entry
        }) {
            if existing.session.rooms != Set(rooms) { await chat.updateRooms(existing.session, to: rooms) }
            return (existing.subscriber, existing.generation)
        }
        let subscriber = PollSubscriber(nickname: identity.nickname, eventLoop: eventLoop)
        let opened = try await chat.open(identity, subscriber: subscriber, transport: transport, rooms: rooms, cursor: nil, remote: remote)
        let (winner, ticket, loser) = entries.withLock { entries -> (PollSubscriber, UInt64, Session?) in
            if var entry = entries[key] {
                entry.activePolls += 1
                entry.clientGone = false
                entry.generation += 1
                entries[key] = entry
                return (entry.subscriber, entry.generation, opened.session)
            }
            let entry = Entry(subscriber: subscriber, session: opened.session, activePolls: 1, lastSeen: .now)
            entries[key] = entry
            return (subscriber, entry.generation, nil)
        }
        if let loser { await chat.close(loser) }
        return (winner, ticket)
    }

    /// Marks the poll with `ticket` finished; `clientGone`: its client went away. The
    /// grace applies only if no other poll of the session began since this one did:
    /// another tab of the same session (app and JWT tokens share one), or the client's own
    /// next poll, keeps the window.
    func release(_ identity: Identity, rooms: [RoomName], ticket: UInt64, clientGone: Bool = false) {
        let key = Self.key(identity, rooms: rooms)
        entries.withLock { entries in
            guard var entry = entries[key] else { return }
            entry.activePolls -= 1
            entry.lastSeen = .now
            entry.clientGone = clientGone && ticket == entry.generation
            entries[key] = entry
        }
    }

    /// Closes subscribers idle for longer than the window (the grace, when their client
    /// went away).
    func sweep() async {
        let now = ContinuousClock.now
        let expired = entries.withLock { entries -> [Entry] in
            let gone = entries.filter {
                $0.value.activePolls <= 0 && now - $0.value.lastSeen > ($0.value.clientGone ? grace : window)
            }
            for key in gone.keys { entries[key] = nil }
            return Array(gone.values)
        }
        for entry in expired {
            // Answers any waiter left registered, so no promise is dropped unfulfilled.
            entry.subscriber.close(reason: .policy("poll window expired"))
            await chat.close(entry.session)
        }
    }

    var count: Int { entries.withLock { $0.count } }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await self.sweep()
            }
        }
    }
}
