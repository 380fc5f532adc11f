import NIOCore
import NIOHTTP1
import Synchronization

/// What the publisher did.
struct PublisherReport: Sendable {
    var sent = 0
    var accepted = SequenceSet()
    var failures = 0
    var firstFailure: String?
    var startedAt: UInt64 = 0
    var finishedAt: UInt64 = 0
    /// Messages not sent because the server had not taken them by the deadline.
    var unsent = 0
}

/// Publishes `rate` messages per second for `duration` seconds over keep-alive HTTP
/// connections (pipelined, at most `pipelineDepth` in flight each), on one event loop.
/// Every body carries its sequence number and the send time.
final class Publisher: Sendable {
    /// How a message is turned into a request.
    enum Target: Sendable {
        /// `POST /api/publish` `{"room":…,"event":<payload>}` with the API key; message
        /// `n` goes to `rooms[n % rooms.count]`.
        case switchboard(rooms: [String], apiKey: String)
        /// `POST <targets[n % targets.count]>` with the payload as the body.
        case raw(targets: [String])
    }

    private let connections: [HTTPConnection]
    private let target: Target
    private let url: BenchURL
    private let rate: Double
    /// Seconds after the start when sending stops.
    private let deadline: Double
    private var total: Int {
        get { state.value.total }
        set { state.value.total = newValue }
    }
    private let payloadBytes: Int
    private let pipelineDepth: Int
    private let state: NIOLoopBoundBox<State>
    /// Messages written so far (read by the progress line).
    let sentCount = Atomic<Int>(0)

    private struct State {
        var report = PublisherReport()
        var inFlight: [Int]
        var task: RepeatedTask?
        var done: EventLoopPromise<PublisherReport>?
        /// Messages to send in all (lowered at the deadline).
        var total = 0
    }

    init(
        connections: [HTTPConnection], target: Target, url: BenchURL, rate: Double, duration: Double, grace: Double = 1,
        payloadBytes: Int, pipelineDepth: Int
    ) {
        precondition(!connections.isEmpty)
        let eventLoop = connections[0].channel.eventLoop
        self.connections = connections
        self.target = target
        self.url = url
        self.rate = rate
        self.deadline = duration + max(0, grace)
        self.payloadBytes = payloadBytes
        self.pipelineDepth = pipelineDepth
        self.state = .makeBoxSendingValue(
            State(inFlight: Array(repeating: 0, count: connections.count), total: max(1, Int((rate * duration).rounded()))),
            eventLoop: eventLoop)
    }

    var eventLoop: any EventLoop { state.eventLoop }

    /// Starts publishing; the future completes when every message was answered (or the
    /// connection failed).
    func run() -> EventLoopFuture<PublisherReport> {
        eventLoop.flatSubmit {
            let promise = self.eventLoop.makePromise(of: PublisherReport.self)
            let start = monotonicNanoseconds()
            self.state.value.report.startedAt = start
            self.state.value.done = promise
            let tickNanoseconds = Int64(max(1_000_000, min(10_000_000, 1_000_000_000 / self.rate)))
            self.state.value.task = self.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(tickNanoseconds)) { _ in
                self.tick(start: start)
            }
            return promise.futureResult
        }
    }

    private func tick(start: UInt64) {
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        // Open loop with a deadline: what the server could not take by the end of the
        // duration is not sent (an overloaded server must not stretch the run forever).
        if elapsed >= deadline, state.value.report.sent < total {
            state.value.report.unsent = total - state.value.report.sent
            total = state.value.report.sent
        }
        let due = min(total, Int(elapsed * rate) + 1)
        var touched = Set<Int>()
        while state.value.report.sent < due {
            let sequence = state.value.report.sent
            let index = sequence % connections.count
            guard state.value.inFlight[index] < pipelineDepth else { break }
            publish(sequence: sequence, on: index)
            touched.insert(index)
        }
        for index in touched { connections[index].flush() }
        if state.value.report.sent >= total {
            state.value.task?.cancel()
            state.value.task = nil
            finishIfDone()
        }
    }

    private func publish(sequence: Int, on index: Int) {
        var body = ByteBuffer()
        body.reserveCapacity(payloadBytes + 64)
        var headers = HTTPHeaders()
        let requestTarget: String
        switch target {
        case .switchboard(let rooms, let apiKey):
            body.writeStaticString("{\"room\":\"")
            body.writeString(rooms[sequence % rooms.count])
            body.writeStaticString("\",\"event\":")
            BenchPayload.write(sequence: UInt64(sequence), sentAt: monotonicNanoseconds(), size: payloadBytes, into: &body)
            body.writeStaticString("}")
            headers.add(name: "Authorization", value: "Bearer \(apiKey)")
            requestTarget = "/api/publish"
        case .raw(let targets):
            BenchPayload.write(sequence: UInt64(sequence), sentAt: monotonicNanoseconds(), size: payloadBytes, into: &body)
            requestTarget = targets[sequence % targets.count]
        }
        state.value.report.sent += 1
        state.value.inFlight[index] += 1
        sentCount.store(state.value.report.sent, ordering: .relaxed)
        connections[index].post(requestTarget, json: body, headers: headers, flush: false).whenComplete { result in
            self.state.value.inFlight[index] -= 1
            switch result {
            case .success(let response) where (200..<300).contains(response.status.code):
                self.state.value.report.accepted.insert(UInt64(sequence))
            case .success(let response):
                self.failed("\(response.status.code) \(response.text.prefix(200))")
            case .failure(let error):
                self.failed("\(error)")
            }
            self.finishIfDone()
        }
    }

    private func failed(_ message: String) {
        state.value.report.failures += 1
        if state.value.report.firstFailure == nil { state.value.report.firstFailure = message }
    }

    private func finishIfDone() {
        guard state.value.report.sent >= total, state.value.inFlight.allSatisfy({ $0 == 0 }) else { return }
        state.value.report.finishedAt = monotonicNanoseconds()
        state.value.done?.succeed(state.value.report)
        state.value.done = nil
    }

    /// Stops early (interrupt or failure) and reports what happened so far.
    func stop() -> EventLoopFuture<PublisherReport> {
        eventLoop.submit {
            self.state.value.task?.cancel()
            self.state.value.task = nil
            let report = self.state.value.report
            self.state.value.done?.succeed(report)
            self.state.value.done = nil
            return report
        }
    }
}
