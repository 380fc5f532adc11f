import Hummingbird
import SwitchboardCore
import Synchronization

/// `POST /api/send?token=…` (body = one client event) and
/// `GET /api/send?token=…&event=<url-encoded JSON>&callback=fn` for script-only clients:
/// the same validation, limits and `ack`/`error` as on WebSocket, answered in the body.
struct SendRoutes {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.post("/api/send") { request, context in
            let identity = try chat.identity(token: request.token)
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: configuration.maxMessageBytes)
            } catch {
                throw APIError(.contentTooLarge, "body_too_large", "at most \(configuration.maxMessageBytes) bytes")
            }
            return await answer(Array(body.readableBytesView), identity: identity, callback: nil)
        }
        router.get("/api/send") { request, _ in
            let callback = try request.callback()
            let identity = try chat.identity(token: request.token)
            guard let event = request.formParameter("event") else {
                throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "missing event parameter")
            }
            return await answer(Array(event.utf8), identity: identity, callback: callback)
        }
    }

    private func answer(_ bytes: [UInt8], identity: Identity, callback: String?) async -> Response {
        let replies: [ServerEvent]
        switch ClientEvent.parse(bytes, limits: configuration.chat.eventLimits) {
        case .success(let event): replies = await chat.handleStateless(event, identity: identity)
        case .failure(let error):
            replies = [.error(error)]
            chat.metrics.clientEvents.add(1, ordering: .relaxed)
            chat.countErrors(replies)
        }
        // The ack or error answers the event (a ping's pong when it had no ref).
        let reply = replies.first { if case .ack = $0 { true } else if case .error = $0 { true } else { false } } ?? replies.first ?? .pong
        var status: HTTPResponse.Status = .ok
        if case .error(_, let code, _) = reply {
            status = APIError(EventError(code, "")).status
        }
        var body = reply.jsonBytes
        if let callback {
            body = Array(callback.utf8) + [UInt8(ascii: "(")] + body + Array(");".utf8)
            // JSONP cannot read a status: always 200, the event says what happened.
            return Response(
                status: .ok,
                headers: [.contentType: "application/javascript; charset=utf-8", .cacheControl: "no-store", .xContentTypeOptions: "nosniff"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        return Response.json(body, status: status)
    }
}

extension Request {
    /// A query parameter decoded as HTML forms and `URLSearchParams` encode it (`+` is a
    /// space, then percent-decoding); nil when absent or not UTF-8.
    func formParameter(_ name: String) -> String? {
        guard let query = uri.query else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0] == name else { continue }
            return PercentDecoding.decode(parts[1], plusAsSpace: true)
        }
        return nil
    }
}
