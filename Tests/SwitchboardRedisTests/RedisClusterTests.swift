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

    /// A node's channel is sharded by its own hash tag, the node id (`sb:to-node:{id}`).
    @Test func nodeChannelsAreTaggedByTheNodeID() {
        let partitions = RedisClusterPartitions(count: 64, prefix: "sb:")
        #expect(partitions.nodeChannel("edge-1") == "sb:to-node:{edge-1}")
        #expect(RedisClusterSlots.slot(of: partitions.nodeChannel("edge-1")) == RedisClusterSlots.slot(of: "edge-1"))
        let slots = Set((0..<32).map { RedisClusterSlots.slot(of: partitions.nodeChannel("host-\(8080 + $0)")) })
        #expect(slots.count > 16, "node channels spread over the slots")
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

/// A partition whose master is gone (no replica to promote): its publishes fail with
/// `unavailable`, never a false id; the other partitions keep publishing and delivering;
/// after `partitionGrace` the broker is ready again without it.
@Suite struct RedisClusterPartitionLossTests {
    @Test func aMasterlessPartitionFailsAlone() async throws {
        let cluster = try RedisClusterProcesses(masters: 3)
        defer { cluster.stop() }
        var configuration = RedisClusterBroker.Configuration(url: cluster.url, keyPrefix: "loss:")
        configuration.partitionGrace = .seconds(1)
        configuration.retryTimeout = .milliseconds(500)
        configuration.topologyRefreshInterval = .milliseconds(500)
        let broker = RedisClusterBroker(configuration: configuration)
        let log = EventLog()
        try await broker.start { log.record($0) }
        defer { Task { await broker.shutdown() } }
        #expect(broker.isReady)

        // One room per master, found by the slot its partition's tag is in.
        let ranges = try cluster.servers.map { server in try Self.slotRanges(of: server.port) }
        func room(onServer index: Int) -> RoomName {
            (0..<10_000).lazy.compactMap { RoomName("room\($0)") }.first { candidate in
                let slot = broker.partitions.slots[broker.partitions.partition(of: .room(candidate))]
                return ranges[index].contains { $0.contains(slot) }
            }!
        }
        let doomed = room(onServer: 0)
        let alive = room(onServer: 1)
        try await broker.subscribe(.room(doomed))
        try await broker.subscribe(.room(alive))
        _ = try await broker.publish(chat("before"), to: [.room(doomed)])
        #expect(await log.wait { $0.messages.count == 1 })

        cluster.servers[0].crash()
        do {
            _ = try await broker.publish(chat("lost"), to: [.room(doomed)])
            Issue.record("a publish to a partition without a master was acknowledged")
        } catch let error as BrokerError {
            #expect(error.isUnavailable, "\(error)")
        }
        let id = try await broker.publish(chat("still works"), to: [.room(alive)])
        #expect(id.count == 1)
        // Live delivery of the other partitions resumes after the grace, without the lost one.
        #expect(await log.wait(timeout: .seconds(10)) { log in
            log.messages.contains { $0.0 == .room(alive) && $0.1 == id[0] }
        })
        #expect(await eventually(timeout: .seconds(10)) { broker.isReady })
        #expect(log.transitions.hasPrefix("dr"), "\(log.transitions)")
    }

    /// The slot ranges `port` serves, from the `myself` line of `CLUSTER NODES`.
    static func slotRanges(of port: Int) throws -> [ClosedRange<Int>] {
        let text = try RedisClusterProcesses.run("/usr/bin/redis-cli", ["-p", String(port), "CLUSTER", "NODES"])
        guard let line = text.split(separator: "\n").first(where: { $0.contains("myself") }) else { return [] }
        return line.split(separator: " ").dropFirst(8).compactMap { item in
            let bounds = item.split(separator: "-").compactMap { Int($0) }
            guard let low = bounds.first else { return nil }
            return low...(bounds.last ?? low)
        }
    }
}
