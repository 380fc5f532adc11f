import SwitchboardBench
import Testing

@Suite struct DeliveryLedgerTests {
    private func accepted(_ values: some Sequence<UInt64>) -> SequenceSet {
        var set = SequenceSet()
        for value in values { set.insert(value) }
        return set
    }

    private func connected() -> SubscriberLedger {
        var ledger = SubscriberLedger()
        ledger.connected = true
        return ledger
    }

    @Test func sequenceSetGrowsAndCounts() {
        var set = SequenceSet()
        let inserted = [set.insert(0), set.insert(1000), set.insert(1000)]
        #expect(inserted == [true, true, false])
        #expect(set.count == 2)
        #expect(set.contains(1000) && !set.contains(999) && !set.contains(5000))
        #expect(set.intersectionCount(accepted([0, 1, 1000])) == 2)
    }

    @Test func completeDeliveryHasNoLoss() {
        var ledger = connected()
        for seq in UInt64(0)..<10 { ledger.record(Delivery(sequence: seq, sentAt: 0)) }
        let summary = LedgerSummary([ledger], accepted: accepted(0..<10))
        #expect(summary.subscribers == 1 && summary.expected == 10 && summary.delivered == 10)
        #expect(summary.lost == 0 && summary.duplicates == 0 && summary.unexpected == 0)
    }

    @Test func lossIsCountedPerSubscriber() {
        var a = connected()
        var b = connected()
        for seq: UInt64 in [0, 1, 2] { a.record(Delivery(sequence: seq, sentAt: 0)) }
        for seq: UInt64 in [0, 2] { b.record(Delivery(sequence: seq, sentAt: 0)) }
        let summary = LedgerSummary([a, b], accepted: accepted(0..<4))
        #expect(summary.expected == 8)
        #expect(summary.delivered == 5)
        #expect(summary.lost == 3)
    }

    @Test func duplicatesBySequenceAndByID() {
        var ledger = connected()
        let fresh = [
            ledger.record(Delivery(sequence: 0, sentAt: 0, id: MessageKey(milliseconds: 1, sequence: 0))),
            ledger.record(Delivery(sequence: 1, sentAt: 0, id: MessageKey(milliseconds: 1, sequence: 1))),
            ledger.record(Delivery(sequence: 1, sentAt: 0, id: MessageKey(milliseconds: 1, sequence: 1))),
            // A reordering: a new sequence number with an older id.
            ledger.record(Delivery(sequence: 2, sentAt: 0, id: MessageKey(milliseconds: 0, sequence: 9))),
        ]
        #expect(fresh == [true, true, false, true])
        #expect(ledger.deliveries == 4)
        #expect(ledger.duplicates == 1)
        #expect(ledger.staleIDs == 2)
        let summary = LedgerSummary([ledger], accepted: accepted(0..<3))
        #expect(summary.delivered == 3 && summary.lost == 0 && summary.duplicates == 1 && summary.staleIDs == 2)
    }

    @Test func unacceptedMessagesAreUnexpected() {
        var ledger = connected()
        ledger.record(Delivery(sequence: 5, sentAt: 0))
        let summary = LedgerSummary([ledger], accepted: accepted([0]))
        #expect(summary.unexpected == 1 && summary.lost == 1 && summary.delivered == 0)
    }

    @Test func subscribersThatNeverConnectedAreLeftOut() {
        var dropped = connected()
        dropped.dropped = true
        let summary = LedgerSummary([SubscriberLedger(), dropped], accepted: accepted([0, 1]))
        #expect(summary.subscribers == 1 && summary.dropped == 1 && summary.lost == 2)
    }

    @Test func partialSummariesMerge() {
        var one = connected()
        one.record(Delivery(sequence: 0, sentAt: 0))
        var total = LedgerSummary([one], accepted: accepted([0]))
        total.merge(LedgerSummary([one, one], accepted: accepted([0, 1])))
        #expect(total.subscribers == 3 && total.expected == 5 && total.delivered == 3 && total.lost == 2)
    }
}
