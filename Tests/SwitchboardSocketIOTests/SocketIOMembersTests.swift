import SocketIO
import SwitchboardCore
import SwitchboardSocketIO
import Testing

@Suite("Socket.IO members requests")
struct SocketIOMembersTests {
    static func parse(_ arguments: [SocketIOValue]) -> Result<SocketIOChatCommand, EventError> {
        SocketIOChatCommand.parse(name: "members", arguments: arguments)
    }

    @Test("members takes a room name or {room, after, limit}, with the native rules")
    func requests() {
        let lobby = RoomName("lobby")!
        #expect(Self.parse(["lobby"]) == .success(.members(room: lobby, after: nil, limit: nil)))
        #expect(Self.parse([["room": "lobby", "after": "小明", "limit": 5]]) == .success(.members(room: lobby, after: Nickname("小明"), limit: 5)))
        let refused: [([SocketIOValue], ErrorCode)] = [
            ([], .invalidRoom), ([3], .invalidRoom), (["a b"], .invalidRoom), ([["room": 3]], .invalidRoom),
            ([["room": "lobby", "limit": 0]], .invalidMessage), ([["room": "lobby", "after": ""]], .invalidMessage),
            ([["room": "lobby", "limit": .binary([1])]], .invalidMessage),
        ]
        for (arguments, code) in refused {
            guard case .failure(let error) = Self.parse(arguments) else {
                Issue.record("accepted \(arguments)")
                continue
            }
            #expect(error.code == code, "\(arguments)")
        }
    }

    @Test("the ack is the members event's object without type")
    func ack() {
        let page = PresencePage(total: 3, members: [RoomMember(nickname: Nickname("ann")!, avatar: "1.jpg")], next: Nickname("ann"))
        #expect(SocketIOChatReply.members(RoomName("lobby")!, page: page) == [[
            "room": "lobby", "count": 3, "members": [["nickname": "ann", "avatar": "1.jpg"]], "next": "ann",
        ]])
    }
}
