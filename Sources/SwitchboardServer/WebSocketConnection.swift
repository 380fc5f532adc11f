import NIOCore
import NIOWebSocket
import SwitchboardCore

/// A native WebSocket's outbound side.
typealias WebSocketConnection = Connection<WebSocketSink>

/// Frames as unmasked WebSocket text frames, built once per frame per loop and written
/// below NIO's frame encoder, straight to the socket's write queue;
/// `NativeWebSocketHandler` owns the inbound side, ping/pong and the close handshake.
struct WebSocketSink: ConnectionSink {
    let channel: any Channel
    /// The context of NIO's WebSocket frame encoder (nil if the pipeline has none: then
    /// frames go through the pipeline as `WebSocketFrame`s).
    private let rawOutput: NIOLoopBound<ChannelHandlerContext?>

    /// On the channel's loop, once the WebSocket codec is in the pipeline.
    init(channel: any Channel) {
        self.channel = channel
        self.rawOutput = NIOLoopBound(
            try? channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self), eventLoop: channel.eventLoop)
    }

    var isWritable: Bool { channel.isWritable }

    func write(_ frame: Frame, position: Cursor?, delivery: EventLoopDelivery) {
        if let output = rawOutput.value {
            output.write(NIOAny(delivery.webSocketBuffer(for: frame)), promise: nil)
        } else {
            channel.write(WebSocketFrame(fin: true, opcode: .text, data: delivery.buffer(for: frame)), promise: nil)
        }
    }

    func flush() {
        if let output = rawOutput.value { output.flush() } else { channel.flush() }
    }

    func end(_ reason: CloseReason) {
        let code: WebSocketErrorCode =
            switch reason {
            case .serviceRestart: .unknown(1012)
            case .slowConsumer, .policy: .policyViolation
            }
        close(code: code, reason: reason.message)
    }

    /// Sends a close frame with `code`, then closes the channel.
    func close(code: WebSocketErrorCode, reason: String) {
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let channel = self.channel
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)).whenComplete { _ in
            channel.close(promise: nil)
        }
        // A client that does not read never completes that write: close anyway.
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
}

extension Connection where Sink == WebSocketSink {
    /// On the loop: a close frame with `code` (once), then the channel closes.
    func close(code: WebSocketErrorCode, reason: String) {
        end { $0.close(code: code, reason: reason) }
    }

    var channel: any Channel { sink.channel }
}
