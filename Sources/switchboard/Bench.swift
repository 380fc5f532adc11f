import ArgumentParser
import SwitchboardBench

/// `switchboard bench`: the load generator. Logs subscribers in, connects them, publishes
/// at a fixed rate and reports deliveries/s, latency, loss, duplicates, server memory per
/// connection and its own CPU. `--raw` measures other servers (Nchan) the same way.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load generator: fan-out throughput, latency, loss and memory per connection.",
        discussion: """
            Switchboard mode: --url is a node's base URL (repeat it for several nodes).
            Raw mode (--raw): --url is a plain WebSocket (ws://) or SSE (http://) subscriber
            URL and --publish-url an HTTP URL that takes the message as the POST body.
            """)

    @Option(name: .customLong("url"), help: "A node's base URL, or with --raw a subscriber URL (repeatable; round robin).")
    var urls: [String] = []

    @Option(help: "ws, sse or poll.")
    var transport: String = "ws"

    @Option(help: "Subscriber connections.")
    var subscribers: Int = 100

    @Option(help: "Messages published per second.")
    var rate: Double = 10

    @Option(help: "Seconds of publishing.")
    var duration: Double = 10

    @Option(help: "Bytes per message body.")
    var payload: Int = 64

    @Option(help: "Server PIDs whose VmRSS is sampled (comma-separated).")
    var pids: String = ""

    @Flag(help: "Print the result as JSON on stdout.")
    var json = false

    @Option(name: .customLong("api-key"), help: "Key for POST /api/publish (SWITCHBOARD_API_KEY).")
    var apiKey: String?

    @Option(help: "Room to publish to and subscribe to.")
    var room: String = "bench"

    @Option(help: "Spread subscribers over this many rooms (<room>-<k>; raw URLs: {room} → k); message n goes to room n % rooms.")
    var rooms: Int = 1

    @Flag(help: "Plain subscriber and publish URLs: no login, no Switchboard events.")
    var raw = false

    @Option(name: .customLong("publish-url"), help: "Raw mode: HTTP URL to POST messages to. Else: the node to publish through (default: the first --url).")
    var publishURL: String?

    @Option(
        name: [.customLong("publishers"), .customLong("publish-connections")],
        help: "Concurrent publishers: keep-alive connections, each with its own requests in flight (the server handles them on different event loops).")
    var publishConnections: Int = 1

    @Option(name: .customLong("pipeline"), help: "Requests in flight per publisher or login connection.")
    var pipeline: Int = 32

    @Option(name: .customLong("connect-concurrency"), help: "Connections opened at once.")
    var connectConcurrency: Int = 200

    @Option(name: .customLong("settle-timeout"), help: "Longest wait (s) for the servers to go quiet after connecting.")
    var settleTimeout: Double = 120

    @Option(name: .customLong("drain-timeout"), help: "Longest wait (s) for deliveries after the last publish.")
    var drainTimeout: Double = 15

    @Option(name: .customLong("publish-grace"), help: "Seconds after --duration the publisher may still send what the server has not taken yet; the rest is not sent.")
    var publishGrace: Double = 1

    @Option(help: "Bench event loop threads.")
    var threads: Int = 2

    @Flag(name: .customLong("no-progress"), help: "No live progress line on stderr.")
    var noProgress = false

    func makeConfiguration() throws -> BenchConfiguration {
        var parsedURLs: [BenchURL] = []
        for raw in urls {
            guard let url = BenchURL(raw) else { throw ValidationError("--url \(raw): expected http://host:port… or ws://host:port…") }
            parsedURLs.append(url)
        }
        var c = BenchConfiguration(urls: parsedURLs)
        guard let transport = BenchTransport(rawValue: transport) else {
            throw ValidationError("--transport must be ws, sse or poll")
        }
        c.transport = transport
        c.subscribers = subscribers
        c.rate = rate
        c.duration = duration
        c.payloadBytes = payload
        c.pids = try pids.split(separator: ",").map {
            guard let pid = Int32($0.trimmingSpaces) else { throw ValidationError("--pids: \($0) is not a PID") }
            return pid
        }
        c.apiKey = apiKey ?? env("SWITCHBOARD_API_KEY")
        c.room = room
        c.rooms = rooms
        c.raw = raw
        if let publishURL {
            guard let url = BenchURL(publishURL) else { throw ValidationError("--publish-url \(publishURL): expected http://host:port…") }
            c.publishURL = url
        }
        c.publishConnections = publishConnections
        c.pipelineDepth = max(1, pipeline)
        c.connectConcurrency = max(1, connectConcurrency)
        c.settleTimeout = settleTimeout
        c.drainTimeout = drainTimeout
        c.publishGrace = publishGrace
        c.threads = threads
        c.progress = !noProgress
        if let error = c.validationErrors().first { throw ValidationError(error) }
        return c
    }

    func validate() throws {
        _ = try makeConfiguration()
    }

    func run() async throws {
        let configuration = try makeConfiguration()
        let limit = raiseOpenFileLimit()
        if limit < configuration.subscribers + 64 {
            FileHandleOutput.standardError("switchboard bench: warning: open-file limit \(limit) is below \(configuration.subscribers) subscribers\n")
        }
        let result: BenchResult
        do {
            result = try await BenchRunner(configuration: configuration).run()
        } catch {
            fail("bench: \(error)")
        }
        print(json ? result.json() : result.text())
    }
}
