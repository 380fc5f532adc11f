#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Server memory (VmRSS, KiB) at the three moments the bench looks.
public struct MemorySample: Sendable, Equatable, Codable {
    public var pid: Int32
    public var beforeKB: Int?
    public var idleKB: Int?
    public var endKB: Int?

    public init(pid: Int32, beforeKB: Int? = nil, idleKB: Int? = nil, endKB: Int? = nil) {
        self.pid = pid
        self.beforeKB = beforeKB
        self.idleKB = idleKB
        self.endKB = endKB
    }
}

/// Everything one bench run measured; `--json` prints it as is.
public struct BenchResult: Sendable, Equatable, Codable {
    public var mode = "switchboard"
    public var transport = "ws"
    public var urls: [String] = []
    public var subscribersRequested = 0
    public var rate = 0.0
    public var durationSeconds = 0.0
    public var payloadBytes = 0

    /// Login phase (Switchboard mode): seconds and logins per second.
    public var loginSeconds = 0.0
    public var loginsPerSecond = 0.0
    /// Connect phase: connections established, failed, seconds, and connections per second.
    public var connected = 0
    public var connectFailures = 0
    public var connectSeconds = 0.0
    public var connectsPerSecond = 0.0
    /// Seconds waited after connecting until the servers were quiet.
    public var settleSeconds = 0.0

    /// Messages written by the publisher, accepted (2xx), refused or unanswered.
    public var sent = 0
    public var accepted = 0
    public var publishFailures = 0
    /// Seconds from the first publish to the end of the drain.
    public var measureSeconds = 0.0
    public var deliveriesPerSecond = 0.0

    public var ledger = LedgerSummary()
    public var latency = LatencySummary(count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0)

    public var memory: [MemorySample] = []
    /// Sum over `--pids` of (idle − before) / connected, in KiB; nil without pids.
    public var idleKBPerConnection: Double?

    /// The bench's own CPU seconds while measuring, and as a share of one core.
    public var benchCPUUserSeconds = 0.0
    public var benchCPUSystemSeconds = 0.0
    public var benchCPUPercent = 0.0

    public init() {}

    /// Fills `idleKBPerConnection` from `memory` and `connected`.
    public mutating func computeIdleMemory() {
        let deltas = memory.compactMap { sample -> Int? in
            guard let before = sample.beforeKB, let idle = sample.idleKB else { return nil }
            return idle - before
        }
        guard !deltas.isEmpty, connected > 0 else {
            idleKBPerConnection = nil
            return
        }
        idleKBPerConnection = Double(deltas.reduce(0, +)) / Double(connected)
    }

    /// Unique deliveries per second over the measuring window.
    public mutating func computeRates() {
        deliveriesPerSecond = measureSeconds > 0 ? Double(ledger.delivered) / measureSeconds : 0
        let cpu = benchCPUUserSeconds + benchCPUSystemSeconds
        benchCPUPercent = measureSeconds > 0 ? 100 * cpu / measureSeconds : 0
    }

    /// Pretty-printed JSON with sorted keys.
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// A short human-readable report.
    public func text() -> String {
        var lines: [String] = []
        lines.append("switchboard bench: \(mode) \(transport), \(subscribersRequested) subscribers on \(urls.joined(separator: " "))")
        if loginSeconds > 0 { lines.append("  login     \(format(loginSeconds)) s (\(format(loginsPerSecond, 0))/s)") }
        lines.append(
            "  connect   \(connected) connected, \(connectFailures) failed in \(format(connectSeconds)) s (\(format(connectsPerSecond, 0))/s); settled \(format(settleSeconds)) s"
        )
        lines.append(
            "  publish   \(sent) sent, \(accepted) accepted, \(publishFailures) failed at \(format(rate, 0))/s for \(format(durationSeconds)) s, \(payloadBytes) B"
        )
        lines.append(
            "  delivery  \(ledger.delivered)/\(ledger.expected) in \(format(measureSeconds)) s = \(format(deliveriesPerSecond, 0))/s; lost \(ledger.lost), duplicates \(ledger.duplicates), stale ids \(ledger.staleIDs), unexpected \(ledger.unexpected), dropped connections \(ledger.dropped)"
        )
        lines.append(
            "  latency   p50 \(format(latency.p50)) ms  p90 \(format(latency.p90)) ms  p99 \(format(latency.p99)) ms  max \(format(latency.max)) ms"
        )
        for sample in memory {
            lines.append(
                "  memory    pid \(sample.pid): before \(kb(sample.beforeKB)), idle \(kb(sample.idleKB)), end \(kb(sample.endKB))")
        }
        if let idleKBPerConnection { lines.append("  idle      \(format(idleKBPerConnection)) KB per connection") }
        lines.append(
            "  bench cpu \(format(benchCPUUserSeconds)) s user + \(format(benchCPUSystemSeconds)) s sys (\(format(benchCPUPercent, 0))% of a core)")
        return lines.joined(separator: "\n")
    }

    private func kb(_ value: Int?) -> String { value.map { "\($0) KB" } ?? "?" }
}

/// `value` with `decimals` digits after the point (no Foundation formatting).
public func format(_ value: Double, _ decimals: Int = 2) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (abs(value) * scale).rounded()
    let integer = Int(rounded / scale)
    let fraction = Int(rounded - Double(integer) * scale)
    var text = (value < 0 && rounded > 0 ? "-" : "") + String(integer)
    if decimals > 0 {
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}
