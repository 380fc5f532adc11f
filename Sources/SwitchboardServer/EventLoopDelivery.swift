import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The Hub's `DeliveryLoop` for one NIO event loop: each frame is handed over once with
/// all of its recipients on this loop and converted to bytes once. Frames that arrive
/// while the loop is busy are queued and written in one pass, each recipient flushed
/// once per pass — under load, one syscall carries many frames. No task and no
/// allocation per recipient.
final class EventLoopDelivery: DeliveryLoop {
    let eventLoop: any EventLoop
    private let cache: NIOLoopBoundBox<Cache>
    private let queue = NIOLockedValueBox(Queue())

    struct Cache {
        var frame: Frame?
        var buffer = ByteBuffer()
        var webSocketFrame: Frame?
        var webSocketBuffer = ByteBuffer()
        /// The batches of the pass being written, kept to reuse their storage.
        var spare: [Batch] = []
    }

    struct Batch {
        let frame: Frame
        let subscribers: [any Subscriber]
    }

    struct Queue {
        var batches: [Batch] = []
        var scheduled = false
    }

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.cache = NIOLoopBoundBox.makeBoxSendingValue(Cache(), eventLoop: eventLoop)
    }

    func deliver(_ frame: Frame, to subscribers: [any Subscriber]) {
        // On the loop with nothing queued (a reply, a welcome): write now, in order with
        // whatever the caller does next on this loop.
        if eventLoop.inEventLoop, queue.withLockedValue({ $0.batches.isEmpty }) {
            for subscriber in subscribers { subscriber.receive(frame) }
            for subscriber in subscribers { subscriber.flush() }
            return
        }
        let schedule = queue.withLockedValue { queue -> Bool in
            queue.batches.append(Batch(frame: frame, subscribers: subscribers))
            defer { queue.scheduled = true }
            return !queue.scheduled
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    /// Writes every queued batch in order, then flushes each recipient once.
    private func drain() {
        var batches = cache.value.spare
        queue.withLockedValue { queue in
            swap(&batches, &queue.batches)
            queue.scheduled = false
        }
        for batch in batches {
            for subscriber in batch.subscribers { subscriber.receive(batch.frame) }
        }
        for batch in batches {
            for subscriber in batch.subscribers { subscriber.flush() }
        }
        batches.removeAll(keepingCapacity: true)
        cache.value.spare = batches
        cache.value.frame = nil
        cache.value.webSocketFrame = nil
    }

    /// The frame's bytes as a buffer, built once per frame on this loop.
    func buffer(for frame: Frame) -> ByteBuffer {
        if cache.value.frame !== frame {
            cache.value.frame = frame
            cache.value.buffer = ByteBuffer(bytes: frame.bytes)
        }
        return cache.value.buffer
    }

    /// The frame as a complete, unmasked WebSocket text frame (header and payload),
    /// built once per frame on this loop: every recipient's socket gets the same bytes.
    func webSocketBuffer(for frame: Frame) -> ByteBuffer {
        if cache.value.webSocketFrame !== frame {
            cache.value.webSocketFrame = frame
            cache.value.webSocketBuffer = Self.webSocketTextFrame(frame.bytes)
        }
        return cache.value.webSocketBuffer
    }

    /// RFC 6455 §5.2: FIN + text opcode, a server's unmasked payload length, the payload.
    static func webSocketTextFrame(_ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(payload.count + 10)
        buffer.writeInteger(UInt8(0x81))
        switch payload.count {
        case ..<126:
            buffer.writeInteger(UInt8(payload.count))
        case ...0xFFFF:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(payload.count))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(payload.count))
        }
        buffer.writeBytes(payload)
        return buffer
    }

    private static let loops = PerEventLoop(EventLoopDelivery.init)

    /// The one delivery object of `eventLoop`.
    static func of(_ eventLoop: any EventLoop) -> EventLoopDelivery { loops.of(eventLoop) }
}

/// One object per event loop, created on first use (the loop-bound caches and queues
/// that connections on the same loop share).
struct PerEventLoop<Value: AnyObject & Sendable>: Sendable {
    private let values = NIOLockedValueBox<[ObjectIdentifier: Value]>([:])
    private let make: @Sendable (any EventLoop) -> Value

    init(_ make: @escaping @Sendable (any EventLoop) -> Value) {
        self.make = make
    }

    func of(_ eventLoop: any EventLoop) -> Value {
        values.withLockedValue { values in
            let key = ObjectIdentifier(eventLoop)
            if let existing = values[key] { return existing }
            let created = make(eventLoop)
            values[key] = created
            return created
        }
    }
}
