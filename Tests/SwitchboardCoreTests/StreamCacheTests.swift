import Testing
@testable import SwitchboardCore

@Suite struct StreamCacheTests {
    let lobby = StreamKey.room(RoomName("lobby")!)

    func entry(_ n: UInt64) -> StreamEntry {
        StreamEntry(stream: lobby, id: MessageID(milliseconds: n, sequence: 0), envelope: Envelope(.pong))
    }

    func ids(_ entries: [StreamEntry]?) -> [UInt64]? { entries?.map(\.id.milliseconds) }

    @Test func answersOnlyInsideTheContiguousWindow() {
        let cache = StreamCache(capacity: 4)
        #expect(cache.read(lobby, after: .zero, limit: 10) == nil, "not cached")
        cache.prepare(lobby)
        cache.append(entry(5))
        #expect(cache.read(lobby, after: .zero, limit: 10) == nil, "still preparing")
        cache.start(lobby, base: MessageID(milliseconds: 5, sequence: 0))
        #expect(ids(cache.read(lobby, after: MessageID(milliseconds: 5, sequence: 0), limit: 10)) == [], "5 is the base: dropped")
        #expect(cache.read(lobby, after: MessageID(milliseconds: 4, sequence: 0), limit: 10) == nil, "older than the base")
        for n in UInt64(6)...8 { cache.append(entry(n)) }
        cache.append(entry(7))
        #expect(ids(cache.read(lobby, after: MessageID(milliseconds: 5, sequence: 0), limit: 10)) == [6, 7, 8], "in order, no duplicate")
        #expect(ids(cache.read(lobby, after: MessageID(milliseconds: 6, sequence: 5), limit: 1)) == [7], "limit; between ids")
        #expect(cache.head(lobby) == MessageID(milliseconds: 8, sequence: 0))
    }

    @Test func trimsToCapacityAndMovesTheBase() {
        let cache = StreamCache(capacity: 3)
        cache.prepare(lobby)
        cache.start(lobby, base: .zero)
        for n in 1...100 { cache.append(entry(UInt64(n))) }
        // Trimmed to the capacity whenever a quarter more (at least one) is reached: at
        // 100 the cache holds 98…100 after base 97.
        let held = ids(cache.read(lobby, after: MessageID(milliseconds: 97, sequence: 0), limit: 100))
        #expect(held == [98, 99, 100])
        #expect(cache.read(lobby, after: MessageID(milliseconds: 96, sequence: 0), limit: 100) == nil, "trimmed: Redis answers")
        #expect(ids(cache.read(lobby, after: MessageID(milliseconds: 99, sequence: 0), limit: 100)) == [100])
        #expect(cache.head(lobby) == MessageID(milliseconds: 100, sequence: 0))
    }
}
