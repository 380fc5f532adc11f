import HTTPTypes
import HummingbirdCore
import SwitchboardCore
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import SocketIO
import SocketIOHummingbird
import Crypto

/// Refuses bad WebSocket upgrades with a real HTTP answer. Hummingbird answers every
/// refused upgrade with an empty 400; PROTOCOL.md wants `401 {"error":"unauthorized"}`,
/// `409 {"error":"nickname_taken"}` and so on. This handler sits right after the HTTP
/// decoder, checks an upgrade request's head (asynchronously: a nickname claim needs the
/// broker), writes the error response itself when the check fails, and otherwise lets the
/// request through and removes itself. Accepted `/ws` upgrades and streams (`/sse`,
/// `/iframe`) that are a connection's first request are served here without Hummingbird
/// (`Decision.native`, `Decision.stream`): no task waits on those connections.
final class UpgradeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What to do with an upgrade request.
    enum Decision: Sendable {
        /// Answer with this error and close.
        case refuse(APIError)
        /// Let it through to Hummingbird's upgrade (Socket.IO).
        case proceed
        /// Upgrade here to a native WebSocket served by `NativeWebSocketHandler` (`/ws`).
        case native(WebSocketTransport.Opening)
        /// Answer a stream (`/sse`, `/iframe`) opened by the check, on this connection,
        /// without Hummingbird.
        case stream(StreamTransport.Opening)
    }

    typealias Check = @Sendable (_ path: String, _ head: HTTPRequestHead, _ channel: any Channel) async -> Decision
    /// Makes the handler of an accepted native WebSocket (on the loop).
    typealias MakeNative = @Sendable (WebSocketTransport.Opening) -> NativeWebSocketHandler
    /// Starts an opened stream after its response head (on the loop).
    typealias StartStream = @Sendable (StreamTransport.Opening) -> Void

    private let check: Check
    private let makeNative: MakeNative
    private let startStream: StartStream
    private let maxFrameSize: Int
    private let logger: Logger
    private var pending: [NIOAny] = []
    private var head: HTTPRequestHead?
    private var state = State.idle

    /// `streaming`: the connection carries a native stream; later input is ignored.
    enum State { case idle, checking, refused, done, streaming }

    init(
        check: @escaping Check, makeNative: @escaping MakeNative, startStream: @escaping StartStream, maxFrameSize: Int,
        logger: Logger
    ) {
        self.check = check
        self.makeNative = makeNative
        self.startStream = startStream
        self.maxFrameSize = maxFrameSize
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .idle:
            guard case .head(let head) = unwrapInboundIn(data) else {
                context.fireChannelRead(data)
                return
            }
            let isUpgrade = head.isWebSocketUpgrade
            let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            let isStream = head.method == .GET && (path == "/sse" || path == "/iframe")
            guard isUpgrade || isStream else {
                // Plain HTTP on this connection: nothing to gate.
                state = .done
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            state = .checking
            pending.append(data)
            self.head = head
            let promise = context.eventLoop.makePromise(of: Decision.self)
            let check = self.check
            let channel = context.channel
            promise.completeWithTask { await check(path, head, channel) }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { decision in
                let (gate, context) = loopBound.value
                switch decision {
                case .refuse(let error): gate.decided(error, context: context)
                case .proceed: gate.decided(nil, context: context)
                case .native(let opening): gate.upgradeNatively(opening, context: context)
                case .stream(let opening): gate.stream(opening, context: context)
                }
            }
        case .checking:
            pending.append(data)
        case .refused, .streaming:
            break
        case .done:
            context.fireChannelRead(data)
        }
    }

    /// A request the decoder could not parse before the first head (headers or request
    /// line over the limits, garbage): Hummingbird would drop the connection without a
    /// word while it negotiates the upgrade. Answer 431 or 400 with a JSON error, then close.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard state == .idle || state == .checking, let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let answer: APIError =
            switch parserError {
            case .headerOverflow:
                APIError(.init(code: 431, reasonPhrase: "Request Header Fields Too Large"), "headers_too_large",
                         "the request line or headers exceed the node's limits")
            default:
                APIError(.badRequest, "bad_request", "malformed HTTP request")
            }
        decided(answer, context: context)
    }

    private func decided(_ error: APIError?, context: ChannelHandlerContext) {
        guard state != .refused else { return }
        guard let error else {
            state = .done
            let parts = pending
            pending = []
            for part in parts { context.fireChannelRead(part) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        state = .refused
        pending = []
        // A client's bad request, not a server error: said once, below warning.
        logger.debug(
            "websocket upgrade refused",
            metadata: ["http.status": "\(error.status.code)", "error.code": "\(error.code)", "client": "\(context.channel.remoteAddress?.description ?? "?")"])
        var body = context.channel.allocator.buffer(capacity: 64)
        body.writeString(error.jsonBody)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(
            version: .http1_1, status: .init(statusCode: Int(error.status.code), reasonPhrase: error.status.reasonPhrase), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension UpgradeGate {
    /// A stream as the connection's first request: the response head is written here,
    /// then every HTTP handler leaves the pipeline — the stream writes raw chunks
    /// (`StreamSink.Output.chunked`) and `StreamInputHandler` is all that is left, so an
    /// idle stream costs about what an idle WebSocket does, and no task waits on it.
    private func stream(_ opening: StreamTransport.Opening, context: ChannelHandlerContext) {
        guard state == .checking, let request = head else { return }
        state = .streaming
        pending = []
        var headers = HTTPHeaders()
        for field in opening.headers { headers.add(name: field.name.rawName, value: field.value) }
        if request.version == .http1_1 {
            headers.add(name: "Transfer-Encoding", value: "chunked")
        } else {
            headers.add(name: "Connection", value: "close")
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .ok, headers: headers))), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(StreamInputHandler(connection: opening.connection), position: .first)
            Self.removeUpgradeHandler(pipeline)
            if let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) { pipeline.removeHandler(encoder, promise: nil) }
            if let handler = try? pipeline.handler(type: HTTPConnectionHandler.self) { pipeline.removeHandler(handler, promise: nil) }
            if let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
                pipeline.removeHandler(decoder, promise: nil)
            }
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            logger.warning("stream setup failed", metadata: ["error": "\(error)"])
            context.channel.close(promise: nil)
            return
        }
        startStream(opening)
    }

    /// Removes Hummingbird's upgrade handler: its pending result fails, so Hummingbird's
    /// connection task ends (the failure is logged at debug, `RefusedUpgradeLogFilter`).
    private static func removeUpgradeHandler(_ pipeline: ChannelPipeline.SynchronousOperations) {
        if let upgrader = try? pipeline.handler(type: NIOTypedHTTPServerUpgradeHandler<HTTP1WebSocketUpgradeChannel.UpgradeResult>.self) {
            pipeline.removeHandler(upgrader, promise: nil)
        }
    }

    /// RFC 6455 §4.2: answers 101 with the key's accept value, then swaps the HTTP
    /// handlers for NIO's WebSocket codec and a `NativeWebSocketHandler`. Hummingbird's
    /// upgrade handler leaves with them, so no task waits on this connection.
    private func upgradeNatively(_ opening: WebSocketTransport.Opening, context: ChannelHandlerContext) {
        guard state == .checking, let head else { return }
        guard head.method == .GET, head.headers["Sec-WebSocket-Version"].first == "13",
            let key = head.headers["Sec-WebSocket-Key"].first.map({ String($0.filter { $0 != " " && $0 != "\t" }) }), !key.isEmpty
        else {
            return decided(APIError(.badRequest, "bad_request", "a WebSocket upgrade needs GET, Sec-WebSocket-Key and version 13"), context: context)
        }
        state = .done
        pending = []
        let accept = Base64.encode(Array(Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))))
        var headers = HTTPHeaders()
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Sec-WebSocket-Accept", value: accept)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        let channel = context.channel
        _ = channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(WebSocketFrameEncoder())
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            try pipeline.addHandler(makeNative(opening))
            Self.removeUpgradeHandler(pipeline)
            if let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) { pipeline.removeHandler(encoder, promise: nil) }
            // Last: bytes the client sent after its request go on to the WebSocket decoder.
            if let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
                pipeline.removeHandler(decoder, promise: nil)
            }
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            logger.warning("websocket upgrade failed", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
    }
}

extension APIError {
    var jsonBody: String {
        String(decoding: JSONValue.object(bodyFields).jsonBytes, as: UTF8.self)
    }
}

/// Hummingbird's HTTP/1 + WebSocket child channel with an `UpgradeGate` right after the
/// HTTP decoder.
struct GatedWebSocketChannel: ServerChildChannel {
    let inner: HTTP1WebSocketUpgradeChannel
    let check: UpgradeGate.Check
    let makeNative: UpgradeGate.MakeNative
    let startStream: UpgradeGate.StartStream
    let maxFrameSize: Int

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1WebSocketUpgradeChannel.Value> {
        // Every connection keeps its last receive buffer for the next read (NIO's pooled
        // receive allocator, 2 KiB by default): 1 KiB fits an upgrade or a stream request
        // in one read, and an idle socket keeps half as much. Bigger bodies grow it.
        _ = try? channel.syncOptions?.setOption(
            ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536))
        let value = inner.setup(channel: channel, logger: logger)
        do {
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(UpgradeGate(
                    check: check, makeNative: makeNative, startStream: startStream, maxFrameSize: maxFrameSize, logger: logger), position: .after(decoder))
        } catch {
            logger.error("cannot install the upgrade gate", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        return value
    }

    func handle(value: HTTP1WebSocketUpgradeChannel.Value, logger: Logger) async {
        // A refused upgrade closes the channel, and a native one removes Hummingbird's
        // upgrade handler, before its result is known; Hummingbird reports that as an
        // error. The gate already logged the refusal.
        var quiet = logger
        quiet.handler = RefusedUpgradeLogFilter(wrapping: logger.handler)
        await inner.handle(value: value, logger: quiet)
    }
}

/// Passes every log record through, except Hummingbird's "Error handling upgrade result"
/// for a channel closed by the `UpgradeGate` (a refused upgrade), which becomes debug.
struct RefusedUpgradeLogFilter: LogHandler {
    var wrapped: any LogHandler

    init(wrapping handler: any LogHandler) {
        self.wrapped = handler
    }

    var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        if event.level == .error, event.message.description == "Error handling upgrade result",
            case .string(let type)? = event.metadata?["error.type"], type == "\(ChannelError.inappropriateOperationForState)"
        {
            guard wrapped.logLevel <= .debug else { return }
            event.level = .debug
        }
        wrapped.log(event: event)
    }
}
