import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// HTTP/1 connection semantics that clients rely on (RFC 9112 §9.3, §9.6), which the
/// server beneath does not keep by itself:
/// * a response after which the connection closes says so: `Connection: close` — when the
///   request asked for it (`Connection: close`, in any case or among other options), when
///   it was HTTP/1.0 without `keep-alive`, and when the server is shutting down. Without
///   the header a keep-alive client (Node's `fetch`, `node-fetch`) puts the socket back
///   in its pool and its next request fails with "socket hang up";
/// * an HTTP/1.0 request is answered as HTTP/1.0 (no chunked body), kept open only if it
///   asked for `keep-alive` and the body has a length (echoed `Connection: keep-alive`),
///   and closed otherwise;
/// * keep-alive HTTP/1.1 requests are untouched; pipelined requests are answered in order.
///
/// It sits right after the request decoder and leaves the pipeline when a WebSocket
/// upgrade is asked for (after an upgrade no HTTP flows through it).
public final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    /// What a request's response must do with the connection.
    private struct Expectation {
        var version: HTTPVersion
        var keepAlive: Bool
    }

    /// One per request whose response head is not written yet, oldest first.
    private var expected: [Expectation] = []
    /// The response being written closes the connection after its end.
    private var closeAfterResponse = false
    private var quiescing = false

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        if expected.isEmpty, head.isWebSocketUpgrade {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        let keepAlive = head.isKeepAlive
        expected.append(Expectation(version: head.version, keepAlive: keepAlive))
        guard keepAlive else {
            // One spelling the server understands: it stops reading after this request.
            head.headers.replaceOrAdd(name: "Connection", value: "close")
            context.fireChannelRead(wrapInboundOut(.head(head)))
            return
        }
        context.fireChannelRead(data)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { quiescing = true }
        context.fireUserInboundEventTriggered(event)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            // Informational answers (100 Continue) precede the real one.
            guard head.status.code >= 200 || head.status == .switchingProtocols else {
                context.write(data, promise: promise)
                return
            }
            let expectation = expected.isEmpty ? Expectation(version: .http1_1, keepAlive: true) : expected.removeFirst()
            var close = !expectation.keepAlive || quiescing
            if expectation.version == .http1_0 {
                head.version = .http1_0
                // HTTP/1.0 has no chunked bodies: a body without a length ends at the close.
                let bodyless = head.status == .noContent || head.status == .notModified
                if !bodyless, !head.headers.contains(name: "Content-Length") { close = true }
                if !close { head.headers.replaceOrAdd(name: "Connection", value: "keep-alive") }
            }
            if close {
                head.headers.replaceOrAdd(name: "Connection", value: "close")
                closeAfterResponse = true
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            guard closeAfterResponse else {
                context.write(data, promise: promise)
                return
            }
            closeAfterResponse = false
            let written = promise ?? context.eventLoop.makePromise()
            written.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
            context.writeAndFlush(data, promise: written)
        }
    }
}

extension HTTPRequestHead {
    /// The request asks to become a WebSocket (`Upgrade: websocket`, any case).
    public var isWebSocketUpgrade: Bool {
        headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
    }
}

/// A server child channel with an `HTTPConnectionHandler` right after the request
/// decoder of `inner`'s HTTP/1 pipeline.
public struct HTTPConnectionChannel<Inner: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Inner.Value
    let inner: Inner

    public init(_ inner: Inner) {
        self.inner = inner
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let value = inner.setup(channel: channel, logger: logger)
        do {
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(), position: .after(decoder))
        } catch {
            logger.error("cannot install the HTTP connection handler", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        return value
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}
