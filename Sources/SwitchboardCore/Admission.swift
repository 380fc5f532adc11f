import Synchronization

/// The node's open sessions and its connection limits — per node and per client address
/// — with the counts `/metrics` shows per transport. No I/O.
public final class Admission: Sendable {
    private let maxConnections: Int
    private let maxPerAddress: Int

    struct State {
        var sessions: [ConnectionID: Session] = [:]
        /// Admitted connections per client address (an admission not yet opened counts).
        var perRemote: [String: Int] = [:]
        var transports: [Transport: Int] = [:]

        /// One admitted connection of `remote` is gone.
        mutating func releaseAddress(_ remote: String) {
            let left = (perRemote[remote] ?? 1) - 1
            perRemote[remote] = left <= 0 ? nil : left
        }
    }

    private let state = Mutex(State())

    public init(maxConnections: Int, maxPerAddress: Int) {
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
    }

    /// Admits a new connection from `remote` (counted until `release`), or the refusal.
    public func admit(remote: String?) -> EventError? {
        state.withLock { state in
            guard state.sessions.count < maxConnections else {
                return EventError(.tooManyConnections, "this node is full; try another")
            }
            if let remote {
                guard (state.perRemote[remote] ?? 0) < maxPerAddress else {
                    return EventError(.tooManyConnections, "too many connections from your address")
                }
                state.perRemote[remote, default: 0] += 1
            }
            return nil
        }
    }

    /// Whether a connection from `remote` would be admitted now (for refusing WebSocket
    /// upgrades before they happen).
    public func wouldAdmit(remote: String?) -> Bool {
        state.withLock { state in
            state.sessions.count < maxConnections && (remote.map { (state.perRemote[$0] ?? 0) < maxPerAddress } ?? true)
        }
    }

    /// An admitted connection opened its session.
    public func opened(_ session: Session) {
        state.withLock { state in
            state.sessions[session.connectionID] = session
            state.transports[session.transport, default: 0] += 1
        }
    }

    /// A session ended: its admission and its transport count are released. Once.
    public func released(_ session: Session) {
        state.withLock { state in
            guard state.sessions.removeValue(forKey: session.connectionID) != nil else { return }
            if let remote = session.remote { state.releaseAddress(remote) }
            let open = (state.transports[session.transport] ?? 1) - 1
            state.transports[session.transport] = open <= 0 ? nil : open
        }
    }

    /// An admission that never became a session (the opening failed before `opened`).
    public func abandoned(remote: String?) {
        guard let remote else { return }
        state.withLock { $0.releaseAddress(remote) }
    }

    public var sessions: [Session] { state.withLock { Array($0.sessions.values) } }
    public var isEmpty: Bool { state.withLock { $0.sessions.isEmpty } }
    public var byTransport: [Transport: Int] { state.withLock { $0.transports } }
}
