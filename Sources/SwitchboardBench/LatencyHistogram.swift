import Histogram

/// Delivery latencies in an HdrHistogram: microsecond resolution, three significant
/// digits, up to one hour; reported in milliseconds.
public struct LatencyHistogram: Sendable {
    private var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: LatencyHistogram.highest, numberOfSignificantValueDigits: .three)
    private static let highest: UInt64 = 3_600_000_000

    public init() {}

    /// Records one latency given in nanoseconds (clamped to 1 µs … 1 h).
    public mutating func record(nanoseconds: UInt64) {
        let micros = min(max(nanoseconds / 1000, 1), Self.highest)
        _ = histogram.record(micros)
    }

    /// Adds every value of `other`.
    public mutating func merge(_ other: LatencyHistogram) {
        histogram.add(other.histogram)
    }

    /// How many latencies were recorded.
    public var count: UInt64 { histogram.totalCount }

    /// The latency at `percentile` (0–100) in milliseconds; 0 when empty.
    public func milliseconds(atPercentile percentile: Double) -> Double {
        count == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1000
    }

    /// The largest latency in milliseconds; 0 when empty.
    public var maxMilliseconds: Double { count == 0 ? 0 : Double(histogram.max) / 1000 }

    /// The mean latency in milliseconds; 0 when empty.
    public var meanMilliseconds: Double { count == 0 ? 0 : histogram.mean / 1000 }

    /// p50, p90, p99, p99.9 and max.
    public var summary: LatencySummary {
        LatencySummary(
            count: Int(count), p50: milliseconds(atPercentile: 50), p90: milliseconds(atPercentile: 90),
            p99: milliseconds(atPercentile: 99), p999: milliseconds(atPercentile: 99.9), max: maxMilliseconds,
            mean: meanMilliseconds)
    }
}

/// Latency percentiles in milliseconds.
public struct LatencySummary: Sendable, Equatable, Codable {
    public var count: Int
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double
}
