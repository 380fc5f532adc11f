import Synchronization
import Testing
@testable import SwitchboardCore

/// A delivery loop that records who would get each frame: the Hub hands a stream's
/// whole audience over, and each subscriber applies the frame's exclusions (as every
/// transport's `receive` does), so it records the recipients the frame is visible to.
final class RecordingLoop: DeliveryLoop {
    let calls = Mutex<[(Frame, [ConnectionID])]>([])
    func deliver(_ frame: Frame, to subscribers: [any Subscriber]) {
        let recipients = subscribers.filter { frame.isVisible(to: $0.nickname, connection: $0.connectionID) }
        calls.withLock { $0.append((frame, recipients.map(\.connectionID))) }
    }
}

final class TestSubscriber: Subscriber {
    let connectionID: ConnectionID
    let nickname: Nickname
    let format: WireFormat
    let loop: any DeliveryLoop
    init(_ id: String, _ nick: String, loop: any DeliveryLoop, format: WireFormat = .native) {
        self.connectionID = ConnectionID(id)
        self.nickname = Nickname(nick)!
        self.loop = loop
        self.format = format
    }
    func receive(_ frame: Frame) {}
    func flush() {}
    func close(reason: CloseReason) {}
}

@Suite struct HubTests {
    let lobby = StreamKey.room(RoomName("lobby")!)

    @Test func fanOutEncodesOncePerFormatAndCallsEachLoopOnce() {
        let loopA = RecordingLoop(), loopB = RecordingLoop()
        let other = WireFormat("other")
        let encodes = Mutex(0)
        let hub = Hub(encoders: [
            .native: { event, stream, id, envelope in
                encodes.withLock { $0 += 1 }
                return WireFormat.nativeEncoder(event, stream, id, envelope)
            },
            other: WireFormat.nativeEncoder,
        ])
        let subs = (0..<10).map { TestSubscriber("c\($0)", "u\($0)", loop: $0 % 2 == 0 ? loopA : loopB) }
        for sub in subs { hub.add(sub, to: lobby) }
        hub.add(TestSubscriber("x", "ux", loop: loopA, format: other), to: lobby)
        hub.deliver(.presence(room: RoomName("lobby")!, count: 3), stream: lobby, id: nil, envelope: nil)
        #expect(encodes.withLock { $0 } == 1, "the native frame is encoded once for both loops")
        let a = loopA.calls.withLock { $0 }, b = loopB.calls.withLock { $0 }
        #expect(a.count == 2, "one call per format on loop A")
        #expect(b.count == 1, "one call on loop B")
        #expect(Set(b[0].1) == Set(["c1", "c3", "c5", "c7", "c9"].map(ConnectionID.init)))
        let nativeA = a.first { $0.1.count == 5 }!
        #expect(b[0].0 === nativeA.0, "the same frame object is shared across loops")
    }

    @Test func exclusionsAreHonoured() {
        let loop = RecordingLoop()
        let hub = Hub()
        let a1 = TestSubscriber("a1", "alice", loop: loop), a2 = TestSubscriber("a2", "alice", loop: loop)
        let b = TestSubscriber("b", "bob", loop: loop)
        for s in [a1, a2, b] { hub.add(s, to: lobby) }
        let event = ServerEvent.message(
            id: nil, room: RoomName("lobby")!, from: Sender(nickname: Nickname("alice")!, avatar: ""), text: "x", ts: 1)
        hub.deliver(event, stream: lobby, id: nil, envelope: Envelope(event, excludeNickname: Nickname("alice")!))
        hub.deliver(event, stream: lobby, id: nil, envelope: Envelope(event, excludeConnection: ConnectionID("a1")))
        let calls = loop.calls.withLock { $0 }
        #expect(calls.map { Set($0.1) } == [[ConnectionID("b")], [ConnectionID("a2"), ConnectionID("b")]])
    }

    @Test func edgesAreReported() {
        let loop = RecordingLoop()
        let hub = Hub()
        let a1 = TestSubscriber("a1", "alice", loop: loop), a2 = TestSubscriber("a2", "alice", loop: loop)
        #expect(hub.add(a1, to: lobby) == .init(streamEdge: true, nicknameEdge: true))
        #expect(hub.add(a2, to: lobby) == .init(streamEdge: false, nicknameEdge: false))
        #expect(hub.add(a2, to: lobby) == .init(streamEdge: false, nicknameEdge: false), "idempotent")
        #expect(hub.memberCount(of: lobby) == 2)
        #expect(hub.remove(a1, from: lobby) == .init(streamEdge: false, nicknameEdge: false))
        #expect(hub.remove(a1, from: lobby) == nil)
        #expect(hub.remove(a2, from: lobby) == .init(streamEdge: true, nicknameEdge: true))
        #expect(hub.streams.isEmpty)
    }
}
