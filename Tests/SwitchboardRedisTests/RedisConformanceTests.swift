import BrokerConformance
import SwitchboardCore
import SwitchboardRedis
import Testing

/// The shared `Broker` suite, unchanged, against a real redis-server.
@Suite struct RedisConformanceTests {
    @Test(arguments: BrokerConformance.names)
    func conformance(name: String) async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        do {
            try await BrokerConformance.run(name) { historyLimit in pool.make(historyLimit: historyLimit) }
        } catch {
            await pool.shutdownAll()
            throw error
        }
        await pool.shutdownAll()
    }
}
