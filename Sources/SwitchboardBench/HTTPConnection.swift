import NIOCore
import NIOHTTP1
import NIOPosix

/// A request for ``HTTPConnection``: head fields and an optional body.
struct HTTPRequestSpec: Sendable {
    var method: HTTPMethod
    var target: String
    var headers: HTTPHeaders
    var body: ByteBuffer?
}

/// A complete response: status and the whole body.
struct HTTPResponseData: Sendable {
    var status: HTTPResponseStatus
    var body: ByteBuffer

    /// The body as text.
    var text: String { String(buffer: body) }
}

/// A request and the promise its response completes, as written to the channel.
struct PipelinedRequest: Sendable {
    var spec: HTTPRequestSpec
    var promise: EventLoopPromise<HTTPResponseData>
}

/// One keep-alive HTTP/1.1 connection; requests are pipelined and answered in order.
struct HTTPConnection: Sendable {
    let channel: any Channel
    let url: BenchURL

    /// Connects to `url`'s server on `eventLoop`.
    static func connect(to url: BenchURL, on eventLoop: any EventLoop) async throws -> HTTPConnection {
        let channel = try await ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPPipelineHandler())
                }
            }
            .connect(host: url.host, port: url.port).get()
        return HTTPConnection(channel: channel, url: url)
    }

    /// Writes `spec` (flushing when `flush`) and returns the future of its response.
    /// Call from any thread; on the channel's loop, pass `flush: false` to batch writes.
    func send(_ spec: HTTPRequestSpec, flush: Bool = true) -> EventLoopFuture<HTTPResponseData> {
        var spec = spec
        if spec.headers["Host"].isEmpty { spec.headers.add(name: "Host", value: url.hostHeader) }
        spec.headers.replaceOrAdd(name: "Content-Length", value: String(spec.body?.readableBytes ?? 0))
        let promise = channel.eventLoop.makePromise(of: HTTPResponseData.self)
        let request = PipelinedRequest(spec: spec, promise: promise)
        if flush {
            channel.writeAndFlush(request).cascadeFailure(to: promise)
        } else {
            channel.write(request).cascadeFailure(to: promise)
        }
        return promise.futureResult
    }

    /// POSTs a JSON body.
    func post(_ target: String, json: ByteBuffer, headers: HTTPHeaders = [:], flush: Bool = true) -> EventLoopFuture<HTTPResponseData> {
        var headers = headers
        headers.add(name: "Content-Type", value: "application/json")
        return send(HTTPRequestSpec(method: .POST, target: target, headers: headers, body: json), flush: flush)
    }

    /// Flushes batched writes.
    func flush() { channel.flush() }

    /// Closes the connection.
    func close() { channel.close(promise: nil) }
}

/// Writes pipelined requests and completes their promises as responses arrive, in order.
final class HTTPPipelineHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = PipelinedRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var waiting = CircularBuffer<EventLoopPromise<HTTPResponseData>>()
    private var status: HTTPResponseStatus = .ok
    private var body = ByteBuffer()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append(request.promise)
        let head = HTTPRequestHead(version: .http1_1, method: request.spec.method, uri: request.spec.target, headers: request.spec.headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = request.spec.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
            body.clear()
        case .body(let chunk):
            var chunk = chunk
            body.writeBuffer(&chunk)
        case .end:
            let response = HTTPResponseData(status: status, body: body)
            body = ByteBuffer()
            waiting.popFirst()?.succeed(response)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        while let promise = waiting.popFirst() { promise.fail(error) }
    }
}

/// The value of a top-level string field `"name":"…"` in a JSON body (no unescaping:
/// for tokens, cursors and ids).
func jsonStringField(_ name: String, in text: String) -> String? {
    guard let start = text.firstRange(of: "\"\(name)\":\"")?.upperBound else { return nil }
    guard let end = text[start...].firstIndex(of: "\"") else { return nil }
    return String(text[start..<end])
}
