import Synchronization
import Testing
@testable import SwitchboardCore

/// `StreamSubscriptions` without a broker: the subscribe/unsubscribe calls it makes are
/// recorded, slowed down so that callers overlap.
@Suite struct StreamSubscriptionsTests {
    let lobby = StreamKey.room(RoomName("lobby")!)

    /// A fake broker side: the calls in order, never two at once, and a member count.
    final class Calls: Sendable {
        let log = Mutex<[String]>([])
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let members = Atomic<Int>(0)
        let flag = Atomic<Bool>(false)
        let count = Atomic<Int>(0)

        func call(_ name: String) async {
            if inside.add(1, ordering: .acquiringAndReleasing).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
            log.withLock { $0.append(name) }
            try? await Task.sleep(for: .milliseconds(2))
            inside.subtract(1, ordering: .acquiringAndReleasing)
        }
    }

    @Test func aSecondMemberWaitsForTheFirstSubscription() async throws {
        let subscriptions = StreamSubscriptions()
        let calls = Calls()
        let lobby = self.lobby
        async let first: Void = subscriptions.activate(lobby) {
            try await Task.sleep(for: .milliseconds(100))
            calls.flag.store(true, ordering: .sequentiallyConsistent)
            await calls.call("subscribe")
        }
        try await Task.sleep(for: .milliseconds(20))
        // The stream is being subscribed: a second member must not return before it is.
        try await subscriptions.activate(lobby) { await calls.call("subscribe again") }
        let active = calls.flag.load(ordering: .sequentiallyConsistent)
        #expect(active, "returned before the subscription was active")
        try await first
        #expect(calls.log.withLock { $0 } == ["subscribe"], "subscribed once")
        #expect(subscriptions.isActive(lobby))
    }

    @Test func racingJoinsAndLeavesEndInTheRightStateWithAlternatingCalls() async throws {
        for round in 0..<20 {
            let subscriptions = StreamSubscriptions()
            let calls = Calls()
            let lobby = self.lobby
            await withTaskGroup(of: Void.self) { group in
                for n in 0..<16 {
                    group.addTask {
                        if (n + round) % 2 == 0 {
                            calls.members.add(1, ordering: .relaxed)
                            try? await subscriptions.activate(lobby) { await calls.call("subscribe") }
                        } else {
                            // A leave only happens for a member that joined.
                            calls.members.add(1, ordering: .relaxed)
                            try? await subscriptions.activate(lobby) { await calls.call("subscribe") }
                            calls.members.subtract(1, ordering: .relaxed)
                            await subscriptions.deactivate(lobby, isUnused: { calls.members.load(ordering: .relaxed) == 0 }) {
                                await calls.call("unsubscribe")
                            }
                        }
                    }
                }
            }
            let log = calls.log.withLock { $0 }
            let overlaps = calls.overlaps.load(ordering: .relaxed)
            #expect(overlaps == 0, "two changes of one stream at once")
            #expect(zip(log, log.dropFirst()).allSatisfy { $0 != $1 }, "calls alternate: \(log)")
            #expect(log.first == "subscribe")
            // Eight members stay: the stream must end subscribed.
            #expect(subscriptions.isActive(lobby), "members left without a subscription: \(log)")
            #expect(log.last == "subscribe", "\(log)")
        }
    }

    @Test func aFailedSubscriptionIsRetriedByTheNextMember() async throws {
        struct Down: Error {}
        let subscriptions = StreamSubscriptions()
        let lobby = self.lobby
        await #expect(throws: Down.self) { try await subscriptions.activate(lobby) { throw Down() } }
        #expect(!subscriptions.isActive(lobby))
        let calls = Calls()
        try await subscriptions.activate(lobby) { calls.count.add(1, ordering: .relaxed) }
        let tried = calls.count.load(ordering: .relaxed)
        #expect(tried == 1)
        #expect(subscriptions.isActive(lobby))
    }
}
