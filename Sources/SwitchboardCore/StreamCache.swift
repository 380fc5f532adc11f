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
        /// In id order; between `capacity` and a quarter more once full (trimmed in one
        /// go, so an append costs O(1) amortized: about four moves). The slack is what a
        /// node holds beyond the replay window — with 50 KB messages and a 1,000-message
        /// window, 12 MB rather than the 50 MB that doubling cost.
        var entries: [StreamEntry] = []

        mutating func append(_ message: StreamEntry, capacity: Int) {
            if let last = entries.last?.id ?? base, message.id <= last { return }
            entries.append(message)
            if entries.count >= capacity + max(1, capacity / 4) {
                let drop = entries.count - capacity
                if base != nil { base = entries[drop - 1].id }
                entries.removeFirst(drop)
            }
        }

        /// The index of the first entry newer than `id` (binary search: ids increase).
        func firstIndex(after id: MessageID) -> Int {
            var low = 0, high = entries.count
            while low < high {
                let mid = (low + high) / 2
                if entries[mid].id > id { high = mid } else { low = mid + 1 }
            }
            return low
        }
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
            guard streams[stream]?.base == nil, streams[stream] != nil else { return }
            streams[stream]!.entries.removeAll { $0.id <= base }
            streams[stream]!.base = base
        }
    }

    /// Records a live message (ignored for streams not being cached).
    func append(_ message: StreamEntry) {
        streams.withLock { streams in
            // Mutated in place: a copy here would copy the whole window per message.
            guard streams[message.stream] != nil else { return }
            streams[message.stream]!.append(message, capacity: capacity)
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
            let start = entry.firstIndex(after: after)
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
