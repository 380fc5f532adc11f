import NIOCore
import NIOWebSocket
import SocketIO
import Synchronization

/// Where a session's WebSocket frames go: a socket of this node (``EngineIOSocketWriter``),
/// or one that another node relays (``EngineIOPeerSocketWriter``). Callable from any thread.
protocol EngineIOSocketSink: AnyObject, Sendable {
    /// Writes `frames` and flushes.
    func write(_ frames: [EngineIOFrame])
    /// Writes frames built elsewhere (shared buffers) and flushes.
    func write(frames: [WebSocketFrame])
    /// Sends a close frame, then closes the connection. Idempotent.
    func close(code: WebSocketErrorCode, reason: String?)
}

extension EngineIOSocketSink {
    func close() { close(code: .normalClosure, reason: nil) }
    func close(code: WebSocketErrorCode) { close(code: code, reason: nil) }
}

/// Writes a session's frames straight to one WebSocket channel (below Hummingbird's
/// WebSocket handler, which keeps the inbound side and the protocol pings), one flush
/// per batch. Callable from any thread: NIO hops to the channel's loop, in order.
///
/// The channel's write buffer is bounded: frames written while the socket is not
/// writable are counted, and past `maxBacklog` of them the client is disconnected
/// (1008) rather than letting memory grow with a slow reader.
final class EngineIOSocketWriter: EngineIOSocketSink {
    let channel: any Channel
    private let maxBacklog: Int
    private let backlog = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)

    init(channel: any Channel, maxBacklog: Int) {
        self.channel = channel
        self.maxBacklog = maxBacklog
    }

    /// Writes `frames` and flushes.
    func write(_ frames: [EngineIOFrame]) {
        guard admit(frames.count) else { return }
        for frame in frames { channel.write(Self.webSocketFrame(frame), promise: nil) }
        channel.flush()
    }

    /// Writes frames built elsewhere (shared buffers) and flushes.
    func write(frames: [WebSocketFrame]) {
        guard admit(frames.count) else { return }
        for frame in frames { channel.write(frame, promise: nil) }
        channel.flush()
    }

    private func admit(_ count: Int) -> Bool {
        guard count > 0, !closed.load(ordering: .relaxed) else { return false }
        if channel.isWritable {
            backlog.store(0, ordering: .relaxed)
        } else if backlog.add(count, ordering: .relaxed).newValue > maxBacklog {
            close(code: .policyViolation, reason: "slow consumer")
            return false
        }
        return true
    }

    /// Sends a close frame, then closes the connection. Idempotent.
    func close(code: WebSocketErrorCode, reason: String?) {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        var data = channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.write(webSocketErrorCode: code)
        if let reason { data.writeString(reason) }
        let channel = self.channel
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    static func webSocketFrame(_ frame: EngineIOFrame) -> WebSocketFrame {
        switch frame {
        case .text(let text): WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))
        case .binary(let bytes): WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: bytes))
        }
    }
}
