import NIOCore
import NIOPosix
import Synchronization

/// Runs one bench: log in (Switchboard mode), connect the subscribers, wait until the
/// servers are quiet, publish at the configured rate, drain, and account for every
/// message.
public struct BenchRunner: Sendable {
    public let configuration: BenchConfiguration

    public init(configuration: BenchConfiguration) {
        self.configuration = configuration
    }

    /// A run that could not be carried out.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Runs the bench and returns its result.
    public func run() async throws -> BenchResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        do {
            let result = try await run(on: group)
            try? await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func run(on group: MultiThreadedEventLoopGroup) async throws -> BenchResult {
        let c = configuration
        let loops = Array(group.makeIterator())
        let runStartedAt = monotonicNanoseconds()
        let recorders = loops.enumerated().map { index, loop in
            NIOLoopBoundBox.makeBoxSendingValue(
                LoopRecorder(
                    slots: (c.subscribers - index + loops.count - 1) / loops.count, runStartedAt: runStartedAt,
                    roomOfSlot: { slot in (slot * loops.count + index) % c.rooms }),
                eventLoop: loop)
        }
        let counters = try await recorders.asyncMap { box in try await box.eventLoop.submit { box.value.counters }.get() }
        let progress = ProgressLine(counters: counters, enabled: c.progress)
        let ticker = loops[0].scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in progress.tick() }
        defer { ticker.cancel() }

        var result = BenchResult()
        result.mode = c.raw ? "raw" : "switchboard"
        result.transport = c.transport.rawValue
        result.urls = c.urls.map(\.description)
        result.subscribersRequested = c.subscribers
        result.rate = c.rate
        result.durationSeconds = c.duration
        result.payloadBytes = c.payloadBytes
        result.memory = c.pids.map { MemorySample(pid: $0, beforeKB: ProcessMemory.residentKB(pid: $0)) }

        // 1. Log in.
        var tokens: [String] = []
        if !c.raw {
            progress.phase("logging in")
            let start = monotonicNanoseconds()
            tokens = try await login(count: c.subscribers, loops: loops)
            result.loginSeconds = seconds(since: start)
            result.loginsPerSecond = Double(c.subscribers) / max(result.loginSeconds, 1e-9)
        }

        // 2. Connect.
        progress.phase("connecting")
        let connectStart = monotonicNanoseconds()
        let (channels, failures, firstError) = await connectAll(tokens: tokens, recorders: recorders)
        result.connectSeconds = seconds(since: connectStart)
        result.connected = channels.count
        result.connectFailures = failures
        result.connectsPerSecond = Double(channels.count) / max(result.connectSeconds, 1e-9)
        if let firstError { progress.note("switchboard bench: \(failures) connections failed; first: \(firstError)") }
        guard !channels.isEmpty else { throw Failure(description: "no subscriber could connect: \(firstError ?? "?")") }

        // 3. Settle: wait until no message arrived for a second, then sample idle memory.
        progress.phase("settling")
        let settleStart = monotonicNanoseconds()
        try await settle(counters: counters)
        result.settleSeconds = seconds(since: settleStart)
        for index in result.memory.indices { result.memory[index].idleKB = ProcessMemory.residentKB(pid: result.memory[index].pid) }

        // 4. Publish.
        let publisher = try await makePublisher(on: loops[0])
        progress.phase("publishing", publisher: publisher)
        let cpuStart = CPUTime.now()
        var report = try await publisher.run().get()
        result.sent = report.sent
        result.accepted = report.accepted.count
        result.publishFailures = report.failures
        if let failure = report.firstFailure { progress.note("switchboard bench: publish failed: \(failure)") }

        // 5. Drain: until every accepted message reached every live subscriber, or no
        // progress for two seconds, or the drain timeout.
        progress.phase("draining")
        try await drain(counters: counters, accepted: report.accepted.count, rooms: c.rooms)
        let lastDelivery = counters.map { $0.lastDeliveryAt.load(ordering: .relaxed) }.max() ?? 0
        result.measureSeconds = Double(max(lastDelivery, report.finishedAt) - report.startedAt) / 1e9
        let cpu = CPUTime.now().since(cpuStart)
        result.benchCPUUserSeconds = cpu.user
        result.benchCPUSystemSeconds = cpu.system
        for index in result.memory.indices { result.memory[index].endKB = ProcessMemory.residentKB(pid: result.memory[index].pid) }

        // 6. Account and close.
        progress.phase("closing")
        var accepted = [SequenceSet](repeating: SequenceSet(), count: c.rooms)
        for sequence in 0..<report.sent where report.accepted.contains(UInt64(sequence)) {
            accepted[sequence % c.rooms].insert(UInt64(sequence))
        }
        report.accepted = SequenceSet()
        let acceptedByRoom = accepted
        var histogram = LatencyHistogram()
        var foreign = 0
        for box in recorders {
            let (summary, loopHistogram, loopForeign) = try await box.eventLoop.submit {
                box.value.closing = true
                return box.value.snapshot(accepted: acceptedByRoom)
            }.get()
            result.ledger.merge(summary)
            histogram.merge(loopHistogram)
            foreign += loopForeign
        }
        if foreign > 0 { progress.note("switchboard bench: ignored \(foreign) messages of earlier runs") }
        result.latency = histogram.summary
        for channel in channels { channel.close(promise: nil) }
        progress.finish()
        result.computeIdleMemory()
        result.computeRates()
        return result
    }

    private func seconds(since start: UInt64) -> Double { Double(monotonicNanoseconds() - start) / 1e9 }

    /// Waits until no inbound message arrived for one second (at least half a second in
    /// all, at most the settle timeout).
    private func settle(counters: [LoopCounters]) async throws {
        let deadline = monotonicNanoseconds() + UInt64(configuration.settleTimeout * 1e9)
        var last = -1
        var quietSince = monotonicNanoseconds()
        try await Task.sleep(for: .milliseconds(500))
        while monotonicNanoseconds() < deadline {
            let frames = counters.reduce(0) { $0 + $1.frames.load(ordering: .relaxed) }
            let now = monotonicNanoseconds()
            if frames != last {
                last = frames
                quietSince = now
            } else if now - quietSince >= 1_000_000_000 {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits for the deliveries still on their way after the last publish.
    private func drain(counters: [LoopCounters], accepted: Int, rooms: Int) async throws {
        let deadline = monotonicNanoseconds() + UInt64(configuration.drainTimeout * 1e9)
        var last = -1
        var progressAt = monotonicNanoseconds()
        while monotonicNanoseconds() < deadline {
            let live = counters.reduce(0) { $0 + $1.connected.load(ordering: .relaxed) - $1.dropped.load(ordering: .relaxed) }
            let unique = counters.reduce(0) { $0 + $1.unique.load(ordering: .relaxed) }
            if unique >= accepted * live / rooms { return }
            let now = monotonicNanoseconds()
            if unique != last {
                last = unique
                progressAt = now
            } else if now - progressAt >= 2_000_000_000 {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The publisher: HTTP keep-alive connection(s) on `eventLoop`.
    private func makePublisher(on eventLoop: any EventLoop) async throws -> Publisher {
        let c = configuration
        guard let url = c.publishURL ?? c.urls.first else { throw Failure(description: "no publish URL") }
        var connections: [HTTPConnection] = []
        for _ in 0..<max(1, c.publishConnections) {
            do {
                connections.append(try await HTTPConnection.connect(to: url, on: eventLoop))
            } catch {
                throw Failure(description: "cannot connect the publisher to \(url): \(error)")
            }
        }
        let target: Publisher.Target =
            c.raw
            ? .raw(targets: (0..<c.rooms).map { c.rawTarget(url.target, room: $0) })
            : .switchboard(rooms: (0..<c.rooms).map { c.roomName($0) }, apiKey: c.apiKey ?? "")
        return Publisher(
            connections: connections, target: target, url: url, rate: c.rate, duration: c.duration, grace: c.publishGrace,
            payloadBytes: c.payloadBytes, pipelineDepth: c.pipelineDepth)
    }
}

extension Array {
    /// `map` with an async transform, in order.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
