import BrokerConformance
import SwitchboardCore
import Testing

@Suite struct MemoryBrokerConformanceTests {
    @Test(arguments: BrokerConformance.names)
    func conformance(name: String) async throws {
        try await BrokerConformance.run(name) { historyLimit in MemoryBroker(historyLimit: historyLimit) }
    }
}
