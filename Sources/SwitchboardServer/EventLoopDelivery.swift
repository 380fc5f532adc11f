import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The Hub's `DeliveryLoop` for one NIO event loop: each frame is handed over once with
/// all of its recipients on this loop, converted to a `ByteBuffer` once, written to each
/// recipient and flushed once — no task, no allocation per recipient.
final class EventLoopDelivery: DeliveryLoop {
    let eventLoop: any EventLoop
    private let cache: NIOLoopBoundBox<Cache>

    struct Cache {
        var frame: Frame?
        var buffer = ByteBuffer()
    }

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.cache = NIOLoopBoundBox.makeBoxSendingValue(Cache(), eventLoop: eventLoop)
    }

    func deliver(_ frame: Frame, to subscribers: [any Subscriber]) {
        if eventLoop.inEventLoop {
            run(frame, subscribers)
        } else {
            eventLoop.execute { self.run(frame, subscribers) }
        }
    }

    private func run(_ frame: Frame, _ subscribers: [any Subscriber]) {
        for subscriber in subscribers { subscriber.receive(frame) }
        for subscriber in subscribers { subscriber.flush() }
        cache.value.frame = nil
    }

    /// The frame's bytes as a buffer, built once per frame on this loop.
    func buffer(for frame: Frame) -> ByteBuffer {
        if cache.value.frame !== frame {
            cache.value.frame = frame
            cache.value.buffer = ByteBuffer(bytes: frame.bytes)
        }
        return cache.value.buffer
    }

    private static let loops = NIOLockedValueBox<[ObjectIdentifier: EventLoopDelivery]>([:])

    /// The one delivery object of `eventLoop`.
    static func of(_ eventLoop: any EventLoop) -> EventLoopDelivery {
        loops.withLockedValue { loops in
            let key = ObjectIdentifier(eventLoop)
            if let existing = loops[key] { return existing }
            let created = EventLoopDelivery(eventLoop: eventLoop)
            loops[key] = created
            return created
        }
    }
}
