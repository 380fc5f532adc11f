#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SwitchboardBench
import Testing

@Suite struct BenchSupportTests {
    @Test func urlsParse() throws {
        let url = try #require(BenchURL("http://127.0.0.1:8080"))
        #expect(url.host == "127.0.0.1" && url.port == 8080 && url.target == "/" && url.scheme == "http")
        let ws = try #require(BenchURL("ws://localhost/sub?id=bench"))
        #expect(ws.port == 80 && ws.target == "/sub?id=bench" && ws.path == "/sub" && ws.hostHeader == "localhost")
        #expect(BenchURL("ws://h:9/?a=1")?.description == "ws://h:9/?a=1")
        #expect(BenchURL("http://h:9?x")?.target == "/?x")
        #expect(BenchURL("https://h") == nil)
        #expect(BenchURL("http://:80") == nil)
        #expect(BenchURL("http://h:99999") == nil)
        #expect(BenchURL("http://[::1]:81/x")?.host == "::1")
    }

    @Test func percentEncoding() {
        #expect(percentEncoded("r.bench@1-0,u@0-0") == "r.bench%401-0%2Cu%400-0")
        #expect(percentEncoded("a b/é") == "a%20b%2F%C3%A9")
    }

    @Test func splitterHoldsPartialEvents() {
        var splitter = EventStreamSplitter()
        var seen: [String] = []
        splitter.feed(ByteBuffer(string: "data: one\n\ndata: tw")) { seen.append(String(buffer: $0)) }
        #expect(seen == ["data: one\n\n"])
        #expect(splitter.pendingBytes == 8)
        splitter.feed(ByteBuffer(string: "o\n")) { seen.append(String(buffer: $0)) }
        #expect(seen.count == 1)
        splitter.feed(ByteBuffer(string: "\ndata: three\r\n\r\n")) { seen.append(String(buffer: $0)) }
        #expect(seen == ["data: one\n\n", "data: two\n\ndata: three\r\n\r\n"])
        #expect(splitter.pendingBytes == 0)
    }

    @Test func keepAliveCommentsAreNotMessages() {
        #expect(EventStreamSplitter.isOnlyComments(ByteBuffer(string: ": keep-alive\n\n")))
        #expect(EventStreamSplitter.isOnlyComments(ByteBuffer(string: ":\r\n\r\n: ping\n\n")))
        #expect(!EventStreamSplitter.isOnlyComments(ByteBuffer(string: ": hi\n\ndata: x\n\n")))
        #expect(!EventStreamSplitter.isOnlyComments(ByteBuffer(string: "retry: 1000\n\n")))
    }

    @Test func vmRSSIsRead() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n"
        #expect(ProcessMemory.parseVmRSS(status) == 12345)
        #expect(ProcessMemory.parseVmRSS("Name: x\n") == nil)
    }

    @Test func ownMemoryIsReadable() {
        #expect((ProcessMemory.residentKB(pid: getpid()) ?? 0) > 0)
    }

    @Test func idleMemoryPerConnection() {
        var result = BenchResult()
        result.connected = 1000
        result.memory = [
            MemorySample(pid: 1, beforeKB: 10_000, idleKB: 14_000), MemorySample(pid: 2, beforeKB: 5_000, idleKB: 6_000),
        ]
        result.computeIdleMemory()
        #expect(result.idleKBPerConnection == 5.0)
        result.memory = [MemorySample(pid: 1)]
        result.computeIdleMemory()
        #expect(result.idleKBPerConnection == nil)
    }

    @Test func ratesAndReport() {
        var result = BenchResult()
        result.measureSeconds = 2
        result.ledger.delivered = 1000
        result.benchCPUUserSeconds = 0.5
        result.benchCPUSystemSeconds = 0.5
        result.computeRates()
        #expect(result.deliveriesPerSecond == 500)
        #expect(result.benchCPUPercent == 50)
        #expect(result.text().contains("1000/0 in 2.00 s = 500/s"))
        #expect(result.json().contains("\"deliveriesPerSecond\" : 500"))
    }

    @Test func decimalFormatting() {
        #expect(format(1.04, 1) == "1.0")
        #expect(format(12.5, 0) == "13")
        #expect(format(0.126, 2) == "0.13")
        #expect(format(-2.5, 1) == "-2.5")
        #expect(format(3, 3) == "3.000")
    }

    @Test func roomsSpreadSubscribersAndMessages() throws {
        var c = BenchConfiguration(urls: [try #require(BenchURL("http://h:1"))])
        #expect(c.roomName(3) == "bench")
        c.rooms = 4
        #expect(c.roomName(3) == "bench-3")
        #expect(c.rawTarget("/ws?id=idle{room}", room: 2) == "/ws?id=idle2")
        #expect(c.rawTarget("/ws?id=one", room: 2) == "/ws?id=one")
    }

    @Test func configurationIsChecked() throws {
        let url = try #require(BenchURL("http://127.0.0.1:1"))
        var c = BenchConfiguration(urls: [url])
        #expect(c.validationErrors() == ["give --api-key or set SWITCHBOARD_API_KEY"])
        c.apiKey = "k"
        #expect(c.validationErrors().isEmpty)
        c.raw = true
        c.transport = .poll
        #expect(c.validationErrors() == ["--raw needs --publish-url", "--raw supports ws and sse"])
    }
}
