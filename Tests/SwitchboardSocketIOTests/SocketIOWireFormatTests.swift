import SocketIO
import SwitchboardCore
import SwitchboardSocketIO
import Testing

@Suite("Socket.IO wire format")
struct SocketIOWireFormatTests {
    static let sender = Sender(nickname: Nickname("ann")!, avatar: "1.jpg")
    static let lobby = RoomName("lobby")!
    static let id = MessageID(milliseconds: 1700, sequence: 2)

    /// The packets a frame holds, decoded back.
    static func packets(_ bytes: [UInt8]) throws -> [SocketIOPacket] {
        var decoder = SocketIODecoder(maxAttachments: 10)
        var packets: [SocketIOPacket] = []
        for message in SocketIOWireFormat.messages(bytes) {
            if let packet = try decoder.decode(message) { packets.append(packet) }
        }
        return packets
    }

    @Test("a native message is the event `message` with the native object, id included")
    func nativeMessage() throws {
        let event = ServerEvent.message(id: nil, room: Self.lobby, from: Self.sender, text: "hi <3", ts: 42)
        let (name, bytes) = SocketIOWireFormat.encode(event, id: Self.id, namespace: "/")
        #expect(name == "message")
        let native = String(decoding: event.with(id: Self.id).jsonBytes, as: UTF8.self)
        #expect(String(decoding: bytes, as: UTF8.self) == #"42["message","# + native + "]")
        let packets = try Self.packets(bytes)
        guard case .event("/", "message", let arguments, nil)? = packets.first else {
            Issue.record("not an event: \(packets)")
            return
        }
        #expect(arguments == [SocketIOValue(JSONValue.parse(Array(native.utf8))!)])
    }

    @Test("namespaces other than / are written in the packet; the format is per namespace")
    func namespaced() throws {
        let (_, bytes) = SocketIOWireFormat.encode(.presence(room: Self.lobby, count: 3), id: nil, namespace: "/chat")
        #expect(String(decoding: bytes, as: UTF8.self) == #"42/chat,["presence",{"type":"presence","room":"lobby","count":3}]"#)
        #expect(SocketIOWireFormat.format(namespace: "/") == WireFormat("socketio"))
        #expect(SocketIOWireFormat.format(namespace: "/chat") == WireFormat("socketio:/chat"))
        #expect(SocketIOWireFormat.encoders(namespaces: ["/", "/chat"]).count == 2)
    }

    @Test("a relayed (.encoded) event encodes like the structured one")
    func relayed() throws {
        let event = ServerEvent.privateMessage(
            id: nil, from: Self.sender, to: Nickname("bob")!, text: "psst", ts: 7)
        let relayed = ServerEvent.encoded(type: "private", json: event.jsonBytes)
        #expect(SocketIOWireFormat.encode(relayed, id: Self.id, namespace: "/").bytes
            == SocketIOWireFormat.encode(event, id: Self.id, namespace: "/").bytes)
    }

    @Test("a custom event is its own name with its arguments, `from` stamped into an object payload")
    func custom() throws {
        let custom = CustomEvent(
            name: "chat", arguments: [.object(["text": .string("hi"), "from": .string("mallory")]), .int(5)], target: .rooms,
            echo: false)
        let stored = ServerEvent.application(id: nil, target: .room(Self.lobby), fields: custom.fields(from: Self.sender))
        let (name, bytes) = SocketIOWireFormat.encode(stored, id: Self.id, namespace: "/")
        #expect(name == "chat")
        let packets = try Self.packets(bytes)
        let from: SocketIOValue = ["nickname": "ann", "avatar": "1.jpg"]
        #expect(packets == [.event(namespace: "/", name: "chat", arguments: [["text": "hi", "from": from], 5], ackID: nil)])
        // Native clients: type = name, event, from, data, extra, id, room.
        guard case .object(let native)? = JSONValue.parse(stored.with(id: Self.id).jsonBytes) else {
            Issue.record("not an object")
            return
        }
        #expect(native["type"] == .string("chat"))
        #expect(native["event"] == .string("chat"))
        #expect(native["id"] == .string("1700-2"))
        #expect(native["room"] == .string("lobby"))
        #expect(native["data"]?["from"]?["nickname"] == .string("ann"))
        #expect(native["extra"] == .array([.int(5)]))
    }

    @Test("the same through the broker: a relayed custom event decodes to the same packet")
    func customRelayed() throws {
        let custom = CustomEvent(name: "chat", arguments: [.string("plain string")], target: .rooms, echo: false)
        let stored = ServerEvent.application(id: nil, target: .room(Self.lobby), fields: custom.fields(from: Self.sender))
        let envelope = Envelope(stored)
        let decoded = try #require(Envelope(encoded: envelope.encoded))
        let (_, bytes) = SocketIOWireFormat.encode(decoded.event, id: Self.id, namespace: "/")
        #expect(try Self.packets(bytes) == [.event(namespace: "/", name: "chat", arguments: ["plain string"], ackID: nil)])
    }

    @Test("binary arguments are stored as {\"$binary\": base64} and sent as attachments")
    func binary() throws {
        let argument: SocketIOValue = ["blob": .binary([0, 1, 2, 255]), "n": 1]
        let stored = StoredBinary.json(argument)
        #expect(stored["blob"] == .object(["$binary": .string("AAEC/w==")]))
        #expect(StoredBinary.value(stored) == argument)
        let custom = CustomEvent(name: "file", arguments: [stored], target: .rooms, echo: false)
        let event = ServerEvent.application(id: nil, target: .room(Self.lobby), fields: custom.fields(from: Self.sender))
        let (_, bytes) = SocketIOWireFormat.encode(event, id: nil, namespace: "/")
        let messages = SocketIOWireFormat.messages(bytes)
        #expect(messages.count == 2)
        #expect(messages.last == .binary([0, 1, 2, 255]))
        guard case .event(_, "file", let arguments, _)? = try Self.packets(bytes).first else {
            Issue.record("no event")
            return
        }
        #expect(arguments.first?.hasBinary == true)
        // Not base64, or other keys: left as JSON.
        #expect(StoredBinary.value(.object(["$binary": .string("*")])) == ["$binary": "*"])
        #expect(StoredBinary.value(.object(["$binary": .string("AA=="), "x": .int(1)])) == ["$binary": "AA==", "x": 1])
    }

    @Test("custom names that collide with native types are typed `event` for native clients")
    func nativeType() {
        #expect(CustomEvent(name: "chat", arguments: [], target: .rooms, echo: false).nativeType == "chat")
        #expect(CustomEvent(name: "message", arguments: [], target: .rooms, echo: false).nativeType == "event")
        #expect(CustomEvent(name: "two words", arguments: [], target: .rooms, echo: false).nativeType == "event")
        let fields = CustomEvent(name: "x", arguments: [], target: .rooms, echo: false).fields(from: Self.sender)
        #expect(fields["data"] == nil && fields["extra"] == nil && fields["event"] == .string("x"))
    }

    @Test("application types the libraries reserve are renamed `event`")
    func reservedNames() {
        let event = ServerEvent.application(id: nil, target: .room(Self.lobby), fields: ["type": .string("connect")])
        #expect(SocketIOWireFormat.encode(event, id: nil, namespace: "/").name == "event")
    }
}
