import Testing
@testable import SwitchboardCore

@Suite struct CodecTests {
    let lobby = RoomName("lobby")!
    let dong = Nickname("东东")!
    let sender = Sender(nickname: Nickname("东东")!, avatar: "1.jpg")

    @Test func everyServerEventRoundTrips() throws {
        let id = MessageID(milliseconds: 1_700_000_000_000, sequence: 3)
        let events: [ServerEvent] = [
            .welcome(nickname: dong, avatar: "1.jpg", node: "edge-1", transport: "ws", cursor: "r.lobby@1-0,u@2-0"),
            .message(id: id, room: lobby, from: sender, text: "hi \"there\" </script> \u{2028}", ts: 123),
            .privateMessage(id: id, from: sender, to: Nickname("bob")!, text: "psst\n", ts: 456),
            .presence(room: lobby, count: 2),
            .joined(room: lobby, nickname: dong),
            .left(room: lobby, nickname: dong),
            .ack(ref: .string("r1"), id: id),
            .ack(ref: .int(7), id: nil),
            .error(ref: .int(3), code: .textTooLong, message: "too long"),
            .pong,
            .reset(room: lobby, cursor: ""),
            .application(id: id, target: .room(lobby), fields: ["type": .string("news"), "n": .int(1)]),
            .application(id: id, target: .user(dong), fields: ["type": .string("event"), "x": .array([.null, .double(1.5)])]),
        ]
        for event in events {
            let bytes = event.jsonBytes
            #expect(ServerEvent.parse(bytes) == event, "\(String(decoding: bytes, as: UTF8.self))")
        }
    }

    @Test func encodingIsScriptSafe() {
        let event = ServerEvent.message(id: nil, room: lobby, from: sender, text: "</script><!-- \u{2028}\u{2029} & >", ts: 1)
        let text = String(decoding: event.jsonBytes, as: UTF8.self)
        #expect(!text.contains("</"))
        #expect(!text.contains("<!--"))
        #expect(!text.contains("\u{2028}") && !text.contains("\u{2029}"))
        #expect(text.contains(#"\u003c/script\u003e"#))
    }

    @Test func typeComesFirst() {
        #expect(String(decoding: ServerEvent.pong.jsonBytes, as: UTF8.self) == #"{"type":"pong"}"#)
    }

    @Test func everyClientEventRoundTrips() throws {
        let events: [ClientEvent] = [
            ClientEvent(.join(lobby), ref: .int(1)),
            ClientEvent(.leave(lobby)),
            ClientEvent(.say(room: lobby, text: "hello 东东", echo: false), ref: .string("a")),
            ClientEvent(.whisper(to: dong, text: "hi")),
            ClientEvent(.ping),
        ]
        for event in events {
            #expect(try ClientEvent.parse(event.jsonBytes).get() == event)
        }
    }

    @Test(arguments: [
        (#"not json"#, ErrorCode.invalidMessage),
        (#"[1,2]"#, .invalidMessage),
        (#"{"type":"dance"}"#, .invalidMessage),
        (#"{"type":"join"}"#, .invalidRoom),
        (#"{"type":"join","room":"has space"}"#, .invalidRoom),
        (#"{"type":"join","room":"\#(String(repeating: "a", count: 65))"}"#, .invalidRoom),
        (#"{"type":"say","room":"lobby"}"#, .invalidMessage),
        (#"{"type":"say","room":"lobby","text":"\#(String(repeating: "é", count: 4097))"}"#, .textTooLong),
        (#"{"type":"say","room":"lobby","text":"x","echo":"yes"}"#, .invalidMessage),
        (#"{"type":"whisper","to":" bob","text":"x"}"#, .invalidNickname),
        (#"{"type":"ping","ref":{"a":1}}"#, .invalidMessage),
    ])
    func invalidClientEvents(input: String, code: ErrorCode) {
        guard case .failure(let error) = ClientEvent.parse(Array(input.utf8)) else {
            Issue.record("accepted \(input)")
            return
        }
        #expect(error.code == code)
    }

    @Test func errorsCarryTheRef() {
        guard case .failure(let error) = ClientEvent.parse(Array(#"{"type":"join","room":"","ref":"x1"}"#.utf8)) else {
            Issue.record("accepted")
            return
        }
        #expect(error.ref == .string("x1"))
    }

    @Test func textLimitCountsScalars() {
        let text = String(repeating: "东", count: 4096)
        let event = #"{"type":"say","room":"lobby","text":"\#(text)"}"#
        #expect((try? ClientEvent.parse(Array(event.utf8)).get()) != nil)
    }

    @Test func nicknameRules() {
        #expect(Nickname("东东") != nil)
        #expect(Nickname(String(repeating: "x", count: 32)) != nil)
        #expect(Nickname(String(repeating: "x", count: 33)) == nil)
        #expect(Nickname("") == nil)
        #expect(Nickname(" a") == nil)
        #expect(Nickname("a ") == nil)
        #expect(Nickname("a\u{0007}b") == nil)
        #expect(Nickname("a b") != nil)
    }

    @Test func cursorRoundTripsAndRejectsJunk() {
        var cursor = Cursor()
        cursor.advance(.room(lobby), to: MessageID(milliseconds: 5, sequence: 1))
        cursor.advance(.room(RoomName("a:b")!), to: MessageID(milliseconds: 6, sequence: 0))
        cursor.advance(.user(dong), to: MessageID(milliseconds: 9, sequence: 2))
        cursor.advance(.room(lobby), to: MessageID(milliseconds: 1, sequence: 0))  // never backwards
        #expect(Cursor(cursor.description) == cursor)
        #expect(cursor.description == "r.a:b@6-0,r.lobby@5-1,u@9-2")
        for junk in ["x", "r.lobby@", "r.lobby@1", "u@1-0,u@2-0", "r.bad room@1-0", "q.x@1-0", "r.lobby@-1-0"] {
            #expect(Cursor(junk) == nil, "\(junk)")
        }
        #expect(Cursor("") == Cursor())
    }

    @Test func envelopeRoundTrips() {
        let envelope = Envelope(
            .message(id: nil, room: lobby, from: sender, text: "tab\there", ts: 5),
            excludeNickname: dong, excludeConnection: ConnectionID("c1"))
        #expect(Envelope(encoded: envelope.encoded) == envelope)
        #expect(Envelope(encoded: Array("junk".utf8)) == nil)
        let whisper = Envelope(
            .privateMessage(id: nil, from: sender, to: dong, text: "psst\t,", ts: 6),
            excludeConnection: ConnectionID("c1"), sessions: ["s1", "s2"])
        #expect(whisper.encoded.starts(with: Array("2\te\t\tc1\ts1,s2\t".utf8)))
        #expect(Envelope(encoded: whisper.encoded) == whisper)
        #expect(Envelope(encoded: whisper.encoded)?.sessions == ["s1", "s2"])
        #expect(whisper.isReplayable(to: "s2") && !whisper.isReplayable(to: "s3"))
        #expect(envelope.isReplayable(to: "anyone"), "no sessions: no restriction")
        #expect(Envelope(encoded: Array("2\te\t\t\t\t{\"type\":\"pong\"}".utf8)) == nil, "version 2 needs a session")
    }

    @Test func tokensVerifyAndRefuseForgery() {
        let signer = TokenSigner(secrets: ["secret"])
        let identity = Identity(nickname: dong, avatar: "1.jpg", session: "s", issuedAt: 100, expiresAt: 200)
        let token = signer.sign(identity)
        #expect(signer.verify(token, now: 150) == identity)
        #expect(signer.verify(token, now: 200) == nil, "expired")
        #expect(TokenSigner(secrets: ["other"]).verify(token, now: 150) == nil, "another cluster's secret")
        #expect(TokenSigner(secrets: ["new", "secret"]).verify(token, now: 150) == identity, "rotation accepts the old secret")
        var tampered = Array(token.utf8)
        tampered[3] = tampered[3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(signer.verify(String(decoding: tampered, as: UTF8.self), now: 150) == nil)
        #expect(signer.verify("garbage", now: 150) == nil)
        #expect(signer.verify("a.b.c", now: 150) == nil)
    }
}
