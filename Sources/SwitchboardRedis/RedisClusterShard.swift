import Logging
import SwitchboardCore
import Synchronization

/// The two connections a node keeps to one master of the cluster: commands (pipelined
/// scripts and `WAIT`) and sharded subscriptions. Both reconnect on their own until
/// `stop`; the broker drops a shard when its master no longer owns a slot.
final class RedisClusterShard: Sendable {
    let address: RedisNodeAddress
    let commands: RedisConnection
    let subscriber: RedisConnection

    init(address: RedisNodeAddress, template: RedisURL, configuration: RedisClusterBroker.Configuration, logger: Logger) {
        self.address = address
        var url = template
        url.host = address.host
        url.port = address.port
        url.database = 0
        var logger = logger
        logger[metadataKey: "redis.master"] = .string(address.description)
        func connection(_ label: String, subscriber: Bool) -> RedisConnection {
            RedisConnection(
                configuration: .init(
                    url: url, label: label, connectTimeout: configuration.connectTimeout, replyTimeout: configuration.replyTimeout,
                    pingInterval: configuration.pingInterval, isSubscriber: subscriber),
                logger: logger)
        }
        self.commands = connection("commands", subscriber: false)
        self.subscriber = connection("subscriber", subscriber: true)
    }

    func stop() async {
        await commands.stop()
        await subscriber.stop()
    }
}

extension RedisConnection {
    /// Sends `commands` back to back on this connection (nothing from another thread in
    /// between) and returns their replies in order (error replies are returned).
    func send(batch commands: [RedisCommand]) async throws -> [RESPValue] {
        final class Pending: Sendable {
            struct Replies {
                var results: [Result<RESPValue, BrokerError>?]
                var remaining: Int
            }
            let replies: Mutex<Replies>
            init(count: Int) { replies = Mutex(Replies(results: Array(repeating: nil, count: count), remaining: count)) }
        }
        let pending = Pending(count: commands.count)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[RESPValue], any Error>) in
            let requests = commands.enumerated().map { index, command in
                RedisRequest(command: command) { result in
                    let done: [Result<RESPValue, BrokerError>]? = pending.replies.withLock { pending in
                        pending.results[index] = result
                        pending.remaining -= 1
                        return pending.remaining == 0 ? pending.results.compactMap { $0 } : nil
                    }
                    guard let done else { return }
                    do {
                        continuation.resume(returning: try done.map { try $0.get() })
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
            enqueue(requests)
        }
    }
}
