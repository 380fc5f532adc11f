import Logging
import Synchronization

/// The nicknames this node's sessions hold, with the session id holding each claim, and
/// the refresh that keeps the claims alive in the broker (they expire there when a node
/// dies). Several connections of one nickname share a claim.
public final class NicknameClaims: Sendable {
    private let broker: any Broker
    private let ttlSeconds: Int
    private let logger: Logger
    private let holders = Mutex<[Nickname: (session: String, connections: Int)]>([:])

    public init(broker: any Broker, ttlSeconds: Int, logger: Logger) {
        self.broker = broker
        self.ttlSeconds = ttlSeconds
        self.logger = logger
    }

    /// Claims `nickname` for `session` in the broker: false when another session holds it.
    public func claim(_ nickname: Nickname, session: String) async throws -> Bool {
        try await broker.claimNickname(nickname, session: session, ttlSeconds: ttlSeconds)
    }

    /// A connection of `nickname` (holding `session`'s claim) opened here.
    public func opened(_ nickname: Nickname, session: String) {
        holders.withLock { holders in
            var entry = holders[nickname] ?? (session, 0)
            entry.session = session
            entry.connections += 1
            holders[nickname] = entry
        }
    }

    /// A connection of `nickname` closed here.
    public func closed(_ nickname: Nickname) {
        holders.withLock { holders in
            guard var entry = holders[nickname] else { return }
            entry.connections -= 1
            holders[nickname] = entry.connections <= 0 ? nil : entry
        }
    }

    /// The claims to keep alive: nickname and holding session.
    public var held: [(Nickname, String)] { holders.withLock { $0.map { ($0.key, $0.value.session) } } }

    /// Distinct nicknames connected here.
    public var count: Int { holders.withLock { $0.count } }

    /// Renews every claim held here (after a broker outage, and periodically).
    public func refreshOnce() async {
        for (nickname, session) in held {
            do {
                _ = try await broker.claimNickname(nickname, session: session, ttlSeconds: ttlSeconds)
            } catch {
                logger.debug("claim refresh failed", metadata: ["nickname": "\(nickname)"])
            }
        }
    }

    /// Renews the claims every third of their lifetime, until cancelled.
    public func run() async {
        let period = Duration.seconds(max(1, ttlSeconds / 3))
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            await refreshOnce()
        }
    }
}
