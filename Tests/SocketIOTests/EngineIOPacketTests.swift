import Testing

@testable import SocketIO

@Suite("Engine.IO packets")
struct EngineIOPacketTests {
    static let handshake = EngineIOHandshake(
        sid: "lv_VI97HAXpY6yYWAAAC", upgrades: ["websocket"], pingInterval: 25000, pingTimeout: 20000,
        maxPayload: 1_000_000)

    static let packets: [(EngineIOPacket, String)] = [
        (.open(handshake), #"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#),
        (.close, "1"),
        (.ping(), "2"),
        (.probePing, "2probe"),
        (.pong(), "3"),
        (.probePong, "3probe"),
        (.message(.text("hello")), "4hello"),
        (.message(.text("")), "4"),
        (.message(.text("€ ü 东东 \u{1E}")), "4€ ü 东东 \u{1E}"),
        (.message(.binary([1, 2, 3, 4])), "bAQIDBA=="),
        (.message(.binary([])), "b"),
        (.upgrade, "5"),
        (.noop, "6"),
    ]

    @Test("every packet type encodes to its text form and back", arguments: 0..<packets.count)
    func textRoundTrip(index: Int) throws {
        let (packet, text) = Self.packets[index]
        #expect(packet.text == text)
        #expect(try EngineIOPacket(text: text) == packet)
    }

    @Test func packetTypes() {
        #expect(EngineIOPacketType.allCases.map(\.character) == ["0", "1", "2", "3", "4", "5", "6"])
        #expect(Self.packets.map(\.0.type.rawValue) == [0, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 5, 6])
    }

    @Test func webSocketFrames() throws {
        #expect(EngineIOPacket.message(.binary([1, 2, 3, 4])).frame == .binary([1, 2, 3, 4]))
        #expect(EngineIOPacket.message(.text("hello")).frame == .text("4hello"))
        #expect(EngineIOPacket.probePong.frame == .text("3probe"))
        #expect(try EngineIOPacket(frame: .binary([9])) == .message(.binary([9])))
        #expect(try EngineIOPacket(frame: .binary([])) == .message(.binary([])))
        #expect(try EngineIOPacket(frame: .text("2probe")) == .probePing)
        // A text frame may also carry base64, as the reference parser allows.
        #expect(try EngineIOPacket(frame: .text("bAQ==")) == .message(.binary([1])))
    }

    @Test(
        "malformed packets are rejected with a typed error",
        arguments: [
            ("", EngineIOParseError.emptyPacket),
            ("7", .unknownPacketType),
            ("9hello", .unknownPacketType),
            ("abc", .unknownPacketType),
            ("xyz", .unknownPacketType),
            (" 4hello", .unknownPacketType),
            ("b!!!!", .invalidBase64),
            ("bAQIDBA=", .invalidBase64),
            ("bA", .invalidBase64),
            ("bAQIDBA==AA", .invalidBase64),
            ("bAQ-_", .invalidBase64),
            ("bAR==", .invalidBase64),
            ("0", .invalidHandshake),
            ("0{}", .invalidHandshake),
            (#"0{"sid":1,"upgrades":[],"pingInterval":1,"pingTimeout":1,"maxPayload":1}"#, .invalidHandshake),
            ("1x", .unexpectedData),
            ("5x", .unexpectedData),
            ("6x", .unexpectedData),
        ])
    func malformed(text: String, error: EngineIOParseError) {
        #expect(throws: error) { try EngineIOPacket(text: text) }
    }

    @Test func handshakeJSON() throws {
        let handshake = Self.handshake
        #expect(EngineIOHandshake(json: handshake.json[...]) == handshake)
        let websocket = EngineIOHandshake(sid: "x", upgrades: [], pingInterval: 300, pingTimeout: 200, maxPayload: 1_000_000)
        #expect(websocket.json == #"{"sid":"x","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#)
        #expect(EngineIOHandshake(json: #"{"sid":"x","upgrades":[1],"pingInterval":1,"pingTimeout":1,"maxPayload":1}"#) == nil)
    }
}

@Suite("Engine.IO polling payloads")
struct EngineIOPayloadTests {
    @Test func batchesWithTheRecordSeparator() throws {
        let packets: [EngineIOPacket] = [.message(.text("hello")), .ping(), .message(.text("world"))]
        #expect(EngineIOPayload.encode(packets) == "4hello\u{1E}2\u{1E}4world")
        #expect(try EngineIOPayload.decode("4hello\u{1E}2\u{1E}4world") == packets)
    }

    @Test func mixesTextAndBinary() throws {
        let packets: [EngineIOPacket] = [.message(.text("hello")), .message(.binary([1, 2, 3, 4]))]
        #expect(EngineIOPayload.encode(packets) == "4hello\u{1E}bAQIDBA==")
        #expect(try EngineIOPayload.decode(Array("4hello\u{1E}bAQIDBA==".utf8)) == packets)
    }

    @Test func singlePacket() throws {
        #expect(try EngineIOPayload.decode("3") == [.pong()])
        #expect(try EngineIOPayload.decode("1") == [.close])
    }

    @Test func aRecordMayStartWithACombiningMark() throws {
        #expect(try EngineIOPayload.decode("4a\u{1E}4\u{301}") == [.message(.text("a")), .message(.text("\u{301}"))])
    }

    @Test(
        "malformed payloads are rejected whole",
        arguments: [
            ("", EngineIOParseError.emptyPayload),
            ("abc", .unknownPacketType),
            ("4hello\u{1E}", .emptyPacket),
            ("\u{1E}4hello", .emptyPacket),
            ("4a\u{1E}\u{1E}4b", .emptyPacket),
            ("4hello\u{1E}b@@", .invalidBase64),
            ("4hello\u{1E}x", .unknownPacketType),
        ])
    func malformed(body: String, error: EngineIOParseError) {
        #expect(throws: error) { try EngineIOPayload.decode(body) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: EngineIOParseError.invalidUTF8) { try EngineIOPayload.decode([0x34, 0xFF, 0xFE]) }
    }

    @Test func boundedByMaxPayload() {
        let packets: [EngineIOPacket] = [.message(.text("aaaa")), .message(.text("bbbb")), .message(.text("cc"))]
        // "4aaaa" is 5 bytes, each further packet costs its size plus one separator.
        #expect(EngineIOPayload.encode(packets, maxPayload: 11) == ("4aaaa\u{1E}4bbbb", 2))
        #expect(EngineIOPayload.encode(packets, maxPayload: 15) == ("4aaaa\u{1E}4bbbb\u{1E}4cc", 3))
        // One packet always goes, even when larger than the bound.
        #expect(EngineIOPayload.encode(packets, maxPayload: 1) == ("4aaaa", 1))
        #expect(EngineIOPayload.encode([], maxPayload: 10) == ("", 0))
    }

    @Test func boundedByPacketCount() throws {
        let packets = (0..<40).map { EngineIOPacket.message(.text("m\($0)")) }
        let (body, count) = EngineIOPayload.encode(packets, maxPayload: 1_000_000, maxPackets: 16)
        #expect(count == 16)
        #expect(try EngineIOPayload.decode(body).count == 16)
        #expect(EngineIOPayload.encode(packets, maxPayload: 1_000_000, maxPackets: 1).count == 1)
    }
}

@Suite("Base64")
struct Base64Tests {
    @Test(arguments: [
        ([UInt8](), ""), ([0x66], "Zg=="), ([0x66, 0x6F], "Zm8="), ([0x66, 0x6F, 0x6F], "Zm9v"),
        ([0xFF, 0xFE, 0xFD, 0x00], "//79AA=="),
    ])
    func roundTrip(bytes: [UInt8], text: String) {
        #expect(Base64.encode(bytes) == text)
        #expect(Base64.decode(text[...].utf8) == bytes)
    }

    @Test func acceptsMissingPadding() {
        #expect(Base64.decode("Zg"[...].utf8) == [0x66])
        #expect(Base64.decode("Zm8"[...].utf8) == [0x66, 0x6F])
    }

    @Test(arguments: ["Z", "Zg=", "Zg===", "Z===", "Zh==", "Zm9v\n", "Zm-_", "=Zm9"])
    func rejects(text: String) {
        #expect(Base64.decode(text[...].utf8) == nil)
    }

    @Test func allByteValues() {
        let bytes = (0...255).map { UInt8($0) }
        #expect(Base64.decode(Base64.encode(bytes)[...].utf8) == bytes)
    }
}
