import NIOCore
import Synchronization

/// Counters of one event loop that other threads read for the progress line and the
/// settle and drain decisions. Written only on that loop.
final class LoopCounters: Sendable {
    /// Inbound messages of any kind (frames, SSE chunks, poll responses).
    let frames = Atomic<Int>(0)
    /// First deliveries of a bench message (by sequence) to a subscriber.
    let unique = Atomic<Int>(0)
    /// Connections established and dropped.
    let connected = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)
    /// Monotonic time of the latest first delivery.
    let lastDeliveryAt = Atomic<UInt64>(0)
}

/// What the subscribers of one event loop received: their ledgers and the latency
/// histogram. Confined to its loop (reached through a `NIOLoopBoundBox`), so recording
/// takes no lock.
final class LoopRecorder {
    let counters = LoopCounters()
    /// Deliveries stamped before this time belong to an earlier run and are ignored.
    let runStartedAt: UInt64
    var ledgers: [SubscriberLedger]
    var histogram = LatencyHistogram()
    /// Bench messages from earlier runs (a server's buffered history).
    var foreign = 0
    /// Set before the bench closes its connections: a close is then not a drop.
    var closing = false

    /// The room index of each slot.
    let roomOfSlot: @Sendable (Int) -> Int

    init(slots: Int, runStartedAt: UInt64, roomOfSlot: @escaping @Sendable (Int) -> Int = { _ in 0 }) {
        self.ledgers = Array(repeating: SubscriberLedger(), count: slots)
        self.runStartedAt = runStartedAt
        self.roomOfSlot = roomOfSlot
    }

    /// Scans one inbound message of subscriber `slot` for bench messages.
    func record(slot: Int, _ buffer: ByteBuffer) {
        counters.frames.wrappingAdd(1, ordering: .relaxed)
        let now = monotonicNanoseconds()
        var fresh = 0
        BenchPayload.scan(buffer) { delivery in
            guard delivery.sentAt >= runStartedAt, delivery.sentAt <= now else {
                foreign += 1
                return
            }
            if ledgers[slot].record(delivery) {
                histogram.record(nanoseconds: now - delivery.sentAt)
                fresh += 1
            }
        }
        if fresh > 0 {
            counters.unique.wrappingAdd(fresh, ordering: .relaxed)
            counters.lastDeliveryAt.store(now, ordering: .relaxed)
        }
    }

    /// Marks subscriber `slot` subscribed.
    func connected(slot: Int) {
        guard !ledgers[slot].connected else { return }
        ledgers[slot].connected = true
        counters.connected.wrappingAdd(1, ordering: .relaxed)
    }

    /// Marks subscriber `slot`'s connection ended (a drop unless the bench is closing).
    func ended(slot: Int) {
        guard ledgers[slot].connected, !ledgers[slot].dropped, !closing else { return }
        ledgers[slot].dropped = true
        counters.dropped.wrappingAdd(1, ordering: .relaxed)
    }

    /// The ledger totals (each subscriber against the accepted messages of its room),
    /// the histogram, and the count of foreign messages.
    func snapshot(accepted: [SequenceSet]) -> (LedgerSummary, LatencyHistogram, Int) {
        var summary = LedgerSummary()
        for (slot, ledger) in ledgers.enumerated() where ledger.connected {
            summary.add(ledger, accepted: accepted[roomOfSlot(slot)])
        }
        return (summary, histogram, foreign)
    }
}

/// A subscriber's place: its loop's recorder and its slot there.
struct SubscriberSlot: Sendable {
    let recorder: NIOLoopBoundBox<LoopRecorder>
    let slot: Int
    var eventLoop: any EventLoop { recorder.eventLoop }
}
