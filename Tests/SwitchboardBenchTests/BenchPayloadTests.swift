import NIOCore
import SwitchboardBench
import Testing

@Suite struct BenchPayloadTests {
    @Test func bodyIsPaddedJSONOfTheRequestedSize() {
        let bytes = BenchPayload.bytes(sequence: 42, sentAt: 1_234_567, size: 64)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(bytes.count == 64)
        #expect(text.hasPrefix("{\"sb_seq\":42,\"sb_t\":1234567,\"z\":\"x"))
        #expect(text.hasSuffix("x\"}"))
    }

    @Test func smallSizesStillCarryTheHeader() {
        let text = String(decoding: BenchPayload.bytes(sequence: 0, sentAt: 0, size: 0), as: UTF8.self)
        #expect(text == "{\"sb_seq\":0,\"sb_t\":0,\"z\":\"\"}")
    }

    @Test func rawBodyRoundTrips() {
        let bytes = BenchPayload.bytes(sequence: 7, sentAt: 99, size: 200)
        #expect(BenchPayload.deliveries(in: bytes) == [Delivery(sequence: 7, sentAt: 99)])
    }

    @Test func switchboardApplicationEventCarriesTheID() {
        let event = #"{"type":"event","id":"1795294873349-12","room":"bench","sb_seq":3,"sb_t":555,"z":"xx"}"#
        #expect(
            BenchPayload.deliveries(in: Array(event.utf8))
                == [Delivery(sequence: 3, sentAt: 555, id: MessageKey(milliseconds: 1_795_294_873_349, sequence: 12))])
    }

    @Test func escapedPayloadInsideChatText() {
        let event = #"{"type":"message","id":"5-0","room":"r","from":{"nickname":"a","avatar":""},"text":"{\"sb_seq\":9,\"sb_t\":10,\"z\":\"\"}","ts":5}"#
        #expect(
            BenchPayload.deliveries(in: Array(event.utf8))
                == [Delivery(sequence: 9, sentAt: 10, id: MessageKey(milliseconds: 5, sequence: 0))])
    }

    @Test func pollBatchYieldsEveryMessageWithItsOwnID() {
        let body = #"{"cursor":"r.bench@7-1,u@0-0","events":[{"type":"event","id":"7-0","room":"bench","sb_seq":1,"sb_t":2,"z":""},{"type":"presence","room":"bench","count":2},{"type":"event","id":"7-1","room":"bench","sb_seq":2,"sb_t":3,"z":""}]}"#
        #expect(
            BenchPayload.deliveries(in: Array(body.utf8)) == [
                Delivery(sequence: 1, sentAt: 2, id: MessageKey(milliseconds: 7, sequence: 0)),
                Delivery(sequence: 2, sentAt: 3, id: MessageKey(milliseconds: 7, sequence: 1)),
            ])
    }

    @Test func sseEventsAndOtherEventsAreToldApart() {
        let stream =
            "id: r.bench@9-0\nevent: event\ndata: {\"type\":\"event\",\"id\":\"9-0\",\"room\":\"bench\",\"sb_seq\":4,\"sb_t\":8,\"z\":\"\"}\n\n"
            + "event: presence\ndata: {\"type\":\"presence\",\"room\":\"bench\",\"count\":1}\n\n"
        #expect(
            BenchPayload.deliveries(in: Array(stream.utf8))
                == [Delivery(sequence: 4, sentAt: 8, id: MessageKey(milliseconds: 9, sequence: 0))])
    }

    @Test func truncatedMessagesAreNotCounted() {
        let bytes = Array(BenchPayload.bytes(sequence: 5, sentAt: 6, size: 0).prefix(12))
        #expect(BenchPayload.deliveries(in: bytes).isEmpty)
        #expect(BenchPayload.deliveries(in: Array(#"{"type":"welcome","cursor":"x"}"#.utf8)).isEmpty)
    }

    @Test func scanningAByteBuffer() {
        var buffer = ByteBuffer()
        BenchPayload.write(sequence: 1, sentAt: 2, size: 40, into: &buffer)
        BenchPayload.write(sequence: 2, sentAt: 3, size: 40, into: &buffer)
        var found: [UInt64] = []
        BenchPayload.scan(buffer) { found.append($0.sequence) }
        #expect(found == [1, 2])
    }

    @Test func messageKeysCompareNumerically() {
        #expect(MessageKey(milliseconds: 9, sequence: 5) < MessageKey(milliseconds: 10, sequence: 0))
        #expect(MessageKey(milliseconds: 10, sequence: 2) < MessageKey(milliseconds: 10, sequence: 10))
    }
}
