import Testing

@testable import SocketIO

@Suite("Engine.IO server: requests and handshake")
struct EngineIOServerRequestTests {
    typealias H = EngineIOHarness

    @Test func pollingHandshake() {
        var h = H()
        let reply = h.openPolling("abc")
        #expect(
            reply.response
                == .body(#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#))
        #expect(reply.actions == [.opened(sid: "abc")])
        #expect(h.server.sessionCount == 1)
        #expect(h.server.transport(of: "abc") == .polling)
        #expect(h.server.route(H.polling("abc")) == .poll(sid: "abc"))
        #expect(h.server.route(H.polling("abc", method: "POST")) == .post(sid: "abc"))
        #expect(h.server.route(H.websocket("abc")) == .upgrade(sid: "abc"))
    }

    @Test func webSocketHandshake() {
        var h = H()
        let (socket, actions) = h.server.openWebSocket(upgrading: nil, newSID: "w", now: h.at(0))
        let id = try! #require(socket)
        #expect(
            actions == [
                .writeWebSocket(
                    id, [.text(#"0{"sid":"w","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#)]),
                .opened(sid: "w"),
            ])
        #expect(h.server.transport(of: "w") == .websocket)
    }

    @Test func webSocketOnlyServerOffersNoUpgrade() {
        var configuration = H.configuration
        configuration.transports = [.polling]
        var h = H(configuration: configuration)
        #expect(h.openPolling().response == .body(#"0{"sid":"s1","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#))
        #expect(h.server.route(H.websocket()) == .failure(.unknownTransport))
    }

    @Test(
        "requests the protocol refuses",
        arguments: [
            (H.get(["EIO": "4"]), EngineIOServerError.unknownTransport),
            (H.get(["EIO": "4", "transport": "abc"]), .unknownTransport),
            (H.get(["EIO": "4", "transport": "webtransport"]), .unknownTransport),
            (H.get(["transport": "polling"]), .unsupportedProtocolVersion),
            (H.get(["EIO": "abc", "transport": "polling"]), .unsupportedProtocolVersion),
            (H.get(["EIO": "3", "transport": "polling"]), .unsupportedProtocolVersion),
            (H.polling(method: "POST"), .badHandshakeMethod),
            (H.polling(method: "PUT"), .badHandshakeMethod),
            (H.get(["EIO": "4", "transport": "websocket"]), .badRequest),
            (EngineIORequest(method: "GET", query: ["EIO": "4", "transport": "polling"], isWebSocketUpgrade: true), .badRequest),
            (H.polling("nope"), .unknownSID),
            (H.polling("nope", method: "POST"), .unknownSID),
            (H.websocket("nope"), .unknownSID),
        ])
    func refused(request: EngineIORequest, error: EngineIOServerError) {
        let h = H()
        #expect(h.server.route(request) == .failure(error))
    }

    @Test func errorBodies() {
        #expect(EngineIOServerError.unknownTransport.json == #"{"code":0,"message":"Transport unknown"}"#)
        #expect(EngineIOServerError.unknownSID.json == #"{"code":1,"message":"Session ID unknown"}"#)
        #expect(EngineIOServerError.badHandshakeMethod.json == #"{"code":2,"message":"Bad handshake method"}"#)
        #expect(EngineIOServerError.badRequest.json == #"{"code":3,"message":"Bad request"}"#)
        #expect(EngineIOServerError.forbidden.json == #"{"code":4,"message":"Forbidden"}"#)
        #expect(EngineIOServerError.unsupportedProtocolVersion.json == #"{"code":5,"message":"Unsupported protocol version"}"#)
        #expect(EngineIOServerError.forbidden.status == 403)
        #expect(EngineIOServerError.payloadTooLarge.status == 413)
        #expect(EngineIOServerError.badRequest.status == 400)
    }

    @Test func otherMethodsOnASessionAreBadRequests() {
        var h = H()
        h.openPolling()
        #expect(h.server.route(H.polling("s1", method: "PUT")) == .failure(.badRequest))
    }

    @Test func unknownSessionsAnswerCodeOne() {
        var h = H()
        #expect(h.server.poll(sid: "x", now: h.at(0)) == EngineIOReply(.failure(.unknownSID)))
        #expect(h.server.beginPost(sid: "x", now: h.at(0)) == EngineIOReply(.failure(.unknownSID)))
        #expect(h.server.send([.text("a")], to: "x", now: h.at(0)) == [])
    }

    @Test func duplicateSessionIDIsRefused() {
        var h = H()
        h.openPolling("s")
        #expect(h.openPolling("s").response == .failure(.badRequest))
        #expect(h.server.openWebSocket(upgrading: nil, newSID: "s", now: h.at(0)).socket == nil)
    }
}

@Suite("Engine.IO server: polling")
struct EngineIOPollingTests {
    typealias H = EngineIOHarness

    @Test func postThenPollEchoes() {
        var h = H()
        h.openPolling()
        let post = h.post("s1", "4hello", at: 10)
        #expect(post == EngineIOReply(.body("ok"), actions: [.received(sid: "s1", .text("hello"))]))
        _ = h.server.send([.text("hello")], to: "s1", now: h.at(11))
        #expect(h.server.poll(sid: "s1", now: h.at(12)) == EngineIOReply(.body("4hello")))
    }

    @Test func severalPacketsAndBinaryInOnePost() {
        var h = H()
        h.openPolling()
        let post = h.post("s1", "4test1\u{1E}4test2\u{1E}bAQIDBA==", at: 10)
        #expect(
            post.actions == [
                .received(sid: "s1", .text("test1")), .received(sid: "s1", .text("test2")),
                .received(sid: "s1", .binary([1, 2, 3, 4])),
            ])
        _ = h.server.send([.text("test1"), .text("test2"), .binary([1, 2, 3, 4])], to: "s1", now: h.at(11))
        #expect(h.server.poll(sid: "s1", now: h.at(12)).response == .body("4test1\u{1E}4test2\u{1E}bAQIDBA=="))
    }

    @Test func pendingPollIsAnsweredWhenDataArrives() {
        var h = H()
        h.openPolling()
        #expect(h.server.poll(sid: "s1", now: h.at(10)) == EngineIOReply(.pending))
        #expect(h.server.send([.text("a"), .text("b")], to: "s1", now: h.at(20)) == [.answerPoll(sid: "s1", body: "4a\u{1E}4b")])
        // Later messages wait for the next poll.
        #expect(h.server.send([.text("c")], to: "s1", now: h.at(30)) == [])
        #expect(h.server.poll(sid: "s1", now: h.at(40)).response == .body("4c"))
    }

    @Test func pollResponsesAreBoundedByMaxPayload() {
        var configuration = H.configuration
        configuration.maxPayload = 9
        var h = H(configuration: configuration)
        h.openPolling()
        _ = h.server.send([.text("aaa"), .text("bbb"), .text("ccc")], to: "s1", now: h.at(1))
        #expect(h.server.poll(sid: "s1", now: h.at(2)).response == .body("4aaa\u{1E}4bbb"))
        #expect(h.server.poll(sid: "s1", now: h.at(3)).response == .body("4ccc"))
    }

    @Test func duplicatePollClosesTheSession() {
        var h = H()
        h.openPolling()
        #expect(h.server.poll(sid: "s1", now: h.at(10)).response == .pending)
        let second = h.server.poll(sid: "s1", now: h.at(15))
        #expect(second.response == .failure(.badRequest))
        #expect(second.actions == [.answerPoll(sid: "s1", body: "1"), .closed(sid: "s1", .transportError)])
        #expect(h.server.route(H.polling("s1")) == .failure(.unknownSID))
        #expect(h.server.sessionCount == 0)
    }

    @Test func concurrentPostClosesTheSession() {
        var h = H()
        h.openPolling()
        #expect(h.server.beginPost(sid: "s1", now: h.at(1)) == EngineIOReply(.pending))
        let second = h.server.beginPost(sid: "s1", now: h.at(2))
        #expect(second == EngineIOReply(.failure(.badRequest), actions: [.closed(sid: "s1", .transportError)]))
        #expect(h.server.finishPost(sid: "s1", body: Array("4a".utf8), now: h.at(3)).response == .failure(.unknownSID))
    }

    @Test func postsOneAfterTheOtherAreFine() {
        var h = H()
        h.openPolling()
        #expect(h.post("s1", "4a", at: 1).response == .body("ok"))
        #expect(h.post("s1", "4b", at: 2).response == .body("ok"))
    }

    @Test(arguments: ["abc", "", "4a\u{1E}", "bxx!", "7"])
    func invalidPacketClosesTheSession(body: String) {
        var h = H()
        h.openPolling()
        #expect(h.server.poll(sid: "s1", now: h.at(1)).response == .pending)
        let reply = h.post("s1", body, at: 2)
        #expect(reply.response == .failure(.badRequest))
        #expect(reply.actions == [.answerPoll(sid: "s1", body: "1"), .closed(sid: "s1", .parseError)])
        #expect(h.server.poll(sid: "s1", now: h.at(3)).response == .failure(.unknownSID))
    }

    @Test func clientPingIsAProtocolError() {
        var h = H()
        h.openPolling()
        let reply = h.post("s1", "4a\u{1E}2\u{1E}4b", at: 2)
        #expect(reply.response == .failure(.badRequest))
        #expect(reply.actions == [.received(sid: "s1", .text("a")), .closed(sid: "s1", .parseError)])
    }

    @Test func noopIsIgnored() {
        var h = H()
        h.openPolling()
        #expect(h.post("s1", "6", at: 2) == EngineIOReply(.body("ok")))
    }

    @Test func bodyOverMaxPayloadCloses() {
        var h = H()
        h.openPolling()
        #expect(h.server.beginPost(sid: "s1", now: h.at(1)).response == .pending)
        let reply = h.server.finishPost(sid: "s1", body: nil, now: h.at(2))
        #expect(reply == EngineIOReply(.failure(.payloadTooLarge), actions: [.closed(sid: "s1", .payloadTooLarge)]))
    }

    @Test func clientCloseAnswersThePendingPollWithNoop() {
        var h = H()
        h.openPolling()
        #expect(h.server.poll(sid: "s1", now: h.at(1)).response == .pending)
        let reply = h.post("s1", "1", at: 2)
        #expect(reply == EngineIOReply(.body("ok"), actions: [.answerPoll(sid: "s1", body: "6"), .closed(sid: "s1", .clientClose)]))
        #expect(h.server.poll(sid: "s1", now: h.at(3)).response == .failure(.unknownSID))
    }

    @Test func packetsAfterACloseInTheSameBodyAreDropped() {
        var h = H()
        h.openPolling()
        let reply = h.post("s1", "4a\u{1E}1\u{1E}4b", at: 2)
        #expect(reply.actions == [.received(sid: "s1", .text("a")), .closed(sid: "s1", .clientClose)])
    }

    @Test func serverCloseGoesToThePendingPoll() {
        var h = H()
        h.openPolling()
        _ = h.server.poll(sid: "s1", now: h.at(1))
        #expect(h.server.close(sid: "s1", now: h.at(2)) == [.answerPoll(sid: "s1", body: "1"), .closed(sid: "s1", .forcedClose)])
    }

    @Test func serverCloseWaitsForTheNextPoll() {
        var h = H()
        h.openPolling()
        _ = h.server.send([.text("bye")], to: "s1", now: h.at(1))
        #expect(h.server.close(sid: "s1", now: h.at(2)) == [])
        #expect(h.server.send([.text("late")], to: "s1", now: h.at(3)) == [])
        let poll = h.server.poll(sid: "s1", now: h.at(4))
        #expect(poll == EngineIOReply(.body("4bye\u{1E}1"), actions: [.closed(sid: "s1", .forcedClose)]))
    }

    @Test func serverCloseTimesOutWithoutAPoll() {
        var h = H()
        h.openPolling()
        _ = h.server.close(sid: "s1", now: h.at(2))
        #expect(h.server.tick(now: h.at(1000)) == [])
        #expect(h.server.tick(now: h.at(30_002)) == [.closed(sid: "s1", .forcedClose)])
    }

    @Test func closeAll() {
        var h = H()
        h.openPolling("a")
        _ = h.openWebSocket("b")
        let actions = h.server.closeAll(now: h.at(1))
        #expect(actions.contains(.closed(sid: "b", .forcedClose)))
        #expect(h.server.poll(sid: "a", now: h.at(2)) == EngineIOReply(.body("1"), actions: [.closed(sid: "a", .forcedClose)]))
        #expect(h.server.sessionCount == 0)
    }
}
