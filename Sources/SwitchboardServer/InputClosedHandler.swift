import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Notices a client that closed its side of the connection (FIN) while a streamed
/// response (SSE, iframe) is open on it, and ends that stream at once instead of at the
/// next keep-alive write; and a client that went away (FIN, or the connection ended)
/// while its long-poll waits, and ends that wait. Plain requests are not affected.
final class InputClosedHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            StreamRegistry.inputClosed(on: context.channel)
            PollWaiters.clientGone(on: context.channel)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        PollWaiters.clientGone(on: context.channel)
        context.fireChannelInactive()
    }
}

/// A long-poll waiting for events on its channel. When its client goes away (a closed
/// tab, a page that changed its rooms and polls again elsewhere) the wait ends at once,
/// and the session's presence lapses after a short grace instead of after the wait plus
/// the whole poll window.
final class PollWaiter: Sendable {
    private let gone = Atomic<Bool>(false)
    private let subscriber: PollSubscriber

    init(subscriber: PollSubscriber) {
        self.subscriber = subscriber
    }

    /// Whether the client went away during the wait.
    var isGone: Bool { gone.load(ordering: .acquiring) }

    /// From any thread; wakes the wait once.
    func clientGone() {
        guard !gone.exchange(true, ordering: .acquiringAndReleasing) else { return }
        subscriber.wakeAll()
    }
}

/// The waiting long-polls by channel (one request at a time per HTTP/1.1 connection).
enum PollWaiters {
    private static let waiters = NIOLockedValueBox<[ObjectIdentifier: PollWaiter]>([:])

    /// Registers `waiter` for the wait on `channel`; a channel already closed counts as gone.
    static func register(_ waiter: PollWaiter, on channel: any Channel) {
        waiters.withLockedValue { $0[ObjectIdentifier(channel)] = waiter }
        if !channel.isActive { waiter.clientGone() }
    }

    static func unregister(_ waiter: PollWaiter, on channel: any Channel) {
        waiters.withLockedValue { waiters in
            let key = ObjectIdentifier(channel)
            if waiters[key] === waiter { waiters[key] = nil }
        }
    }

    static func clientGone(on channel: any Channel) {
        let waiter = waiters.withLockedValue { $0[ObjectIdentifier(channel)] }
        waiter?.clientGone()
    }
}

/// The open streamed responses by channel.
enum StreamRegistry {
    private static let streams = NIOLockedValueBox<[ObjectIdentifier: HTTPStreamConnection]>([:])

    static func register(_ connection: HTTPStreamConnection) {
        streams.withLockedValue { $0[ObjectIdentifier(connection.channel)] = connection }
    }

    static func unregister(_ connection: HTTPStreamConnection) {
        streams.withLockedValue { streams in
            let key = ObjectIdentifier(connection.channel)
            if streams[key] === connection { streams[key] = nil }
        }
    }

    static func inputClosed(on channel: any Channel) {
        let connection = streams.withLockedValue { $0[ObjectIdentifier(channel)] }
        connection?.clientGone()
    }
}

/// All that is left of a native stream's pipeline (`UpgradeGate`): later input is read
/// and dropped (a stream takes no requests), and a client that closes its side ends the
/// stream at once.
final class StreamInputHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let connection: HTTPStreamConnection

    init(connection: HTTPStreamConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { connection.clientGone() }
        context.fireUserInboundEventTriggered(event)
    }
}
