@testable import SocketIO

/// A server with the test suites' settings (300 ms / 200 ms heartbeat) and a fixed
/// origin of time.
struct EngineIOHarness {
    static let configuration = EngineIOConfiguration(
        pingInterval: .milliseconds(300), pingTimeout: .milliseconds(200), maxPayload: 1_000_000,
        upgradeTimeout: .seconds(10), closeTimeout: .seconds(30))

    var server: EngineIOServer
    let start = ContinuousClock.now

    init(configuration: EngineIOConfiguration = Self.configuration) {
        server = EngineIOServer(configuration: configuration)
    }

    func at(_ milliseconds: Int) -> EngineIOInstant { start + .milliseconds(milliseconds) }

    static func get(_ query: [String: String]) -> EngineIORequest {
        EngineIORequest(method: "GET", query: query)
    }

    static func polling(_ sid: String? = nil, method: String = "GET") -> EngineIORequest {
        var query = ["EIO": "4", "transport": "polling"]
        query["sid"] = sid
        return EngineIORequest(method: method, query: query)
    }

    static func websocket(_ sid: String? = nil) -> EngineIORequest {
        var query = ["EIO": "4", "transport": "websocket"]
        query["sid"] = sid
        return EngineIORequest(method: "GET", query: query, isWebSocketUpgrade: true)
    }

    /// Opens a polling session `sid` at `ms`.
    @discardableResult
    mutating func openPolling(_ sid: String = "s1", at ms: Int = 0) -> EngineIOReply {
        server.handshake(sid: sid, now: at(ms))
    }

    /// Opens a WebSocket session `sid` at `ms`; returns its socket.
    mutating func openWebSocket(_ sid: String = "w1", at ms: Int = 0) -> EngineIOWebSocketID {
        server.openWebSocket(upgrading: nil, newSID: sid, now: at(ms)).socket!
    }

    /// A complete POST.
    mutating func post(_ sid: String, _ body: String, at ms: Int) -> EngineIOReply {
        let begin = server.beginPost(sid: sid, now: at(ms))
        guard begin.response == .pending else { return begin }
        var reply = server.finishPost(sid: sid, body: Array(body.utf8), now: at(ms))
        reply.actions = begin.actions + reply.actions
        return reply
    }
}
