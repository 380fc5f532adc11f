import HTTPTypes
import Hummingbird
import NIOCore
import SocketIO
import SwitchboardJSON

extension EngineIOEndpoint {
    /// Answers an HTTP request to the endpoint's path: handshake, poll or POST, or the
    /// reference server's error for anything else. A new polling session lives on
    /// `eventLoop` (the request's channel's loop is a good choice).
    public func respond(to request: Request, eventLoop: any EventLoop, remoteAddress: String? = nil) async -> Response {
        if request.method == .options {
            return cors ? Self.preflight(request) : Response(status: .noContent)
        }
        let response: EngineIOReply.Response
        switch route(Self.engineRequest(request)) {
        case .failure(let error):
            response = .failure(error)
        case .handshake(.polling):
            response = await handshake(on: eventLoop, remoteAddress: remoteAddress)
        case .handshake(.websocket), .upgrade:
            // A WebSocket request that was not upgraded.
            response = .failure(.badRequest)
        case .poll(let sid):
            response = await poll(sid: sid)
        case .post(let sid):
            response = await post(sid: sid, body: request.body)
        }
        return httpResponse(response, for: request)
    }

    private func poll(sid: String) async -> EngineIOReply.Response {
        guard let host = host(sid) else {
            guard let forwarder, let node = await forwarder.owner(of: sid) else { return .failure(.unknownSID) }
            // A poll waits for a ping at the latest: pingInterval, then some slack.
            return await forwarder.forward(
                .poll, sid: sid, to: node, timeout: configuration.pingInterval + configuration.pingTimeout)
        }
        let promise = host.eventLoop.makePromise(of: EngineIOReply.Response.self)
        host.onLoop { $0.poll(promise) }
        return (try? await promise.futureResult.get()) ?? .failure(.badRequest)
    }

    private func post(sid: String, body: RequestBody) async -> EngineIOReply.Response {
        guard let host = host(sid) else {
            guard let forwarder, let node = await forwarder.owner(of: sid) else { return .failure(.unknownSID) }
            guard let bytes = try? await body.collect(upTo: configuration.maxPayload).readableBytesView else {
                return await forwarder.forward(.postTooLarge, sid: sid, to: node, timeout: EngineIOForwarder.replyTimeout)
            }
            return await forwarder.forward(.post, sid: sid, body: Array(bytes), to: node, timeout: EngineIOForwarder.replyTimeout)
        }
        let begin = await host.run { $0.beginPost() } ?? .failure(.unknownSID)
        guard begin == .pending else { return begin }
        let bytes: [UInt8]?
        do {
            bytes = Array(try await body.collect(upTo: configuration.maxPayload).readableBytesView)
        } catch {
            bytes = nil
        }
        return await host.run { $0.finishPost(bytes) } ?? .failure(.unknownSID)
    }

    /// The parts of a request the protocol looks at.
    public static func engineRequest(_ request: Request) -> EngineIORequest {
        EngineIORequest(
            method: request.method.rawValue, query: query(request.uri.query),
            isWebSocketUpgrade: request.headers[.upgrade]?.lowercased() == "websocket")
    }

    /// The first value of each query parameter, percent-decoded.
    public static func query(_ query: String?) -> [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = PercentDecoding.decode(parts[0]) ?? String(parts[0])
            let value = parts.count > 1 ? (PercentDecoding.decode(parts[1]) ?? String(parts[1])) : ""
            if result[key] == nil { result[key] = value }
        }
        return result
    }

    func httpResponse(_ response: EngineIOReply.Response, for request: Request) -> Response {
        var headers = cors ? Self.corsHeaders(request) : HTTPFields()
        headers[.cacheControl] = "no-store"
        switch response {
        case .body(let body):
            headers[.contentType] = "text/plain; charset=UTF-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
        case .pending:
            return Response(status: .internalServerError, headers: headers)
        case .failure(let error):
            headers[.contentType] = "application/json"
            return Response(
                status: HTTPResponse.Status(code: error.status), headers: headers,
                body: .init(byteBuffer: ByteBuffer(string: error.json)))
        }
    }

    /// `cors: {origin: "*"}` as the test-suite servers are configured.
    static func corsHeaders(_ request: Request) -> HTTPFields {
        var headers = HTTPFields()
        if let origin = request.headers[.origin] {
            headers[.accessControlAllowOrigin] = origin
            headers[.accessControlAllowCredentials] = "true"
            headers[.vary] = "Origin"
        } else {
            headers[.accessControlAllowOrigin] = "*"
        }
        return headers
    }

    static func preflight(_ request: Request) -> Response {
        var headers = corsHeaders(request)
        headers[.accessControlAllowMethods] = "GET,HEAD,PUT,PATCH,POST,DELETE"
        if let requested = request.headers[.accessControlRequestHeaders] {
            headers[.accessControlAllowHeaders] = requested
        }
        return Response(status: .noContent, headers: headers)
    }
}
