import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP subscriber: server-sent events (one long response) or long-polling (one
/// request after another on a keep-alive connection, following the cursor).
enum StreamSubscriber {
    /// Connects subscriber `slot`; resolves once the server answered 200 (SSE) or the
    /// first poll came back with a cursor.
    static func connect(url: BenchURL, target: String, poll: Bool, slot: SubscriberSlot) async throws -> any Channel {
        let (channel, ready) = try await ClientBootstrap(group: slot.eventLoop)
            .connectTimeout(.seconds(10))
            .connect(host: url.host, port: url.port) { channel -> EventLoopFuture<(any Channel, EventLoopFuture<Void>)> in
                channel.eventLoop.makeCompletedFuture {
                    let ready = channel.eventLoop.makePromise(of: Void.self)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    let handler = StreamSubscriberHandler(url: url, target: target, poll: poll, slot: slot, ready: ready)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    return (channel, ready.futureResult)
                }
            }
        try await ready.get()
        return channel
    }
}

/// Reads an event stream (SSE) or a sequence of poll responses for one subscriber.
final class StreamSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let url: BenchURL
    private let target: String
    private let poll: Bool
    private let slot: SubscriberSlot
    private var ready: EventLoopPromise<Void>?
    private var splitter = EventStreamSplitter()
    private var status: HTTPResponseStatus = .ok
    private var body = ByteBuffer()
    private var cursor: String?

    init(url: BenchURL, target: String, poll: Bool, slot: SubscriberSlot, ready: EventLoopPromise<Void>) {
        self.url = url
        self.target = target
        self.poll = poll
        self.slot = slot
        self.ready = ready
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context: context)
        context.fireChannelActive()
    }

    private func sendRequest(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: url.hostHeader)
        var uri = target
        if poll {
            if let cursor { uri += "&cursor=" + percentEncoded(cursor) }
        } else {
            headers.add(name: "Accept", value: "text/event-stream")
            headers.add(name: "Cache-Control", value: "no-cache")
        }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
            guard head.status == .ok else { return }
            if !poll { becomeReady() }
        case .body(let chunk):
            if poll {
                var chunk = chunk
                body.writeBuffer(&chunk)
            } else if status == .ok {
                let recorder = slot.recorder.value
                splitter.feed(chunk) { events in
                    guard !EventStreamSplitter.isOnlyComments(events) else { return }
                    recorder.record(slot: slot.slot, events)
                }
            }
        case .end:
            guard poll, status == .ok else {
                fail(context: context, "\(url.hostHeader) answered \(status.code)")
                return
            }
            let text = String(buffer: body)
            cursor = jsonStringField("cursor", in: text) ?? cursor
            if ready != nil {
                becomeReady()
            } else {
                slot.recorder.value.record(slot: slot.slot, body)
            }
            body.clear()
            sendRequest(context: context)
        }
    }

    private func becomeReady() {
        slot.recorder.value.connected(slot: slot.slot)
        ready?.succeed()
        ready = nil
    }

    private func fail(context: ChannelHandlerContext, _ message: String) {
        ready?.fail(ConnectError(description: message))
        ready = nil
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready?.fail(ConnectError(description: "\(url.hostHeader) closed the connection"))
        ready = nil
        slot.recorder.value.ended(slot: slot.slot)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, "\(error)")
    }
}
