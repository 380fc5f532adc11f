import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOPosix
import ServiceLifecycle
import SocketIO
import SocketIOHummingbird

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `socketio-conformance [--host 127.0.0.1] [--port 3000]`: the server the public
/// Engine.IO v4 and Socket.IO v5 test suites expect — `/engine.io/` echoes, `/socket.io/`
/// runs the suite's handlers (`auth` on connect, `message` → `message-back`,
/// `message-with-ack` acked, a `/custom` namespace); 300 ms / 200 ms heartbeat,
/// 1,000,000-byte payloads, 1 s connect timeout.
@main
struct SocketIOConformance {
    static func main() async throws {
        var host = "127.0.0.1"
        var port = 3000
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--host": host = arguments.next() ?? host
            case "--port":
                guard let value = arguments.next().flatMap(Int.init), (0...65535).contains(value) else {
                    fail("--port needs a port number")
                }
                port = value
            case "--help", "-h":
                print("usage: socketio-conformance [--host 127.0.0.1] [--port 3000]")
                return
            default: fail("unknown argument \(argument)")
            }
        }
        try await run(host: host, port: port)
    }

    static func run(host: String, port: Int) async throws {
        var logger = Logger(label: "socketio-conformance")
        logger.logLevel = .info
        let engine = EngineIOConfiguration(
            pingInterval: .milliseconds(300), pingTimeout: .milliseconds(200), maxPayload: 1_000_000)
        let endpoints = Endpoints(
            echo: EngineIOEndpoint(configuration: engine, application: EchoApplication(), logger: logger, cors: true),
            socketIO: EngineIOEndpoint(
                configuration: engine,
                application: SocketIOApplication(
                    configuration: SocketIOConfiguration(namespaces: ["/", "/custom"], connectTimeout: .milliseconds(1000)),
                    handler: TestSuiteHandler()),
                logger: logger, cors: true))
        let responder = CallbackResponder<BasicRequestContext> { request, _ in
            guard let endpoint = endpoints.endpoint(for: request.uri.path) else { return Response(status: .notFound) }
            return await endpoint.respond(to: request, eventLoop: MultiThreadedEventLoopGroup.singleton.any())
        }
        let app = Application(
            responder: responder,
            server: HTTPServerBuilder { responder in
                HTTPConnectionChannel(
                    HTTP1WebSocketUpgradeChannel(
                        responder: responder,
                        configuration: .init(ws: .init(maxFrameSize: engine.maxPayload, autoPing: .disabled, closeTimeout: .seconds(2)))
                    ) { head, channel, _ in
                        guard let endpoint = endpoints.endpoint(for: head.path ?? "/") else { return .dontUpgrade }
                        let path = head.path ?? "/"
                        let query = EngineIOEndpoint.query(path.firstIndex(of: "?").map { String(path[path.index(after: $0)...]) })
                        return .upgrade([:]) { inbound, outbound, _ in
                            await endpoint.serveWebSocket(query: query, inbound: inbound, outbound: outbound, channel: channel)
                        }
                    })
            },
            configuration: .init(address: .hostname(host, port: port), serverName: "socketio-conformance"),
            services: [SessionCloser(endpoints: [endpoints.echo, endpoints.socketIO])],
            onServerRunning: { [host] channel in
                print("socketio-conformance listening on \(host):\(channel.localAddress?.port ?? 0)")
            },
            logger: logger)
        try await app.runService()
    }

    static func fail(_ message: String) -> Never {
        let line = "socketio-conformance: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
}

/// The two endpoints, by path: `/engine.io/` and `/socket.io/`.
struct Endpoints: Sendable {
    let echo: EngineIOEndpoint
    let socketIO: EngineIOEndpoint

    /// The endpoint for a path (with or without a query).
    func endpoint(for path: String) -> EngineIOEndpoint? {
        let name = path.split(separator: "?", maxSplits: 1).first?.split(separator: "/").first
        switch name {
        case "engine.io": return echo
        case "socket.io": return socketIO
        default: return nil
        }
    }
}

/// Closes every session on graceful shutdown. (Timers need no ticker: each session
/// schedules its own on its event loop.)
struct SessionCloser: Service {
    let endpoints: [EngineIOEndpoint]

    func run() async throws {
        try? await gracefulShutdown()
        for endpoint in endpoints { await endpoint.closeAll() }
    }
}
