import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Why a subscriber could not connect.
struct ConnectError: Error, CustomStringConvertible {
    let description: String
}

/// A WebSocket subscriber: upgrades `GET target`, then scans every text or binary
/// message for bench messages and answers pings.
enum WebSocketSubscriber {
    private enum Upgrade: Sendable {
        case upgraded(any Channel)
        case refused
    }

    /// Connects subscriber `slot` to `url`'s server with request target `target`.
    static func connect(url: BenchURL, target: String, slot: SubscriberSlot) async throws -> any Channel {
        let upgrade = try await ClientBootstrap(group: slot.eventLoop)
            .connectTimeout(.seconds(10))
            .connect(host: url.host, port: url.port) { channel -> EventLoopFuture<EventLoopFuture<Upgrade>> in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: 1 << 20) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(WebSocketSubscriberHandler(slot: slot))
                            return Upgrade.upgraded(channel)
                        }
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: url.hostHeader)
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<Upgrade>(
                        upgradeRequestHead: head, upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.close(promise: nil)
                            return channel.eventLoop.makeSucceededFuture(.refused)
                        })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(upgradeConfiguration: configuration))
                }
            }
        switch try await upgrade.get() {
        case .upgraded(let channel): return channel
        case .refused: throw ConnectError(description: "WebSocket upgrade refused by \(url.hostHeader)\(target.prefix { $0 != "?" })")
        }
    }
}

/// Scans inbound WebSocket messages of one subscriber; answers pings; reports the end.
final class WebSocketSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let slot: SubscriberSlot
    private var fragments: ByteBuffer?

    init(slot: SubscriberSlot) {
        self.slot = slot
    }

    func handlerAdded(context: ChannelHandlerContext) {
        slot.recorder.value.connected(slot: slot.slot)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                slot.recorder.value.record(slot: slot.slot, frame.unmaskedData)
            } else {
                fragments = frame.unmaskedData
            }
        case .continuation:
            guard var buffer = fragments else { return }
            var data = frame.unmaskedData
            buffer.writeBuffer(&data)
            if frame.fin {
                fragments = nil
                slot.recorder.value.record(slot: slot.slot, buffer)
            } else {
                fragments = buffer
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        slot.recorder.value.ended(slot: slot.slot)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
