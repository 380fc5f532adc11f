import SocketIO
import SwitchboardCore
import SwitchboardSocketIO
import Testing

@Suite("Socket.IO chat mapping")
struct SocketIOChatCommandTests {
    static func parse(_ name: String, _ arguments: [SocketIOValue]) -> Result<SocketIOChatCommand, EventError> {
        SocketIOChatCommand.parse(name: name, arguments: arguments)
    }

    @Test("join and leave take a room name or {room}")
    func joinLeave() {
        #expect(Self.parse("join", ["news"]) == .success(.join(RoomName("news")!)))
        #expect(Self.parse("leave", [["room": "news"]]) == .success(.leave(RoomName("news")!)))
    }

    @Test("bad rooms are invalid_room")
    func badRooms() {
        for arguments: [SocketIOValue] in [[], [1], ["no spaces"], [["room": 3]]] {
            guard case .failure(let error) = Self.parse("join", arguments) else {
                Issue.record("accepted \(arguments)")
                continue
            }
            #expect(error.code == .invalidRoom)
        }
    }

    @Test("a payload with `to` is a private event; a bad `to` is invalid_nickname")
    func privateEvents() {
        let payload: SocketIOValue = ["to": "bob", "text": "hi"]
        #expect(Self.parse("dm", [payload]) == .success(.emit(CustomEvent(
            name: "dm", arguments: [.object(["to": .string("bob"), "text": .string("hi")])],
            target: .user(Nickname("bob")!), echo: false))))
        guard case .failure(let error) = Self.parse("dm", [["to": 5]]) else {
            Issue.record("accepted a numeric to")
            return
        }
        #expect(error.code == .invalidNickname)
    }

    @Test("anything else is a broadcast to the rooms; echo only with \"echo\": true")
    func broadcast() {
        #expect(Self.parse("chat", ["hi", 2]) == .success(.emit(CustomEvent(
            name: "chat", arguments: [.string("hi"), .int(2)], target: .rooms, echo: false))))
        guard case .success(.emit(let event)) = Self.parse("chat", [["echo": true]]) else {
            Issue.record("not an emit")
            return
        }
        #expect(event.echo)
        guard case .success(.emit(let other)) = Self.parse("chat", [["echo": "yes"]]) else { return }
        #expect(!other.echo)
    }

    @Test("auth: {token} wins over {nickname, avatar}; anything else is no auth")
    func auth() {
        #expect(SocketIOAuth(.object(["token": .string("t"), "nickname": .string("n")])) == .token("t"))
        #expect(SocketIOAuth(.object(["nickname": .string("n"), "avatar": .string("1.jpg")]))
            == .login(nickname: "n", avatar: "1.jpg"))
        #expect(SocketIOAuth(.object(["nickname": .string("n")])) == .login(nickname: "n", avatar: nil))
        #expect(SocketIOAuth(nil) == nil)
        #expect(SocketIOAuth(.object([:])) == nil)
        #expect(SocketIOAuth(.object(["token": .int(1)])) == nil)
        #expect(SocketIOAuth(.string("t")) == nil)
    }

    @Test("acks and errors")
    func replies() {
        let id = MessageID(milliseconds: 5, sequence: 1)
        #expect(SocketIOChatReply.accepted(id: id) == [["id": "5-1"]])
        #expect(SocketIOChatReply.accepted(id: nil) == [[:]])
        #expect(SocketIOChatReply.accepted(id: id, ids: [id, MessageID(milliseconds: 6, sequence: 0)])
            == [["id": "5-1", "ids": ["5-1", "6-0"]]])
        let error = EventError(.userOffline, "bob is not online")
        #expect(SocketIOChatReply.refused(error) == [["error": "user_offline", "message": "bob is not online"]])
        #expect(SocketIOChatReply.errorEvent(error, event: "dm")
            == [["code": "user_offline", "message": "bob is not online", "event": "dm"]])
        #expect(SocketIOChatReply.connectError(EventError(.nicknameTaken, "taken"))
            == .object(["message": .string("nickname_taken"),
                        "data": .object(["code": .string("nickname_taken"), "message": .string("taken")])]))
    }
}

@Suite("Socket.IO chat mapping: room selection")
struct SocketIORoomSelectionTests {
    @Test("a `room` field picks one room; a bad one is invalid_room; `to` wins")
    func room() {
        guard case .success(.emit(let event)) = SocketIOChatCommand.parse(name: "chat", arguments: [["room": "news"]]) else {
            Issue.record("not an emit")
            return
        }
        #expect(event.target == .room(RoomName("news")!))
        guard case .failure(let error) = SocketIOChatCommand.parse(name: "chat", arguments: [["room": "a b"]]) else {
            Issue.record("accepted a bad room")
            return
        }
        #expect(error.code == .invalidRoom)
        guard case .success(.emit(let dm)) = SocketIOChatCommand.parse(name: "chat", arguments: [["room": "x", "to": "bob"]]) else {
            return
        }
        #expect(dm.target == .user(Nickname("bob")!))
    }
}
