import Logging
import SwitchboardCore
import Synchronization

/// "Accepted means replicated" (`--redis-min-replicas`): a publish is acked only after
/// `WAIT replicas timeout` on the connection that ran its script says enough replicas
/// have it.
///
/// One `WAIT` covers every write its connection made before it, so publishes share them:
/// a publish whose script has replied joins the next `WAIT` sent, and while one is in
/// flight the publishes that arrive meanwhile wait for the one after it. Under load this
/// costs one replica round trip per batch, not per message. WAIT blocks its connection,
/// so the commands behind it wait too — the price is paid by every command of the node.
///
/// A WAIT only speaks for its own connection: a publish whose script ran on a connection
/// that has since been lost is refused (`unavailable`), as is one the replicas did not
/// confirm in time — the client gets an error, never a false ack. (Its message may still
/// have reached live subscribers and history: refused means "not guaranteed", not "undone".)
final class ReplicationConfirmer: Sendable {
    private struct Waiter {
        /// The connection generation the publish's script ran on.
        let connection: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var pending: [Waiter] = []
        var inFlight = false
        var lastWarning: ContinuousClock.Instant?
    }

    let connection: RedisConnection
    let replicas: Int
    let timeout: Duration
    let logger: Logger
    private let state = Mutex(State())

    init(connection: RedisConnection, replicas: Int, timeout: Duration, logger: Logger) {
        self.connection = connection
        self.replicas = replicas
        self.timeout = timeout
        self.logger = logger
    }

    /// Returns once `replicas` replicas confirmed the writes of connection `generation`;
    /// throws `BrokerError.unavailable` otherwise.
    func confirm(writtenOn generation: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let send = state.withLock { state in
                state.pending.append(Waiter(connection: generation, continuation: continuation))
                guard !state.inFlight else { return false }
                state.inFlight = true
                return true
            }
            if send { sendNext() }
        }
    }

    /// Sends one WAIT for everything pending; when it replies, the next for what came meanwhile.
    private func sendNext() {
        let batch = state.withLock { state in
            let batch = state.pending
            state.pending = []
            if batch.isEmpty { state.inFlight = false }
            return batch
        }
        guard !batch.isEmpty else { return }
        let milliseconds = max(1, Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
        let command = RedisCommand(["WAIT", String(replicas), String(milliseconds)])
        connection.enqueue(
            RedisRequest(command: command) { [self] result in
                let outcome: Result<Int64, BrokerError> = result.flatMap { reply in
                    if let count = reply.integer { return .success(count) }
                    return .failure(.protocolError("redis WAIT: \(reply.errorMessage ?? "unexpected reply \(reply)")"))
                }
                // Read on the connection's thread while the reply is current: the WAIT's connection.
                let generation = connection.generation
                for waiter in batch {
                    switch outcome {
                    case .success(let count) where count >= replicas && waiter.connection == generation:
                        waiter.continuation.resume()
                    case .success(let count):
                        let why =
                            waiter.connection != generation
                            ? "the redis connection was lost before replication was confirmed"
                            : "only \(count) of \(replicas) replicas confirmed the write within \(milliseconds) ms"
                        warn(why)
                        waiter.continuation.resume(throwing: BrokerError.unavailable("not replicated: \(why)"))
                    case .failure(let error):
                        warn("\(error)")
                        waiter.continuation.resume(throwing: error)
                    }
                }
                sendNext()
            })
    }

    /// At most one warning a second, however many publishes fail.
    private func warn(_ why: String) {
        let now = ContinuousClock.now
        let due = state.withLock { state in
            guard state.lastWarning.map({ now - $0 >= .seconds(1) }) ?? true else { return false }
            state.lastWarning = now
            return true
        }
        if due { logger.warning("publish refused: not replicated", metadata: ["redis.reason": "\(why)", "redis.replicas": "\(replicas)"]) }
    }
}
