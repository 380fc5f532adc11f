import Logging
import Testing
@testable import SwitchboardCore

/// The parts `ChatService` is built from, without sockets: the stream relay's state
/// machine, admission, and nickname claims (on the in-process broker).
@Suite struct ChatPartsTests {
    let lobby = StreamKey.room(RoomName("lobby")!)
    let other = StreamKey.room(RoomName("other")!)

    func id(_ n: UInt64) -> MessageID { MessageID(milliseconds: n, sequence: 0) }
    func message(_ stream: StreamKey, _ n: UInt64) -> StreamRelay.Message { (stream, id(n), Envelope(.pong)) }

    @Test func eachIdIsDeliveredOncePerStream() {
        let relay = StreamRelay()
        #expect(relay.isFresh(lobby, id(1)))
        #expect(!relay.isFresh(lobby, id(1)))
        #expect(relay.isFresh(lobby, id(2)))
        #expect(!relay.isFresh(lobby, id(1)))
        #expect(relay.isFresh(other, id(1)))
        // A subscription at head 5: older ids no longer concern this node.
        relay.subscribed(other, head: id(5))
        #expect(!relay.isFresh(other, id(4)))
        relay.unsubscribed(other)
        #expect(relay.isFresh(other, id(4)))
    }

    @Test func liveMessagesWaitForTheGapFillAndAreReleasedInOrder() {
        let relay = StreamRelay()
        #expect(relay.arrived(message(lobby, 1)))
        relay.disconnected()
        let generation = relay.generation
        #expect(!relay.arrived(message(lobby, 5)))
        #expect(!relay.arrived(message(lobby, 6)))
        #expect(relay.isRecovering)
        let batch = relay.releaseHeld(generation: generation)
        #expect(batch?.map(\.id) == [id(5), id(6)])
        // Arrivals during the release are held for the next round, then live again.
        #expect(!relay.arrived(message(lobby, 7)))
        #expect(relay.releaseHeld(generation: generation)?.map(\.id) == [id(7)])
        #expect(relay.releaseHeld(generation: generation) == nil)
        #expect(!relay.isRecovering)
        #expect(relay.arrived(message(lobby, 8)))
    }

    @Test func aStaleGapFillDoesNotReleaseALaterOutagesMessages() {
        let relay = StreamRelay()
        relay.disconnected()
        let first = relay.generation
        relay.disconnected()
        #expect(!relay.arrived(message(lobby, 9)))
        #expect(relay.releaseHeld(generation: first) == nil)
        #expect(relay.isRecovering)
        #expect(relay.releaseHeld(generation: relay.generation)?.count == 1)
    }

    final class NoSubscriber: Subscriber {
        let connectionID = ConnectionID.random()
        let nickname = Nickname("alice")!
        let format = WireFormat.native
        var loop: any DeliveryLoop { fatalError("not delivered to") }
        func receive(_ frame: Frame) {}
        func flush() {}
        func close(reason: CloseReason) {}
    }

    func session(remote: String?) -> Session {
        let identity = Identity(nickname: Nickname("alice")!, avatar: "", session: "s", issuedAt: 0, expiresAt: 1)
        return Session(identity: identity, subscriber: NoSubscriber(), transport: .websocket, burst: 1, remote: remote)
    }

    @Test func admissionLimitsPerNodeAndPerAddressAndReleasesOnce() {
        let admission = Admission(maxConnections: 3, maxPerAddress: 2)
        #expect(admission.admit(remote: "10.0.0.1") == nil)
        let a = session(remote: "10.0.0.1")
        admission.opened(a)
        #expect(admission.admit(remote: "10.0.0.1") == nil)
        let b = session(remote: "10.0.0.1")
        admission.opened(b)
        #expect(admission.admit(remote: "10.0.0.1")?.code == .tooManyConnections)
        #expect(!admission.wouldAdmit(remote: "10.0.0.1"))
        #expect(admission.wouldAdmit(remote: "10.0.0.2"))
        admission.released(a)
        admission.released(a)
        #expect(admission.wouldAdmit(remote: "10.0.0.1"))
        #expect(admission.byTransport == [.websocket: 1])
        // An admission whose opening failed gives its place back.
        #expect(admission.admit(remote: "10.0.0.1") == nil)
        admission.abandoned(remote: "10.0.0.1")
        #expect(admission.wouldAdmit(remote: "10.0.0.1"))
        admission.opened(session(remote: nil))
        admission.opened(session(remote: nil))
        #expect(admission.admit(remote: nil)?.code == .tooManyConnections)
    }

    @Test func claimsAreSharedByConnectionsAndRefreshed() async throws {
        let broker = MemoryBroker()
        let claims = NicknameClaims(broker: broker, ttlSeconds: 30, logger: Logger(label: "test"))
        let alice = Nickname("alice")!
        #expect(try await claims.claim(alice, session: "s1"))
        #expect(try await !claims.claim(alice, session: "s2"))
        claims.opened(alice, session: "s1")
        claims.opened(alice, session: "s1")
        claims.closed(alice)
        #expect(claims.count == 1)
        #expect(claims.held.map(\.1) == ["s1"])
        await claims.refreshOnce()
        #expect(try await broker.nicknameHolder(alice) == "s1")
        claims.closed(alice)
        #expect(claims.count == 0)
    }
}
