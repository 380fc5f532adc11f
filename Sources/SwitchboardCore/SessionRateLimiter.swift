import Synchronization

/// Token buckets keyed by session id, for events that arrive without a connection
/// (`/api/send`). Bounded: idle buckets are forgotten (a full bucket is the default).
final class SessionRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var refilledAt: ContinuousClock.Instant
    }

    private let rate: Double
    private let burst: Double
    private let maxSessions: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    init(rate: Double, burst: Double, maxSessions: Int = 100_000) {
        self.rate = rate
        self.burst = burst
        self.maxSessions = maxSessions
    }

    /// Takes one token for `session`; false when its bucket is empty.
    func take(_ session: String) -> Bool {
        let now = ContinuousClock.now
        return buckets.withLock { buckets in
            if buckets.count >= maxSessions {
                // Forget buckets that have refilled completely: they carry no state.
                let full = Duration.seconds(burst / max(rate, 0.001))
                buckets = buckets.filter { now - $0.value.refilledAt < full }
            }
            var bucket = buckets[session] ?? Bucket(tokens: burst, refilledAt: now)
            let elapsed = now - bucket.refilledAt
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + seconds * rate)
            bucket.refilledAt = now
            guard bucket.tokens >= 1 else {
                buckets[session] = bucket
                return false
            }
            bucket.tokens -= 1
            buckets[session] = bucket
            return true
        }
    }
}
