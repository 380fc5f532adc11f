import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The live status line on stderr: the phase, connections, messages sent, deliveries
/// per second. On a terminal it rewrites one line; otherwise it prints a line a second.
final class ProgressLine: Sendable {
    private let counters: [LoopCounters]
    private let enabled: Bool
    private let isTerminal = isatty(2) != 0
    private let state = Mutex(State())

    private struct State {
        var phase = "starting"
        var startedAt = monotonicNanoseconds()
        var lastUnique = 0
        var lastAt = monotonicNanoseconds()
        var publisher: Publisher?
        var printed = false
    }

    init(counters: [LoopCounters], enabled: Bool) {
        self.counters = counters
        self.enabled = enabled
    }

    /// Enters a new phase (printed with the next line).
    func phase(_ name: String, publisher: Publisher? = nil) {
        state.withLock {
            $0.phase = name
            if let publisher { $0.publisher = publisher }
        }
    }

    /// Prints the current line.
    func tick() {
        guard enabled else { return }
        let connected = counters.reduce(0) { $0 + $1.connected.load(ordering: .relaxed) }
        let dropped = counters.reduce(0) { $0 + $1.dropped.load(ordering: .relaxed) }
        let unique = counters.reduce(0) { $0 + $1.unique.load(ordering: .relaxed) }
        let frames = counters.reduce(0) { $0 + $1.frames.load(ordering: .relaxed) }
        let line: String = state.withLock { state in
            let now = monotonicNanoseconds()
            let seconds = Double(now - state.lastAt) / 1e9
            let perSecond = seconds > 0 ? Double(unique - state.lastUnique) / seconds : 0
            state.lastUnique = unique
            state.lastAt = now
            state.printed = true
            let sent = state.publisher?.sentCount.load(ordering: .relaxed) ?? 0
            return "[\(format(Double(now - state.startedAt) / 1e9, 1)) s] \(state.phase): connected \(connected) (dropped \(dropped)), "
                + "frames \(frames), sent \(sent), delivered \(unique) (\(format(perSecond, 0))/s)"
        }
        write(isTerminal ? "\r" + line + "\u{1B}[K" : line + "\n")
    }

    /// Ends the live line before the report.
    func finish() {
        guard enabled, isTerminal, state.withLock({ $0.printed }) else { return }
        write("\n")
    }

    /// A message on its own line.
    func note(_ text: String) {
        guard enabled else { return }
        write((isTerminal && state.withLock({ $0.printed }) ? "\r\u{1B}[K" : "") + text + "\n")
    }

    private func write(_ text: String) { writeStandardError(text) }
}
