import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import SwitchboardCore
@testable import SwitchboardServer

/// The connection layer without sockets: `OutboundState` on plain values, `Connection`
/// on an `EmbeddedEventLoop` with a sink that records what would go on the wire.
@Suite struct ConnectionTests {
    static let alice = Nickname("alice")!
    static let lobby = StreamKey.room(RoomName("lobby")!)
    static let other = StreamKey.room(RoomName("other")!)

    static func frame(_ type: String, _ stream: StreamKey? = nil, _ id: UInt64? = nil, exclude: Nickname? = nil) -> Frame {
        Frame(
            bytes: Array(type.utf8), type: type, stream: stream, id: id.map { MessageID(milliseconds: $0, sequence: 0) },
            excludeNickname: exclude)
    }

    /// What a transport was asked to do, in order.
    final class Wire: Sendable {
        let log = Mutex<[String]>([])
        let writable = Atomic<Bool>(true)
        var entries: [String] { log.withLock { $0 } }
        func append(_ entry: String) { log.withLock { $0.append(entry) } }
    }

    struct RecordingSink: ConnectionSink {
        let wire: Wire
        var isWritable: Bool { wire.writable.load(ordering: .relaxed) }
        func write(_ frame: Frame, position: Cursor?, delivery: EventLoopDelivery) {
            wire.append(position.map { "\(frame.type)@\($0)" } ?? frame.type)
        }
        func flush() { wire.append("flush") }
        func end(_ reason: CloseReason) { wire.append("end:\(reason.message)") }
    }

    func connection(_ loop: EmbeddedEventLoop, maxQueued: Int = 4) -> (Connection<RecordingSink>, Wire) {
        let wire = Wire()
        let connection = Connection(
            nickname: Self.alice, eventLoop: loop, sink: RecordingSink(wire: wire), maxQueuedFrames: maxQueued, metrics: nil)
        return (connection, wire)
    }

    // MARK: OutboundState

    @Test func liveFramesWaitForTheOpeningAndDuplicatesOfTheBacklogAreDropped() {
        var state = OutboundState(nickname: Self.alice, connection: ConnectionID("c"), maxQueuedFrames: 4)
        #expect(state.live(Self.frame("m2", Self.lobby, 2), writable: true) == .skip)
        #expect(state.live(Self.frame("m3", Self.lobby, 3), writable: true) == .skip)
        state.seed(Cursor())
        // The backlog read from history covers m2 already.
        let backlog = [Self.frame("m1", Self.lobby, 1), Self.frame("m2", Self.lobby, 2)]
        #expect(backlog.filter { state.advance($0) }.map(\.type) == ["m1", "m2"])
        #expect(state.goLive().filter { state.advance($0) }.map(\.type) == ["m3"])
        #expect(state.live(Self.frame("m3", Self.lobby, 3), writable: true) == .duplicate)
        #expect(state.live(Self.frame("m4", Self.lobby, 4), writable: true) == .write)
        #expect(state.live(Self.frame("x", Self.lobby, 5, exclude: Self.alice), writable: true) == .skip)
        #expect(state.position[Self.lobby] == MessageID(milliseconds: 4, sequence: 0))
    }

    @Test func aPeerThatDoesNotReadIsASlowConsumerAfterTheLimit() {
        var state = OutboundState(nickname: Self.alice, connection: ConnectionID("c"), maxQueuedFrames: 3)
        _ = state.goLive()
        for id in 1...3 { #expect(state.live(Self.frame("m", Self.lobby, UInt64(id)), writable: false) == .write) }
        // Reading again resets the count.
        #expect(state.live(Self.frame("m", Self.lobby, 4), writable: true) == .write)
        for id in 5...7 { #expect(state.live(Self.frame("m", Self.lobby, UInt64(id)), writable: false) == .write) }
        #expect(state.live(Self.frame("m", Self.lobby, 8), writable: false) == .slowConsumer)
    }

    @Test func tooManyFramesWaitingForTheOpeningIsASlowConsumer() {
        var state = OutboundState(nickname: Self.alice, connection: ConnectionID("c"), maxQueuedFrames: 1)
        for id in 1...4 { #expect(state.live(Self.frame("m", Self.lobby, UInt64(id)), writable: true) == .skip) }
        #expect(state.live(Self.frame("m", Self.lobby, 5), writable: true) == .slowConsumer)
    }

    @Test func aClosedStateWritesNothingAndClosesOnce() {
        var state = OutboundState(nickname: Self.alice, connection: ConnectionID("c"), maxQueuedFrames: 4)
        _ = state.goLive()
        let first = state.close()
        let second = state.close()
        #expect(first && !second)
        #expect(state.live(Self.frame("m", Self.lobby, 1), writable: true) == .skip)
        #expect(state.written(writable: true) == .skip)
    }

    // MARK: Connection

    @Test func theOpeningSequenceIsWelcomeBacklogThenHeldLiveFramesInIdOrder() throws {
        let loop = EmbeddedEventLoop()
        let (connection, wire) = connection(loop)
        // Live frames before the opening: m2 duplicates the backlog, m3 and an ephemeral
        // event are new.
        connection.receive(Self.frame("m2", Self.lobby, 2))
        connection.receive(Self.frame("typing"))
        connection.receive(Self.frame("m3", Self.lobby, 3))
        connection.flush()
        #expect(wire.entries.isEmpty)
        let cursor = try #require(Cursor("r.lobby@0-0"))
        connection.open(
            welcome: Self.frame("welcome"), backlog: [Self.frame("m1", Self.lobby, 1), Self.frame("m2", Self.lobby, 2)], cursor: cursor)
        loop.run()
        #expect(
            wire.entries == [
                "welcome@r.lobby@0-0", "m1@r.lobby@1-0", "m2@r.lobby@2-0", "typing", "m3@r.lobby@3-0", "flush",
            ])
        connection.receive(Self.frame("m3", Self.lobby, 3))
        connection.receive(Self.frame("m4", Self.other, 4))
        connection.flush()
        connection.flush()
        #expect(wire.entries.suffix(2) == ["m4@r.lobby@3-0,r.other@4-0", "flush"])
    }

    @Test func aSlowConsumerIsEndedOnceAndGetsNothingMore() {
        let loop = EmbeddedEventLoop()
        let (connection, wire) = connection(loop, maxQueued: 2)
        connection.open(welcome: Self.frame("welcome"), backlog: [], cursor: Cursor())
        loop.run()
        wire.writable.store(false, ordering: .relaxed)
        for id in 1...5 { connection.receive(Self.frame("m", Self.lobby, UInt64(id))) }
        connection.flush()
        #expect(wire.entries == ["welcome@", "flush", "m@r.lobby@1-0", "m@r.lobby@2-0", "end:\(CloseReason.slowConsumer.message)", "flush"])
        #expect(connection.isClosed)
    }

    @Test func aDrainEndsTheConnectionOnceWithServiceRestart() {
        let loop = EmbeddedEventLoop()
        let (connection, wire) = connection(loop)
        connection.open(welcome: Self.frame("welcome"), backlog: [], cursor: Cursor())
        connection.close(reason: .serviceRestart)
        connection.close(reason: .serviceRestart)
        loop.run()
        connection.receive(Self.frame("m", Self.lobby, 1))
        connection.flush()
        #expect(wire.entries == ["welcome@", "flush", "end:\(CloseReason.serviceRestart.message)"])
    }

    @Test func aConnectionClosedBeforeItsOpeningWritesNothing() {
        let loop = EmbeddedEventLoop()
        let (connection, wire) = connection(loop)
        connection.markClosed()
        connection.open(welcome: Self.frame("welcome"), backlog: [Self.frame("m1", Self.lobby, 1)], cursor: Cursor())
        loop.run()
        #expect(wire.entries.isEmpty)
    }

    // MARK: Heartbeat

    final class Beat: HeartbeatMember {
        var beats = 0
        func heartbeat() { beats += 1 }
    }

    @Test func oneTimerPerLoopBeatsEveryMemberUntilRemoved() {
        let loop = EmbeddedEventLoop()
        let heartbeat = Heartbeat.streams(loop)
        let (a, b) = (Beat(), Beat())
        heartbeat.add(a, interval: .seconds(10))
        heartbeat.add(b, interval: .seconds(10))
        loop.advanceTime(by: .seconds(10))
        heartbeat.remove(a)
        loop.advanceTime(by: .seconds(10))
        #expect(a.beats == 1)
        #expect(b.beats == 2)
        #expect(heartbeat.count == 1)
        heartbeat.remove(b)
    }
}
