import Testing
import SocketIO
@testable import SocketIOHummingbird
@testable import SwitchboardServer

/// What nodes tell each other about Socket.IO sessions (issue 16): session IDs that name
/// their node, and the peer messages as pure round trips.
@Suite struct EngineIOPeerTests {
    @Test func sessionIDsNameTheirNode() {
        for node in ["edge-1", "東京-3", "a\tb\nc", String(repeating: "n", count: 64)] {
            let sid = EngineIOSessionID.make(node: node)
            #expect(EngineIOSessionID.node(of: sid) == node)
            #expect(sid.utf8.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "&") && $0 != UInt8(ascii: "=") })
        }
        let plain = EngineIOSessionID.make(node: nil)
        #expect(plain.utf8.count == 20 && EngineIOSessionID.node(of: plain) == nil)
        #expect(EngineIOSessionID.make(node: "x") != EngineIOSessionID.make(node: "x"))
    }

    @Test(arguments: [
        "", ".", "abc.6162", String(repeating: "A", count: 20) + ".", String(repeating: "A", count: 20) + ".616",
        String(repeating: "A", count: 20) + ".zz", String(repeating: "A", count: 20) + ".6162\t",
        String(repeating: "A", count: 19) + "!.6162", String(repeating: "A", count: 20) + ".ff",
        String(repeating: "A", count: 20) + "." + String(repeating: "61", count: 65),
    ])
    func malformedSessionIDsNameNoNode(sid: String) {
        #expect(EngineIOSessionID.node(of: sid) == nil)
    }

    @Test func messagesRoundTrip() {
        let binary: [UInt8] = [0, 9, 10, 0xFF, 0x0A]
        let messages: [EngineIOPeerMessage] = [
            .request(from: "edge-2", id: 7, operation: .poll, sid: "s.61", body: []),
            .request(from: "edge-2", id: 8, operation: .post, sid: "s.61", body: Array("4\u{1e}42[\"a\"]\n\t".utf8)),
            .request(from: "edge-2", id: 9, operation: .webSocketBinary, sid: "s.61", body: binary),
            .request(from: "e", id: UInt64.max, operation: .webSocketTooLarge, sid: "s", body: []),
            .reply(id: 7, response: .body("42[\"x\"]\u{1e}2")),
            .reply(id: 8, response: .failure(.unknownSID)),
            .reply(id: 8, response: .failure(.payloadTooLarge)),
            .reply(id: 8, response: .failure(.forbidden)),
            .frame(id: 9, frame: .text("3probe")),
            .frame(id: 9, frame: .binary(binary)),
            .close(id: 9, code: 1001),
        ]
        for message in messages {
            #expect(EngineIOPeerMessage(encoded: message.encoded) == message)
        }
    }

    @Test(arguments: ["", "Q", "Q\tedge\t1\tpoll\n", "Q\tedge\tx\tpoll\ts\n", "Q\tedge\t1\tfly\ts\n", "R\t1\t200\n",
                      "R\t1\tOK\t0\n", "F\t1\tq\nabc", "C\t1\t99999\n", "Z\t1\t2\n", "R\t1\t200\t0"])
    func malformedMessagesAreRefused(text: String) {
        #expect(EngineIOPeerMessage(encoded: Array(text.utf8)) == nil)
    }

    @Test func anUnknownErrorStatusIsABadRequest() {
        #expect(EngineIOPeerMessage(encoded: Array("R\t3\t418\t9\n".utf8)) == .reply(id: 3, response: .failure(.badRequest)))
    }
}

/// Offsets of connection state recovery are appended to EVENT packets only.
@Suite struct SocketIORecoveryTests {
    @Test func offsetsAreTheLastArgumentOfEvents() {
        #expect(SocketIORecovery.appending("r.lobby@1-0~9~m", to: #"2["message",{"a":1}]"#) == #"2["message",{"a":1},"r.lobby@1-0~9~m"]"#)
        #expect(SocketIORecovery.appending("o", to: #"2/chat,["x"]"#) == #"2/chat,["x","o"]"#)
        #expect(SocketIORecovery.appending("o", to: #"51-["blob",{"_placeholder":true,"num":0}]"#)
            == #"51-["blob",{"_placeholder":true,"num":0},"o"]"#)
        for packet in [#"0{"sid":"a"}"#, #"31[{}]"#, "1", #"2["unterminated""#, ""] {
            #expect(SocketIORecovery.appending("o", to: packet) == nil)
        }
    }
}
