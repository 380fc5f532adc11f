import Logging
import Synchronization
import Testing
@testable import SwitchboardCore

/// `joined`/`left` go out only below `joinLeaveLimit` online nicknames; `presence`
/// always does.
@Suite struct JoinLeaveLimitTests {
    let lobby = RoomName("lobby")!

    func user(_ chat: ChatService, _ nickname: String, loop: RecordingLoop) async throws -> Session {
        guard case .success(let login) = await chat.login(nickname: nickname, avatar: "") else {
            throw EventError(.unavailable, "login failed")
        }
        let subscriber = TestSubscriber("c-\(nickname)", nickname, loop: loop)
        return try await chat.open(login.identity, subscriber: subscriber, transport: .websocket, rooms: [lobby], cursor: nil).session
    }

    /// The `joined`/`left`/`presence` events handed to `connection`, as (type, nickname or count).
    func membership(_ loop: RecordingLoop, _ connection: String) -> [String] {
        loop.calls.withLock { calls in
            calls.filter { $0.1.contains(ConnectionID(connection)) }
                .compactMap { call -> String? in
                    guard let object = JSONValue.parse(call.0.bytes)?.objectValue else { return nil }
                    switch object["type"] {
                    case .string("joined"), .string("left"): return "\(call.0.type) \(object["nickname"]?.stringValue ?? "?")"
                    default: return nil
                    }
                }
        }
    }

    func presenceCounts(_ loop: RecordingLoop, _ connection: String) -> [Int] {
        loop.calls.withLock { calls in
            calls.filter { $0.1.contains(ConnectionID(connection)) && $0.0.type == "presence" }
                .compactMap { call -> Int? in
                    guard case .int(let count)? = JSONValue.parse(call.0.bytes)?.objectValue?["count"] else { return nil }
                    return Int(count)
                }
        }
    }

    func eventually(_ what: Comment, _ condition: () -> Bool) async throws {
        for _ in 0..<100 where !condition() { try await Task.sleep(for: .milliseconds(20)) }
        #expect(condition(), what)
    }

    @Test func bigRoomsGetPresenceButNoJoinedOrLeft() async throws {
        var configuration = ChatConfiguration(nodeID: "test")
        configuration.joinLeaveLimit = 3
        configuration.presenceCoalesce = .milliseconds(20)
        let chat = ChatService(
            configuration: configuration, broker: MemoryBroker(), hub: Hub(),
            signer: TokenSigner(secrets: ["secret"]), logger: Logger(label: "test"))
        try await chat.start()
        let runner = Task { await chat.run() }
        defer { runner.cancel() }
        let loop = RecordingLoop()
        _ = try await user(chat, "ann", loop: loop)
        _ = try await user(chat, "bob", loop: loop)
        _ = try await user(chat, "cat", loop: loop)
        try await eventually("ann hears bob and cat arrive") { membership(loop, "c-ann") == ["joined bob", "joined cat"] }
        try await eventually("the count reaches 3") { presenceCounts(loop, "c-ann").last == 3 }
        let dan = try await user(chat, "dan", loop: loop)
        try await eventually("the count reaches 4") { presenceCounts(loop, "c-ann").last == 4 }
        await chat.close(dan)
        try await eventually("the count is back to 3") { presenceCounts(loop, "c-ann").last == 3 }
        #expect(membership(loop, "c-ann") == ["joined bob", "joined cat"], "no joined/left for dan at the limit")
    }
}
