import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite struct RedisSentinelURLTests {
    typealias Endpoint = RedisURL.Sentinel.Endpoint

    @Test func sentinelsMasterAndDefaults() throws {
        let url = try RedisURL("redis+sentinel://s1:26380,s2,10.0.0.3:5000/mymaster")
        #expect(
            url.sentinel
                == RedisURL.Sentinel(
                    sentinels: [Endpoint(host: "s1", port: 26380), Endpoint(host: "s2", port: 26379), Endpoint(host: "10.0.0.3", port: 5000)],
                    masterName: "mymaster"))
        #expect(url.password == nil && url.username == nil && url.database == 0)
        #expect(url.description == "redis+sentinel://s1:26380,s2:26379,10.0.0.3:5000/mymaster/0")
    }

    @Test func credentialsAndDatabase() throws {
        let url = try RedisURL("REDIS+SENTINEL://app:s3cr%40t@[::1]:26379,h:1/group-1/4")
        #expect(url.username == "app" && url.password == "s3cr@t" && url.database == 4)
        #expect(url.sentinel?.sentinels == [Endpoint(host: "::1", port: 26379), Endpoint(host: "h", port: 1)])
        #expect(url.sentinel?.masterName == "group-1")
        #expect(url.description == "redis+sentinel://app:***@[::1]:26379,h:1/group-1/4")
        #expect(try RedisURL("redis+sentinel://:pw@h/m").password == "pw")
        #expect(try RedisURL("redis+sentinel://pw@h/m").password == "pw")
    }

    @Test func plainURLsHaveNoSentinel() throws {
        #expect(try RedisURL("redis://localhost:6379").sentinel == nil)
    }

    @Test(arguments: [
        "redis+sentinel://", "redis+sentinel://host", "redis+sentinel://host/", "redis+sentinel:///m",
        "redis+sentinel://h1,,h2/m", "redis+sentinel://h1,/m", "redis+sentinel://h:0/m", "redis+sentinel://h:99999/m",
        "redis+sentinel://h:x/m", "redis+sentinel://h:/m", "redis+sentinel://h/m/x", "redis+sentinel://h/m/1/2",
        "redis+sentinel://h/m/", "redis+sentinel://h/m?x=1", "redis+sentinel://[::1/m", "redis+sentinel://:%zz@h/m",
        "redis+sentinel://h/%20bad", "redis+sentinel://ho st/m", "sentinel://h/m",
    ])
    func malformed(text: String) {
        #expect(throws: RedisURL.ParseError.self) { try RedisURL(text) }
    }

    @Test func errorsSayWhatIsWrongWithoutThePassword() {
        do {
            _ = try RedisURL("redis+sentinel://:hunter2@h1:26379,h2:port/m")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("port"))
            #expect(!error.description.contains("hunter2"))
        }
    }
}
