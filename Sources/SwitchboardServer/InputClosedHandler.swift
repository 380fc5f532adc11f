import NIOConcurrencyHelpers
import NIOCore

/// Notices a client that closed its side of the connection (FIN) while a streamed
/// response (SSE, iframe) is open on it, and ends that stream at once instead of at the
/// next keep-alive write. Plain requests are not affected.
final class InputClosedHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            StreamRegistry.inputClosed(on: context.channel)
        }
        context.fireUserInboundEventTriggered(event)
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
