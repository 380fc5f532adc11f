import SwitchboardJSON
import Testing

@testable import SocketIO

@Suite("Socket.IO packets")
struct SocketIOPacketTests {
    /// The specification's examples, and one or more per packet type.
    static let examples: [(SocketIOPacket, String, [[UInt8]])] = [
        (.connect(namespace: "/", payload: nil), "0", []),
        (.connect(namespace: "/admin", payload: .object(["sid": .string("oSO0OpakMV_3jnilAAAA")])),
         #"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#, []),
        (.connect(namespace: "/", payload: .object(["token": .string("123")])), #"0{"token":"123"}"#, []),
        (.disconnect(namespace: "/"), "1", []),
        (.disconnect(namespace: "/admin"), "1/admin,", []),
        (.event(namespace: "/", name: "foo", arguments: [], ackID: nil), #"2["foo"]"#, []),
        (.event(namespace: "/admin", name: "bar", arguments: [], ackID: nil), #"2/admin,["bar"]"#, []),
        (.event(namespace: "/", name: "foo", arguments: [], ackID: 12), #"212["foo"]"#, []),
        (.event(namespace: "/", name: "message", arguments: [1, "2", ["3": [true]]], ackID: nil),
         #"2["message",1,"2",{"3":[true]}]"#, []),
        (.ack(namespace: "/", arguments: [], ackID: 12), "312[]", []),
        (.ack(namespace: "/admin", arguments: ["bar"], ackID: 13), #"3/admin,13["bar"]"#, []),
        (.connectError(namespace: "/", payload: .object(["message": .string("Not authorized")])),
         #"4{"message":"Not authorized"}"#, []),
        (.connectError(namespace: "/random", payload: .object(["message": .string("Invalid namespace")])),
         #"4/random,{"message":"Invalid namespace"}"#, []),
        (.event(namespace: "/", name: "baz", arguments: [.binary([1, 2, 3, 4])], ackID: nil),
         #"51-["baz",{"_placeholder":true,"num":0}]"#, [[1, 2, 3, 4]]),
        (.event(namespace: "/admin", name: "baz", arguments: [.binary([1, 2]), .binary([3, 4])], ackID: nil),
         #"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#, [[1, 2], [3, 4]]),
        (.event(namespace: "/", name: "up", arguments: [["file": .binary([9]), "name": "a"]], ackID: 7),
         #"51-7["up",{"file":{"_placeholder":true,"num":0},"name":"a"}]"#, [[9]]),
        (.ack(namespace: "/", arguments: ["bar", .binary([1, 2, 3, 4])], ackID: 15),
         #"61-15["bar",{"_placeholder":true,"num":0}]"#, [[1, 2, 3, 4]]),
        (.ack(namespace: "/admin", arguments: [.binary([0xFF])], ackID: 1),
         #"61-/admin,1[{"_placeholder":true,"num":0}]"#, [[0xFF]]),
    ]

    @Test("encodes and decodes every packet type", arguments: 0..<examples.count)
    func roundTrip(index: Int) throws {
        let (packet, text, attachments) = Self.examples[index]
        #expect(packet.encoded() == SocketIOEncodedPacket(text: text, attachments: attachments))
        var decoder = SocketIODecoder()
        let messages = packet.messages
        for message in messages.dropLast() {
            #expect(try decoder.decode(message) == nil)
            #expect(decoder.isAwaitingAttachments)
        }
        #expect(try decoder.decode(messages.last!) == packet)
        #expect(!decoder.isAwaitingAttachments)
        try packet.validate()
    }

    @Test func packetTypes() {
        #expect(Self.examples.map(\.0.type.rawValue) == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6])
        #expect(SocketIOPacketType.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 5, 6])
    }

    @Test func decodingLeniencies() throws {
        // A namespace may end the packet without its comma.
        #expect(try SocketIODecoder.decode("40/custom".dropFirst().description) == .connect(namespace: "/custom", payload: nil))
        #expect(try SocketIODecoder.decode("1/custom") == .disconnect(namespace: "/custom"))
        // A string CONNECT_ERROR payload (older servers).
        #expect(try SocketIODecoder.decode(#"4"Not authorized""#) == .connectError(namespace: "/", payload: .string("Not authorized")))
        // BINARY_EVENT with no attachment.
        #expect(try SocketIODecoder.decode(#"50-["x"]"#) == .event(namespace: "/", name: "x", arguments: [], ackID: nil))
        // Placeholders outside binary packets are plain objects.
        let placeholder: SocketIOValue = ["_placeholder": true, "num": 0]
        #expect(
            try SocketIODecoder.decode(#"2["x",{"_placeholder":true,"num":0}]"#)
                == .event(namespace: "/", name: "x", arguments: [placeholder], ackID: nil))
        // Unicode in names, namespaces and data.
        #expect(
            try SocketIODecoder.decode(#"2/聊天,["东东",{"é":"\u2028"}]"#)
                == .event(namespace: "/聊天", name: "东东", arguments: [["é": "\u{2028}"]], ackID: nil))
    }

    @Test(
        "malformed packets are rejected with a typed error",
        arguments: [
            ("", SocketIOError.emptyPacket),
            ("abc", .unknownPacketType),
            ("7", .unknownPacketType),
            ("/", .unknownPacketType),
            ("2{}", .invalidPayload),
            (#"2"foo""#, .invalidPayload),
            ("2[]", .invalidPayload),
            ("2[1]", .invalidPayload),
            ("2", .invalidPayload),
            (#"2abc["message-with-ack",1]"#, .invalidPayload),
            (#"2["a"]x"#, .invalidPayload),
            (#"2["a""#, .invalidPayload),
            (#"2/admin["a"]"#, .invalidPayload),
            ("0[]", .invalidPayload),
            (#"0"token""#, .invalidPayload),
            ("1{}", .invalidPayload),
            ("3", .invalidPayload),
            ("3{}", .invalidPayload),
            ("312{}", .invalidPayload),
            ("4", .invalidPayload),
            ("4[]", .invalidPayload),
            ("41", .invalidAckID),
            ("01{}", .invalidAckID),
            ("11", .invalidAckID),
            ("3[]", .invalidAckID),
            (#"21234567890123456["a"]"#, .invalidAckID),
            (#"5["a"]"#, .invalidAttachments),
            (#"5x-["a"]"#, .invalidAttachments),
            (#"5-["a"]"#, .invalidAttachments),
            (#"51-["a",{"_placeholder":true,"num":0}]"#, .invalidAttachments),
            (#"2["connect"]"#, .reservedEventName),
            (#"2["disconnect",1]"#, .reservedEventName),
            (#"2["connect_error"]"#, .reservedEventName),
            (#"2["disconnecting"]"#, .reservedEventName),
            (#"2["newListener"]"#, .reservedEventName),
            (#"2["removeListener"]"#, .reservedEventName),
        ])
    func malformed(text: String, error: SocketIOError) {
        #expect(throws: error) { try SocketIODecoder.decode(text) }
    }

    @Test func decoderStateMachine() throws {
        var decoder = SocketIODecoder()
        #expect(throws: SocketIOError.unexpectedBinary) { try decoder.decode(.binary([1])) }
        #expect(try decoder.decode(.text(#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)) == nil)
        #expect(try decoder.decode(.binary([1, 2, 3])) == nil)
        #expect(
            try decoder.decode(.binary([4, 5, 6]))
                == .event(namespace: "/", name: "message-with-ack", arguments: [.binary([1, 2, 3]), .binary([4, 5, 6])], ackID: 789))
        // A text packet while attachments are awaited is an error, and the decoder resets.
        #expect(try decoder.decode(.text(#"51-["a",{"_placeholder":true,"num":0}]"#)) == nil)
        #expect(throws: SocketIOError.unexpectedText) { try decoder.decode(.text(#"2["b"]"#)) }
        #expect(!decoder.isAwaitingAttachments)
        #expect(try decoder.decode(.text(#"2["b"]"#)) == .event(namespace: "/", name: "b", arguments: [], ackID: nil))
    }

    @Test func placeholderOutOfRange() throws {
        var decoder = SocketIODecoder()
        #expect(try decoder.decode(.text(#"51-["a",{"_placeholder":true,"num":1}]"#)) == nil)
        #expect(throws: SocketIOError.invalidAttachments) { try decoder.decode(.binary([1])) }
        #expect(try decoder.decode(.text(#"51-["a",{"_placeholder":true,"num":"0"}]"#)) == nil)
        #expect(throws: SocketIOError.invalidAttachments) { try decoder.decode(.binary([1])) }
        #expect(try decoder.decode(.text(#"51-["a",{"_placeholder":true,"num":-1}]"#)) == nil)
        #expect(throws: SocketIOError.invalidAttachments) { try decoder.decode(.binary([1])) }
    }

    @Test func attachmentLimit() throws {
        var decoder = SocketIODecoder(maxAttachments: 2)
        #expect(throws: SocketIOError.tooManyAttachments) { try decoder.decode(.text(#"53-["a"]"#)) }
        #expect(try decoder.decode(.text(#"52-["a"]"#)) == nil)
    }

    @Test func validation() {
        #expect(throws: SocketIOError.invalidNamespace) {
            try SocketIOPacket.event(namespace: "admin", name: "a", arguments: [], ackID: nil).validate()
        }
        #expect(throws: SocketIOError.invalidNamespace) { try SocketIOPacket.disconnect(namespace: "/a,b").validate() }
        #expect(throws: SocketIOError.reservedEventName) {
            try SocketIOPacket.event(namespace: "/", name: "connect", arguments: [], ackID: nil).validate()
        }
        #expect(throws: SocketIOError.invalidAckID) {
            try SocketIOPacket.event(namespace: "/", name: "a", arguments: [], ackID: -1).validate()
        }
        #expect(throws: SocketIOError.invalidAckID) { try SocketIOPacket.ack(namespace: "/", arguments: [], ackID: -1).validate() }
        #expect(throws: SocketIOError.invalidPayload) { try SocketIOPacket.connect(namespace: "/", payload: .int(1)).validate() }
        #expect(throws: SocketIOError.invalidPayload) { try SocketIOPacket.connectError(namespace: "/", payload: .null).validate() }
    }

    @Test func valuesDeconstructAndReconstruct() throws {
        let value: SocketIOValue = ["list": [.binary([1]), "x", ["deep": .binary([2])]], "n": 1.5, "z": nil]
        #expect(value.hasBinary)
        let (json, attachments) = value.deconstructed()
        #expect(attachments == [[1], [2]])
        #expect(
            String(decoding: json.jsonBytes, as: UTF8.self)
                == #"{"list":[{"_placeholder":true,"num":0},"x",{"deep":{"_placeholder":true,"num":1}}],"n":1.5,"z":null}"#)
        #expect(try SocketIOValue.reconstructed(json, attachments: attachments) == value)
        #expect(!SocketIOValue(json).hasBinary)
        #expect(SocketIOValue("a").stringValue == "a")
        #expect(SocketIOValue(1).stringValue == nil)
    }
}
