import SwitchboardCore
import SwitchboardRedis
import Testing

/// Behaviour beyond the shared suite: outages, lost scripts, bad data, node heartbeats.
@Suite struct RedisBrokerTests {
    @Test func survivesARedisCrashAndRestart() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make()
        let log = EventLog()
        try await broker.start(log.record)
        #expect(broker.isReady)
        try await broker.subscribe(.room(lobby))
        _ = try await broker.publish(chat("before"), to: [.room(lobby)])
        #expect(await log.wait { $0.messages.count == 1 })

        // Commands in flight when Redis dies all finish (with a reply or `unavailable`).
        let inFlight = Task {
            await withTaskGroup(of: Bool.self) { group in
                for index in 0..<2000 {
                    group.addTask { (try? await broker.publish(chat("burst \(index)"), to: [.room(lobby)])) != nil }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
        }
        server.crash()
        let crashed = ContinuousClock.now
        #expect(await eventually(timeout: .seconds(2)) { !broker.isReady }, "not ready soon after the crash")
        #expect(await log.wait(timeout: .seconds(2)) { $0.transitions == "d" }, "one .disconnected: \(log.transitions)")
        let delivered = await inFlight.value
        #expect(ContinuousClock.now - crashed < .seconds(2), "in-flight commands fail promptly (\(delivered) succeeded)")

        let attempt = ContinuousClock.now
        await #expect(throws: BrokerError.self) { _ = try await broker.publish(chat("lost"), to: [.room(lobby)]) }
        do {
            _ = try await broker.head(of: .room(lobby))
            Issue.record("head succeeded while redis is down")
        } catch let error as BrokerError {
            #expect(error.isUnavailable, "\(error)")
        }
        #expect(ContinuousClock.now - attempt < .seconds(2), "commands fail fast while down")
        try? await broker.subscribe(.room(RoomName("later")!))  // throws while down; the wish is kept

        try server.launch()
        #expect(await broker.waitUntilReady(timeout: .seconds(10)), "ready again after the restart")
        #expect(await log.wait { $0.transitions == "dr" }, "then one .reconnected: \(log.transitions)")
        let before = log.messages.count
        _ = try await broker.publish(chat("after"), to: [.room(lobby)])
        _ = try await broker.publish(chat("later"), to: [.room(RoomName("later")!)])
        #expect(await log.wait { $0.messages.count == before + 2 }, "live delivery resumes on every subscription")
        await pool.shutdownAll()
    }

    @Test func authenticatesAndSelectsOnEveryConnect() async throws {
        let server = try RedisServer(arguments: ["--requirepass", "s3cret"])
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make {
            $0.url.password = "s3cret"
            $0.url.database = 2
        }
        let log = EventLog()
        try await broker.start(log.record)
        #expect(broker.isReady)
        #expect(try await broker.command(["CLIENT", "INFO"]).text?.contains(" db=2 ") == true)
        try await broker.subscribe(.room(lobby))
        server.crash()
        try server.launch()
        #expect(await broker.waitUntilReady(timeout: .seconds(10)))
        #expect(try await broker.command(["CLIENT", "INFO"]).text?.contains(" db=2 ") == true, "SELECT again")
        _ = try await broker.publish(chat("hi"), to: [.room(lobby)])
        #expect(await log.wait { $0.messages.count == 1 }, "subscriber authenticated again")
        #expect(try await broker.command(["DBSIZE"]) == .integer(1), "history stream lives in db 2")

        let wrong = pool.make {
            $0.url.password = "wrong"
            $0.startTimeout = .milliseconds(300)
        }
        try await wrong.start { _ in }
        #expect(!wrong.isReady, "a rejected password leaves the broker not ready")
        await pool.shutdownAll()
    }

    @Test func startsWithoutRedisAndConnectsLater() async throws {
        let port = try RedisServer.freePort()
        let pool = BrokerPool(port: port)
        let broker = pool.make { $0.startTimeout = .milliseconds(300) }
        let log = EventLog()
        let started = ContinuousClock.now
        try await broker.start(log.record)
        // Generous bound: only "does not wait for Redis forever" (startTimeout is 300 ms).
        #expect(ContinuousClock.now - started < .seconds(10), "start returns without redis")
        #expect(!broker.isReady)
        #expect(log.transitions == "d")
        let attempt = ContinuousClock.now
        await #expect(throws: BrokerError.self) { _ = try await broker.nicknameHolder(alice) }
        #expect(ContinuousClock.now - attempt < .milliseconds(500), "fails fast while down")
        try? await broker.subscribe(.room(lobby))

        let server = try RedisServer(port: port)
        defer { server.stop() }
        #expect(await broker.waitUntilReady(timeout: .seconds(10)))
        #expect(await log.wait { $0.transitions == "dr" })
        _ = try await broker.publish(chat("hello"), to: [.room(lobby)])
        #expect(await log.wait { $0.messages.count == 1 }, "the subscription wished for while down is active")
        await pool.shutdownAll()
    }

    @Test func recoversFromAFlushedScriptCache() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make()
        try await broker.start { _ in }
        let first = try await broker.publish(chat("one"), to: [.room(lobby)])
        #expect(try await broker.command(["SCRIPT", "FLUSH"]) == .status("OK"))
        let second = try await broker.publish(chat("two"), to: [.room(lobby)])
        #expect(second[0] > first[0])
        #expect(try await broker.history(of: .room(lobby), after: nil, limit: 10).entries.map(\.id) == first + second)
        #expect(try await broker.claimNickname(alice, session: "s1", ttlSeconds: 5))
        await pool.shutdownAll()
    }

    @Test func ignoresForeignMessagesOnItsChannels() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make()
        let log = EventLog()
        try await broker.start(log.record)
        try await broker.subscribe(.room(lobby))
        let channel = broker.keys.channel(.room(lobby))
        for garbage in ["no newline", "12-x\n1\te\t\t\t{}", "\nnot an envelope", "1-1\n1\te\t\t\t{\"type\":\"nope\"}"] {
            _ = try await broker.command(["PUBLISH", channel, garbage])
        }
        #expect(try await broker.command(["XADD", broker.keys.history(.room(lobby)), "*", "e", "garbage"]).text != nil)
        let ids = try await broker.publish(chat("real"), to: [.room(lobby)])
        #expect(await log.wait { $0.messages.count == 1 })
        #expect(log.messages.map(\.1) == [ids[0]], "only the real message is delivered")
        #expect(
            try await broker.history(of: .room(lobby), after: nil, limit: 10).entries.map(\.id) == ids, "bad entries are skipped")
        #expect(broker.isReady)
        await pool.shutdownAll()
    }

    @Test func shutdownFailsLaterCalls() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let broker = BrokerPool(port: server.port).make()
        try await broker.start { _ in }
        await broker.shutdown()
        #expect(!broker.isReady)
        do {
            _ = try await broker.publish(chat("late"), to: [.room(lobby)])
            Issue.record("publish after shutdown succeeded")
        } catch let error as BrokerError {
            #expect(error.isUnavailable)
        }
    }

    @Test func heartbeatsListLiveNodes() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = BrokerPool(port: server.port)
        let broker = pool.make()
        try await broker.start { _ in }
        let now = unixMilliseconds()
        try await broker.heartbeat(node: "edge-1", connections: 12, now: now - 60_000)
        try await broker.heartbeat(node: "edge-2", connections: 3, now: now)
        let nodes = try await broker.liveNodes(maxAge: 30_000, now: now)
        #expect(nodes == [RedisNodeStatus(id: "edge-2", lastSeen: now, connections: 3)])
        await pool.shutdownAll()
    }
}
