import Synchronization

/// The recent messages of every stream this node subscribes to, as the broker delivered
/// them. A resume or a poll whose cursor is inside the cached range is answered from
/// here, without a round trip to Redis — with a thousand long-polling clients that is the
/// difference between one history read per poll and none.
///
/// Contiguity: a stream's cache is `prepared` before the node subscribes, collects every
/// live message from then on, and is `started` with the stream's head read after the
/// subscription was active. Every message newer than that head was published after the
/// subscription existed, so it is delivered and cached: the cache holds every message
/// after `base`, and only cursors at or after `base` are answered from it.
final class StreamCache: Sendable {
    private struct Stream {
        /// Every message after `base` is in `entries` (nil while preparing).
        var base: MessageID?
        var entries: [StreamEntry] = []
    }

    private let capacity: Int
    private let streams = Mutex<[StreamKey: Stream]>([:])

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Starts collecting `stream` (call before subscribing).
    func prepare(_ stream: StreamKey) {
        streams.withLock { streams in
            if streams[stream] == nil { streams[stream] = Stream() }
        }
    }

    /// Declares the cache complete after `base` (the head read after subscribing).
    func start(_ stream: StreamKey, base: MessageID) {
        streams.withLock { streams in
            guard var entry = streams[stream], entry.base == nil else { return }
            entry.entries.removeAll { $0.id <= base }
            entry.base = base
            streams[stream] = entry
        }
    }

    /// Records a live message (ignored for streams not being cached).
    func append(_ message: StreamEntry) {
        streams.withLock { streams in
            guard var entry = streams[message.stream] else { return }
            if let last = entry.entries.last?.id ?? entry.base, message.id <= last { return }
            entry.entries.append(message)
            if entry.entries.count > capacity {
                let drop = entry.entries.count - capacity
                if entry.base != nil { entry.base = entry.entries[drop - 1].id }
                entry.entries.removeFirst(drop)
            }
            streams[message.stream] = entry
        }
    }

    func drop(_ stream: StreamKey) {
        _ = streams.withLock { $0.removeValue(forKey: stream) }
    }

    /// Forgets everything (the broker connection was lost: live delivery has a gap).
    func dropAll() {
        streams.withLock { $0 = [:] }
    }

    /// Messages after `after`, or nil when the cache cannot answer (not cached, still
    /// preparing, or `after` is older than the cached range).
    func read(_ stream: StreamKey, after: MessageID, limit: Int) -> [StreamEntry]? {
        streams.withLock { streams in
            guard let entry = streams[stream], let base = entry.base, after >= base else { return nil }
            guard let start = entry.entries.firstIndex(where: { $0.id > after }) else { return [] }
            return Array(entry.entries[start...].prefix(limit))
        }
    }

    /// The newest id of `stream` (`0-0` for an empty stream), or nil when not cached.
    func head(_ stream: StreamKey) -> MessageID? {
        streams.withLock { streams in
            guard let entry = streams[stream], let base = entry.base else { return nil }
            return entry.entries.last?.id ?? base
        }
    }
}
