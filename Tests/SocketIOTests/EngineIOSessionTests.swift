import Testing

@testable import SocketIO

@Suite("Engine.IO server: heartbeat")
struct EngineIOHeartbeatTests {
    typealias H = EngineIOHarness

    @Test func pingsEveryIntervalOverPolling() {
        var h = H()
        h.openPolling()
        #expect(h.server.nextDeadline == h.at(300))
        #expect(h.server.poll(sid: "s1", now: h.at(5)).response == .pending)
        #expect(h.server.tick(now: h.at(299)) == [])
        #expect(h.server.tick(now: h.at(300)) == [.answerPoll(sid: "s1", body: "2")])
        #expect(h.server.nextDeadline == h.at(500))
        #expect(h.post("s1", "3", at: 350).response == .body("ok"))
        #expect(h.server.nextDeadline == h.at(650))
        // Without a pending poll the ping waits in the queue.
        #expect(h.server.tick(now: h.at(650)) == [])
        #expect(h.server.poll(sid: "s1", now: h.at(660)).response == .body("2"))
    }

    @Test func pingTimeoutClosesPollingSession() {
        var h = H()
        h.openPolling()
        #expect(h.server.tick(now: h.at(300)) == [])
        #expect(h.server.tick(now: h.at(499)) == [])
        #expect(h.server.tick(now: h.at(500)) == [.closed(sid: "s1", .pingTimeout)])
        #expect(h.server.poll(sid: "s1", now: h.at(501)).response == .failure(.unknownSID))
    }

    @Test func expiredTimersApplyBeforeARequest() {
        // No tick ran, yet a poll after interval + timeout finds the session gone.
        var h = H()
        h.openPolling()
        let reply = h.server.poll(sid: "s1", now: h.at(500))
        #expect(reply == EngineIOReply(.failure(.unknownSID), actions: [.closed(sid: "s1", .pingTimeout)]))
    }

    @Test func pendingPollGetsCloseOnPingTimeout() {
        var h = H()
        h.openPolling()
        _ = h.server.tick(now: h.at(300))
        _ = h.server.poll(sid: "s1", now: h.at(310))  // gets "2" at once
        _ = h.server.poll(sid: "s1", now: h.at(320))  // waits
        #expect(h.server.tick(now: h.at(500)) == [.answerPoll(sid: "s1", body: "1"), .closed(sid: "s1", .pingTimeout)])
    }

    @Test func pingsOverWebSocket() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.tick(now: h.at(300)) == [.writeWebSocket(socket, [.text("2")])])
        #expect(h.server.receive(.text("3"), on: socket, now: h.at(320)) == [])
        #expect(h.server.tick(now: h.at(620)) == [.writeWebSocket(socket, [.text("2")])])
        #expect(h.server.tick(now: h.at(820)) == [.closeWebSocket(socket), .closed(sid: "w1", .pingTimeout)])
    }
}

@Suite("Engine.IO server: WebSocket")
struct EngineIOWebSocketTests {
    typealias H = EngineIOHarness

    @Test func textAndBinaryMessages() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.receive(.text("4hello"), on: socket, now: h.at(1)) == [.received(sid: "w1", .text("hello"))])
        #expect(h.server.receive(.binary([1, 2, 3, 4]), on: socket, now: h.at(1)) == [.received(sid: "w1", .binary([1, 2, 3, 4]))])
        #expect(
            h.server.send([.text("hello"), .binary([1, 2])], to: "w1", now: h.at(2))
                == [.writeWebSocket(socket, [.text("4hello"), .binary([1, 2])])])
    }

    @Test(arguments: ["abc", "", "2", "0{}", "5", "bA"])
    func invalidPacketClosesTheSession(frame: String) {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.receive(.text(frame), on: socket, now: h.at(1)) == [.closeWebSocket(socket), .closed(sid: "w1", .parseError)])
        #expect(h.server.sessionCount == 0)
    }

    @Test func clientClose() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.receive(.text("1"), on: socket, now: h.at(1)) == [.closeWebSocket(socket), .closed(sid: "w1", .clientClose)])
    }

    @Test func socketClosedEndsTheSession() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.webSocketClosed(socket, now: h.at(1)) == [.closed(sid: "w1", .transportClose)])
        #expect(h.server.webSocketClosed(socket, now: h.at(2)) == [])
    }

    @Test func oversizedMessageEndsTheSession() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(
            h.server.webSocketClosed(socket, reason: .payloadTooLarge, now: h.at(1))
                == [.closeWebSocket(socket), .closed(sid: "w1", .payloadTooLarge)])
    }

    @Test func serverClose() {
        var h = H()
        let socket = h.openWebSocket()
        #expect(h.server.close(sid: "w1", now: h.at(1)) == [.closeWebSocket(socket), .closed(sid: "w1", .forcedClose)])
    }

    @Test func pollingRequestsToAWebSocketSessionAreBadRequests() {
        var h = H()
        _ = h.openWebSocket()
        #expect(h.server.route(H.polling("w1")) == .failure(.badRequest))
        #expect(h.server.route(H.websocket("w1")) == .failure(.badRequest))
        #expect(h.server.poll(sid: "w1", now: h.at(1)).response == .failure(.badRequest))
    }
}

@Suite("Engine.IO server: upgrade")
struct EngineIOUpgradeTests {
    typealias H = EngineIOHarness

    @Test func upgradeFromPolling() {
        var h = H()
        h.openPolling()
        #expect(h.server.poll(sid: "s1", now: h.at(1)).response == .pending)
        let (socket, actions) = h.server.openWebSocket(upgrading: "s1", newSID: "unused", now: h.at(2))
        let ws = try! #require(socket)
        #expect(actions == [])
        // Polling still works until the probe.
        #expect(h.server.send([.text("a")], to: "s1", now: h.at(3)) == [.answerPoll(sid: "s1", body: "4a")])
        #expect(h.server.poll(sid: "s1", now: h.at(4)).response == .pending)
        #expect(h.server.receive(.text("2probe"), on: ws, now: h.at(5)) == [.writeWebSocket(ws, [.text("3probe")])])
        // The waiting poll gets noop at the next upgrade check, 100 ms after the probe…
        #expect(h.server.nextDeadline == h.at(105))
        #expect(h.server.tick(now: h.at(104)) == [])
        #expect(h.server.tick(now: h.at(105)) == [.answerPoll(sid: "s1", body: "6")])
        // …and so does any later poll.
        #expect(h.server.poll(sid: "s1", now: h.at(106)).response == .body("6"))
        // After the probe, messages wait for the upgrade.
        #expect(h.server.send([.text("b")], to: "s1", now: h.at(107)) == [])
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(108)) == [.writeWebSocket(ws, [.text("4b")])])
        #expect(h.server.transport(of: "s1") == .websocket)
        #expect(h.server.receive(.text("4hello"), on: ws, now: h.at(9)) == [.received(sid: "s1", .text("hello"))])
        #expect(h.server.send([.text("c")], to: "s1", now: h.at(10)) == [.writeWebSocket(ws, [.text("4c")])])
        // The polling transport is gone for good; the session lives on.
        #expect(h.server.route(H.polling("s1")) == .failure(.badRequest))
        #expect(h.server.poll(sid: "s1", now: h.at(11)).response == .failure(.badRequest))
        #expect(h.server.sessionCount == 1)
    }

    @Test func pollRacingTheUpgradeIsRefusedWhenTheUpgradeCompletes() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        _ = h.server.receive(.text("2probe"), on: ws, now: h.at(2))
        #expect(h.server.poll(sid: "s1", now: h.at(3)).response == .pending)
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(4)) == [.rejectPoll(sid: "s1", .badRequest)])
        #expect(h.server.transport(of: "s1") == .websocket)
    }

    @Test func upgradePacketWithoutWaitingForTheProbeAnswer() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        _ = h.server.receive(.text("2probe"), on: ws, now: h.at(2))
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(2)) == [])
        #expect(h.server.route(H.polling("s1")) == .failure(.badRequest))
    }

    @Test func secondWebSocketIsRefused() {
        var h = H()
        h.openPolling()
        let first = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        // While upgrading…
        #expect(h.server.openWebSocket(upgrading: "s1", newSID: "y", now: h.at(2)).socket == nil)
        _ = h.server.receive(.text("2probe"), on: first, now: h.at(3))
        _ = h.server.receive(.text("5"), on: first, now: h.at(4))
        // …and after.
        #expect(h.server.route(H.websocket("s1")) == .failure(.badRequest))
        #expect(h.server.openWebSocket(upgrading: "s1", newSID: "z", now: h.at(5)).socket == nil)
        #expect(h.server.receive(.text("4hi"), on: first, now: h.at(6)) == [.received(sid: "s1", .text("hi"))])
    }

    @Test func badProbeClosesOnlyTheNewSocket() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        #expect(h.server.receive(.text("4hello"), on: ws, now: h.at(2)) == [.closeWebSocket(ws)])
        #expect(h.server.transport(of: "s1") == .polling)
        #expect(h.post("s1", "4still", at: 3).actions == [.received(sid: "s1", .text("still"))])
        // Frames from the refused socket are ignored; a new upgrade may start.
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(4)) == [])
        #expect(h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(5)).socket != nil)
    }

    @Test func upgradingSocketClosingAbortsTheUpgrade() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        _ = h.server.receive(.text("2probe"), on: ws, now: h.at(2))
        #expect(h.server.webSocketClosed(ws, now: h.at(3)) == [])
        #expect(h.server.transport(of: "s1") == .polling)
        #expect(h.server.poll(sid: "s1", now: h.at(4)).response == .pending)
    }

    @Test func upgradeTimeout() {
        var configuration = H.configuration
        configuration.upgradeTimeout = .milliseconds(100)
        configuration.pingInterval = .seconds(60)
        var h = H(configuration: configuration)
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(0)).socket!
        #expect(h.server.tick(now: h.at(100)) == [.closeWebSocket(ws)])
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(101)) == [])
        #expect(h.server.transport(of: "s1") == .polling)
    }

    @Test func heartbeatGoesOverTheUpgradedSocket() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        _ = h.server.receive(.text("2probe"), on: ws, now: h.at(2))
        _ = h.server.receive(.text("5"), on: ws, now: h.at(3))
        #expect(h.server.tick(now: h.at(300)) == [.writeWebSocket(ws, [.text("2")])])
        #expect(h.server.receive(.text("3"), on: ws, now: h.at(310)) == [])
        #expect(h.server.webSocketClosed(ws, now: h.at(320)) == [.closed(sid: "s1", .transportClose)])
    }

    @Test func pingQueuedDuringTheProbeIsFlushedAfterTheUpgrade() {
        var h = H()
        h.openPolling()
        let ws = h.server.openWebSocket(upgrading: "s1", newSID: "x", now: h.at(1)).socket!
        _ = h.server.receive(.text("2probe"), on: ws, now: h.at(2))
        #expect(h.server.tick(now: h.at(300)) == [])
        #expect(h.server.receive(.text("5"), on: ws, now: h.at(301)) == [.writeWebSocket(ws, [.text("2")])])
    }
}
