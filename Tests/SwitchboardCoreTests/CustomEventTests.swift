import Logging
import Synchronization
import Testing
@testable import SwitchboardCore

/// `ChatService.emitCustom`: Socket.IO-style events stored and delivered through the
/// broker like chat messages.
@Suite struct CustomEventTests {
    let lobby = RoomName("lobby")!
    let news = RoomName("news")!

    func service() async throws -> ChatService {
        let chat = ChatService(
            configuration: ChatConfiguration(nodeID: "test"), broker: MemoryBroker(), hub: Hub(),
            signer: TokenSigner(secrets: ["secret"]), logger: Logger(label: "test"))
        try await chat.start()
        return chat
    }

    func user(_ chat: ChatService, _ nickname: String, rooms: [RoomName], loop: RecordingLoop) async throws -> Session {
        guard case .success(let login) = await chat.login(nickname: nickname, avatar: "1.jpg") else {
            throw EventError(.unavailable, "login failed")
        }
        let subscriber = TestSubscriber("c-\(nickname)", nickname, loop: loop)
        return try await chat.open(login.identity, subscriber: subscriber, transport: .websocket, rooms: rooms, cursor: nil).session
    }

    /// The native events `loop` was handed for `connection`, with their type.
    func delivered(_ loop: RecordingLoop, to connection: ConnectionID, type: String) -> [[String: JSONValue]] {
        loop.calls.withLock { calls in
            calls.filter { $0.1.contains(connection) && $0.0.type == type }
                .compactMap { JSONValue.parse($0.0.bytes)?.objectValue }
        }
    }

    @Test func broadcastGoesToEveryRoomOfTheSenderOthersOnly() async throws {
        let chat = try await service()
        let loop = RecordingLoop()
        let ann = try await user(chat, "ann", rooms: [lobby, news], loop: loop)
        let bob = try await user(chat, "bob", rooms: [lobby], loop: loop)
        let event = CustomEvent(name: "chat", arguments: [.object(["text": .string("hi")])], target: .rooms, echo: false)
        guard case .success(let ids) = await chat.emitCustom(event, from: ann) else {
            Issue.record("refused")
            return
        }
        #expect(ids.count == 2, "one stored copy per room")
        let got = delivered(loop, to: bob.connectionID, type: "chat")
        #expect(got.count == 1)
        #expect(got.first?["room"] == .string("lobby"))
        #expect(got.first?["data"]?["from"]?["nickname"] == .string("ann"))
        #expect(delivered(loop, to: ann.connectionID, type: "chat").isEmpty, "not the sender without echo")
        // Stored: history has it with the acked id.
        let page = try await chat.broker.history(of: .room(lobby), after: nil, limit: 10)
        #expect(page.entries.map(\.id).contains(ids[0]))
    }

    @Test func echoRoomSelectionAndRefusals() async throws {
        let chat = try await service()
        let loop = RecordingLoop()
        let ann = try await user(chat, "ann", rooms: [lobby, news], loop: loop)
        let echoed = CustomEvent(name: "chat", arguments: [], target: .room(news), echo: true)
        guard case .success(let ids) = await chat.emitCustom(echoed, from: ann) else {
            Issue.record("refused")
            return
        }
        #expect(ids.count == 1)
        #expect(delivered(loop, to: ann.connectionID, type: "chat").map { $0["room"] } == [.string("news")])
        let elsewhere = CustomEvent(name: "chat", arguments: [], target: .room(RoomName("other")!), echo: false)
        #expect(await chat.emitCustom(elsewhere, from: ann).failureCode == .notJoined)
        let offline = CustomEvent(name: "dm", arguments: [], target: .user(Nickname("ghost")!), echo: false)
        #expect(await chat.emitCustom(offline, from: ann).failureCode == .userOffline)
        let huge = CustomEvent(
            name: "big", arguments: [.string(String(repeating: "x", count: 70_000))], target: .rooms, echo: false)
        #expect(await chat.emitCustom(huge, from: ann).failureCode == .invalidMessage)
    }

    @Test func privateEventsReachTheNicknameAndTheSendersOtherConnections() async throws {
        let chat = try await service()
        let loop = RecordingLoop()
        let ann = try await user(chat, "ann", rooms: [], loop: loop)
        let bob = try await user(chat, "bob", rooms: [], loop: loop)
        let carol = try await user(chat, "carol", rooms: [], loop: loop)
        let dm = CustomEvent(name: "dm", arguments: [.object(["to": .string("bob")])], target: .user(Nickname("bob")!), echo: false)
        guard case .success(let ids) = await chat.emitCustom(dm, from: ann) else {
            Issue.record("refused")
            return
        }
        #expect(ids.count == 1)
        let got = delivered(loop, to: bob.connectionID, type: "dm")
        #expect(got.first?["to"] == .string("bob") && got.first?["event"] == .string("dm"))
        #expect(delivered(loop, to: carol.connectionID, type: "dm").isEmpty)
        #expect(delivered(loop, to: ann.connectionID, type: "dm").isEmpty)
    }
}

extension Result where Failure == EventError {
    var failureCode: ErrorCode? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}
