import Synchronization

/// What a node does with the messages the broker hands it, as a state machine with no
/// I/O (`ChatService` drives it):
/// * each stored message reaches the local connections once per id — the newest id seen
///   per stream is kept, older or equal ids are dropped;
/// * after a broker outage, until the gap is filled from history, live messages are held
///   (delivering a newer one first would make every connection drop the older history
///   entries as duplicates), then released in arrival order;
/// * a gap fill of an earlier outage does not release what a later outage holds.
public final class StreamRelay: Sendable {
    public typealias Message = (stream: StreamKey, id: MessageID?, envelope: Envelope)

    struct State {
        var seen: [StreamKey: MessageID] = [:]
        var recovering = false
        var held: [Message] = []
        /// Counts broker losses.
        var generation = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// A live message: true when it is to be delivered now, false when it is held for
    /// the gap fill.
    public func arrived(_ message: Message) -> Bool {
        state.withLock { state in
            guard state.recovering else { return true }
            state.held.append(message)
            return false
        }
    }

    /// Whether `id` is newer than what was delivered of `stream` (and records it).
    public func isFresh(_ stream: StreamKey, _ id: MessageID) -> Bool {
        state.withLock { state in
            if let seen = state.seen[stream], seen >= id { return false }
            state.seen[stream] = id
            return true
        }
    }

    /// The broker is lost: hold live messages until the next gap fill completes.
    public func disconnected() {
        state.withLock { state in
            state.recovering = true
            state.generation += 1
        }
    }

    /// The broker is back: the generation to fill the gap of.
    public var generation: Int { state.withLock { $0.generation } }

    /// Where each stream's gap starts: the newest id delivered.
    public var seen: [StreamKey: MessageID] { state.withLock { $0.seen } }

    /// After the gap fill of `generation`: the held messages to deliver next, in order;
    /// nil once nothing is held (live again) or when a later outage took over.
    public func releaseHeld(generation: Int) -> [Message]? {
        state.withLock { state in
            guard state.generation == generation else { return nil }
            if state.held.isEmpty {
                state.recovering = false
                return nil
            }
            defer { state.held = [] }
            return state.held
        }
    }

    /// The node subscribed `stream` at `head`: nothing older concerns its clients (each
    /// reads history up to at least this head after subscribing).
    public func subscribed(_ stream: StreamKey, head: MessageID) {
        state.withLock { state in
            if (state.seen[stream] ?? .zero) < head { state.seen[stream] = head }
        }
    }

    /// The node no longer follows `stream`.
    public func unsubscribed(_ stream: StreamKey) {
        state.withLock { _ = $0.seen.removeValue(forKey: stream) }
    }

    /// Live messages are being held.
    public var isRecovering: Bool { state.withLock { $0.recovering } }
}
