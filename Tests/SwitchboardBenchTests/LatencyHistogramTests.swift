import SwitchboardBench
import Testing

@Suite struct LatencyHistogramTests {
    @Test func emptyHistogramReportsZero() {
        let histogram = LatencyHistogram()
        #expect(histogram.count == 0)
        #expect(histogram.summary.p99 == 0 && histogram.summary.max == 0)
    }

    @Test func percentilesInMilliseconds() {
        var histogram = LatencyHistogram()
        for ms in 1...100 { histogram.record(nanoseconds: UInt64(ms) * 1_000_000) }
        let summary = histogram.summary
        #expect(summary.count == 100)
        #expect(abs(summary.p50 - 50) < 0.1)
        #expect(abs(summary.p90 - 90) < 0.1)
        #expect(abs(summary.p99 - 99) < 0.1)
        #expect(abs(summary.max - 100) < 0.1)
    }

    @Test func mergingAddsCounts() {
        var a = LatencyHistogram()
        var b = LatencyHistogram()
        a.record(nanoseconds: 1_000_000)
        b.record(nanoseconds: 9_000_000)
        a.merge(b)
        #expect(a.count == 2)
        #expect(abs(a.maxMilliseconds - 9) < 0.01)
    }

    @Test func extremesAreClamped() {
        var histogram = LatencyHistogram()
        histogram.record(nanoseconds: 0)
        histogram.record(nanoseconds: .max)
        #expect(histogram.count == 2)
        #expect(histogram.summary.max >= 3_600_000 * 0.99)
    }
}
