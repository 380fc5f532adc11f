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

    private func stream(_ request: Request, context: SwitchboardRequestContext, framing: StreamFraming) async throws -> Response {
        guard let token = request.token, let identity = chat.authenticate(token) else { throw APIError.unauthorized }
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
            nickname: identity.nickname, channel: context.channel, framing: framing, maxQueuedFrames: configuration.maxQueuedFrames,
            metrics: chat.metrics)
        let opened: ChatService.Opened
        do {
            opened = try await chat.open(identity, subscriber: connection, transport: framing.transport, rooms: rooms, cursor: cursor, remote: context.channel.remoteAddress?.ipAddress)
        } catch {
            throw APIError(error)
        }
        let hub = chat.hub
        let chat = self.chat
        let keepAlive = TimeAmount.nanoseconds(Int64(configuration.streamKeepAlive.components.seconds) * 1_000_000_000)
        return Response(
            status: .ok,
            headers: [
                .contentType: framing.contentType,
                .cacheControl: "no-store",
                HTTPField.Name("X-Accel-Buffering")!: "no",
            ],
            body: ResponseBody { _ in
                connection.open(
                    welcome: hub.encode(opened.welcome, format: .native, stream: nil, id: nil, envelope: nil),
                    backlog: opened.resets.map { hub.encode($0, format: .native, stream: nil, id: nil, envelope: nil) }
                        + opened.backlog.map {
                            hub.encode($0.envelope.event, format: .native, stream: $0.stream, id: $0.id, envelope: $0.envelope)
                        },
                    cursor: opened.cursor, keepAlive: keepAlive, retryMilliseconds: 2000)
                try? await connection.finished.futureResult.get()
                await chat.close(opened.session)
            })
    }
}
