import Synchronization

/// The node's broker subscriptions, one per stream with local members, changed one at a
/// time per stream.
///
/// Joins and leaves of one stream race (a member arrives while the last one is leaving;
/// two members arrive at once). Each change is an async broker call, so without an order
/// an `unsubscribe` could land after the `subscribe` that followed it — a member with no
/// live delivery — or a second member could start reading history before the first one's
/// subscription was active, and miss what was published in between. Here every change of
/// a stream runs after the one asked before it, and `activate` returns only once the
/// subscription is active: a member that found the stream already subscribed pays one
/// lock, nothing more.
final class StreamSubscriptions: Sendable {
    private struct Entry {
        /// The broker delivers this stream to the node.
        var active = false
        /// The newest change asked for; the next one waits for it.
        var tail: Task<Void, Never>?
        /// Changes asked for and not finished.
        var queued = 0
    }

    private let entries = Mutex<[StreamKey: Entry]>([:])

    /// Runs `subscribe` unless `stream` is already active, after every change asked
    /// before; throws what `subscribe` threw (the stream stays inactive).
    func activate(_ stream: StreamKey, subscribe: @escaping @Sendable () async throws -> Void) async throws {
        let fast = entries.withLock { entries in
            guard let entry = entries[stream] else { return false }
            return entry.active && entry.queued == 0
        }
        if fast { return }
        let failure = Mutex<(any Error)?>(nil)
        await serially(stream) { active in
            guard !active else { return true }
            do {
                try await subscribe()
                return true
            } catch {
                failure.withLock { $0 = error }
                return false
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Runs `unsubscribe` after every change asked before, if the stream is active and
    /// `isUnused()` still says so then (a member may have come back meanwhile).
    func deactivate(
        _ stream: StreamKey, isUnused: @escaping @Sendable () -> Bool, unsubscribe: @escaping @Sendable () async -> Void
    ) async {
        await serially(stream) { active in
            guard active, isUnused() else { return active }
            await unsubscribe()
            return false
        }
    }

    /// Whether the broker delivers `stream` to this node now.
    func isActive(_ stream: StreamKey) -> Bool {
        entries.withLock { $0[stream]?.active ?? false }
    }

    /// Queues `change` behind the stream's previous change; `change` gets whether the
    /// stream is active and returns whether it is afterwards.
    private func serially(_ stream: StreamKey, _ change: @escaping @Sendable (Bool) async -> Bool) async {
        let task = entries.withLock { entries -> Task<Void, Never> in
            var entry = entries[stream] ?? Entry()
            let previous = entry.tail
            let task = Task {
                await previous?.value
                let active = self.entries.withLock { $0[stream]?.active ?? false }
                let now = await change(active)
                self.entries.withLock { $0[stream]?.active = now }
            }
            entry.tail = task
            entry.queued += 1
            entries[stream] = entry
            return task
        }
        await task.value
        entries.withLock { entries in
            guard var entry = entries[stream] else { return }
            entry.queued -= 1
            if entry.queued == 0 {
                entry.tail = nil
                entries[stream] = entry.active ? entry : nil
            } else {
                entries[stream] = entry
            }
        }
    }
}
