import NIOCore
import NIOHTTP1

extension BenchRunner {
    /// Logs `count` subscribers in (`POST /api/login`, unique nicknames), each on the node
    /// it will connect to, over a few pipelined keep-alive connections per node.
    func login(count: Int, loops: [any EventLoop]) async throws -> [String] {
        let c = configuration
        let prefix = "\(c.nicknamePrefix)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let perNode = max(1, min(4, count / max(1, c.urls.count) / 100))
        let workers = c.urls.count * perNode
        var tokens = [String](repeating: "", count: count)
        try await withThrowingTaskGroup(of: [(Int, String)].self) { group in
            for worker in 0..<workers {
                let url = c.urls[worker % c.urls.count]
                let loop = loops[worker % loops.count]
                let indices = Array(stride(from: worker % c.urls.count, to: count, by: c.urls.count))
                    .enumerated().filter { $0.offset % perNode == worker / c.urls.count }.map(\.element)
                group.addTask {
                    let connection = try await HTTPConnection.connect(to: url, on: loop)
                    defer { connection.close() }
                    var found: [(Int, String)] = []
                    for chunk in stride(from: 0, to: indices.count, by: c.pipelineDepth) {
                        let batch = indices[chunk..<min(indices.count, chunk + c.pipelineDepth)]
                        let futures = batch.map { index in
                            connection.post("/api/login", json: ByteBuffer(string: "{\"nickname\":\"\(prefix)-\(index)\",\"avatar\":\"1.jpg\"}"))
                        }
                        for (index, future) in zip(batch, futures) {
                            let response = try await future.get()
                            guard response.status == .ok, let token = jsonStringField("token", in: response.text) else {
                                throw Failure(description: "login at \(url) answered \(response.status.code): \(response.text.prefix(200))")
                            }
                            found.append((index, token))
                        }
                    }
                    return found
                }
            }
            for try await found in group {
                for (index, token) in found { tokens[index] = token }
            }
        }
        return tokens
    }

    /// The request target of subscriber `index`.
    func target(index: Int, url: BenchURL, tokens: [String]) -> String {
        let c = configuration
        if c.raw { return c.rawTarget(url.target, room: index % c.rooms) }
        let query = "token=\(percentEncoded(tokens[index]))&rooms=\(percentEncoded(c.roomName(index % c.rooms)))"
        switch c.transport {
        case .ws: return "/ws?\(query)"
        case .sse: return "/sse?\(query)"
        case .poll: return "/poll?\(query)&wait=25"
        }
    }

    /// Opens every subscriber connection, `connectConcurrency` at a time. Returns the open
    /// channels, how many failed, and the first failure.
    func connectAll(tokens: [String], recorders: [NIOLoopBoundBox<LoopRecorder>]) async -> ([any Channel], Int, String?) {
        let c = configuration
        var channels: [any Channel] = []
        var failures = 0
        var firstError: String?
        await withTaskGroup(of: Result<any Channel, any Error>.self) { group in
            var next = 0
            func addNext() {
                let index = next
                next += 1
                let url = c.urls[index % c.urls.count]
                let slot = SubscriberSlot(recorder: recorders[index % recorders.count], slot: index / recorders.count)
                let target = target(index: index, url: url, tokens: tokens)
                let transport = c.transport
                group.addTask {
                    do {
                        switch transport {
                        case .ws: return .success(try await WebSocketSubscriber.connect(url: url, target: target, slot: slot))
                        case .sse, .poll:
                            return .success(try await StreamSubscriber.connect(url: url, target: target, poll: transport == .poll, slot: slot))
                        }
                    } catch {
                        return .failure(error)
                    }
                }
            }
            while next < min(c.subscribers, c.connectConcurrency) { addNext() }
            for await outcome in group {
                switch outcome {
                case .success(let channel): channels.append(channel)
                case .failure(let error):
                    failures += 1
                    if firstError == nil { firstError = "\(error)" }
                }
                if next < c.subscribers { addNext() }
            }
        }
        return (channels, failures, firstError)
    }
}
