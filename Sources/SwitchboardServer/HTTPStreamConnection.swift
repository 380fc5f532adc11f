import NIOCore
import NIOHTTPTypes
import SwitchboardCore

/// One SSE or iframe stream.
typealias HTTPStreamConnection = Connection<StreamSink>

/// Frames as body parts of a streamed HTTP response whose head is already sent: the
/// shared JSON between a small per-connection prefix and suffix (`StreamFraming`).
/// `finished` completes when the stream ends (client gone, server close); the router's
/// response body waits on it, the native path (`UpgradeGate`) does not wait at all.
struct StreamSink: ConnectionSink {
    let channel: any Channel
    let framing: StreamFraming
    let output: Output
    let finished: EventLoopPromise<Void>

    /// How body bytes reach the socket.
    enum Output: Sendable {
        /// As `HTTPResponsePart.body` through the connection's HTTP handlers (a stream
        /// served by the router, on a connection that carried other requests).
        case parts
        /// As raw bytes framed as HTTP/1.1 chunks by the sink itself: the connection's HTTP
        /// handlers are gone (a stream that is its connection's first request).
        case chunked
        /// As raw bytes until the connection closes (the same, for an HTTP/1.0 client).
        case plain
    }

    init(channel: any Channel, framing: StreamFraming, output: Output = .parts) {
        self.channel = channel
        self.framing = framing
        self.output = output
        let finished = channel.eventLoop.makePromise(of: Void.self)
        self.finished = finished
        // Also when the client leaves before the stream starts.
        channel.closeFuture.whenComplete { _ in finished.succeed() }
    }

    var isWritable: Bool { channel.isWritable }

    func write(_ frame: Frame, position: Cursor?, delivery: EventLoopDelivery) {
        var cursor: String?
        if case .sse = framing, let position { cursor = position.description }
        let prefix = framing.prefix(type: frame.type, cursor: cursor)
        let payload = delivery.buffer(for: frame)
        switch output {
        case .parts:
            writeText(prefix)
            channel.write(HTTPResponsePart.body(payload), promise: nil)
            writeText(framing.suffix)
        case .chunked, .plain:
            let suffix = framing.suffix
            var head = channel.allocator.buffer(capacity: prefix.utf8.count + 10)
            if case .chunked = output {
                head.writeString(String(prefix.utf8.count + payload.readableBytes + suffix.utf8.count, radix: 16))
                head.writeString("\r\n")
            }
            head.writeString(prefix)
            channel.write(head, promise: nil)
            channel.write(payload, promise: nil)
            channel.write(channel.allocator.buffer(string: output == .chunked ? suffix + "\r\n" : suffix), promise: nil)
        }
    }

    func writeText(_ text: String) {
        switch output {
        case .parts: channel.write(HTTPResponsePart.body(channel.allocator.buffer(string: text)), promise: nil)
        case .chunked: channel.write(channel.allocator.buffer(string: String(text.utf8.count, radix: 16) + "\r\n" + text + "\r\n"), promise: nil)
        case .plain: channel.write(channel.allocator.buffer(string: text), promise: nil)
        }
    }

    func flush() { channel.flush() }

    /// A farewell (SSE: a retry hint), then the connection itself ends: a drain must not
    /// wait for the response to finish, and a slow consumer may never read what is queued.
    func end(_ reason: CloseReason) {
        writeText(framing.farewell(reason: reason.message, retryMilliseconds: 1000))
        // The last chunk: a complete response, so the browser reconnects without an error.
        if case .chunked = output { channel.write(channel.allocator.buffer(string: "0\r\n\r\n"), promise: nil) }
        flush()
        finished.succeed()
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .milliseconds(100)) { channel.close(promise: nil) }
    }
}

extension Connection: HeartbeatMember where Sink == StreamSink {
    var channel: any Channel { sink.channel }

    /// After the response head (from any thread): the preamble, the opening sequence,
    /// then keep-alives every `keepAlive` (one timer per loop) until the stream ends.
    func start(welcome: Frame, backlog: [Frame], cursor: Cursor, keepAlive: Duration, retryMilliseconds: Int) {
        eventLoop.execute {
            self.startNow(welcome: welcome, backlog: backlog, cursor: cursor, keepAlive: keepAlive, retryMilliseconds: retryMilliseconds)
        }
    }

    private func startNow(welcome: Frame, backlog: [Frame], cursor: Cursor, keepAlive: Duration, retryMilliseconds: Int) {
        guard !isClosed else { return sink.finished.succeed() }
        if case .parts = sink.output { StreamRegistry.register(self) }
        Heartbeat.streams(eventLoop).add(self, interval: keepAlive)
        // Runs at once if the channel is gone already.
        channel.closeFuture.whenComplete { _ in self.finish() }
        guard !isClosed else { return }
        sink.writeText(sink.framing.preamble(retryMilliseconds: retryMilliseconds))
        openNow(welcome: welcome, backlog: backlog, cursor: cursor)
    }

    /// A keep-alive comment.
    func heartbeat() {
        guard !isClosed else { return }
        sink.writeText(sink.framing.keepAlive)
        sink.flush()
    }

    /// The client closed its side (FIN): end the stream and the connection.
    func clientGone() {
        eventLoop.execute {
            self.finish()
            self.channel.close(promise: nil)
        }
    }

    /// On the loop: the stream is over, however it ended.
    private func finish() {
        markClosed()
        Heartbeat.streams(eventLoop).remove(self)
        if case .parts = sink.output { StreamRegistry.unregister(self) }
        sink.finished.succeed()
    }
}
