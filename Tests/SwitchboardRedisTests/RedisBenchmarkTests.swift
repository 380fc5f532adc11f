import Foundation
import SwitchboardCore
import SwitchboardRedis
import Synchronization
import Testing

/// Pipelining throughput; run with `SWITCHBOARD_REDIS_BENCH=1` (numbers go to stdout).
/// Debug builds decode envelopes slowly, so the delivery figure is far better in release.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SWITCHBOARD_REDIS_BENCH"] != nil))
struct RedisBenchmarkTests {
    @Test func concurrentPublishes() async throws {
        let count = Int(ProcessInfo.processInfo.environment["SWITCHBOARD_REDIS_BENCH_COUNT"] ?? "") ?? 20_000
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make(historyLimit: 1000)
        let received = Atomic<Int>(0)
        try await broker.start { event in if case .message = event { received.add(1, ordering: .relaxed) } }
        try await broker.subscribe(.room(lobby))
        let envelope = chat(String(repeating: "x", count: 64))

        var start = ContinuousClock.now
        let ids = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<count { group.addTask { try await broker.publish(envelope, to: [.room(lobby)]).count } }
            return try await group.reduce(0, +)
        }
        let published = ContinuousClock.now - start
        #expect(ids == count)
        #expect(await eventually(timeout: .seconds(60)) { received.load(ordering: .relaxed) >= count })
        let delivered = ContinuousClock.now - start
        print(
            "BENCH publish: \(count) concurrent in \(published) → \(rate(count, published))/s; delivered back after \(delivered)")

        start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count { group.addTask { try await broker.broadcast(envelope, to: .room(lobby)) } }
            try await group.waitForAll()
        }
        let broadcast = ContinuousClock.now - start
        print("BENCH broadcast: \(count) concurrent in \(broadcast) → \(rate(count, broadcast))/s")

        start = ContinuousClock.now
        for _ in 0..<2000 { _ = try await broker.publish(envelope, to: [.room(lobby)]) }
        let sequential = ContinuousClock.now - start
        print("BENCH sequential publish: 2000 one at a time in \(sequential) → \(rate(2000, sequential))/s")
        await pool.shutdownAll()
    }

    private func rate(_ count: Int, _ duration: Duration) -> Int {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return Int(Double(count) / seconds)
    }
}
