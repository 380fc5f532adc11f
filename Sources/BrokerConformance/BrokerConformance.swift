import SwitchboardCore
import Synchronization

/// One shared test suite for every `Broker`: `MemoryBroker` and `RedisBroker` both run
/// it unchanged (STYLE.md habit 5). Each case gets a fresh broker from the factory.
public enum BrokerConformance {
    public typealias Factory = @Sendable (_ historyLimit: Int) async throws -> any Broker

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Case names, for parameterised tests.
    public static var names: [String] { cases.map(\.0) }

    public static func run(_ name: String, factory: Factory) async throws {
        guard let body = cases.first(where: { $0.0 == name })?.1 else { throw Failure(description: "no case \(name)") }
        try await body(factory)
    }

    static let cases: [(String, @Sendable (Factory) async throws -> Void)] = [
        ("idsIncreaseAndHistoryReadsAfter", idsIncreaseAndHistoryReadsAfter),
        ("publishReachesSubscribersOnly", publishReachesSubscribersOnly),
        ("broadcastIsNotStored", broadcastIsNotStored),
        ("historyIsBoundedAndReportsGaps", historyIsBoundedAndReportsGaps),
        ("multiStreamPublishIsPerStream", multiStreamPublishIsPerStream),
        ("multiStreamPublishHasOneId", multiStreamPublishHasOneId),
        ("envelopeSurvivesTheTrip", envelopeSurvivesTheTrip),
        ("presenceCountsDistinctNicknames", presenceCountsDistinctNicknames),
        ("presenceListsMembersInPages", presenceListsMembersInPages),
        ("nicknameClaims", nicknameClaims),
        ("unsubscribeStopsDelivery", unsubscribeStopsDelivery),
        ("concurrentPublishersDeliverInIdOrder", concurrentPublishersDeliverInIdOrder),
        ("nodeMessagesReachTheNamedNodeInOrder", nodeMessagesReachTheNamedNodeInOrder),
    ]

    // MARK: helpers

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String, line: Int = #line) throws {
        if !condition { throw Failure(description: "line \(line): \(message())") }
    }

    static let lobby = RoomName("lobby")!
    static let other = RoomName("other")!
    static let alice = Nickname("alice")!
    static let bob = Nickname("bob")!

    static func message(_ text: String, room: RoomName = lobby) -> Envelope {
        Envelope(.message(id: nil, room: room, from: Sender(nickname: alice, avatar: "1.jpg"), text: text, ts: 1))
    }

    /// Collects broker events.
    final class Inbox: Sendable {
        let events = Mutex<[BrokerEvent]>([])
        var messages: [(StreamKey, MessageID?, Envelope)] {
            events.withLock {
                $0.compactMap { if case .message(let s, let i, let e) = $0 { (s, i, e) } else { nil } }
            }
        }
        func wait(count: Int, timeout: Duration = .seconds(5)) async throws {
            let deadline = ContinuousClock.now + timeout
            while messages.count < count {
                guard ContinuousClock.now < deadline else {
                    throw Failure(description: "expected \(count) messages, got \(messages.count)")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    static func started(_ factory: Factory, historyLimit: Int = 100) async throws -> (any Broker, Inbox) {
        let broker = try await factory(historyLimit)
        let inbox = Inbox()
        try await broker.start { event in inbox.events.withLock { $0.append(event) } }
        return (broker, inbox)
    }

    // MARK: cases

    static func idsIncreaseAndHistoryReadsAfter(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try expect(try await broker.head(of: .room(lobby)) == nil, "empty stream has no head")
        var ids: [MessageID] = []
        for index in 0..<5 { ids += try await broker.publish(message("m\(index)"), to: [.room(lobby)]) }
        try expect(ids == ids.sorted() && Set(ids).count == 5, "ids strictly increase: \(ids)")
        try expect(try await broker.head(of: .room(lobby)) == ids.last, "head is the newest id")
        let all = try await broker.history(of: .room(lobby), after: nil, limit: 100)
        try expect(all.entries.map(\.id) == ids && !all.gap, "history returns every entry in order")
        let tail = try await broker.history(of: .room(lobby), after: ids[1], limit: 100)
        try expect(tail.entries.map(\.id) == Array(ids[2...]), "history(after:) is exclusive")
        let limited = try await broker.history(of: .room(lobby), after: ids[0], limit: 2)
        try expect(limited.entries.map(\.id) == Array(ids[1...2]), "limit caps the page")
        try expect(
            tail.entries.map { if case .message(_, _, _, let t, _)? = $0.envelope.event.decoded { t } else { "" } } == ["m2", "m3", "m4"],
            "entries carry their envelopes")
        let none = try await broker.history(of: .room(other), after: nil, limit: 10)
        try expect(none.entries.isEmpty && !none.gap, "an unknown stream is empty")
    }

    static func publishReachesSubscribersOnly(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try await broker.subscribe(.room(lobby))
        try await broker.subscribe(.room(lobby))  // idempotent
        let ids = try await broker.publish(message("hello"), to: [.room(lobby)])
        _ = try await broker.publish(message("elsewhere", room: other), to: [.room(other)])
        try await inbox.wait(count: 1)
        try await Task.sleep(for: .milliseconds(100))
        let got = inbox.messages
        try expect(got.count == 1, "exactly one delivery, got \(got.count)")
        try expect(got[0].0 == .room(lobby) && got[0].1 == ids[0], "delivery carries stream and id")
    }

    static func broadcastIsNotStored(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try await broker.subscribe(.room(lobby))
        try await broker.broadcast(Envelope(.joined(room: lobby, nickname: bob)), to: .room(lobby))
        try await inbox.wait(count: 1)
        try expect(inbox.messages[0].1 == nil, "ephemeral events have no id")
        try expect(inbox.messages[0].2.event == .joined(room: lobby, nickname: bob), "event intact")
        try expect(try await broker.head(of: .room(lobby)) == nil, "nothing stored")
    }

    static func historyIsBoundedAndReportsGaps(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory, historyLimit: 5)
        defer { Task { await broker.shutdown() } }
        var ids: [MessageID] = []
        for index in 0..<12 { ids += try await broker.publish(message("m\(index)"), to: [.room(lobby)]) }
        let page = try await broker.history(of: .room(lobby), after: nil, limit: 100)
        try expect(page.entries.count >= 5 && page.entries.count < 12, "history is bounded (kept \(page.entries.count))")
        try expect(page.entries.last?.id == ids.last, "the newest entries are kept")
        let old = try await broker.history(of: .room(lobby), after: ids[0], limit: 100)
        try expect(old.gap, "a cursor before the window reports a gap")
        let recent = try await broker.history(of: .room(lobby), after: ids[10], limit: 100)
        try expect(!recent.gap && recent.entries.map(\.id) == [ids[11]], "a cursor inside the window has no gap")
    }

    static func multiStreamPublishIsPerStream(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try await broker.subscribe(.user(alice))
        try await broker.subscribe(.user(bob))
        let whisper = Envelope(.privateMessage(id: nil, from: Sender(nickname: alice, avatar: ""), to: bob, text: "psst", ts: 2))
        let ids = try await broker.publish(whisper, to: [.user(bob), .user(alice)])
        try expect(ids.count == 2, "one id per stream")
        try await inbox.wait(count: 2)
        let streams = Set(inbox.messages.map(\.0))
        try expect(streams == [.user(alice), .user(bob)], "both streams delivered")
        try expect(try await broker.history(of: .user(bob), after: nil, limit: 10).entries.map(\.id) == [ids[0]], "stored in bob's stream")
        try expect(try await broker.history(of: .user(alice), after: nil, limit: 10).entries.map(\.id) == [ids[1]], "and alice's")
    }

    /// A whisper is stored under the same id in both streams, even when one of them is
    /// ahead (many messages in the current millisecond), and stays above each stream's
    /// last id.
    static func multiStreamPublishHasOneId(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory, historyLimit: 1000)
        defer { Task { await broker.shutdown() } }
        let whisper = Envelope(.privateMessage(id: nil, from: Sender(nickname: alice, avatar: ""), to: bob, text: "psst", ts: 2))
        for round in 0..<20 {
            var ahead: MessageID = .zero
            for _ in 0..<(round % 5) * 10 { ahead = try await broker.publish(message("burst"), to: [.user(alice)])[0] }
            let ids = try await broker.publish(whisper, to: [.user(bob), .user(alice)])
            try expect(ids.count == 2 && ids[0] == ids[1], "one id in both streams, round \(round): \(ids)")
            try expect(ids[1] > ahead, "above alice's last id \(ahead): \(ids)")
            let both = try await broker.publish(whisper, to: [.user(alice), .user(bob)])
            try expect(both[0] == both[1] && both[0] > ids[0], "the other order too, round \(round): \(both)")
        }
        let bobs = try await broker.history(of: .user(bob), after: nil, limit: 1000).entries.map(\.id)
        let alices = Set(try await broker.history(of: .user(alice), after: nil, limit: 1000).entries.map(\.id))
        try expect(bobs.count == 40 && bobs.allSatisfy(alices.contains), "bob's ids are in alice's stream")
    }

    static func envelopeSurvivesTheTrip(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try await broker.subscribe(.room(lobby))
        let text = "东东 says \"hi\" </script> \u{2028} \\ \n"
        let chat = Envelope(
            .message(id: nil, room: lobby, from: Sender(nickname: Nickname("东东")!, avatar: "2.jpg"), text: text, ts: 42),
            excludeNickname: Nickname("东东")!, excludeConnection: ConnectionID("abc"))
        let app = Envelope(.application(id: nil, target: .room(lobby), fields: ["type": .string("message"), "n": .int(3), "x": .array([.null, .bool(true)])]))
        _ = try await broker.publish(chat, to: [.room(lobby)])
        _ = try await broker.publish(app, to: [.room(lobby)])
        try await inbox.wait(count: 2)
        try expect(inbox.messages[0].2 == chat, "chat envelope intact: \(inbox.messages[0].2)")
        try expect(inbox.messages[1].2 == app, "application envelope intact: \(inbox.messages[1].2)")
        let stored = try await broker.history(of: .room(lobby), after: nil, limit: 10).entries.map(\.envelope)
        try expect(stored == [chat, app], "history holds the same envelopes")
    }

    static func presenceCountsDistinctNicknames(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        let now = unixMilliseconds()
        try await broker.setPresence(
            [
                PresenceEntry(room: lobby, nickname: alice, node: "n1"),
                PresenceEntry(room: lobby, nickname: alice, node: "n2"),
                PresenceEntry(room: lobby, nickname: bob, node: "n2"),
                PresenceEntry(room: other, nickname: bob, node: "n1"),
            ], expiresAt: now + 60_000)
        try expect(try await broker.presenceCount(of: lobby, now: now) == 2, "distinct nicknames across nodes")
        try expect(try await broker.presenceCount(of: other, now: now) == 1, "rooms are separate")
        try await broker.removePresence([PresenceEntry(room: lobby, nickname: alice, node: "n1")])
        try expect(try await broker.presenceCount(of: lobby, now: now) == 2, "alice is still there via n2")
        try await broker.removePresence([PresenceEntry(room: lobby, nickname: alice, node: "n2")])
        try expect(try await broker.presenceCount(of: lobby, now: now) == 1, "alice gone")
        try await broker.setPresence([PresenceEntry(room: lobby, nickname: alice, node: "n3")], expiresAt: now + 500)
        try expect(try await broker.presenceCount(of: lobby, now: now) == 2, "alice back")
        try expect(try await broker.presenceCount(of: lobby, now: now + 1_000) == 1, "expired entries do not count")
    }

    static func presenceListsMembersInPages(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        let now = unixMilliseconds()
        let carol = Nickname("carol")!, ming = Nickname("小明")!, zed = Nickname("Zed")!
        func names(_ page: PresencePage) -> [String] { page.members.map(\.nickname.value) }
        let empty = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 10)
        try expect(empty == PresencePage(total: 0, members: [], next: nil), "an empty room: \(empty)")
        try await broker.setPresence(
            [
                PresenceEntry(room: lobby, nickname: ming, node: "n3", avatar: "3.jpg"),
                PresenceEntry(room: lobby, nickname: alice, node: "n1", avatar: "1.jpg"),
                PresenceEntry(room: lobby, nickname: alice, node: "n2"),
                PresenceEntry(room: lobby, nickname: bob, node: "n2", avatar: "a|b \"c\""),
                PresenceEntry(room: lobby, nickname: carol, node: "n1"),
                PresenceEntry(room: lobby, nickname: zed, node: "n1", avatar: ""),
                PresenceEntry(room: other, nickname: bob, node: "n1", avatar: "other.png"),
            ], expiresAt: now + 60_000)
        let all = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 10)
        try expect(all.total == 5 && all.next == nil, "five distinct nicknames, one page: \(all)")
        try expect(names(all) == ["Zed", "alice", "bob", "carol", "小明"], "ordered by UTF-8 bytes: \(names(all))")
        try expect(all.members.map(\.avatar) == ["", "1.jpg", "a|b \"c\"", "", "3.jpg"], "avatars per room: \(all.members)")
        let first = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 2)
        try expect(names(first) == ["Zed", "alice"] && first.next == Nickname("alice") && first.total == 5, "first page: \(first)")
        let second = try await broker.presenceMembers(of: lobby, now: now, after: first.next, limit: 2)
        try expect(names(second) == ["bob", "carol"] && second.next == carol, "second page: \(second)")
        let last = try await broker.presenceMembers(of: lobby, now: now, after: second.next, limit: 2)
        try expect(names(last) == ["小明"] && last.next == nil, "last page: \(last)")
        // A cursor need not be a member: the page starts after it.
        let fromB = try await broker.presenceMembers(of: lobby, now: now, after: Nickname("b")!, limit: 10)
        try expect(names(fromB) == ["bob", "carol", "小明"], "after a non-member: \(names(fromB))")
        // Several entries of one nickname: listed once, until its last entry goes; a
        // refresh without an avatar keeps the recorded one.
        try await broker.removePresence([PresenceEntry(room: lobby, nickname: alice, node: "n1")])
        try await broker.setPresence([PresenceEntry(room: lobby, nickname: alice, node: "n2")], expiresAt: now + 60_000)
        let refreshed = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 10)
        try expect(refreshed.members.first { $0.nickname == alice }?.avatar == "1.jpg", "alice via n2 keeps her avatar: \(refreshed)")
        try await broker.removePresence([PresenceEntry(room: lobby, nickname: alice, node: "n2")])
        let gone = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 10)
        try expect(names(gone) == ["Zed", "bob", "carol", "小明"], "alice gone: \(names(gone))")
        // Expiry: the list drops an expired entry when the count does.
        try await broker.setPresence([PresenceEntry(room: lobby, nickname: alice, node: "n4", avatar: "9.jpg")], expiresAt: now + 500)
        let back = try await broker.presenceMembers(of: lobby, now: now, after: nil, limit: 10)
        try expect(back.members.contains(RoomMember(nickname: alice, avatar: "9.jpg")), "alice back with a new avatar: \(back)")
        let later = try await broker.presenceMembers(of: lobby, now: now + 1_000, after: nil, limit: 10)
        try expect(!names(later).contains("alice") && later.total == 4, "expired entries are not listed: \(later)")
        try expect(try await broker.presenceCount(of: lobby, now: now + 1_000) == later.total, "count and list agree")
        let elsewhere = try await broker.presenceMembers(of: other, now: now, after: nil, limit: 10)
        try expect(elsewhere.members == [RoomMember(nickname: bob, avatar: "other.png")], "rooms are separate: \(elsewhere)")
    }

    static func nicknameClaims(_ factory: Factory) async throws {
        let (broker, _) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        // Claims that must hold last long: a loaded machine can take over a second between
        // two of these calls.
        try expect(try await broker.claimNickname(alice, session: "s1", ttlSeconds: 30), "free nickname is claimed")
        try expect(!(try await broker.claimNickname(alice, session: "s2", ttlSeconds: 30)), "held nickname is refused")
        try expect(try await broker.claimNickname(alice, session: "s1", ttlSeconds: 30), "the holder refreshes")
        try expect(try await broker.nicknameHolder(alice) == "s1", "holder is s1")
        try await broker.releaseNickname(alice, session: "s2")
        try expect(try await broker.nicknameHolder(alice) == "s1", "only the holder releases")
        try await broker.releaseNickname(alice, session: "s1")
        try expect(try await broker.nicknameHolder(alice) == nil, "released")
        try expect(try await broker.claimNickname(bob, session: "s3", ttlSeconds: 1), "bob claimed")
        try await Task.sleep(for: .milliseconds(2100))
        try expect(try await broker.nicknameHolder(bob) == nil, "a claim expires")
        try expect(try await broker.claimNickname(bob, session: "s4", ttlSeconds: 5), "an expired claim can be taken")
    }

    static func unsubscribeStopsDelivery(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        try await broker.subscribe(.room(lobby))
        _ = try await broker.publish(message("one"), to: [.room(lobby)])
        try await inbox.wait(count: 1)
        try await broker.unsubscribe(.room(lobby))
        try await Task.sleep(for: .milliseconds(50))
        _ = try await broker.publish(message("two"), to: [.room(lobby)])
        try await Task.sleep(for: .milliseconds(200))
        try expect(inbox.messages.count == 1, "no delivery after unsubscribe")
    }

    /// Many publishers at once, on several streams (whispers to two streams among them):
    /// the handler sees every accepted id exactly once, each stream's ids increasing, and
    /// is never called by two threads at once — the node hands events to its connections
    /// in the order it gets them, and de-duplicates by id, so a reorder here would be a
    /// silent loss there.
    static func concurrentPublishersDeliverInIdOrder(_ factory: Factory) async throws {
        let broker = try await factory(40000)
        defer { Task { await broker.shutdown() } }
        let seen = Mutex<[StreamKey: [MessageID]]>([:])
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        try await broker.start { event in
            guard case .message(let stream, let id?, _) = event else { return }
            if inside.add(1, ordering: .acquiringAndReleasing).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
            // A handler that takes a moment (a hub handing frames to loops) widens any race.
            var spin = 0
            for i in 0..<200 { spin &+= i }
            seen.withLock { $0[stream, default: []].append(id) }
            _ = spin
            inside.subtract(1, ordering: .acquiringAndReleasing)
        }
        let streams: [StreamKey] = [.room(lobby), .room(other), .user(alice), .user(bob)]
        for stream in streams { try await broker.subscribe(stream) }
        let publishers = 8, perPublisher = 4000
        let accepted = try await withThrowingTaskGroup(of: [(StreamKey, MessageID)].self) { group in
            for publisher in 0..<publishers {
                group.addTask {
                    var acks: [(StreamKey, MessageID)] = []
                    for n in 0..<perPublisher {
                        let targets: [StreamKey] =
                            switch (publisher + n) % 4 {
                            case 0: [.room(lobby)]
                            case 1: [.room(other)]
                            case 2: [.user(bob), .user(alice)]
                            default: [.room(lobby)]
                            }
                        let ids = try await broker.publish(message("p\(publisher)-\(n)"), to: targets)
                        acks += zip(targets, ids).map { ($0, $1) }
                    }
                    return acks
                }
            }
            var all: [(StreamKey, MessageID)] = []
            for try await acks in group { all += acks }
            return all
        }
        let expected = Dictionary(grouping: accepted, by: \.0).mapValues { Set($0.map(\.1)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while seen.withLock({ $0.values.reduce(0) { $0 + $1.count } }) < accepted.count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let delivered = seen.withLock { $0 }
        for stream in streams {
            let ids = delivered[stream] ?? []
            let want = expected[stream] ?? []
            let disorder = zip(ids, ids.dropFirst()).filter { $0.0 >= $0.1 }.count
            try expect(disorder == 0, "\(stream): \(disorder) of \(ids.count) deliveries not after the one before")
            try expect(Set(ids) == want && ids.count == want.count, "\(stream): delivered \(ids.count) (\(Set(ids).count) distinct), accepted \(want.count)")
        }
        try expect(overlaps.load(ordering: .relaxed) == 0, "the handler ran on two threads at once \(overlaps.load(ordering: .relaxed)) times")
    }

    /// Node-addressed messages (Socket.IO forwarding): bytes arrive unchanged (tabs,
    /// newlines, NUL, invalid UTF-8), only at the named node, in the order one thread sent
    /// them; nothing reaches the room handler.
    static func nodeMessagesReachTheNamedNodeInOrder(_ factory: Factory) async throws {
        let (broker, inbox) = try await started(factory)
        defer { Task { await broker.shutdown() } }
        let received = Mutex<[[UInt8]]>([])
        try await broker.listen(asNode: "node-a") { message in received.withLock { $0.append(message) } }
        let messages: [[UInt8]] = (0..<200).map { i in Array("Q\tnode-b\t\(i)\tpost\tsid\n".utf8) + [0, 0xFF, 0x0A, UInt8(i % 256)] }
        for (i, message) in messages.enumerated() {
            broker.send(message, toNode: "node-a")
            if i % 50 == 0 { broker.send(Array("for b".utf8), toNode: "node-b") }
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while received.withLock({ $0.count }) < messages.count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await Task.sleep(for: .milliseconds(50))
        let got = received.withLock { $0 }
        try expect(got == messages, "got \(got.count) of \(messages.count) node messages, in order: \(got == Array(messages.prefix(got.count)))")
        try expect(inbox.events.withLock { $0.isEmpty }, "node messages reached the broker handler")
    }
}
