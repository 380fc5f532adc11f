import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite struct RedisURLTests {
    @Test func hostAndPort() throws {
        let url = try RedisURL("redis://cache.internal:6380")
        #expect(url == RedisURL(host: "cache.internal", port: 6380))
        #expect(url.password == nil && url.username == nil && url.database == 0)
    }

    @Test func defaultsPort() throws {
        #expect(try RedisURL("redis://localhost") == RedisURL(host: "localhost", port: 6379))
        #expect(try RedisURL("redis://localhost/") == RedisURL(host: "localhost", port: 6379))
    }

    @Test func password() throws {
        let url = try RedisURL("redis://:s3cr%40t@10.0.0.5:7000")
        #expect(url == RedisURL(host: "10.0.0.5", port: 7000, password: "s3cr@t"))
        #expect(!url.description.contains("s3cr"), "description hides the password: \(url)")
    }

    @Test func userPasswordAndDatabase() throws {
        let url = try RedisURL("redis://app:pw@redis:6379/3")
        #expect(url == RedisURL(host: "redis", port: 6379, username: "app", password: "pw", database: 3))
        #expect(url.description == "redis://app:***@redis:6379/3")
    }

    @Test func ipv6() throws {
        #expect(try RedisURL("redis://[::1]:6390/1") == RedisURL(host: "::1", port: 6390, database: 1))
    }

    @Test(arguments: [
        "", "localhost:6379", "http://localhost:6379", "redis://", "redis://:pw@", "redis://host:",
        "redis://host:abc", "redis://host:70000", "redis://host:0", "redis://host:6379/x", "redis://host:6379/-1",
        "redis://host/1?timeout=3", "redis://[::1", "redis://:%zz@host", "redis://ho st:1",
    ])
    func malformed(text: String) {
        #expect(throws: RedisURL.ParseError.self) { try RedisURL(text) }
    }

    @Test func errorsSayWhatIsWrongWithoutThePassword() {
        do {
            _ = try RedisURL("redis://:hunter2@host:port")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("port"))
            #expect(!error.description.contains("hunter2"))
        }
    }
}

@Suite struct RedisKeysTests {
    @Test func namesEveryKey() {
        let keys = RedisKeys()
        let room = StreamKey.room(RoomName("lobby")!)
        let user = StreamKey.user(Nickname("bob")!)
        #expect(keys.channel(room) == "sb:room:lobby")
        #expect(keys.channel(user) == "sb:user:bob")
        #expect(keys.history(room) == "sb:hist:room:lobby")
        #expect(keys.history(user) == "sb:hist:user:bob")
        #expect(keys.presence(RoomName("lobby")!) == "sb:presence:lobby")
        #expect(keys.presenceMember(PresenceEntry(room: RoomName("lobby")!, nickname: Nickname("bob")!, node: "n1")) == "n1|bob")
        #expect(keys.nickname(Nickname("bob")!) == "sb:nick:bob")
        #expect(keys.nodes == "sb:nodes")
        #expect(RedisKeys(prefix: "x:").channel(room) == "x:room:lobby")
    }
}
