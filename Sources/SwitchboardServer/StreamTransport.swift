import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCore

/// `GET /sse?token=…&rooms=a,b` (honours `Last-Event-ID`, header or query) and
/// `GET /iframe?token=…&rooms=a,b&callback=fn[&cursor=…]`: long-lived streamed responses
/// whose events are written by the Hub straight to the channel.
struct StreamTransport {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.get("/sse") { request, context in
            try await stream(request, context: context, framing: .sse)
        }
        router.get("/iframe") { request, context in
            guard let callback = request.uri.queryParameters["callback"].map(String.init), CallbackName.isValid(callback) else {
                throw APIError(.badRequest, "invalid_callback", "callback must match ^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$")
            }
            return try await stream(request, context: context, framing: .iframe(callback: callback))
        }
    }

    /// A stream opened and ready to run: its response headers, its connection, and what
    /// to write first.
    struct Opening: Sendable {
        let headers: HTTPFields
        let connection: HTTPStreamConnection
        let opened: ChatService.Opened
    }

    /// Validates a stream request and opens its session (errors are the answers to send).
    /// `output`: `.parts` through the router; the gate's native path writes raw bytes.
    func open(_ request: Request, channel: any Channel, framing: StreamFraming, output: StreamSink.Output = .parts) async throws -> Opening {
        let identity = try chat.identity(token: request.token)
        let rooms = try request.rooms(limit: configuration.chat.maxRoomsPerConnection)
        var cursor = try request.cursor()
        if case .sse = framing {
            let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters["lastEventId"].map(String.init)
            if let lastEventID, !lastEventID.isEmpty {
                guard let parsed = Cursor(lastEventID) else { throw APIError(.badRequest, "invalid_cursor", "malformed Last-Event-ID") }
                cursor = parsed
            }
        }
        let connection = HTTPStreamConnection(
            nickname: identity.nickname, eventLoop: channel.eventLoop, sink: StreamSink(channel: channel, framing: framing, output: output),
            maxQueuedFrames: configuration.maxQueuedFrames, metrics: chat.metrics)
        let opened: ChatService.Opened
        do {
            opened = try await chat.open(
                identity, subscriber: connection, transport: framing.transport, rooms: rooms, cursor: cursor,
                remote: channel.remoteAddress?.ipAddress)
        } catch {
            throw APIError(error)
        }
        var headers: HTTPFields = [
            .contentType: framing.contentType,
            .cacheControl: "no-store",
            HTTPField.Name("X-Accel-Buffering")!: "no",
        ]
        if let origin = request.headers[.origin], OriginPolicy(allowed: configuration.allowedOrigins).isAllowed(request) {
            headers[.accessControlAllowOrigin] = origin
            headers[.vary] = "Origin"
        }
        return Opening(headers: headers, connection: connection, opened: opened)
    }

    /// Writes the opening sequence and starts keep-alives; the session closes when the
    /// stream ends. On the channel's loop, after the response head.
    func start(_ opening: Opening) {
        let hub = chat.hub
        let opened = opening.opened
        opening.connection.start(
            welcome: hub.encode(opened.welcome, format: .native, stream: nil, id: nil, envelope: nil),
            backlog: opened.resets.map { hub.encode($0, format: .native, stream: nil, id: nil, envelope: nil) }
                + opened.backlog.map {
                    hub.encode($0.envelope.event, format: .native, stream: $0.stream, id: $0.id, envelope: $0.envelope)
                },
            cursor: opened.cursor, keepAlive: configuration.streamKeepAlive, retryMilliseconds: 2000)
    }

    /// The framing a first request asks for, if it is a stream (`/sse`, `/iframe` with a
    /// valid callback; an invalid callback is an error answer).
    static func framing(of request: Request) throws -> StreamFraming? {
        switch request.uri.path {
        case "/sse": return .sse
        case "/iframe":
            guard let callback = request.uri.queryParameters["callback"].map(String.init), CallbackName.isValid(callback) else {
                throw APIError(.badRequest, "invalid_callback", "callback must match ^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$")
            }
            return .iframe(callback: callback)
        default: return nil
        }
    }

    /// Through the router (a stream asked for on a connection that carried other
    /// requests before): the body waits until the stream ends. The first request of a
    /// connection takes the native path instead (`UpgradeGate`): no task per stream.
    private func stream(_ request: Request, context: SwitchboardRequestContext, framing: StreamFraming) async throws -> Response {
        let opening = try await open(request, channel: context.channel, framing: framing)
        let chat = self.chat
        let transport = self
        return Response(
            status: .ok,
            headers: opening.headers,
            body: ResponseBody { _ in
                transport.start(opening)
                try? await opening.connection.sink.finished.futureResult.get()
                await chat.close(opening.opened.session)
            })
    }
}
