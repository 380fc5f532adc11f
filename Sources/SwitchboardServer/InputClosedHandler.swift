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

/// What is open on a channel, by channel: at most one at a time (an HTTP/1.1 connection
/// serves one request at a time). Shared by streamed responses and waiting long-polls.
final class ChannelRegistry<Entry: AnyObject & Sendable>: Sendable {
    private let entries = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

    func register(_ entry: Entry, on channel: any Channel) {
        entries.withLockedValue { $0[ObjectIdentifier(channel)] = entry }
    }

    /// Removes `entry`, unless another one took its channel since.
    func unregister(_ entry: Entry, on channel: any Channel) {
        entries.withLockedValue { entries in
            let key = ObjectIdentifier(channel)
            if entries[key] === entry { entries[key] = nil }
        }
    }

    func entry(on channel: any Channel) -> Entry? {
        entries.withLockedValue { $0[ObjectIdentifier(channel)] }
    }
}

/// The waiting long-polls by channel.
enum PollWaiters {
    private static let waiters = ChannelRegistry<PollWaiter>()

    /// Registers `waiter` for the wait on `channel`; a channel already closed counts as gone.
    static func register(_ waiter: PollWaiter, on channel: any Channel) {
        waiters.register(waiter, on: channel)
        if !channel.isActive { waiter.clientGone() }
    }

    static func unregister(_ waiter: PollWaiter, on channel: any Channel) {
        waiters.unregister(waiter, on: channel)
    }

    static func clientGone(on channel: any Channel) {
        waiters.entry(on: channel)?.clientGone()
    }
}

/// The open streamed responses by channel.
enum StreamRegistry {
    private static let streams = ChannelRegistry<HTTPStreamConnection>()

    static func register(_ connection: HTTPStreamConnection) {
        streams.register(connection, on: connection.channel)
    }

    static func unregister(_ connection: HTTPStreamConnection) {
        streams.unregister(connection, on: connection.channel)
    }

    static func inputClosed(on channel: any Channel) {
        streams.entry(on: channel)?.clientGone()
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
