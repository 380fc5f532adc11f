import SwitchboardJSON
import Testing

@testable import SocketIO

@Suite("Socket.IO server")
struct SocketIOServerTests {
    let start = ContinuousClock.now
    func at(_ ms: Int) -> EngineIOInstant { start + .milliseconds(ms) }

    static let configuration = SocketIOConfiguration(namespaces: ["/", "/custom"], connectTimeout: .milliseconds(1000))

    /// A server with session `s` opened at 0.
    func server() -> SocketIOServer {
        var server = SocketIOServer(configuration: Self.configuration)
        #expect(server.handle(.opened(sid: "s"), now: at(0)) == [])
        return server
    }

    func text(_ sid: String, _ text: String) -> EngineIOAction { .received(sid: sid, .text(text)) }

    /// A server where `s` joined `/` as socket `A`.
    func joined() -> SocketIOServer {
        var server = server()
        _ = server.handle(text("s", "0"), now: at(1))
        _ = server.accept(sid: "s", namespace: "/", socketID: "A")
        return server
    }

    @Test func connectToTheMainNamespace() {
        var server = server()
        #expect(server.handle(text("s", "0"), now: at(1)) == [.authorize(sid: "s", namespace: "/", auth: nil)])
        #expect(server.accept(sid: "s", namespace: "/", socketID: "A") == [.send(sid: "s", [.text(#"0{"sid":"A"}"#)])])
        #expect(server.connection("s")?.joinedNamespaces == ["/"])
        #expect(server.connection("s")?.socketID(in: "/") == "A")
        // Accepting twice does nothing.
        #expect(server.accept(sid: "s", namespace: "/", socketID: "B") == [])
    }

    @Test func connectWithAuthToACustomNamespace() {
        var server = server()
        #expect(
            server.handle(text("s", #"0/custom,{"token":"abc"}"#), now: at(1))
                == [.authorize(sid: "s", namespace: "/custom", auth: .object(["token": .string("abc")]))])
        #expect(server.accept(sid: "s", namespace: "/custom", socketID: "C") == [.send(sid: "s", [.text(#"0/custom,{"sid":"C"}"#)])])
    }

    @Test func unknownNamespaceIsRefused() {
        var server = server()
        #expect(
            server.handle(text("s", "0/random"), now: at(1))
                == [.send(sid: "s", [.text(#"4/random,{"message":"Invalid namespace"}"#)])])
        #expect(server.connection("s")?.joinedNamespaces == [])
    }

    @Test func applicationRejects() {
        var server = server()
        _ = server.handle(text("s", "0"), now: at(1))
        let payload = JSONValue.object(["message": .string("Not authorized")])
        #expect(server.reject(sid: "s", namespace: "/", payload: payload) == [.send(sid: "s", [.text(#"4{"message":"Not authorized"}"#)])])
        #expect(server.accept(sid: "s", namespace: "/", socketID: "A") == [])
        // The client may try again.
        #expect(server.handle(text("s", "0"), now: at(2)) == [.authorize(sid: "s", namespace: "/", auth: nil)])
    }

    @Test func connectTimeout() {
        var server = server()
        #expect(server.nextDeadline == at(1000))
        #expect(server.tick(now: at(999)) == [])
        #expect(server.tick(now: at(1000)) == [.close(sid: "s")])
        #expect(server.nextDeadline == nil)
        #expect(server.handle(text("s", "0"), now: at(1001)) == [])
    }

    @Test func noConnectTimeoutOnceJoined() {
        var server = joined()
        #expect(server.nextDeadline == nil)
        #expect(server.tick(now: at(5000)) == [])
        // Leaving every namespace does not restart the timer.
        #expect(server.handle(text("s", "1"), now: at(6000)) == [.disconnected(sid: "s", namespace: "/", reason: .clientNamespaceDisconnect)])
        #expect(server.tick(now: at(9000)) == [])
    }

    @Test func firstPacketMustBeConnect() {
        var server = server()
        #expect(server.handle(text("s", #"2["message"]"#), now: at(1)) == [.close(sid: "s")])
    }

    @Test(arguments: ["abc", "2{}", #"2abc["message-with-ack",1,"2",{"3":[false]}]"#, "", #"4{"message":"x"}"#])
    func invalidPacketClosesTheConnection(text: String) {
        var server = joined()
        #expect(
            server.handle(self.text("s", text), now: at(2))
                == [.disconnected(sid: "s", namespace: "/", reason: .parseError), .close(sid: "s")])
        #expect(server.connection("s")?.isClosing == true)
        #expect(server.handle(self.text("s", #"2["x"]"#), now: at(3)) == [])
    }

    @Test func binaryWithoutAPacketClosesTheConnection() {
        var server = joined()
        #expect(
            server.handle(.received(sid: "s", .binary([1])), now: at(2))
                == [.disconnected(sid: "s", namespace: "/", reason: .parseError), .close(sid: "s")])
    }

    @Test func eventsAndAcksFromTheClient() {
        var server = joined()
        #expect(
            server.handle(text("s", #"2["message",1,"2",{"3":[true]}]"#), now: at(2))
                == [.event(sid: "s", namespace: "/", name: "message", arguments: [1, "2", ["3": [true]]], ackID: nil)])
        #expect(
            server.handle(text("s", #"2456["message-with-ack",1]"#), now: at(3))
                == [.event(sid: "s", namespace: "/", name: "message-with-ack", arguments: [1], ackID: 456)])
        #expect(server.ack(456, [1], sid: "s", namespace: "/") == [.send(sid: "s", [.text("3456[1]")])])
        // Only once, and only for IDs the client sent.
        #expect(server.ack(456, [1], sid: "s", namespace: "/") == [])
        #expect(server.ack(9, [], sid: "s", namespace: "/") == [])
    }

    @Test func binaryEventAndBinaryAck() {
        var server = joined()
        #expect(server.handle(text("s", #"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#), now: at(2)) == [])
        #expect(server.handle(.received(sid: "s", .binary([1, 2, 3])), now: at(2)) == [])
        #expect(
            server.handle(.received(sid: "s", .binary([4, 5, 6])), now: at(2))
                == [.event(sid: "s", namespace: "/", name: "message-with-ack", arguments: [.binary([1, 2, 3]), .binary([4, 5, 6])], ackID: 789)])
        #expect(
            server.ack(789, [.binary([1, 2, 3]), .binary([4, 5, 6])], sid: "s", namespace: "/")
                == [.send(sid: "s", [.text(#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#), .binary([1, 2, 3]), .binary([4, 5, 6])])])
    }

    @Test func emitsAndAcksFromTheServer() throws {
        var server = joined()
        let plain = try server.emit("auth", [.object([:])], to: "s", namespace: "/")
        #expect(plain.ackID == nil)
        #expect(plain.actions == [.send(sid: "s", [.text(#"2["auth",{}]"#)])])
        let first = try server.emit("question", ["?"], to: "s", namespace: "/", expectingAck: true)
        let second = try server.emit("question", [.binary([7])], to: "s", namespace: "/", expectingAck: true)
        #expect(first.ackID == 0)
        #expect(first.actions == [.send(sid: "s", [.text(#"20["question","?"]"#)])])
        #expect(second.ackID == 1)
        #expect(second.actions == [.send(sid: "s", [.text(#"51-1["question",{"_placeholder":true,"num":0}]"#), .binary([7])])])
        #expect(
            server.handle(text("s", #"31["yes"]"#), now: at(2)) == [.ackReceived(sid: "s", namespace: "/", ackID: 1, arguments: ["yes"])])
        // Unknown or repeated ack IDs are ignored.
        #expect(server.handle(text("s", #"31["again"]"#), now: at(3)) == [])
        #expect(server.handle(text("s", #"399[]"#), now: at(3)) == [])
        #expect(throws: SocketIOError.reservedEventName) { try server.emit("disconnect", [], to: "s", namespace: "/") }
        // Not joined, or no such session: nothing is sent.
        #expect(try server.emit("x", [], to: "s", namespace: "/custom").actions == [])
        #expect(try server.emit("x", [], to: "nobody", namespace: "/").actions == [])
    }

    @Test func packetsForANamespaceNotJoinedAreIgnored() {
        var server = joined()
        #expect(server.handle(text("s", #"2/custom,["message"]"#), now: at(2)) == [])
        #expect(server.handle(text("s", "1/custom,"), now: at(2)) == [])
    }

    @Test func severalNamespacesOnOneConnection() {
        var server = joined()
        _ = server.handle(text("s", "0/custom"), now: at(2))
        _ = server.accept(sid: "s", namespace: "/custom", socketID: "C")
        #expect(server.handle(text("s", "1/custom"), now: at(3)) == [.disconnected(sid: "s", namespace: "/custom", reason: .clientNamespaceDisconnect)])
        #expect(
            server.handle(text("s", #"2["message","to main"]"#), now: at(4))
                == [.event(sid: "s", namespace: "/", name: "message", arguments: ["to main"], ackID: nil)])
    }

    @Test func serverDisconnect() {
        var server = joined()
        #expect(
            server.disconnect(sid: "s", namespace: "/")
                == [.send(sid: "s", [.text("1")]), .disconnected(sid: "s", namespace: "/", reason: .serverNamespaceDisconnect)])
        #expect(server.disconnect(sid: "s", namespace: "/") == [])
    }

    @Test func transportClose() {
        var server = joined()
        _ = server.handle(text("s", "0/custom,"), now: at(2))
        _ = server.accept(sid: "s", namespace: "/custom", socketID: "C")
        #expect(
            server.handle(.closed(sid: "s", .pingTimeout), now: at(3))
                == [
                    .disconnected(sid: "s", namespace: "/", reason: .transport(.pingTimeout)),
                    .disconnected(sid: "s", namespace: "/custom", reason: .transport(.pingTimeout)),
                ])
        #expect(server.connectionCount == 0)
        #expect(server.handle(.closed(sid: "s", .pingTimeout), now: at(4)) == [])
        #expect(SocketIODisconnectReason.transport(.pingTimeout).description == "ping timeout")
        #expect(SocketIODisconnectReason.clientNamespaceDisconnect.description == "client namespace disconnect")
    }

    @Test func transportActionsAreIgnored() {
        var server = server()
        #expect(server.handle(.answerPoll(sid: "s", body: "1"), now: at(1)) == [])
        #expect(server.handle(.closeWebSocket(EngineIOWebSocketID(sid: "s", number: 1)), now: at(1)) == [])
        #expect(server.handle(text("nobody", "0"), now: at(1)) == [])
    }
}
