import BrokerConformance
import SwitchboardCore
import SwitchboardRedis
import Testing

/// Key-space arithmetic and the cluster URL: no server needed.
@Suite struct RedisClusterKeySpaceTests {
    @Test func slotsMatchRedis() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        #expect(RedisClusterSlots.slot(of: "foo") == 12182)
        #expect(RedisClusterSlots.slot(of: "123456789") == 0x31C3)
        #expect(RedisClusterSlots.slot(of: "{user1000}.following") == RedisClusterSlots.slot(of: "{user1000}.followers"))
        #expect(RedisClusterSlots.slot(of: "foo{}{bar}") != RedisClusterSlots.slot(of: "bar"), "an empty tag hashes the whole key")
        #expect(RedisClusterSlots.slot(of: "foo{{bar}}zap") == RedisClusterSlots.slot(of: "{bar"))
    }

    /// Each partition's tag lands in its own share of the slot range, so any contiguous
    /// split of the slots among masters gets its share of partitions; naive tags do not.
    @Test(arguments: [64, 16, 3, 1024])
    func partitionsSpreadEvenly(count: Int) {
        let partitions = RedisClusterPartitions(count: count, prefix: "sb:")
        #expect(partitions.count == count)
        #expect(Set(partitions.tags).count == count)
        for (index, slot) in partitions.slots.enumerated() {
            #expect(slot >= index * 16384 / count && slot < (index + 1) * 16384 / count, "partition \(index) at slot \(slot)")
        }
        // Masters as `redis-cli --cluster create` splits the slots: equal contiguous ranges.
        func spread(_ slots: [Int], masters: Int) -> Int {
            var counts = Array(repeating: 0, count: masters)
            for slot in slots { counts[slot * masters / 16384] += 1 }
            return counts.max()! - counts.min()!
        }
        for masters in [3, 6, 16] where masters <= count {
            #expect(spread(partitions.slots, masters: masters) <= 1, "\(masters) masters")
        }
        if count == 64 {
            // {0}…{63}: 7 partitions apart on 6 or 16 masters.
            let naive = (0..<count).map { RedisClusterSlots.slot(of: "{\($0)}") }
            #expect(spread(naive, masters: 6) >= 5 && spread(naive, masters: 16) >= 5)
        }
    }

    @Test func streamsOfAPartitionShareItsSlot() {
        let partitions = RedisClusterPartitions(count: 64, prefix: "sb:")
        let room = StreamKey.room(RoomName("lobby")!)
        let slot = partitions.slots[partitions.partition(of: room)]
        #expect(RedisClusterSlots.slot(of: "sb:{\(partitions.tags[partitions.partition(of: room)])}:hist:room:lobby") == slot)
        let spread = Set((0..<500).map { partitions.partition(of: .room(RoomName("r\($0)")!)) })
        #expect(spread.count == 64, "500 rooms use every partition")
        // The conformance suite's whispers between alice and bob cross slots (locks).
        #expect(partitions.partition(of: .user(Nickname("alice")!)) != partitions.partition(of: .user(Nickname("bob")!)))
    }

    @Test func clusterURL() throws {
        let url = try RedisClusterURL("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(url.seeds == [
            RedisURL(host: "10.0.0.1", port: 7000, password: "pw"), RedisURL(host: "10.0.0.2", port: 7001, password: "pw"),
            RedisURL(host: "::1", port: 7002, password: "pw"),
        ])
        #expect(url.description == "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(try RedisClusterURL("REDIS+CLUSTER://h:1/").seeds == [RedisURL(host: "h", port: 1)])
        #expect(try RedisClusterURL("redis+cluster://h").seeds == [RedisURL(host: "h", port: 6379)])
    }

    @Test(arguments: [
        "redis://h:1", "redis+cluster://", "redis+cluster://h:1,", "redis+cluster://,h:1", "redis+cluster://h:1/0",
        "redis+cluster://h:x", "redis+cluster://h:1?x=1", "redis+cluster://:%zz@h:1", "redis+cluster://h:1,h 2:3",
    ])
    func malformedClusterURL(text: String) {
        #expect(throws: RedisURL.ParseError.self) { try RedisClusterURL(text) }
    }

    @Test func malformedClusterURLHidesThePassword() {
        do {
            _ = try RedisClusterURL("redis+cluster://:hunter2@h:1,h:x")
            Issue.record("parsed")
        } catch {
            #expect(!error.description.contains("hunter2"), "\(error)")
            #expect(error.description.contains("h:x"), "\(error)")
        }
    }
}

/// The shared `Broker` suite, unchanged, against a real three-master Redis Cluster (one
/// per case; serialized so a run holds three servers at a time).
@Suite(.serialized) struct RedisClusterConformanceTests {
    @Test(arguments: BrokerConformance.names)
    func conformance(name: String) async throws {
        let cluster = try RedisClusterProcesses(masters: 3)
        defer { cluster.stop() }
        let pool = ClusterBrokerPool(cluster: cluster)
        do {
            try await BrokerConformance.run(name) { historyLimit in pool.make(historyLimit: historyLimit) }
        } catch {
            await pool.shutdownAll()
            throw error
        }
        await pool.shutdownAll()
    }
}
