import HTTPTypes
import HummingbirdCore
import SwitchboardCore
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1

/// Refuses bad WebSocket upgrades with a real HTTP answer. Hummingbird answers every
/// refused upgrade with an empty 400; PROTOCOL.md wants `401 {"error":"unauthorized"}`,
/// `409 {"error":"nickname_taken"}` and so on. This handler sits right after the HTTP
/// decoder, checks an upgrade request's head (asynchronously: a nickname claim needs the
/// broker), writes the error response itself when the check fails, and otherwise lets the
/// request through and removes itself.
final class UpgradeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Returns the error to answer with, or nil to let the upgrade proceed.
    typealias Check = @Sendable (_ path: String, _ head: HTTPRequestHead, _ channel: any Channel) async -> APIError?

    private let check: Check
    private let logger: Logger
    private var pending: [NIOAny] = []
    private var state = State.idle

    enum State { case idle, checking, refused, done }

    init(check: @escaping Check, logger: Logger) {
        self.check = check
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .idle:
            guard case .head(let head) = unwrapInboundIn(data) else {
                context.fireChannelRead(data)
                return
            }
            let isUpgrade = head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            guard isUpgrade else {
                // Plain HTTP on this connection: nothing to gate.
                state = .done
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            state = .checking
            pending.append(data)
            let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            let promise = context.eventLoop.makePromise(of: APIError?.self)
            let check = self.check
            let channel = context.channel
            promise.completeWithTask { await check(path, head, channel) }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { error in
                let (gate, context) = loopBound.value
                gate.decided(error, context: context)
            }
        case .checking:
            pending.append(data)
        case .refused:
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

extension APIError {
    var jsonBody: String {
        var fields: [String: JSONValue] = ["error": .string(code)]
        if let message { fields["message"] = .string(message) }
        return String(decoding: JSONValue.object(fields).jsonBytes, as: UTF8.self)
    }
}

/// Hummingbird's HTTP/1 + WebSocket child channel with an `UpgradeGate` right after the
/// HTTP decoder.
struct GatedWebSocketChannel: ServerChildChannel {
    let inner: HTTP1WebSocketUpgradeChannel
    let check: UpgradeGate.Check

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1WebSocketUpgradeChannel.Value> {
        let value = inner.setup(channel: channel, logger: logger)
        do {
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(UpgradeGate(check: check, logger: logger), position: .after(decoder))
        } catch {
            logger.error("cannot install the upgrade gate", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        return value
    }

    func handle(value: HTTP1WebSocketUpgradeChannel.Value, logger: Logger) async {
        // A refused upgrade closes the channel before Hummingbird's upgrade result is
        // known, which it reports as an error; the gate already logged the refusal.
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
