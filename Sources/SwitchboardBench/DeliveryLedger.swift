/// A set of small non-negative sequence numbers as a growable bitset.
public struct SequenceSet: Sendable, Equatable {
    private var words: [UInt64] = []
    /// How many numbers are in the set.
    public private(set) var count = 0

    public init() {}

    /// Inserts `value`; false when it was already there.
    @discardableResult
    public mutating func insert(_ value: UInt64) -> Bool {
        let word = Int(value >> 6)
        let bit = UInt64(1) << (value & 63)
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: max(word + 1 - words.count, words.count))) }
        if words[word] & bit != 0 { return false }
        words[word] |= bit
        count += 1
        return true
    }

    public func contains(_ value: UInt64) -> Bool {
        let word = Int(value >> 6)
        return word < words.count && words[word] & (UInt64(1) << (value & 63)) != 0
    }

    /// How many numbers of `self` are also in `other`.
    public func intersectionCount(_ other: SequenceSet) -> Int {
        var total = 0
        for index in 0..<min(words.count, other.words.count) { total += (words[index] & other.words[index]).nonzeroBitCount }
        return total
    }

    public static func == (a: SequenceSet, b: SequenceSet) -> Bool {
        guard a.count == b.count else { return false }
        return a.intersectionCount(b) == a.count
    }
}

/// What one subscriber received: each sequence number once, duplicates (by sequence and
/// by server id) counted.
public struct SubscriberLedger: Sendable {
    /// Sequence numbers received at least once.
    public private(set) var seen = SequenceSet()
    /// Every bench message received, duplicates included.
    public private(set) var deliveries = 0
    /// Messages whose sequence number had been received before.
    public private(set) var duplicates = 0
    /// Messages whose server id was not newer than the previous one's (a duplicate or a
    /// reordering within the stream, as a client de-duplicating by id would see it).
    public private(set) var staleIDs = 0
    private var lastID: MessageKey?
    /// True once the connection was established (subscribed).
    public var connected = false
    /// True when the connection ended before the bench closed it.
    public var dropped = false

    public init() {}

    /// Records one delivery; true when its sequence number is new.
    @discardableResult
    public mutating func record(_ delivery: Delivery) -> Bool {
        deliveries += 1
        if let id = delivery.id {
            if let last = lastID, id <= last { staleIDs += 1 } else { lastID = id }
        }
        if seen.insert(delivery.sequence) { return true }
        duplicates += 1
        return false
    }
}

/// The accounting over all subscribers, measured against the set of messages the server
/// accepted.
public struct LedgerSummary: Sendable, Equatable, Codable {
    /// Subscribers that were connected when publishing started.
    public var subscribers = 0
    /// Connections that ended before the bench closed them.
    public var dropped = 0
    /// accepted × subscribers.
    public var expected = 0
    /// Accepted messages received by a subscriber, each counted once.
    public var delivered = 0
    /// Accepted messages a subscriber never received.
    public var lost = 0
    /// Repeated deliveries of a sequence number.
    public var duplicates = 0
    /// Deliveries whose server id was not newer than the previous one.
    public var staleIDs = 0
    /// Deliveries of sequence numbers the server did not accept (or never answered).
    public var unexpected = 0

    public init() {}

    /// Sums the ledgers of `subscribers` (only connected ones count) against `accepted`.
    public init(_ subscribers: some Sequence<SubscriberLedger>, accepted: SequenceSet) {
        for ledger in subscribers where ledger.connected {
            self.add(ledger, accepted: accepted)
        }
    }

    /// Adds one subscriber's ledger.
    public mutating func add(_ ledger: SubscriberLedger, accepted: SequenceSet) {
        let received = ledger.seen.intersectionCount(accepted)
        subscribers += 1
        if ledger.dropped { dropped += 1 }
        expected += accepted.count
        delivered += received
        lost += accepted.count - received
        duplicates += ledger.duplicates
        staleIDs += ledger.staleIDs
        unexpected += ledger.seen.count - received
    }

    /// Merges another partial summary (one per event loop).
    public mutating func merge(_ other: LedgerSummary) {
        subscribers += other.subscribers
        dropped += other.dropped
        expected += other.expected
        delivered += other.delivered
        lost += other.lost
        duplicates += other.duplicates
        staleIDs += other.staleIDs
        unexpected += other.unexpected
    }
}
